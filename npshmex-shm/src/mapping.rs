//! [`Mapping`]: an owned `mmap` region, and the crate's only raw memory
//! operations (`mmap`, `munmap`, `madvise`, the byte views).
//!
//! Every other system call of the crate goes through rustix's safe
//! wrappers where it is made; what stays `unsafe` is creating and destroying
//! mappings and viewing their bytes. Whether a view is *sound* (nobody
//! writes the pages while it lives) is decided by [`Segment`](crate::Segment),
//! which owns the mapping and hands views out only under the crate's safety
//! model; this module only guarantees that the memory exists and is mapped
//! with the protection asked for.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::RwLock;

use rustix::mm::{Advice, MapFlags, ProtFlags};

/// Page protection of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prot {
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// Whether writes reach the file (`MAP_SHARED`) or stay private (`MAP_PRIVATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// `MAP_SHARED`.
    Shared,
    /// `MAP_PRIVATE` (copy on write).
    Private,
}

/// Held for reading while a writable shared mapping is made and marked
/// `MADV_DONTFORK`, and for writing around a `fork` ([`without_mappings_in_flight`]):
/// a fork between the two calls would copy the mapping into the child.
static FORK_LOCK: RwLock<()> = RwLock::new(());

/// Runs `fork` (a closure that forks) while no writable shared mapping is
/// half made, so that the child inherits none of them (every one is marked
/// `MADV_DONTFORK` before the lock is released). Code that forks a process
/// which keeps running (not `exec`) should fork inside this.
pub fn without_mappings_in_flight<T>(fork: impl FnOnce() -> T) -> T {
    let _held = FORK_LOCK.write().unwrap_or_else(|p| p.into_inner());
    fork()
}

/// An owned `mmap` region of non-zero length; unmapped on drop.
///
/// Threads: a mapping belongs to no thread, like a `Box<[u8]>`, and it is
/// `Send + Sync` for the same reason: `&Mapping` gives out `&[u8]` only and
/// `&mut [u8]` needs `&mut Mapping`, so Rust's aliasing rules hold across
/// threads of this process (other processes are the owner's, `Segment`'s,
/// concern). The address is kept in an `AtomicPtr`, which is `Send + Sync`,
/// so these follow without an `unsafe impl`; it never changes after `mmap`.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: AtomicPtr<u8>,
    len: usize,
    prot: Prot,
}

