//! Named segments: files in `/dev/shm` (or another [`ShmDir`]), their names, and
//! their management (`list`, `remove`, `clear`, `clear_stale`).
//!
//! A named segment is a plain tmpfs file that any process of the user can
//! open, write or truncate at any time, and that cannot be sealed. So a
//! [`NamedSegment`] is not mapped: its bytes are copied in and out with
//! `pwrite`/`pread` ([`NamedSegment::write_at`], [`NamedSegment::read_at`],
//! [`NamedSegment::to_segment`]), which a concurrent writer can only make
//! return torn data or a typed error, never undefined behaviour or SIGBUS.
//! Zero-copy access goes through [`Segment::from_fd_unchecked`], whose
//! caller promises that nobody writes or truncates the file meanwhile.
//!
//! Unique names are `npshmex-<pid>-<starttime>-<random hex>`, where `starttime`
//! is field 22 of `/proc/<pid>/stat` (clock ticks since boot). A pid alone is not
//! enough to tell whether the owner is alive: after a `kill -9` the pid may be
//! reused by an unrelated process, which would keep a stale segment forever. The
//! pair (pid, start time) identifies a process for the life of the system.
//! Names without a start time (`npshmex-<pid>-<anything>`) are still understood,
//! checked by pid only.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use crate::error::{Result, ShmError};
use crate::procfs::{self, ProcStat};
use crate::segment::{self, Reservation, Segment, MEMORY_CHECK_THRESHOLD};

/// Prefix of every name this crate manages.
pub const NAME_PREFIX: &str = "npshmex-";

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Checks that `name` can be used as a segment name: non-empty, at most
/// [`MAX_NAME_LEN`] bytes, printable, no `/`, no NUL, not `.` or `..`.
///
/// # Errors
/// [`ShmError::InvalidName`] with the reason.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 200 bytes")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name == "." || name == ".." {
        Some("is '.' or '..'")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ShmError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// One managed named segment, as [`list`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its name (starts with [`NAME_PREFIX`]).
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
    /// The pid encoded in the name, if the name has one.
    pub owner_pid: Option<u32>,
    /// The owner's start time (field 22 of `/proc/<pid>/stat`) encoded in the name,
    /// if present.
    pub owner_start_time: Option<u64>,
}

/// A directory that holds named segments: `/dev/shm` by default
/// ([`ShmDir::dev_shm`]); any tmpfs or hugetlbfs mount works too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmDir {
    path: PathBuf,
}

impl Default for ShmDir {
    fn default() -> ShmDir {
        ShmDir::dev_shm()
    }
}

impl ShmDir {
    /// `/dev/shm`, where POSIX shared memory (and numpy's `SharedMemory`) lives.
    pub fn dev_shm() -> ShmDir {
        ShmDir::new("/dev/shm")
    }

