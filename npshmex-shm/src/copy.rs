//! Copies of large buffers split across a few threads.
//!
//! # Why
//! Every drop-in transfer is a copy into or out of a segment, and one thread
//! cannot keep the memory system busy: here, copying 160 MB into touched
//! pages takes ~21 ms on one thread and ~15 ms on two, and filling fresh
//! (huge) pages ~36 ms against ~24 ms, because page faults and the zeroing
//! of fresh pages run in parallel too. Ray's object store and Arrow's
//! `ParallelMemcopy` split large copies the same way.
//!
//! Only copies of at least [`PARALLEL_FROM`] bytes are split, into chunks of
//! at least [`CHUNK_MIN`] bytes, so a thread start (~20–50 µs) is always a
//! small part of the copy. The calling thread and its helpers take chunks
//! from one queue; a helper that cannot be started leaves its share to the
//! others, so a copy never fails. At most [`max_threads`] threads copy at once: by default
//! the CPUs this process may use, at most 4 (memory bandwidth is shared);
//! set `NPSHMEX_COPY_THREADS` (read once per process, inherited by pool
//! workers) or call [`set_max_threads`]; 1 turns splitting off.
//!
//! Rejected: a persistent pool of copy threads (idle threads in every
//! worker, and a wake-up costs about what a scoped spawn does at these
//! sizes); `rayon` (a dependency and a global pool for two loops).
//!
//! ```
//! let src = vec![7u8; 40 << 20];
//! let mut dst = vec![0u8; src.len()];
//! npshmex_shm::copy::copy(&mut dst, &src);
//! assert!(dst == src);
//!
//! let mut spare = Vec::<u8>::with_capacity(src.len());
//! let init = npshmex_shm::copy::copy_to_uninit(&mut spare.spare_capacity_mut()[..src.len()], &src);
//! assert_eq!(init.len(), src.len());
//! ```

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Copies smaller than this run on the calling thread alone.
pub const PARALLEL_FROM: usize = 16 << 20;
/// The smallest chunk a helper thread is given.
pub const CHUNK_MIN: usize = 8 << 20;
/// The default limit never exceeds this many threads.
const DEFAULT_CAP: usize = 4;

/// 0: not set by [`set_max_threads`].
static OVERRIDE: AtomicUsize = AtomicUsize::new(0);

/// How many threads (the caller included) a large copy may use.
pub fn max_threads() -> usize {
    match OVERRIDE.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// Sets [`max_threads`] for this process (at least 1; 1 copies on the
/// calling thread only). Pool workers read `NPSHMEX_COPY_THREADS` instead.
pub fn set_max_threads(n: usize) {
    OVERRIDE.store(n.max(1), Ordering::Relaxed);
}

fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let from_env = std::env::var("NPSHMEX_COPY_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0);
        from_env.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(DEFAULT_CAP)
        })
    })
}

/// How many threads a copy of `len` bytes uses.
fn threads_for(len: usize) -> usize {
    if len < PARALLEL_FROM {
        return 1;
    }
    (len / CHUNK_MIN).clamp(1, max_threads())
}

/// Copies `src` into `dst`, on several threads when it is large.
///
/// # Panics
/// If the two slices have different lengths, as `copy_from_slice` does.
pub fn copy(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    split(dst, src, |d, s| d.copy_from_slice(s));
}

/// Copies `src` into the uninitialised `dst` (the spare capacity of a
/// `Vec`, say), on several threads when it is large, and returns `dst`,
/// now initialised.
///
/// # Panics
/// If the two slices have different lengths.
pub fn copy_to_uninit<'a>(dst: &'a mut [MaybeUninit<u8>], src: &[u8]) -> &'a mut [u8] {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    split(dst, src, |d, s| {
        // SAFETY: `d` and `s` have the same length (`split` cuts both at the
        // same offsets); `d` is exclusively borrowed and `s` shared, so the
        // two cannot overlap; `MaybeUninit<u8>` has the layout of `u8`.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), d.as_mut_ptr().cast::<u8>(), s.len()) }
    });
    // SAFETY: every byte of `dst` was written just above: the chunks of
    // `split` cover it whole, and `split` returns only once its queue is
    // empty and every helper is joined (a panicking copy would re-raise
    // before this line). `MaybeUninit<u8>` and `u8` have the same layout,
    // and the lifetime stays that of `dst`.
    unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(dst) as *mut [u8]) }
}

/// Runs `f` over matching chunks of `dst` and `src` (equal lengths): the
/// calling thread and scoped helper threads take chunks from one queue
/// until it is empty, so a helper that could not be started only leaves
/// more chunks to the others.
fn split<D: Send>(dst: &mut [D], src: &[u8], f: impl Fn(&mut [D], &[u8]) + Sync) {
    let threads = threads_for(src.len());
    if threads <= 1 {
        f(dst, src);
        return;
    }
    let chunk = src.len().div_ceil(threads);
    let queue = std::sync::Mutex::new(dst.chunks_mut(chunk).zip(src.chunks(chunk)));
    let work = || loop {
        // The lock is held only around `next`, which cannot panic, so it
        // is never poisoned; were it, the scope would re-raise the panic.
        let Some((d, s)) = queue.lock().ok().and_then(|mut q| q.next()) else {
            return;
        };
        f(d, s);
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // No thread (a resource limit): the others take its chunks.
            let _ = std::thread::Builder::new()
                .name("npshmex-copy".into())
                .spawn_scoped(scope, work);
        }
        work();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn small_and_large_copies_are_exact() {
        for len in [
            0,
            1,
            4095,
            PARALLEL_FROM - 1,
            PARALLEL_FROM,
            3 * CHUNK_MIN + 17,
        ] {
            let src = pattern(len);
            let mut dst = vec![0u8; len];
            copy(&mut dst, &src);
            assert!(dst == src, "copy of {len} bytes");
            let mut v = Vec::<u8>::with_capacity(len);
            let out = copy_to_uninit(&mut v.spare_capacity_mut()[..len], &src);
            assert!(out == &src[..], "copy_to_uninit of {len} bytes");
        }
    }

    #[test]
    fn thread_counts_follow_size_and_limit() {
        assert_eq!(threads_for(PARALLEL_FROM - 1), 1);
        assert!(threads_for(1 << 30) <= max_threads());
        assert!(threads_for(PARALLEL_FROM) <= PARALLEL_FROM / CHUNK_MIN);
        assert!(max_threads() >= 1);
    }
}
