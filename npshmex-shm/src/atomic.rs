//! [`AtomicRegion`]: shared memory seen only as atomic words, for control
//! state two processes change at the same time (ring indices, futex words,
//! small messages copied word by word).
//!
//! The bytes of a segment are safe to view as `&[u8]` only when nobody can
//! write them meanwhile (the crate's safety model); an atomic word may be
//! changed by anyone at any moment, by definition. So a region a peer
//! writes concurrently is sound to share writable, as long as this process
//! never views it as anything but atomics: `AtomicRegion` offers no other
//! view, and its file is never write-sealed, so the safe
//! [`Segment::from_fd_sealed`](crate::Segment::from_fd_sealed) refuses to
//! map it as bytes. A peer can still store hostile values: whoever reads
//! the words validates them.
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use npshmex_shm::AtomicRegion;
//! let a = AtomicRegion::new(4, 16)?;
//! let b = AtomicRegion::from_fd(a.try_clone_fd()?, 4, 16)?; // what a peer maps
//! a.u32s()[1].store(7, Ordering::Release);
//! assert_eq!(b.u32s()[1].load(Ordering::Acquire), 7);
//! b.u64s()[15].store(u64::MAX, Ordering::Release);
//! assert_eq!(a.u64s()[15].load(Ordering::Acquire), u64::MAX);
//! # Ok::<(), npshmex_shm::ShmError>(())
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::MemfdFlags;

use crate::error::{Result, ShmError};
use crate::mapping::{Mapping, Prot, Sharing};
use crate::segment::{self, Reservation};
use crate::Seals;

/// A shared-memory file mapped read-write and seen only as atomic words:
/// `n32` 32-bit words, then 64-bit words to its end.
#[derive(Debug)]
pub struct AtomicRegion {
    map: Mapping,
    fd: OwnedFd,
    n32: usize,
    n64: usize,
}

/// Bytes a region of `n32` and `n64` words needs.
fn region_len(n32: usize, n64: usize) -> Option<usize> {
    let start64 = n32.checked_mul(4)?.checked_next_multiple_of(8)?;
    start64.checked_add(n64.checked_mul(8)?)
}

impl AtomicRegion {
    /// A new region (a memfd, zeroed, its size sealed so no holder can
    /// shrink it under a mapping) of `n32` 32-bit and `n64` 64-bit words.
    ///
    /// # Errors
    /// [`ShmError::SizeOverflow`], [`ShmError::NoSpace`], [`ShmError::Io`].
    pub fn new(n32: usize, n64: usize) -> Result<AtomicRegion> {
        let len = region_len(n32, n64).ok_or(ShmError::SizeOverflow { len: u64::MAX })?;
        let fd = rustix::fs::memfd_create(
            c"npshmex-ctl",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| ShmError::io("memfd_create", e.into()))?;
        segment::reserve(fd.as_fd(), len as u64, Reservation::Memory)?;
        segment::add_seals(fd.as_fd(), Seals::SIZE)?;
        AtomicRegion::map(fd, len.max(8), n32, n64)
    }

    /// Maps a region a peer made with [`AtomicRegion::new`] with the same
    /// word counts. Its size must be sealed against shrinking and at least
    /// what the words need.
    ///
    /// # Errors
    /// [`ShmError::NotSealed`], [`ShmError::TooSmall`], [`ShmError::Io`].
    pub fn from_fd(fd: OwnedFd, n32: usize, n64: usize) -> Result<AtomicRegion> {
        segment::require_seals(fd.as_fd(), Seals::SHRINK)?;
        let len = region_len(n32, n64).ok_or(ShmError::SizeOverflow { len: u64::MAX })?;
        let st = rustix::fs::fstat(fd.as_fd()).map_err(|e| ShmError::io("fstat", e.into()))?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size < len as u64 {
            return Err(ShmError::TooSmall {
                expected: len as u64,
                actual: size,
            });
        }
        AtomicRegion::map(fd, len.max(8), n32, n64)
    }

    fn map(fd: OwnedFd, len: usize, n32: usize, n64: usize) -> Result<AtomicRegion> {
        let map = Mapping::new(fd.as_fd(), len, Prot::ReadWrite, Sharing::Shared)
            .map_err(|e| ShmError::io("mmap", e))?;
        Ok(AtomicRegion { map, fd, n32, n64 })
    }

    #[inline]
    fn views(&self) -> (&[AtomicU32], &[AtomicU64]) {
        match self.map.as_atomics(self.n32) {
            Some((a, b)) => (a, &b[..self.n64.min(b.len())]),
            // Unreachable: the mapping was sized for these counts.
            None => (&[], &[]),
        }
    }

    /// The 32-bit words (futex words are 32-bit).
    #[inline]
    pub fn u32s(&self) -> &[AtomicU32] {
        self.views().0
    }

    /// The 64-bit words.
    #[inline]
    pub fn u64s(&self) -> &[AtomicU64] {
        self.views().1
    }

    /// The region's fd, to share it with a peer (harmless: the region is
    /// only ever seen as atomics).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A duplicate of the region's fd.
    ///
    /// # Errors
    /// [`ShmError::Io`] if `dup` fails.
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd.try_clone().map_err(|e| ShmError::io("dup", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, Segment};
    use std::sync::atomic::Ordering;

    #[test]
    fn peers_share_words_and_bytes_views_are_refused() -> Result<()> {
        let a = AtomicRegion::new(3, 5)?;
        assert_eq!((a.u32s().len(), a.u64s().len()), (3, 5));
        let b = AtomicRegion::from_fd(a.try_clone_fd()?, 3, 5)?;
        a.u64s()[4].fetch_add(2, Ordering::SeqCst);
        assert_eq!(b.u64s()[4].load(Ordering::SeqCst), 2);
        // Not write-sealed: no safe byte view of it can be made.
        assert!(matches!(
            Segment::from_fd_sealed(a.try_clone_fd()?, Access::ReadOnly, 0),
            Err(ShmError::NotSealed { .. })
        ));
        // A peer asking for more words than the region holds is refused.
        assert!(matches!(
            AtomicRegion::from_fd(a.try_clone_fd()?, 3, 500),
            Err(ShmError::TooSmall { .. })
        ));
        Ok(())
    }

    #[test]
    fn unsealed_files_are_refused() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        assert!(matches!(
            AtomicRegion::from_fd(seg.into_fd()?, 1, 1),
            Err(ShmError::NotSealed { .. })
        ));
        Ok(())
    }
}