    /// Segments under `path`.
    pub fn new(path: impl Into<PathBuf>) -> ShmDir {
        ShmDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the segment `name` of `len` bytes (`O_CREAT | O_EXCL | O_NOFOLLOW`,
    /// mode 0600) and reserves its space. The contents are zero.
    ///
    /// # Errors
    /// [`ShmError::InvalidName`], [`ShmError::Exists`], [`ShmError::NoSpace`] when
    /// the filesystem has less than `len` bytes free, [`ShmError::Io`] otherwise.
    /// Nothing is left behind on error.
    pub fn create(&self, name: &str, len: usize) -> Result<NamedSegment> {
        validate_name(name)?;
        let requested = len as u64;
        if i64::try_from(requested).is_err() {
            return Err(ShmError::SizeOverflow { len: requested });
        }
        let path = self.path.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => ShmError::Exists {
                    name: name.to_owned(),
                },
                _ => ShmError::io("create named segment", e),
            })?;
        let reserved = check_space(&file, requested)
            .and_then(|()| segment::reserve(file.as_fd(), requested, Reservation::Filesystem));
        if let Err(e) = reserved {
            // We created the file, so removing it again cannot hit someone else's.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(NamedSegment {
            file,
            len: requested,
            name: name.to_owned(),
            path,
        })
    }

    /// Creates a segment with a fresh unique name
    /// (`npshmex-<pid>-<starttime>-<random>`), see [`ShmDir::create`].
    ///
    /// # Errors
    /// As [`ShmDir::create`].
    pub fn create_unique(&self, len: usize) -> Result<NamedSegment> {
        loop {
            match self.create(&unique_name()?, len) {
                Err(ShmError::Exists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Opens the existing segment `name` (any valid name, for example a
    /// `data.npy` written by numpy), for reading, or for reading and
    /// writing with [`Writable::Yes`]. `O_NOFOLLOW`: a symlink is refused.
    ///
    /// # Errors
    /// [`ShmError::InvalidName`], [`ShmError::NotFound`], [`ShmError::NotRegular`],
    /// [`ShmError::Io`] otherwise.
    pub fn open(&self, name: &str, writable: Writable) -> Result<NamedSegment> {
        validate_name(name)?;
        let path = self.path.join(name);
        // O_NONBLOCK so a fifo planted under the name cannot block the open.
        let file = OpenOptions::new()
            .read(true)
            .write(writable == Writable::Yes)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK).bits() as i32)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ShmError::NotFound {
                    name: name.to_owned(),
                },
                _ => ShmError::io("open named segment", e),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| ShmError::io("fstat named segment", e))?;
        if !meta.file_type().is_file() {
            return Err(ShmError::NotRegular {
                name: name.to_owned(),
            });
        }
        Ok(NamedSegment {
            file,
            len: meta.len(),
            name: name.to_owned(),
            path,
        })
    }

    /// Takes the segment `name` away from its name, atomically: the file is
    /// renamed to a fresh unique name of this very process (`rename` with
    /// `RENAME_NOREPLACE`; the owner set by [`set_owner`] does not apply)
    /// and opened there with the checks of [`ShmDir::open`]; an entry that
    /// is not a regular file is refused and left under its name. Of several
    /// processes taking the same name at once exactly one gets the file; the
    /// others get [`ShmError::NotFound`], and nobody can put another file in
    /// its place between the open and the removal (which open-then-unlink
    /// allowed).
    /// Read it through [`Taken::segment`], then [`Taken::remove`] it, or let
    /// the [`Taken`] drop (or call [`Taken::put_back`]) to give it its name
    /// back. Killed in between, the process leaves the file under its own
    /// unique name, which [`clear_stale`] reclaims.
    ///
    /// ```
    /// use npshmex_shm::{NamedSegment, Writable};
    /// let seg = NamedSegment::create_unique(4)?;
    /// let name = seg.name().to_owned();
    /// seg.write_at(0, b"data")?;
    /// let taken = NamedSegment::take(&name, Writable::No)?;
    /// assert!(NamedSegment::open(&name, Writable::No).is_err(), "the name is gone");
    /// let mut buf = [0u8; 4];
    /// taken.segment().read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"data");
    /// taken.remove()?;
    /// # Ok::<(), npshmex_shm::ShmError>(())
    /// ```
    ///
    /// # Errors
    /// As [`ShmDir::open`]; the name is left as it was.
    pub fn take(&self, name: &str, writable: Writable) -> Result<Taken> {
        // What `open` refuses (a symlink, a directory) is refused before
        // anything moves.
        drop(self.open(name, writable)?);
        let from = self.path.join(name);
        let private = loop {
            let candidate = private_name()?;
            match rename_noreplace(&from, &self.path.join(&candidate)) {
                Ok(()) => break candidate,
                Err(rustix::io::Errno::EXIST) => continue,
                Err(rustix::io::Errno::NOENT) => {
                    return Err(ShmError::NotFound {
                        name: name.to_owned(),
                    })
                }
                Err(e) => return Err(ShmError::io("rename named segment", e.into())),
            }
        };
        // The name may have changed hands since the look above: whatever
        // regular file was under it is the one taken (the key's value at
        // the moment of the rename); anything else goes back.
        match self.open(&private, writable) {
            Ok(seg) => Ok(Taken {
                seg: Some(seg),
                dir: self.clone(),
                private,
                name: name.to_owned(),
            }),
            Err(e) => {
                let to = self.path.join(&private);
                if rename_noreplace(&to, &from).is_err() {
                    // The name was taken again too: an entry that is not a
                    // segment must not stay under a name of ours (only a
                    // non-empty directory can).
                    let _ =
                        rustix::fs::unlinkat(rustix::fs::CWD, &to, rustix::fs::AtFlags::empty())
                            .or_else(|_| {
                                rustix::fs::unlinkat(
                                    rustix::fs::CWD,
                                    &to,
                                    rustix::fs::AtFlags::REMOVEDIR,
                                )
                            });
                }
                Err(match e {
                    ShmError::NotRegular { .. } => ShmError::NotRegular {
                        name: name.to_owned(),
                    },
                    ShmError::NotFound { .. } => ShmError::NotFound {
                        name: name.to_owned(),
                    },
                    e => e,
                })
            }
        }
    }

    /// Every managed segment (name starting with [`NAME_PREFIX`], regular file)
    /// owned by this user, sorted by name.
    ///
    /// # Errors
    /// [`ShmError::Io`] if the directory cannot be read.
    pub fn list(&self) -> Result<Vec<SegmentInfo>> {
        let uid = rustix::process::getuid().as_raw();
        let mut out = Vec::new();
        for entry in
            fs::read_dir(&self.path).map_err(|e| ShmError::io("read segment directory", e))?
        {
            let entry = entry.map_err(|e| ShmError::io("read segment directory", e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(NAME_PREFIX) {
                continue;
            }
            // Entries can vanish while we look; skip those.
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if !meta.file_type().is_file() || meta.uid() != uid {
                continue;
            }
            let (owner_pid, owner_start_time) = parse_owner(&name);
            out.push(SegmentInfo {
                name,
                len: meta.len(),
                owner_pid,
                owner_start_time,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the segment `name` (any valid name). Processes that have it mapped
    /// keep their mapping.
    ///
    /// # Errors
    /// [`ShmError::InvalidName`], [`ShmError::NotFound`], [`ShmError::Io`].
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        fs::remove_file(self.path.join(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ShmError::NotFound {
                name: name.to_owned(),
            },
            _ => ShmError::io("remove named segment", e),
        })
    }

    /// Removes every segment [`ShmDir::list`] shows; returns how many.
    ///
    /// # Errors
    /// [`ShmError::Io`] if listing or a removal fails.
    pub fn clear(&self) -> Result<usize> {
        self.remove_where(|_| true)
    }

    /// Removes the listed segments whose owner (pid and, when the name has it,
    /// start time) is no longer alive; returns how many. Segments without an owner
    /// in their name are kept.
    ///
    /// # Errors
    /// [`ShmError::Io`] if listing or a removal fails.
    pub fn clear_stale(&self) -> Result<usize> {
        self.remove_where(|info| match info.owner_pid {
            Some(pid) => procfs::is_gone(pid, info.owner_start_time),
            None => false,
        })
    }

    fn remove_where(&self, mut pred: impl FnMut(&SegmentInfo) -> bool) -> Result<usize> {
        let mut removed = 0;
        for info in self.list()? {
            if !pred(&info) {
                continue;
            }
            match fs::remove_file(self.path.join(&info.name)) {
                Ok(()) => removed += 1,
                // Someone else removed it first: fine.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ShmError::io("remove named segment", e)),
            }
        }
        Ok(removed)
    }
}

/// Refuses up front what cannot fit, so the kernel does not first fill the
/// filesystem and then undo it.
fn check_space(file: &fs::File, requested: u64) -> Result<()> {
    if requested == 0 {
        return Ok(());
    }
    let (free, total) =
        segment::free_space(file.as_fd()).map_err(|e| ShmError::io("fstatvfs", e))?;
    // total == 0: a filesystem without a size limit (reports no blocks).
    if total != 0 && requested > free {
        return Err(ShmError::NoSpace {
            requested,
            available: free,
        });
    }
    // tmpfs pages are memory: a tmpfs may be larger than what memory can back (or
    // unlimited), and filling it would wake the OOM killer instead of failing.
    if requested >= MEMORY_CHECK_THRESHOLD && is_tmpfs(file.as_fd()) {
        if let Some(available) = segment::memory_available() {
            if requested > available {
                return Err(ShmError::NoSpace {
                    requested,
                    available,
                });
            }
        }
    }
    Ok(())
}

/// Whether `fd` lives on a tmpfs (`fstatfs` magic `TMPFS_MAGIC`).
fn is_tmpfs(fd: BorrowedFd<'_>) -> bool {
    /// `TMPFS_MAGIC` of `<linux/magic.h>` (rustix exports no filesystem magics).
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::fstatfs(fd).is_ok_and(|st| u64::try_from(st.f_type) == Ok(TMPFS_MAGIC))
}

/// Whether [`ShmDir::open`] opens a segment for writing too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Writable {
    /// Read only.
    No,
    /// Read and write.
    Yes,
}

/// A named segment: a file in `/dev/shm` (or another [`ShmDir`]) that
/// outlives the process until removed, read and written by copying.
///
/// Not mapped on purpose (see the module docs): any process of the user can
/// write or truncate the file at any time, so a `&[u8]` of its pages could
/// change under its borrow. [`NamedSegment::to_segment`] copies the data
/// into an anonymous segment this process owns; zero-copy access is
/// [`Segment::from_fd_unchecked`] with the file's fd.
///
/// ```
/// use npshmex_shm::{NamedSegment, Writable};
/// let key = NamedSegment::create_unique(4096)?;
/// key.write_at(0, b"numpy reads me")?;
/// let again = NamedSegment::open(key.name(), Writable::No)?;
/// let mut buf = [0u8; 5];
/// again.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"numpy");
/// assert_eq!(&again.to_segment()?.as_slice()[6..10], b"read");
/// key.unlink()?;
/// # Ok::<(), npshmex_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct NamedSegment {
    file: File,
    /// Size when created or opened (the file may change since).
    len: u64,
    name: String,
    path: PathBuf,
}

impl NamedSegment {
    /// Creates `/dev/shm/<name>`; see [`ShmDir::create`].
    ///
    /// # Errors
    /// As [`ShmDir::create`].
    pub fn create(name: &str, len: usize) -> Result<NamedSegment> {
        ShmDir::dev_shm().create(name, len)
    }

    /// Creates `/dev/shm/npshmex-<pid>-<starttime>-<random>`; see
    /// [`ShmDir::create_unique`].
    ///
    /// # Errors
    /// As [`ShmDir::create`].
    pub fn create_unique(len: usize) -> Result<NamedSegment> {
        ShmDir::dev_shm().create_unique(len)
    }

    /// Opens the existing `/dev/shm/<name>`; see [`ShmDir::open`].
    ///
    /// # Errors
    /// As [`ShmDir::open`].
    pub fn open(name: &str, writable: Writable) -> Result<NamedSegment> {
        ShmDir::dev_shm().open(name, writable)
    }

    /// Takes `/dev/shm/<name>` away from its name; see [`ShmDir::take`].
    ///
    /// # Errors
    /// As [`ShmDir::take`].
    pub fn take(name: &str, writable: Writable) -> Result<Taken> {
        ShmDir::dev_shm().take(name, writable)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size when it was created or opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it was empty when created or opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its size now (another process may have changed it).
    ///
    /// # Errors
    /// [`ShmError::Io`] if `fstat` fails.
    pub fn current_len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| ShmError::io("fstat named segment", e))
    }

    /// The file's fd (for [`Segment::from_fd_unchecked`], or to pass on).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// A duplicate of the file's fd (close-on-exec).
    ///
    /// # Errors
    /// [`ShmError::Io`] if `dup` fails.
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.file
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ShmError::io("dup", e))
    }

    /// Writes `bytes` at `offset` (`pwrite`), within the size the segment
    /// was created or opened with.
    ///
    /// # Errors
    /// [`ShmError::TooSmall`] past that size, [`ShmError::Io`] (for example a
    /// segment opened read-only).
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.check_range(offset, bytes.len())?;
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| ShmError::io("pwrite named segment", e))
    }

    /// Fills `buf` from `offset` (`pread`).
    ///
    /// # Errors
    /// [`ShmError::TooSmall`] when the file (as opened, or as truncated by
    /// someone since) ends before `offset + buf.len()`; [`ShmError::Io`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => ShmError::TooSmall {
                    expected: offset.saturating_add(buf.len() as u64),
                    actual: self.current_len().unwrap_or(0),
                },
                _ => ShmError::io("pread named segment", e),
            })
    }

    /// Copies the whole file (its size now) into a new anonymous segment
    /// that this process owns exclusively (freeze it to share it read-only).
    ///
    /// # Errors
    /// As [`Segment::anonymous`]; [`ShmError::TooSmall`] when someone
    /// shrinks the file while it is read; [`ShmError::Io`].
    pub fn to_segment(&self) -> Result<Segment> {
        segment::copy_of_file(self.file.as_fd())
    }

    /// Removes the name (the file lives on while open or mapped anywhere).
    ///
    /// # Errors
    /// [`ShmError::NotFound`] when the name no longer exists, [`ShmError::Io`].
    pub fn unlink(&self) -> Result<()> {
        fs::remove_file(&self.path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ShmError::NotFound {
                name: self.name.clone(),
            },
            _ => ShmError::io("unlink named segment", e),
        })
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ShmError::TooSmall {
                expected: offset.saturating_add(len as u64),
                actual: self.len,
            }),
        }
    }
}

