//! [`Segment`]: a mapped shared-memory region (memfd or a named `/dev/shm` file).
//!
//! Space is reserved with `fallocate` when a segment is created, so running out of
//! memory or tmpfs space is a [`ShmError::NoSpace`] at creation instead of a SIGBUS
//! on first touch (the alternative, sparse files, is what leaves Python's
//! `SharedMemory` crashing on a full `/dev/shm`). A zero-length segment has no
//! mapping at all (`mmap` refuses 0 bytes) and views as an empty slice.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crate::access::Access;
use crate::error::{Result, ShmError};
use crate::seals::Seals;
use crate::sys::{self, Mapping, Prot, Sharing};

/// Requests at least this large check available memory first: fallocate on a
/// memfd is only limited by memory, and filling it would summon the OOM killer
/// instead of failing.
pub(crate) const MEMORY_CHECK_THRESHOLD: u64 = 64 << 20;

/// Alignment of the (dangling) pointer of an empty segment, same as a real mapping.
#[repr(C, align(4096))]
struct PageAligned([u8; 4096]);

/// Where a named segment lives.
#[derive(Clone, Debug)]
pub(crate) struct NamedPath {
    /// Its name in the directory.
    pub(crate) name: String,
    /// Its full path.
    pub(crate) path: PathBuf,
}

/// A mapped shared-memory segment.
///
/// Anonymous segments ([`Segment::anonymous`]) are memfds: the kernel frees them
/// when the last process closes its fd and unmaps them, so they cannot leak. Named
/// segments ([`Segment::create_named`]) are files under `/dev/shm` that outlive the
/// process until [`remove`](crate::remove)d.
///
/// `Segment` is `Send + Sync`: shared access gives `&[u8]`, writing needs `&mut`.
/// Other processes may write a shared segment at any time; agreeing on who writes
/// when is the protocol's job (or [`Segment::freeze`] makes it immutable).
/// Dropping unmaps and closes; it never panics.
#[derive(Debug)]
pub struct Segment {
    map: Option<Mapping>,
    fd: OwnedFd,
    len: usize,
    access: Access,
    named: Option<NamedPath>,
}

impl Segment {
    /// Creates an anonymous segment of `len` bytes (`memfd_create` with
    /// close-on-exec and sealing allowed), reserves its memory and maps it
    /// read-write. The contents are zero.
    ///
    /// # Errors
    /// [`ShmError::NoSpace`] when the memory cannot be reserved,
    /// [`ShmError::SizeOverflow`] for sizes past `i64::MAX`, [`ShmError::Io`] otherwise.
    pub fn anonymous(len: usize) -> Result<Segment> {
        let requested = len as u64;
        if i64::try_from(requested).is_err() {
            return Err(ShmError::SizeOverflow { len: requested });
        }
        if requested >= MEMORY_CHECK_THRESHOLD {
            if let Some(available) = memory_available() {
                if requested > available {
                    return Err(ShmError::NoSpace {
                        requested,
                        available,
                    });
                }
            }
        }
        let fd = sys::memfd_create(c"npshmex").map_err(|e| ShmError::io("memfd_create", e))?;
        reserve(fd.as_fd(), requested, Reservation::Memory)?;
        Segment::map(fd, len, Access::ReadWrite, None)
    }

    /// Maps a segment from an fd (for example a memfd received over an
    /// [`FdSocket`](crate::FdSocket)); its size comes from `fstat`.
    ///
    /// To be safe against SIGBUS the fd's size should be sealed
    /// ([`Seals::SHRINK`]) or otherwise trusted; see [`Segment::seals`].
    ///
    /// # Errors
    /// [`ShmError::Io`] when `fstat` or `mmap` fail (for example write access to a
    /// read-only fd), [`ShmError::NotRegular`] for fds that are not files (sockets,
    /// pipes), [`ShmError::SizeOverflow`] if the size cannot be mapped.
    pub fn from_fd(fd: OwnedFd, access: Access) -> Result<Segment> {
        Segment::from_fd_expect(fd, access, 0)
    }