impl Mapping {
    /// Maps the first `len` bytes of `fd`.
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        prot: Prot,
        sharing: Sharing,
    ) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let prot_flags = match prot {
            Prot::Read => ProtFlags::READ,
            Prot::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        };
        let flags = match sharing {
            Sharing::Shared => MapFlags::SHARED,
            Sharing::Private => MapFlags::PRIVATE,
        };
        let dont_fork = (prot, sharing) == (Prot::ReadWrite, Sharing::Shared);
        // Only writable shared mappings are marked; they wait for no fork.
        let _no_fork = dont_fork.then(|| FORK_LOCK.read().unwrap_or_else(|p| p.into_inner()));
        // SAFETY: a new mapping at an address the kernel chooses (null hint,
        // no MAP_FIXED) cannot overlap any memory a Rust object lives in;
        // `fd` is open for the duration of the borrow and `len` is non-zero.
        let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot_flags, flags, fd, 0) }?;
        if ptr.is_null() {
            // Linux never maps page 0 for us (mmap_min_addr); refuse it anyway.
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        if dont_fork {
            // A forked child would inherit a writable shared mapping: a
            // second writer of pages this process views (and one that keeps
            // the file from ever being write-sealed). Not inherited, the
            // child cannot reach them. Best effort: the mapping is fine
            // without it, so an error is ignored.
            let _ = advise(ptr.cast(), len, Hint::DontFork);
        }
        Ok(Mapping {
            ptr: AtomicPtr::new(ptr.cast::<u8>()),
            len,
            prot,
        })
    }

    /// Start of the mapping (page aligned, never null).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.load(Ordering::Relaxed)
    }

    /// The mapped bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes from `ptr` are mapped readable for as long as
        // `self` lives; within this process writing needs `&mut self`, so no
        // `&mut [u8]` of them exists while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The mapped bytes, writable; `None` for a read-only mapping.
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if self.prot != Prot::ReadWrite {
            return None;
        }
        // SAFETY: `len` bytes from `ptr` are mapped writable (PROT_WRITE) for
        // as long as `self` lives, and `&mut self` excludes any other borrow
        // of them in this process.
        Some(unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) })
    }

    /// Asks for huge pages (`MADV_HUGEPAGE`); the kernel may refuse.
    pub(crate) fn advise_hugepage(&self) {
        let _ = madvise_hugepage(self.as_ptr(), self.len);
    }

    /// The mapping as atomic words: `n32` 32-bit words from its start,
    /// then 64-bit words (from the next multiple of 8 bytes) to its end.
    /// For memory other processes write at the same time: atomics are the
    /// one kind of view whose values may change under a shared borrow.
    #[inline]
    pub(crate) fn as_atomics(&self, n32: usize) -> Option<(&[AtomicU32], &[AtomicU64])> {
        let bytes32 = n32.checked_mul(4)?;
        let start64 = bytes32.checked_next_multiple_of(8)?;
        let n64 = self.len.checked_sub(start64)? / 8;
        let base = self.as_ptr();
        // SAFETY: both ranges lie inside the `len` mapped bytes (checked
        // above), are suitably aligned (the mapping is page aligned, the
        // second range starts at a multiple of 8) and do not overlap; they
        // live as long as `self`. Atomic types may be shared and mutated
        // concurrently, by other threads or processes, so no `&[u8]` or
        // `&mut` view is ever made of this memory by this code: a segment
        // used this way is only ever viewed as atomics (see `AtomicRegion`).
        let views = unsafe {
            (
                std::slice::from_raw_parts(base.cast::<AtomicU32>(), n32),
                std::slice::from_raw_parts(base.add(start64).cast::<AtomicU64>(), n64),
            )
        };
        Some(views)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: this is our own mapping and nothing borrows it any more
        // (views borrow the owner). munmap fails only for invalid arguments,
        // which the constructor excludes; a destructor has nothing useful to
        // do with an error, so it is ignored.
        let _ = unsafe { rustix::mm::munmap(self.as_ptr().cast(), self.len) };
    }
}

/// `madvise(addr, len, MADV_HUGEPAGE)` on any range of this process.
pub(crate) fn madvise_hugepage(addr: *mut u8, len: usize) -> io::Result<()> {
    advise(addr, len, Hint::HugePage)
}

/// The advice this crate gives: only kinds that leave the contents,
/// protection and presence of this process's pages as they are.
#[derive(Clone, Copy, Debug)]
enum Hint {
    /// `MADV_HUGEPAGE`: back the range with huge pages from the next fault
    /// on (or collapse existing ones).
    HugePage,
    /// `MADV_DONTFORK`: a later `fork` does not copy the range into the
    /// child.
    DontFork,
}

/// `madvise(addr, len, hint)` on any range of this process.
///
/// Safe although it takes a raw address: neither hint changes what this
/// process sees in the range (see [`Hint`]); an unmapped or unaligned range
/// only makes it fail.
fn advise(addr: *mut u8, len: usize, hint: Hint) -> io::Result<()> {
    let advice = match hint {
        Hint::HugePage => Advice::LinuxHugepage,
        Hint::DontFork => Advice::LinuxDontFork,
    };
    // SAFETY: see above: no Rust object of this process can observe these
    // hints, and the kernel validates the range itself.
    unsafe { rustix::mm::madvise(addr.cast(), len, advice) }?;
    Ok(())
}