/// Managed segments in `/dev/shm`; see [`ShmDir::list`].
///
/// # Errors
/// As [`ShmDir::list`].
pub fn list() -> Result<Vec<SegmentInfo>> {
    ShmDir::dev_shm().list()
}

/// Reads `/dev/shm/<name>` with `read` and, with [`Keep::No`](crate::Keep),
/// removes it, atomically against other processes popping the same name
/// ([`ShmDir::take`]): exactly one of them reads it. When `read` fails the
/// segment keeps its name.
///
/// ```
/// use npshmex_shm::{pop_with, Keep, NamedSegment, ShmError};
/// let seg = NamedSegment::create_unique(2)?;
/// seg.write_at(0, b"hi")?;
/// let name = seg.name().to_owned();
/// let failed = pop_with(&name, Keep::No, |_| Err::<(), _>(ShmError::NotFound { name: "x".into() }));
/// assert!(failed.is_err());
/// let len = pop_with(&name, Keep::No, |s| Ok::<_, ShmError>(s.len()))?;
/// assert_eq!(len, 2);
/// assert!(NamedSegment::open(&name, npshmex_shm::Writable::No).is_err());
/// # Ok::<(), ShmError>(())
/// ```
///
/// # Errors
/// Those of [`ShmDir::open`] / [`ShmDir::take`], of `read`, and of
/// [`Taken::remove`].
pub fn pop_with<T, E: From<ShmError>>(
    name: &str,
    keep: crate::Keep,
    read: impl FnOnce(&NamedSegment) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    match keep {
        crate::Keep::Yes => read(&NamedSegment::open(name, Writable::No)?),
        crate::Keep::No => {
            let taken = NamedSegment::take(name, Writable::No)?;
            // On error the drop of `taken` gives the name back.
            let out = read(taken.segment())?;
            taken.remove()?;
            Ok(out)
        }
    }
}