    /// Like [`Segment::from_fd`], and refuses a segment smaller than `min_len`
    /// bytes (a sender claiming more than it sent).
    ///
    /// # Errors
    /// [`ShmError::TooSmall`] when `fstat` reports less than `min_len`, otherwise
    /// as [`Segment::from_fd`].
    pub fn from_fd_expect(fd: OwnedFd, access: Access, min_len: u64) -> Result<Segment> {
        let st = sys::fstat(fd.as_fd()).map_err(|e| ShmError::io("fstat", e))?;
        if !st.regular {
            return Err(ShmError::NotRegular {
                name: format!("fd {}", fd.as_raw_fd()),
            });
        }
        if st.size < min_len {
            return Err(ShmError::TooSmall {
                expected: min_len,
                actual: st.size,
            });
        }
        let len = to_len(st.size)?;
        Segment::map(fd, len, access, None)
    }

    /// Like [`Segment::from_fd_expect`], and refuses an fd that does not
    /// carry every seal of `required` (at least [`Seals::SHRINK`] is always
    /// required). This is how to map a segment received from a process that
    /// is not fully trusted: only a size sealed against shrinking guarantees
    /// that no holder can truncate the file under this mapping, which would
    /// turn a read of [`Segment::as_slice`] into SIGBUS. Add
    /// [`Seals::WRITE`] to `required` when the contents must not change.
    ///
    /// ```
    /// use npshmex_shm::{Access, Seals, Segment, ShmError};
    /// let seg = Segment::anonymous(4096)?;
    /// let unsealed = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadOnly, 4096, Seals::NONE);
    /// assert!(matches!(unsealed, Err(ShmError::NotSealed { .. })));
    /// seg.seal(Seals::SIZE)?;
    /// let ok = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadOnly, 4096, Seals::NONE)?;
    /// assert_eq!(ok.len(), 4096);
    /// # Ok::<(), ShmError>(())
    /// ```
    ///
    /// # Errors
    /// [`ShmError::NotSealed`] with the missing seals (also for files that
    /// cannot be sealed, such as named segments), otherwise as
    /// [`Segment::from_fd_expect`].
    pub fn from_fd_sealed(
        fd: OwnedFd,
        access: Access,
        min_len: u64,
        required: Seals,
    ) -> Result<Segment> {
        let required = required | Seals::SHRINK;
        // Checked before the size: a shrink-sealed size cannot change any
        // more, so the fstat below sees the size every mapping keeps.
        let have = match sys::get_seals(fd.as_fd()) {
            Ok(bits) => Seals::from_bits(bits),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Seals::NONE,
            Err(e) => return Err(ShmError::io("fcntl(F_GET_SEALS)", e)),
        };
        if !have.contains(required) {
            return Err(ShmError::NotSealed {
                missing: Seals::from_bits(required.bits() & !have.bits()),
            });
        }
        Segment::from_fd_expect(fd, access, min_len)
    }

