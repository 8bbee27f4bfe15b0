//! Transparent huge pages for large heap buffers (`Vec`s) that are about to be
//! filled: `MADV_HUGEPAGE` on the 2 MiB-aligned interior of the allocation.
//!
//! # Why
//! Filling 160 MB of fresh 4 KiB pages costs ~110 ms here, almost all of it
//! 40,000 page faults; with 2 MiB pages the same copy takes ~30 ms and freeing
//! the buffer drops from ~15 ms to under 1 ms. On systems where
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` (a common
//! default) anonymous memory gets huge pages only when asked, and a Rust
//! `Vec` never asks (numpy does, for arrays of 4 MiB and more). The advice
//! must come before the first touch: pages already faulted stay small until
//! `khugepaged` gets to them.
//!
//! Best effort everywhere: the kernel may refuse (THP disabled or not built
//! in), and the contents never change either way.
//!
//! ```
//! let src = vec![1.5f64; 1 << 20]; // 8 MiB
//! let mut v = npshmex_shm::hugepage::vec_with_capacity::<f64>(src.len());
//! v.extend_from_slice(&src); // one copy, into huge pages where the kernel allows
//! assert_eq!(v, src);
//! ```

use crate::mapping;

/// Size of a huge page on x86-64 and most aarch64 kernels (the only size
/// transparent huge pages use there).
pub const HUGE_PAGE: usize = 2 << 20;

/// Buffers smaller than this are not advised: they hold at most one aligned
/// huge page, and the faults they save cost less than the `madvise` call
/// (numpy's threshold too).
pub const ADVISE_FROM: usize = 4 << 20;

/// Advises huge pages for the 2 MiB-aligned interior of `v`'s allocation
/// (its whole capacity, filled or not), if it is at least
/// [`ADVISE_FROM`] bytes. Call it before the buffer is written: it affects
/// the pages faulted afterwards. Returns whether the kernel took the
/// advice (`false` for small or zero-sized buffers, and where transparent
/// huge pages are not available); the contents of `v` never change.
pub fn advise_vec<T>(v: &mut Vec<T>) -> bool {
    let Some(bytes) = v.capacity().checked_mul(std::mem::size_of::<T>()) else {
        return false;
    };
    if bytes < ADVISE_FROM {
        // Also every zero-sized `T`: no allocation at all.
        return false;
    }
    let start = v.as_mut_ptr().cast::<u8>();
    let addr = start as usize;
    // The huge pages wholly inside [addr, addr + bytes).
    let (Some(first), Some(end)) = (
        addr.checked_next_multiple_of(HUGE_PAGE),
        addr.checked_add(bytes),
    ) else {
        return false;
    };
    let last = end - end % HUGE_PAGE;
    if last <= first {
        return false;
    }
    // `first - addr` is within the allocation, so the pointer stays in bounds
    // of it (`wrapping_add` keeps this free of `unsafe`).
    mapping::madvise_hugepage(start.wrapping_add(first - addr), last - first).is_ok()
}

/// An empty `Vec` with room for `capacity` elements whose allocation is
/// advised to use huge pages ([`advise_vec`]): fill it with one copy
/// (`extend_from_slice`, `extend`), not after zeroing it first, so every
/// page is faulted once, by the copy.
pub fn vec_with_capacity<T>(capacity: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(capacity);
    advise_vec(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_zero_sized_buffers_are_left_alone() {
        let mut small: Vec<u8> = Vec::with_capacity(ADVISE_FROM - 1);
        assert!(!advise_vec(&mut small));
        let mut empty: Vec<f64> = Vec::new();
        assert!(!advise_vec(&mut empty));
        let mut zst: Vec<()> = Vec::with_capacity(1 << 30);
        assert!(!advise_vec(&mut zst));
        assert!(vec_with_capacity::<u64>(0).is_empty());
    }

    #[test]
    fn advising_keeps_contents_and_capacity() {
        let n = (9 << 20) + 123;
        let mut v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let cap = v.capacity();
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"));
        let advised = advise_vec(&mut v);
        if thp {
            assert!(advised, "the kernel offers THP but refused the advice");
        }
        assert_eq!(v.capacity(), cap);
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[test]
    fn with_capacity_is_empty_and_fills_with_one_copy() {
        let src: Vec<f64> = (0..(1 << 20)).map(f64::from).collect();
        let mut v = vec_with_capacity::<f64>(src.len());
        assert!(v.is_empty());
        assert!(v.capacity() >= src.len());
        let ptr = v.as_ptr();
        v.extend_from_slice(&src);
        assert_eq!(v.as_ptr(), ptr, "no reallocation");
        assert_eq!(v, src);
    }
}