/// A named segment taken away from its name ([`ShmDir::take`]): it lives
/// under a unique name of this process until [`Taken::remove`] removes it
/// or [`Taken::put_back`] (or the drop) gives it its name back.
#[derive(Debug)]
pub struct Taken {
    /// `None` only once `remove` or `put_back` let it go.
    seg: Option<NamedSegment>,
    dir: ShmDir,
    /// Where it is now.
    private: String,
    /// The name it was taken from.
    name: String,
}

impl Taken {
    /// The segment (read and write it as any [`NamedSegment`]).
    pub fn segment(&self) -> &NamedSegment {
        // Invariant: `seg` is set once `take` returns it.
        self.seg.as_ref().expect("a taken segment is open")
    }

    /// The name it was taken from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the file (the segment stays readable through open handles).
    ///
    /// # Errors
    /// [`ShmError::Io`] if the unique name cannot be removed.
    pub fn remove(mut self) -> Result<()> {
        self.seg = None;
        let private = std::mem::take(&mut self.private);
        match self.dir.remove(&private) {
            // Removed meanwhile (a `clear` of this process's segments):
            // gone either way, which is what was asked.
            Ok(()) | Err(ShmError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Gives the file its name back. When another file has taken the name
    /// meanwhile, that one stays and this one is removed:
    /// [`ShmError::Exists`].
    ///
    /// # Errors
    /// [`ShmError::Exists`] as above, [`ShmError::Io`].
    pub fn put_back(mut self) -> Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> Result<()> {
        self.seg = None;
        let private = std::mem::take(&mut self.private);
        if private.is_empty() {
            return Ok(());
        }
        let renamed = rename_noreplace(
            &self.dir.path.join(&private),
            &self.dir.path.join(&self.name),
        );
        match renamed {
            Ok(()) => Ok(()),
            Err(e) => {
                // No name to go back to: nothing may stay behind under ours.
                let _ = self.dir.remove(&private);
                Err(match e {
                    rustix::io::Errno::EXIST => ShmError::Exists {
                        name: self.name.clone(),
                    },
                    e => ShmError::io("rename named segment back", e.into()),
                })
            }
        }
    }
}

impl Drop for Taken {
    /// Puts the file back under its name ([`Taken::put_back`]), ignoring
    /// errors (the file is removed when that fails).
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// Removes `/dev/shm/<name>`; see [`ShmDir::remove`].
///
/// # Errors
/// As [`ShmDir::remove`].
pub fn remove(name: &str) -> Result<()> {
    ShmDir::dev_shm().remove(name)
}

/// Removes every managed segment of this user in `/dev/shm`; see [`ShmDir::clear`].
///
/// # Errors
/// As [`ShmDir::clear`].
pub fn clear() -> Result<usize> {
    ShmDir::dev_shm().clear()
}

/// Removes the managed segments in `/dev/shm` whose owner is dead; see
/// [`ShmDir::clear_stale`].
///
/// # Errors
/// As [`ShmDir::clear_stale`].
pub fn clear_stale() -> Result<usize> {
    ShmDir::dev_shm().clear_stale()
}

/// The process whose life the unique names made here are tied to, when it
/// is not this one ([`set_owner`]).
static OWNER: std::sync::Mutex<Option<(u32, Option<u64>)>> = std::sync::Mutex::new(None);

/// Makes the unique names of segments this process creates from now on
/// carry `pid` (and its start time) as their owner instead of this
/// process's own: for a process that works for another, such as a pool
/// worker, whose keys must live as long as the program it serves, not as
/// long as the worker (which may be recycled at any time), before
/// [`clear_stale`] reclaims them.
///
/// # Errors
/// [`ShmError::Io`] when `pid` is not a live process (its start time cannot
/// be read).
pub fn set_owner(pid: u32) -> Result<()> {
    let start = ProcStat::read(pid)
        .map_err(|e| ShmError::io("reading the owner's /proc/<pid>/stat", e))?
        .start_time;
    *OWNER.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, Some(start)));
    Ok(())
}

/// The process unique names made here are tied to: [`set_owner`]'s, or
/// this process.
pub fn owner() -> u32 {
    match *OWNER.lock().unwrap_or_else(|p| p.into_inner()) {
        Some((pid, _)) => pid,
        None => std::process::id(),
    }
}

/// Renames `from` to `to` unless `to` exists (`EEXIST` then). Where the
/// filesystem has no `RENAME_NOREPLACE`, a hard link (which fails on an
/// existing name the same way) and an unlink do it.
fn rename_noreplace(from: &Path, to: &Path) -> rustix::io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    match rustix::fs::renameat_with(CWD, from, CWD, to, rustix::fs::RenameFlags::NOREPLACE) {
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            rustix::fs::linkat(CWD, from, CWD, to, AtFlags::empty())?;
            rustix::fs::unlinkat(CWD, from, AtFlags::empty())
        }
        other => other,
    }
}