    /// Maps `len` bytes of `fd` with `access`.
    pub(crate) fn map(
        fd: OwnedFd,
        len: usize,
        access: Access,
        named: Option<NamedPath>,
    ) -> Result<Segment> {
        let map = if len == 0 {
            None
        } else {
            let (prot, sharing) = match access {
                Access::ReadWrite => (Prot::ReadWrite, Sharing::Shared),
                Access::ReadOnly => (Prot::Read, Sharing::Shared),
                Access::CopyOnWrite => (Prot::ReadWrite, Sharing::Private),
            };
            Some(
                Mapping::new(fd.as_fd(), len, prot, sharing)
                    .map_err(|e| ShmError::io("mmap", e))?,
            )
        };
        Ok(Segment {
            map,
            fd,
            len,
            access,
            named,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment is zero bytes long.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How this mapping was made.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The name of a named segment (`None` for memfds).
    pub fn name(&self) -> Option<&str> {
        self.named.as_ref().map(|n| n.name.as_str())
    }

    /// The bytes of the segment.
    pub fn as_slice(&self) -> &[u8] {
        match &self.map {
            Some(m) => m.as_slice(),
            None => &[],
        }
    }

    /// The bytes of the segment, writable.
    ///
    /// # Errors
    /// [`ShmError::ReadOnly`] for an [`Access::ReadOnly`] mapping.
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        if !self.access.is_writable() {
            return Err(ShmError::ReadOnly);
        }
        match &mut self.map {
            Some(m) => m.as_mut_slice().ok_or(ShmError::ReadOnly),
            None => Ok(&mut []),
        }
    }

    /// Start of the mapping: page (4096) aligned; a dangling, 4096-aligned pointer
    /// for an empty segment.
    pub fn as_ptr(&self) -> *const u8 {
        match &self.map {
            Some(m) => m.as_ptr(),
            None => std::ptr::NonNull::<PageAligned>::dangling()
                .as_ptr()
                .cast::<u8>(),
        }
    }

    /// Writable start of the mapping (see [`Segment::as_ptr`]).
    ///
    /// # Errors
    /// [`ShmError::ReadOnly`] for an [`Access::ReadOnly`] mapping.
    pub fn as_mut_ptr(&mut self) -> Result<*mut u8> {
        if !self.access.is_writable() {
            return Err(ShmError::ReadOnly);
        }
        Ok(self.as_ptr().cast_mut())
    }

    /// The segment's fd (to send it, or to pass it to other APIs).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A duplicate of the fd (close-on-exec).
    ///
    /// # Errors
    /// [`ShmError::Io`] if `dup` fails (fd limit).
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd.try_clone().map_err(|e| ShmError::io("dup", e))
    }

    /// Adds seals to a memfd segment. Seal the size ([`Seals::SIZE`]) before the fd
    /// leaves the process so no peer can shrink it under another's mapping.
    ///
    /// # Errors
    /// [`ShmError::NotSealable`] for named segments, fds that do not support sealing
    /// and memfds sealed with [`Seals::SEAL`]; [`ShmError::Io`] otherwise (for
    /// example `EBUSY` when adding [`Seals::WRITE`] while a writable shared mapping
    /// exists).
    pub fn seal(&self, seals: Seals) -> Result<()> {
        if self.named.is_some() {
            return Err(ShmError::NotSealable {
                reason: "named segments cannot be sealed (only memfds can)",
            });
        }
        sys::add_seals(self.fd.as_fd(), seals.bits()).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => ShmError::NotSealable {
                reason: "the fd does not support sealing",
            },
            Some(libc::EPERM) => ShmError::NotSealable {
                reason: "the seals are sealed (F_SEAL_SEAL) or sealing was not allowed at creation",
            },
            _ => ShmError::io("fcntl(F_ADD_SEALS)", e),
        })
    }

    /// The seals of the fd ([`Seals::NONE`] for files that do not support sealing).
    ///
    /// # Errors
    /// [`ShmError::Io`] if `fcntl` fails for another reason.
    pub fn seals(&self) -> Result<Seals> {
        match sys::get_seals(self.fd.as_fd()) {
            Ok(bits) => Ok(Seals::from_bits(bits)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Seals::NONE),
            Err(e) => Err(ShmError::io("fcntl(F_GET_SEALS)", e)),
        }
    }

    /// Makes the segment immutable for everyone: unmaps it, seals size and writes
    /// ([`Seals::SIZE`] `|` [`Seals::WRITE`]) and maps it again read-only.
    ///
    /// # Errors
    /// [`ShmError::NotSealable`] for named segments; [`ShmError::Io`] with `EBUSY`
    /// when another writable shared mapping of the memfd exists (here or in a peer).
    pub fn freeze(self) -> Result<Segment> {
        if self.named.is_some() {
            return Err(ShmError::NotSealable {
                reason: "named segments cannot be frozen (only memfds can be sealed)",
            });
        }
        let Segment { map, fd, len, .. } = self;
        drop(map);
        let frozen = Segment {
            map: None,
            fd,
            len,
            access: Access::ReadOnly,
            named: None,
        };
        frozen.seal(Seals::SIZE | Seals::WRITE)?;
        let Segment { fd, len, .. } = frozen;
        Segment::map(fd, len, Access::ReadOnly, None)
    }

    /// A new mapping of the same file (a duplicated fd) with another access mode.
    ///
    /// # Errors
    /// [`ShmError::Io`] if `dup` or `mmap` fail (for example [`Access::ReadWrite`]
    /// on a write-sealed memfd or a read-only fd).
    pub fn remap(&self, access: Access) -> Result<Segment> {
        let fd = self.try_clone_fd()?;
        Segment::map(fd, self.len, access, self.named.clone())
    }

    /// Asks the kernel to back the mapping with huge pages (`MADV_HUGEPAGE`).
    /// Best effort: errors are ignored (shmem huge pages depend on
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled`).
    pub fn advise_hugepage(&self) {
        if let Some(m) = &self.map {
            m.advise_hugepage();
        }
    }

    /// Unlinks a named segment from its directory (the mapping stays valid until
    /// dropped). Anonymous segments have nothing to unlink and return `Ok`.
    ///
    /// # Errors
    /// [`ShmError::NotFound`] when the name no longer exists, [`ShmError::Io`] otherwise.
    pub fn unlink(&self) -> Result<()> {
        match &self.named {
            None => Ok(()),
            Some(n) => std::fs::remove_file(&n.path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ShmError::NotFound {
                    name: n.name.clone(),
                },
                _ => ShmError::io("unlink named segment", e),
            }),
        }
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Where the space of a reservation comes from, for the `available` figure of
/// [`ShmError::NoSpace`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reservation {
    /// memfd: memory.
    Memory,
    /// A file: its filesystem.
    Filesystem,
}

/// Sets the size of a fresh file to `len` and allocates its backing.
pub(crate) fn reserve(fd: BorrowedFd<'_>, len: u64, kind: Reservation) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    sys::ftruncate(fd, len).map_err(|e| match e.raw_os_error() {
        Some(libc::EFBIG) => ShmError::SizeOverflow { len },
        _ => ShmError::io("ftruncate", e),
    })?;
    sys::fallocate(fd, len).map_err(|e| match e.raw_os_error() {
        Some(libc::EFBIG) => ShmError::SizeOverflow { len },
        Some(libc::ENOSPC | libc::ENOMEM) => ShmError::NoSpace {
            requested: len,
            available: match kind {
                Reservation::Memory => memory_available().unwrap_or(0),
                Reservation::Filesystem => {
                    sys::fstatvfs_space(fd).map(|(free, _)| free).unwrap_or(0)
                }
            },
        },
        _ => ShmError::io("fallocate", e),
    })
}

/// `MemAvailable + SwapFree` from `/proc/meminfo`, if readable.
pub(crate) fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kib: u64 = line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib.saturating_mul(1024))
    };
    Some(field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)))
}

/// A file size as a mappable length.
pub(crate) fn to_len(size: u64) -> Result<usize> {
    usize::try_from(size)
        .ok()
        .filter(|&l| isize::try_from(l).is_ok())
        .ok_or(ShmError::SizeOverflow { len: size })
}

/// Opens `file` as a segment of its `fstat` size.
pub(crate) fn from_file(file: File, access: Access, named: NamedPath) -> Result<Segment> {
    let fd = OwnedFd::from(file);
    let st = sys::fstat(fd.as_fd()).map_err(|e| ShmError::io("fstat", e))?;
    if !st.regular {
        return Err(ShmError::NotRegular { name: named.name });
    }
    let len = to_len(st.size)?;
    Segment::map(fd, len, access, Some(named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_read_write() -> Result<()> {
        let mut seg = Segment::anonymous(10_000)?;
        assert_eq!(seg.len(), 10_000);
        assert_eq!(seg.as_ptr() as usize % 4096, 0);
        assert!(seg.as_slice().iter().all(|&b| b == 0));
        seg.as_mut_slice()?[9_999] = 7;
        let other = seg.remap(Access::ReadOnly)?;
        assert_eq!(other.as_slice()[9_999], 7);
        Ok(())
    }

    #[test]
    fn zero_length() -> Result<()> {
        let mut seg = Segment::anonymous(0)?;
        assert!(seg.is_empty());
        assert!(seg.as_slice().is_empty());
        assert!(seg.as_mut_slice()?.is_empty());
        assert_eq!(seg.as_ptr() as usize % 4096, 0);
        assert!(!seg.as_ptr().is_null());
        let frozen = seg.freeze()?;
        assert!(frozen.seals()?.contains(Seals::SIZE | Seals::WRITE));
        let again = Segment::from_fd(frozen.try_clone_fd()?, Access::ReadOnly)?;
        assert!(again.is_empty());
        Ok(())
    }

    #[test]
    fn read_only_refuses_writes() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        let mut ro = seg.remap(Access::ReadOnly)?;
        assert!(matches!(ro.as_mut_slice(), Err(ShmError::ReadOnly)));
        assert!(matches!(ro.as_mut_ptr(), Err(ShmError::ReadOnly)));
        Ok(())
    }

    #[test]
    fn copy_on_write_is_private() -> Result<()> {
        let mut seg = Segment::anonymous(4096)?;
        seg.as_mut_slice()?[0] = 1;
        let mut cow = seg.remap(Access::CopyOnWrite)?;
        cow.as_mut_slice()?[0] = 2;
        assert_eq!(seg.as_slice()[0], 1);
        assert_eq!(cow.as_slice()[0], 2);
        Ok(())
    }

    #[test]
    fn freeze_seals_and_maps_read_only() -> Result<()> {
        let mut seg = Segment::anonymous(8192)?;
        seg.as_mut_slice()?[100] = 42;
        let frozen = seg.freeze()?;
        assert_eq!(frozen.access(), Access::ReadOnly);
        assert_eq!(frozen.as_slice()[100], 42);
        assert!(frozen.seals()?.contains(Seals::SIZE | Seals::WRITE));
        // A writable shared mapping is refused by the kernel now; a private one works.
        assert!(matches!(
            frozen.remap(Access::ReadWrite),
            Err(ShmError::Io { .. })
        ));
        let mut cow = frozen.remap(Access::CopyOnWrite)?;
        cow.as_mut_slice()?[100] = 1;
        assert_eq!(frozen.as_slice()[100], 42);
        Ok(())
    }

    #[test]
    fn from_fd_expect_refuses_short_segments() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        let err = Segment::from_fd_expect(seg.try_clone_fd()?, Access::ReadOnly, 4097);
        assert!(matches!(
            err,
            Err(ShmError::TooSmall {
                expected: 4097,
                actual: 4096
            })
        ));
        Ok(())
    }

    #[test]
    fn from_fd_sealed_requires_a_shrink_seal() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        let err = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadOnly, 1, Seals::NONE);
        assert!(matches!(err, Err(ShmError::NotSealed { missing }) if missing == Seals::SHRINK));
        seg.seal(Seals::SIZE)?;
        let ok = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadOnly, 4096, Seals::NONE)?;
        assert_eq!(ok.len(), 4096);
        let err = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadOnly, 1, Seals::WRITE);
        assert!(matches!(err, Err(ShmError::NotSealed { missing }) if missing == Seals::WRITE));
        let err = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadOnly, 4097, Seals::NONE);
        assert!(matches!(err, Err(ShmError::TooSmall { .. })));
        Ok(())
    }

    #[test]
    fn sockets_are_not_segments() -> Result<()> {
        let (a, _b) =
            std::os::unix::net::UnixStream::pair().map_err(|e| ShmError::io("socketpair", e))?;
        let err = Segment::from_fd(a.into(), Access::ReadOnly);
        assert!(matches!(err, Err(ShmError::NotRegular { .. })));
        Ok(())
    }

    #[test]
    fn seal_then_seal_seal() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        seg.seal(Seals::SIZE | Seals::SEAL)?;
        assert!(matches!(
            seg.seal(Seals::WRITE),
            Err(ShmError::NotSealable { .. })
        ));
        Ok(())
    }

    #[test]
    fn absurd_sizes_are_errors() {
        assert!(matches!(
            Segment::anonymous(usize::MAX),
            Err(ShmError::SizeOverflow { .. })
        ));
        let huge = 1usize << 50;
        assert!(matches!(
            Segment::anonymous(huge),
            Err(ShmError::NoSpace { .. })
        ));
    }
}
