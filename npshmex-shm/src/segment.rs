//! [`Segment`]: a mapped shared-memory file, and why its views are sound.
//!
//! Every segment knows on what grounds it may hand out `&[u8]` views (its
//! *basis*, see the crate's safety model): it is owned exclusively by this
//! handle, its file is write-sealed, or an `unsafe` constructor's caller
//! vouched for it. The operations that could break the basis check it: an
//! exclusively owned segment never hands out its file descriptor (a
//! writable fd is all `write(2)` or another mapping needs), and a second
//! mapping ([`Segment::remap`]) exists only for write-sealed files.
//!
//! Space is reserved with `fallocate` when a segment is created, so running
//! out of memory is a [`ShmError::NoSpace`] at creation instead of a SIGBUS
//! on first touch (the alternative, sparse files, is what leaves Python's
//! `SharedMemory` crashing on a full `/dev/shm`). A zero-length segment has
//! no mapping at all (`mmap` refuses 0 bytes) and views as an empty slice.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{FallocateFlags, FileType, MemfdFlags};
use rustix::io::Errno;

use crate::access::Access;
use crate::error::{Result, ShmError};
use crate::mapping::{Mapping, Prot, Sharing};
use crate::seals::Seals;

/// Requests at least this large check available memory first: fallocate on a
/// memfd is only limited by memory, and filling it would summon the OOM killer
/// instead of failing.
pub(crate) const MEMORY_CHECK_THRESHOLD: u64 = 64 << 20;

/// Alignment of the (dangling) pointer of an empty segment, same as a real mapping.
#[repr(C, align(4096))]
struct PageAligned([u8; 4096]);

/// Why a segment may hand out safe views (see the crate's safety model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basis {
    /// Only this handle maps or writes the file: created here and its fd
    /// never handed out.
    Exclusive,
    /// Received by a trusted move: only this handle maps or writes the
    /// file, but its sender reuses the pages once the description this
    /// handle holds is closed (the lend protocol of [`crate::cache`]), so
    /// that fd never leaves the handle.
    Loaned,
    /// The file is write-sealed: nobody anywhere can change its pages
    /// (this handle maps it read-only, or privately).
    Sealed,
    /// Made by an `unsafe` constructor whose caller vouched for it.
    Vouched,
}