/// A fresh unique name for this process (or its owner, see [`set_owner`]).
fn unique_name() -> Result<String> {
    let owner = *OWNER.lock().unwrap_or_else(|p| p.into_inner());
    let (pid, start) = owner.unwrap_or_else(|| (std::process::id(), own_start_time()));
    name_for(pid, start)
}

/// A fresh unique name of this very process, whatever [`set_owner`] says:
/// for files that must be reclaimed as soon as this process dies (a taken
/// segment, [`ShmDir::take`]), such as a pool worker that is killed.
fn private_name() -> Result<String> {
    name_for(std::process::id(), own_start_time())
}

/// `npshmex-<pid>-[<start>-]<random>`.
fn name_for(pid: u32, start: Option<u64>) -> Result<String> {
    let mut random = [0u8; 8];
    let mut filled = 0;
    while filled < random.len() {
        match rustix::rand::getrandom(&mut random[filled..], rustix::rand::GetRandomFlags::empty())
        {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(ShmError::io("getrandom", e.into())),
        }
    }
    let random = u64::from_ne_bytes(random);
    Ok(match start {
        Some(start) => format!("{NAME_PREFIX}{pid}-{start}-{random:016x}"),
        None => format!("{NAME_PREFIX}{pid}-{random:016x}"),
    })
}

