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
use std::sync::atomic::{AtomicPtr, Ordering};
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
            // SAFETY: `ptr..ptr+len` is exactly the mapping just made;
            // MADV_DONTFORK only changes what a later fork copies, never
            // this process's view of the pages.
            let _ = unsafe { rustix::mm::madvise(ptr, len, Advice::LinuxDontFork) };
        }
        Ok(Mapping {
            ptr: AtomicPtr::new(ptr.cast::<u8>()),
            len,
            prot,
        })
    }

    /// Start of the mapping (page aligned, never null).
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
///
/// Safe although it takes a raw address: `MADV_HUGEPAGE` only changes how
/// the kernel backs the pages of the range from the next fault on (or
/// collapses existing ones), never their contents, protection or whether
/// they are mapped; an unmapped or unaligned range only makes it fail.
pub(crate) fn madvise_hugepage(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: see above: no Rust object can observe MADV_HUGEPAGE, and the
    // kernel validates the range itself.
    unsafe { rustix::mm::madvise(addr.cast(), len, Advice::LinuxHugepage) }?;
    Ok(())
}