/// Identity of the file behind a segment (device and inode): equal keys
/// mean the same pages. A mapping keeps its file alive, so the inode number
/// cannot be reused while a segment of it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileKey {
    /// The key of the file behind `fd`.
    ///
    /// # Errors
    /// [`ShmError::Io`] if `fstat` fails.
    pub fn of(fd: BorrowedFd<'_>) -> Result<FileKey> {
        let st = rustix::fs::fstat(fd).map_err(|e| ShmError::io("fstat", e.into()))?;
        Ok(FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// A mapped shared-memory segment.
///
/// Segments are memfds (or, through [`Segment::from_fd_unchecked`], any
/// file): the kernel frees a memfd when the last process closes its fd and
/// unmaps it, so it cannot leak. Named `/dev/shm` files are
/// [`NamedSegment`](crate::NamedSegment)s, which copy instead of mapping.
///
/// # What a segment guarantees
/// `as_slice` gives a `&[u8]` and `as_mut_slice` (with `&mut self`) a
/// `&mut [u8]` that nobody else writes while they live, because every safe
/// way to obtain a `Segment` establishes one of:
/// - **exclusive**: [`Segment::anonymous`] (nobody else has the file) or a
///   trusted move ([`oob`](crate::oob)); such a segment never hands out its
///   fd ([`Segment::fd`] returns [`ShmError::Exclusive`]); give it away with
///   [`Segment::into_fd`] or share it after [`Segment::freeze`];
/// - **write-sealed**: [`Segment::freeze`], [`Segment::from_fd_sealed`],
///   [`Segment::remap`]: the kernel refuses every write to the file, by
///   anyone, for good; writable mappings of it are private (copy on write);
/// - **vouched**: [`Segment::from_fd_unchecked`], whose caller promises it.
///
/// Receivers also need the size sealed against shrinking (`F_SEAL_SHRINK`),
/// or a peer's `ftruncate` would turn a read into SIGBUS; every safe
/// constructor of a received segment requires that seal.
///
/// `Segment` is `Send + Sync`. Dropping unmaps and closes; it never panics.
///
/// ```compile_fail,E0133
/// // Two writable handles of one exclusive segment cannot be made safely:
/// // `from_fd_unchecked` is `unsafe`, and an exclusive segment has no fd.
/// use npshmex_shm::{Access, Segment};
/// let a = Segment::anonymous(4096)?;
/// let b = Segment::from_fd_unchecked(a.try_clone_fd()?, Access::ReadWrite, 0)?;
/// # Ok::<(), npshmex_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct Segment {
    map: Option<Mapping>,
    fd: OwnedFd,
    len: usize,
    access: Access,
    basis: Basis,
}

impl Segment {
    /// Creates an anonymous segment of `len` bytes (`memfd_create` with
    /// close-on-exec and sealing allowed), reserves its memory and maps it
    /// read-write. The contents are zero; the segment is owned exclusively
    /// by the returned handle.
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
        let fd =
            rustix::fs::memfd_create(c"npshmex", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(|e| ShmError::io("memfd_create", e.into()))?;
        reserve(fd.as_fd(), requested, Reservation::Memory)?;
        Segment::map(fd, len, Access::ReadWrite, Basis::Exclusive)
    }

    /// Maps a segment received from another process, which need not be
    /// trusted: the file must be sealed against shrinking and writing
    /// ([`Seals::SHRINK`] and [`Seals::WRITE`]), so that its pages can
    /// neither vanish (SIGBUS) nor change under this mapping. `access` is
    /// [`Access::ReadOnly`] or [`Access::CopyOnWrite`] (a private mapping
    /// whose writes stay in this process). Its size comes from `fstat` and
    /// must be at least `min_len`.
    ///
    /// A sparse file (a peer sized it and wrote little or nothing) has its
    /// holes allocated here, before it is mapped, when they fit in the
    /// memory available ([`ShmError::NoSpace`] when they do not): reading a
    /// hole of a shared-memory file allocates a page all the same, charged
    /// to the reader, so a peer that paid for a few bytes could otherwise
    /// make this process back any size it declared.
    ///
    /// ```
    /// use npshmex_shm::{Access, Segment, ShmError};
    /// let mut seg = Segment::anonymous(4096)?;
    /// seg.as_mut_slice()?[0] = 7;
    /// let seg = seg.freeze()?; // sealed: its fd may be shared now
    /// let copy = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::CopyOnWrite, 4096)?;
    /// assert_eq!(copy.as_slice()[0], 7);
    /// let writable = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadWrite, 0);
    /// assert!(matches!(writable, Err(ShmError::NotExclusive { .. })));
    /// # Ok::<(), ShmError>(())
    /// ```
    ///
    /// # Errors
    /// [`ShmError::NotSealed`] when a seal is missing, [`ShmError::NotExclusive`]
    /// for [`Access::ReadWrite`] (a shared writable mapping of a file others
    /// hold cannot be safe: see [`Segment::from_fd_unchecked`]),
    /// [`ShmError::TooSmall`], [`ShmError::NotRegular`], [`ShmError::NoSpace`],
    /// [`ShmError::Io`].
    pub fn from_fd_sealed(fd: OwnedFd, access: Access, min_len: u64) -> Result<Segment> {
        if access == Access::ReadWrite {
            return Err(ShmError::NotExclusive {
                reason: "a shared writable mapping of a received file",
            });
        }
        require_seals(fd.as_fd(), Seals::SHRINK | Seals::WRITE)?;
        let (len, allocated) = checked_stat(fd.as_fd(), min_len)?;
        back_holes(fd.as_fd(), len as u64, allocated)?;
        Segment::map(fd, len, access, Basis::Sealed)
    }

    /// Maps any file (a memfd from a peer, a named segment, a file numpy
    /// wrote) without the checks that make the other constructors safe.
    /// Its size comes from `fstat` and must be at least `min_len`.
    ///
    /// # Safety
    /// While the returned segment (or a view of it) lives:
    /// - no other process, mapping or fd writes the file's pages, except
    ///   through this segment's own `as_mut_slice` (for a shared mapping);
    /// - nobody shrinks the file below its current size (a read past the
    ///   new end raises SIGBUS); a [`Seals::SHRINK`] seal guarantees that.
    ///
    /// Prefer [`Segment::from_fd_sealed`], or copying the data into an
    /// [`anonymous`](Segment::anonymous) segment.
    ///
    /// # Errors
    /// [`ShmError::TooSmall`], [`ShmError::NotRegular`] (sockets, pipes),
    /// [`ShmError::SizeOverflow`], [`ShmError::Io`] (for example write
    /// access to a read-only fd).
    pub unsafe fn from_fd_unchecked(fd: OwnedFd, access: Access, min_len: u64) -> Result<Segment> {
        let len = checked_len(fd.as_fd(), min_len)?;
        Segment::map(fd, len, access, Basis::Vouched)
    }

    /// A segment received by a move the caller trusts (see
    /// [`oob`](crate::oob)): mapped with `access`, owned exclusively, its
    /// fd never handed out (see [`Segment::into_fd`]).
    /// The caller (this crate's receive path) has checked the size seal.
    pub(crate) fn from_moved_fd(fd: OwnedFd, access: Access) -> Result<Segment> {
        let len = checked_len(fd.as_fd(), 0)?;
        Segment::map(fd, len, access, Basis::Loaned)
    }

    /// Maps `len` bytes of `fd` with `access`.
    fn map(fd: OwnedFd, len: usize, access: Access, basis: Basis) -> Result<Segment> {
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
            basis,
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

    /// Whether this handle owns the segment exclusively (created here or
    /// received by a trusted move): its fd is not handed out.
    pub fn is_exclusive(&self) -> bool {
        matches!(self.basis, Basis::Exclusive | Basis::Loaned)
    }

    /// Whether an `unsafe` constructor made it (such segments, maybe named
    /// files, are never cached).
    pub(crate) fn is_vouched(&self) -> bool {
        self.basis == Basis::Vouched
    }

    /// The bytes of the segment.
    pub fn as_slice(&self) -> &[u8] {
        match &self.map {
            Some(m) => m.as_slice(),
            None => &[],
        }
    }

    /// The bytes of the segment, writable (for [`Access::CopyOnWrite`] the
    /// writes stay in this process).
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

    /// The segment's fd, to send it or give it to other APIs.
    ///
    /// # Errors
    /// [`ShmError::Exclusive`] for a segment this handle owns exclusively:
    /// with its fd, `write(2)` or a second mapping could change the pages
    /// under this handle's views. Send such a segment with
    /// [`Segment::into_fd`], or share it after [`Segment::freeze`].
    pub fn fd(&self) -> Result<BorrowedFd<'_>> {
        match self.basis {
            Basis::Exclusive | Basis::Loaned => Err(ShmError::Exclusive),
            Basis::Sealed | Basis::Vouched => Ok(self.fd.as_fd()),
        }
    }

    /// A duplicate of the fd (close-on-exec); see [`Segment::fd`].
    ///
    /// # Errors
    /// [`ShmError::Exclusive`] as [`Segment::fd`]; [`ShmError::Io`] if `dup`
    /// fails (fd limit).
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd()?
            .try_clone_to_owned()
            .map_err(|e| ShmError::io("dup", e))
    }

    /// The fd, for this crate's own protocols (the cache's lend protocol,
    /// sealing): never handed to code outside the crate.
    pub(crate) fn raw_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Unmaps the segment and returns its fd: the end of this handle, so
    /// nothing is left to alias (a move).
    ///
    /// A segment received by a trusted move is on loan: its sender writes
    /// the pages again once the description this handle holds is closed,
    /// which the holder of that fd could bring about early (`flock`
    /// `LOCK_UN`) while still able to write. Such a segment gives the fd of
    /// a copy in a new memfd instead.
    ///
    /// # Errors
    /// For a segment on loan, those of [`Segment::anonymous`] (the copy).
    pub fn into_fd(self) -> Result<OwnedFd> {
        if self.basis == Basis::Loaned {
            return self.sized_copy()?.into_fd();
        }
        let Segment { map, fd, .. } = self;
        drop(map);
        Ok(fd)
    }

    /// A copy of the whole segment in a new memfd of this process, sealed
    /// against resizing ([`Seals::SIZE`]) and owned exclusively.
    ///
    /// # Errors
    /// As [`Segment::anonymous`] and [`Segment::seal`].
    pub(crate) fn sized_copy(&self) -> Result<Segment> {
        let mut copy = Segment::anonymous(self.len)?;
        copy.as_mut_slice()?.copy_from_slice(self.as_slice());
        copy.seal(Seals::SIZE)?;
        Ok(copy)
    }

    /// Unmaps the segment, seals it against resizing and writing
    /// ([`Seals::SIZE`] `|` [`Seals::WRITE`]) and returns its fd: for a
    /// payload written once and then only read, by anyone.
    ///
    /// # Errors
    /// As [`Segment::seal`]; the segment is gone either way.
    pub fn into_sealed_fd(self) -> Result<OwnedFd> {
        let exclusive = self.is_exclusive();
        let fd = self.into_fd()?;
        if exclusive {
            seal_fresh(fd.as_fd())?;
        } else {
            add_seals(fd.as_fd(), Seals::SIZE | Seals::WRITE)?;
        }
        Ok(fd)
    }

    /// The identity of the file (device and inode).
    ///
    /// # Errors
    /// [`ShmError::Io`] if `fstat` fails.
    pub fn file_key(&self) -> Result<FileKey> {
        FileKey::of(self.fd.as_fd())
    }

    /// Adds seals to a memfd segment. Seal the size ([`Seals::SIZE`]) before
    /// the segment leaves the process so no peer can shrink it under another's
    /// mapping.
    ///
    /// # Errors
    /// [`ShmError::NotSealable`] for fds that do not support sealing and
    /// memfds sealed with [`Seals::SEAL`]; [`ShmError::Io`] otherwise (for
    /// example `EBUSY` when adding [`Seals::WRITE`] while a writable shared
    /// mapping exists — this handle's own included: see [`Segment::freeze`]).
    pub fn seal(&self, seals: Seals) -> Result<()> {
        add_seals(self.fd.as_fd(), seals)
    }

    /// The seals of the file ([`Seals::NONE`] for files that do not support
    /// sealing).
    ///
    /// # Errors
    /// [`ShmError::Io`] if `fcntl` fails for another reason.
    pub fn seals(&self) -> Result<Seals> {
        get_seals(self.fd.as_fd())
    }

    /// Makes the segment immutable for everyone: unmaps it, seals size and
    /// writes ([`Seals::SIZE`] `|` [`Seals::WRITE`]) and maps it again
    /// read-only. A frozen segment may share its fd freely.
    ///
    /// # Errors
    /// As [`Segment::try_freeze`], without the segment.
    pub fn freeze(self) -> Result<Segment> {
        self.try_freeze().map_err(|(e, _)| e)
    }

    /// [`Segment::freeze`] that gives the segment back, mapped as before,
    /// when it cannot be frozen (`None` only if the kernel then refuses the
    /// mapping it granted a moment before).
    ///
    /// # Errors
    /// [`ShmError::NotSealable`] for files that cannot be sealed; [`ShmError::Io`]
    /// with `EBUSY` when another writable shared mapping of the file exists
    /// (in a peer, or kept by a segment cache).
    pub fn try_freeze(self) -> std::result::Result<Segment, (ShmError, Option<Segment>)> {
        let Segment {
            map,
            fd,
            len,
            access,
            basis,
        } = self;
        drop(map);
        if let Err(e) = add_seals(fd.as_fd(), Seals::SIZE | Seals::WRITE) {
            // Mapped again as before: the pages of a memfd outlive mappings.
            return Err((e, Segment::map(fd, len, access, basis).ok()));
        }
        Segment::map(fd, len, Access::ReadOnly, Basis::Sealed).map_err(|e| (e, None))
    }

    /// [`Segment::freeze`] of a segment nobody else ever mapped (a fresh
    /// copy), where `EBUSY` can only be a passing fork: see [`seal_fresh`].
    pub(crate) fn freeze_fresh(self) -> Result<Segment> {
        let Segment { map, fd, len, .. } = self;
        drop(map);
        seal_fresh(fd.as_fd())?;
        Segment::map(fd, len, Access::ReadOnly, Basis::Sealed)
    }

    /// A new mapping of the same write-sealed file, [`Access::ReadOnly`] or
    /// [`Access::CopyOnWrite`].
    ///
    /// # Errors
    /// [`ShmError::NotSealed`] unless the file is write-sealed (a second
    /// mapping of a writable file would alias this one's views),
    /// [`ShmError::NotExclusive`] for [`Access::ReadWrite`], [`ShmError::Io`]
    /// if `dup` or `mmap` fail.
    pub fn remap(&self, access: Access) -> Result<Segment> {
        if access == Access::ReadWrite {
            return Err(ShmError::NotExclusive {
                reason: "a second writable mapping of one file",
            });
        }
        require_seals(self.fd.as_fd(), Seals::SHRINK | Seals::WRITE)?;
        let fd = self.fd.try_clone().map_err(|e| ShmError::io("dup", e))?;
        Segment::map(fd, self.len, access, Basis::Sealed)
    }

    /// Asks the kernel to back the mapping with huge pages (`MADV_HUGEPAGE`).
    /// Best effort: errors are ignored (shmem huge pages depend on
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled`).
    pub fn advise_hugepage(&self) {
        if let Some(m) = &self.map {
            m.advise_hugepage();
        }
    }
}

/// Seals the size and writes of a file nobody but this process ever mapped
/// writable (an exclusive segment just unmapped). `EBUSY` can then only be
/// a `fork` of this process (by code that does not fork inside
/// [`without_mappings_in_flight`](crate::without_mappings_in_flight)) that
/// copied the mapping and has not yet called `exec`: it passes within
/// moments, so the seal is retried for a bounded time.
pub(crate) fn seal_fresh(fd: BorrowedFd<'_>) -> Result<()> {
    const PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);
    let start = std::time::Instant::now();
    loop {
        match add_seals(fd, Seals::SIZE | Seals::WRITE) {
            Err(ShmError::Io { source, .. })
                if source.raw_os_error() == Some(Errno::BUSY.raw_os_error())
                    && start.elapsed() < PATIENCE =>
            {
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

/// Adds `seals` to the file of `fd`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: Seals) -> Result<()> {
    rustix::fs::fcntl_add_seals(fd, seals.to_flags()).map_err(|e| match e {
        Errno::INVAL => ShmError::NotSealable {
            reason: "the file does not support sealing",
        },
        Errno::PERM => ShmError::NotSealable {
            reason: "the seals are sealed (F_SEAL_SEAL), sealing was not allowed at creation, \
                     or the fd is not writable",
        },
        e => ShmError::io("fcntl(F_ADD_SEALS)", e.into()),
    })
}

/// The seals of the file of `fd` ([`Seals::NONE`] where sealing is not supported).
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> Result<Seals> {
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(flags) => Ok(Seals::from_flags(flags)),
        Err(Errno::INVAL) => Ok(Seals::NONE),
        Err(e) => Err(ShmError::io("fcntl(F_GET_SEALS)", e.into())),
    }
}

/// Refuses an fd whose file lacks one of `required`.
pub(crate) fn require_seals(fd: BorrowedFd<'_>, required: Seals) -> Result<()> {
    let have = get_seals(fd)?;
    if have.contains(required) {
        Ok(())
    } else {
        Err(ShmError::NotSealed {
            missing: Seals::from_bits(required.bits() & !have.bits()),
        })
    }
}

/// The `fstat` size of a regular file, as a mappable length of at least `min_len`.
fn checked_len(fd: BorrowedFd<'_>, min_len: u64) -> Result<usize> {
    checked_stat(fd, min_len).map(|(len, _)| len)
}

/// As [`checked_len`], with the bytes the file has allocated (`st_blocks`).
fn checked_stat(fd: BorrowedFd<'_>, min_len: u64) -> Result<(usize, u64)> {
    let st = rustix::fs::fstat(fd).map_err(|e| ShmError::io("fstat", e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(ShmError::NotRegular {
            name: "received fd".into(),
        });
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size < min_len {
        return Err(ShmError::TooSmall {
            expected: min_len,
            actual: size,
        });
    }
    let allocated = u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512);
    Ok((to_len(size)?, allocated))
}

/// Allocates the holes of a received file of `len` bytes that has
/// `allocated` bytes backed, or refuses it (`NoSpace`) when the missing part
/// exceeds the memory available. `fallocate` changes no byte, so the write
/// seal allows it. Where it cannot be done (an fd opened read-only, a
/// filesystem without it), the file is taken as it is: the bound on the
/// missing part was checked already.
fn back_holes(fd: BorrowedFd<'_>, len: u64, allocated: u64) -> Result<()> {
    if allocated >= len {
        return Ok(());
    }
    let missing = len - allocated;
    let available = memory_available();
    if available.is_some_and(|a| missing > a) {
        return Err(ShmError::NoSpace {
            requested: missing,
            available: available.unwrap_or(0),
        });
    }
    match allocate(fd, len) {
        Err(Errno::NOSPC | Errno::NOMEM) => Err(ShmError::NoSpace {
            requested: missing,
            available: memory_available().unwrap_or(0),
        }),
        _ => Ok(()),
    }
}

/// A copy of the whole file of `fd` (its `fstat` size) in a new anonymous
/// segment that this process owns exclusively. The bytes are read with
/// `pread`, never mapped: whatever another process does to the file
/// meanwhile (write, shrink) can change what is read, or make the read come
/// up short ([`ShmError::TooSmall`]), but never this process's memory.
pub(crate) fn copy_of_file(fd: BorrowedFd<'_>) -> Result<Segment> {
    let len = checked_len(fd, 0)?;
    let mut seg = Segment::anonymous(len)?;
    let buf = seg.as_mut_slice()?;
    let mut done = 0;
    while done < len {
        match rustix::io::pread(fd, &mut buf[done..], done as u64) {
            Ok(0) => {
                return Err(ShmError::TooSmall {
                    expected: len as u64,
                    actual: done as u64,
                })
            }
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(ShmError::io("pread", e.into())),
        }
    }
    Ok(seg)
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
    rustix::fs::ftruncate(fd, len).map_err(|e| match e {
        Errno::FBIG | Errno::INVAL => ShmError::SizeOverflow { len },
        e => ShmError::io("ftruncate", e.into()),
    })?;
    allocate(fd, len).map_err(|e| match e {
        Errno::FBIG => ShmError::SizeOverflow { len },
        Errno::NOSPC | Errno::NOMEM => ShmError::NoSpace {
            requested: len,
            available: match kind {
                Reservation::Memory => memory_available().unwrap_or(0),
                Reservation::Filesystem => free_space(fd).map(|(free, _)| free).unwrap_or(0),
            },
        },
        e => ShmError::io("fallocate", e.into()),
    })
}

/// Allocates the backing of the first `len` bytes of `fd` (`fallocate`,
/// retried on `EINTR`).
fn allocate(fd: BorrowedFd<'_>, len: u64) -> rustix::io::Result<()> {
    loop {
        match rustix::fs::fallocate(fd, FallocateFlags::empty(), 0, len) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Free space (bytes available to unprivileged users) and total size of the
/// filesystem holding `fd`.
pub(crate) fn free_space(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstatvfs(fd)?;
    Ok((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

/// `MemAvailable + SwapFree` from `/proc/meminfo`, if readable.
pub(crate) fn memory_available() -> Option<u64> {
    crate::procfs::MemInfo::read().map(|m| m.allocatable())
}

/// A file size as a mappable length.
pub(crate) fn to_len(size: u64) -> Result<usize> {
    usize::try_from(size)
        .ok()
        .filter(|&l| isize::try_from(l).is_ok())
        .ok_or(ShmError::SizeOverflow { len: size })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed memfd of `len` bytes of which only `head` was written (the
    /// rest a hole, as a peer that never wrote it leaves it), and a second
    /// fd of it.
    fn sparse_sealed(len: u64, head: &[u8]) -> Result<(OwnedFd, OwnedFd)> {
        let fd = rustix::fs::memfd_create(
            "npshmex-test-sparse",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| ShmError::io("memfd_create", e.into()))?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| ShmError::io("ftruncate", e.into()))?;
        let mut done = 0;
        while done < head.len() {
            done += rustix::io::pwrite(&fd, &head[done..], done as u64)
                .map_err(|e| ShmError::io("pwrite", e.into()))?;
        }
        add_seals(fd.as_fd(), Seals::SIZE | Seals::WRITE)?;
        let other = fd.try_clone().map_err(|e| ShmError::io("dup", e))?;
        Ok((fd, other))
    }

    fn allocated(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).map_or(0, |st| st.st_blocks as u64 * 512)
    }

    #[test]
    fn a_sparse_received_file_is_backed_before_it_is_mapped() -> Result<()> {
        let len = 16 << 20;
        let (fd, peer) = sparse_sealed(len, &[7; 4096])?;
        assert!(allocated(&peer) < len);
        let seg = Segment::from_fd_sealed(fd, Access::ReadOnly, 0)?;
        // Allocated up front, where the bound was checked: reading the
        // holes costs nothing more from here on.
        assert!(allocated(&peer) >= len);
        let bytes = seg.as_slice();
        assert_eq!((bytes[0], bytes[4095], bytes[4096]), (7, 7, 0));
        assert!(bytes[len as usize - 8..].iter().all(|&b| b == 0));
        Ok(())
    }

    #[test]
    fn a_sparse_received_file_larger_than_memory_is_refused() -> Result<()> {
        // 64 TiB declared, 8 bytes written: more than any machine running
        // this has to back it with.
        let (fd, peer) = sparse_sealed(64 << 40, &[1; 8])?;
        for access in [Access::ReadOnly, Access::CopyOnWrite] {
            let fd = fd.try_clone().map_err(|e| ShmError::io("dup", e))?;
            let r = Segment::from_fd_sealed(fd, access, 0);
            assert!(matches!(r, Err(ShmError::NoSpace { .. })), "{r:?}");
        }
        assert!(allocated(&peer) < 1 << 20, "nothing was allocated");
        Ok(())
    }

    #[test]
    fn anonymous_read_write() -> Result<()> {
        let mut seg = Segment::anonymous(10_000)?;
        assert_eq!(seg.len(), 10_000);
        assert!(seg.is_exclusive());
        assert_eq!(seg.as_ptr() as usize % 4096, 0);
        assert!(seg.as_slice().iter().all(|&b| b == 0));
        seg.as_mut_slice()?[9_999] = 7;
        let frozen = seg.freeze()?;
        let other = frozen.remap(Access::ReadOnly)?;
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
        let again = Segment::from_fd_sealed(frozen.try_clone_fd()?, Access::ReadOnly, 0)?;
        assert!(again.is_empty());
        Ok(())
    }

    #[test]
    fn exclusive_segments_keep_their_fd() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        assert!(matches!(seg.fd(), Err(ShmError::Exclusive)));
        assert!(matches!(seg.try_clone_fd(), Err(ShmError::Exclusive)));
        // No second mapping of a file that is not write-sealed.
        assert!(matches!(
            seg.remap(Access::ReadOnly),
            Err(ShmError::NotSealed { .. })
        ));
        assert!(matches!(
            seg.remap(Access::CopyOnWrite),
            Err(ShmError::NotSealed { .. })
        ));
        assert!(matches!(
            seg.remap(Access::ReadWrite),
            Err(ShmError::NotExclusive { .. })
        ));
        let fd = seg.into_fd()?;
        assert!(FileKey::of(fd.as_fd()).is_ok());
        Ok(())
    }

    #[test]
    fn read_only_refuses_writes() -> Result<()> {
        let seg = Segment::anonymous(4096)?.freeze()?;
        let mut ro = seg.remap(Access::ReadOnly)?;
        assert!(matches!(ro.as_mut_slice(), Err(ShmError::ReadOnly)));
        assert!(matches!(ro.as_mut_ptr(), Err(ShmError::ReadOnly)));
        Ok(())
    }

    #[test]
    fn copy_on_write_is_private() -> Result<()> {
        let mut seg = Segment::anonymous(4096)?;
        seg.as_mut_slice()?[0] = 1;
        let seg = seg.freeze()?;
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
        assert!(!frozen.is_exclusive());
        assert_eq!(frozen.as_slice()[100], 42);
        assert!(frozen.seals()?.contains(Seals::SIZE | Seals::WRITE));
        let mut cow = frozen.remap(Access::CopyOnWrite)?;
        cow.as_mut_slice()?[100] = 1;
        assert_eq!(frozen.as_slice()[100], 42);
        Ok(())
    }

    #[test]
    fn a_failed_freeze_gives_the_segment_back() -> Result<()> {
        let mut seg = Segment::anonymous(4096)?;
        seg.as_mut_slice()?[5] = 5;
        seg.seal(Seals::SEAL)?;
        let (err, back) = match seg.try_freeze() {
            Ok(_) => panic!("a seal-sealed memfd cannot be frozen"),
            Err(pair) => pair,
        };
        let mut back = back.ok_or(ShmError::ReadOnly)?;
        assert!(matches!(err, ShmError::NotSealable { .. }));
        assert_eq!(back.as_slice()[5], 5);
        back.as_mut_slice()?[5] = 6;
        assert!(back.is_exclusive());
        Ok(())
    }

    #[test]
    fn from_fd_sealed_requires_size_and_write_seals() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        seg.seal(Seals::SIZE)?;
        let fd = seg.into_fd()?;
        let dup = || fd.try_clone().map_err(|e| ShmError::io("dup", e));
        let err = Segment::from_fd_sealed(dup()?, Access::ReadOnly, 1);
        assert!(matches!(err, Err(ShmError::NotSealed { missing }) if missing == Seals::WRITE));
        add_seals(fd.as_fd(), Seals::WRITE)?;
        let ok = Segment::from_fd_sealed(dup()?, Access::ReadOnly, 4096)?;
        assert_eq!(ok.len(), 4096);
        let err = Segment::from_fd_sealed(dup()?, Access::ReadOnly, 4097);
        assert!(matches!(err, Err(ShmError::TooSmall { .. })));
        let err = Segment::from_fd_sealed(dup()?, Access::ReadWrite, 0);
        assert!(matches!(err, Err(ShmError::NotExclusive { .. })));
        Ok(())
    }

    #[test]
    fn into_sealed_fd_is_immutable() -> Result<()> {
        let mut seg = Segment::anonymous(100)?;
        seg.as_mut_slice()?[..3].copy_from_slice(b"abc");
        let fd = seg.into_sealed_fd()?;
        let ro = Segment::from_fd_sealed(fd, Access::ReadOnly, 100)?;
        assert_eq!(&ro.as_slice()[..3], b"abc");
        Ok(())
    }

    #[test]
    fn sockets_are_not_segments() -> Result<()> {
        let (a, _b) =
            std::os::unix::net::UnixStream::pair().map_err(|e| ShmError::io("socketpair", e))?;
        let err = Segment::from_fd_sealed(a.into(), Access::ReadOnly, 0);
        assert!(matches!(err, Err(ShmError::NotSealed { .. })));
        let (a, _b) =
            std::os::unix::net::UnixStream::pair().map_err(|e| ShmError::io("socketpair", e))?;
        assert!(matches!(
            checked_len(a.as_fd(), 0),
            Err(ShmError::NotRegular { .. })
        ));
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