/// This process's start time, read once per process (a child forked
/// without `exec` reads its own).
fn own_start_time() -> Option<u64> {
    static START: std::sync::Mutex<Option<(u32, Option<u64>)>> = std::sync::Mutex::new(None);
    let pid = std::process::id();
    let mut start = START.lock().unwrap_or_else(|p| p.into_inner());
    match *start {
        Some((of, time)) if of == pid => time,
        _ => {
            let time = ProcStat::read(pid).ok().map(|s| s.start_time);
            *start = Some((pid, time));
            time
        }
    }
}

/// `(pid, start time)` from a name `npshmex-<pid>-[<start>-]<rest>`.
pub(crate) fn parse_owner(name: &str) -> (Option<u32>, Option<u64>) {
    let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
        return (None, None);
    };
    let mut fields = rest.split('-');
    let pid = fields
        .next()
        .and_then(parse_digits::<u32>)
        .filter(|&p| p > 0);
    if pid.is_none() {
        return (None, None);
    }
    // A start time is only present when another field follows it.
    let start = match (fields.next(), fields.next()) {
        (Some(start), Some(_)) => parse_digits::<u64>(start),
        _ => None,
    };
    (pid, start)
}

fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_files_are_named_after_this_process_whatever_the_owner() {
        // A pool worker's keys carry its parent's pid; a file it has taken
        // must be reclaimable as soon as the worker dies.
        let me = (std::process::id(), own_start_time());
        let before = *OWNER.lock().unwrap_or_else(|p| p.into_inner());
        let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32);
        set_owner(parent).unwrap();
        let private = private_name().unwrap();
        let unique = unique_name().unwrap();
        *OWNER.lock().unwrap_or_else(|p| p.into_inner()) = before;
        assert_eq!(parse_owner(&private), (Some(me.0), me.1));
        assert_eq!(parse_owner(&unique).0, Some(parent));
    }

    #[test]
    fn names() {
        assert!(validate_name("npshmex-1-2-ab").is_ok());
        assert!(validate_name("data.npy").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\0b",
            "a\nb",
            &"x".repeat(201),
        ] {
            assert!(
                matches!(validate_name(bad), Err(ShmError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_name(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn owners() {
        assert_eq!(parse_owner("npshmex-12-345-abc"), (Some(12), Some(345)));
        assert_eq!(parse_owner("npshmex-12-abc"), (Some(12), None));
        assert_eq!(parse_owner("npshmex-12-345"), (Some(12), None));
        assert_eq!(parse_owner("npshmex-key"), (None, None));
        assert_eq!(parse_owner("npshmex-0-1-2"), (None, None));
        assert_eq!(parse_owner("other-12-3-4"), (None, None));
    }

    /// The kernel's own ENOSPC from fallocate (not the statvfs precheck) becomes
    /// NoSpace, on a 1 MiB tmpfs when this process may mount one.
    #[test]
    fn fallocate_enospc_is_no_space() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| ShmError::io("tempdir", e))?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "npshmex-test"])
            .arg(tmp.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("note: cannot mount a tmpfs here; skipped");
            return Ok(());
        }
        let path = tmp.path().join("f");
        let result = fs::File::create(&path)
            .map_err(|e| ShmError::io("create", e))
            .and_then(|f| segment::reserve(f.as_fd(), 2 << 20, Reservation::Filesystem));
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(tmp.path())
            .status();
        match result {
            Err(ShmError::NoSpace {
                requested,
                available,
            }) => {
                assert_eq!(requested, 2 << 20);
                assert!(available <= 1 << 20);
                Ok(())
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
    }

    #[test]
    fn own_process_is_alive() -> Result<()> {
        let me = std::process::id();
        let start = own_start_time();
        assert!(start.is_some());
        assert!(!procfs::is_gone(me, start));
        assert!(procfs::is_gone(me, start.map(|s| s + 1)));
        let name = unique_name()?;
        assert_eq!(parse_owner(&name), (Some(me), start));
        Ok(())
    }
}
