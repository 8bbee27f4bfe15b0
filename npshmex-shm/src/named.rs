//! Named segments: files in `/dev/shm` (or another [`ShmDir`]), their names, and
//! their management (`list`, `remove`, `clear`, `clear_stale`).
//!
//! Unique names are `npshmex-<pid>-<starttime>-<random hex>`, where `starttime`
//! is field 22 of `/proc/<pid>/stat` (clock ticks since boot). A pid alone is not
//! enough to tell whether the owner is alive: after a `kill -9` the pid may be
//! reused by an unrelated process, which would keep a stale segment forever. The
//! pair (pid, start time) identifies a process for the life of the system.
//! Names without a start time (`npshmex-<pid>-<anything>`) are still understood,
//! checked by pid only.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::access::Access;
use crate::error::{Result, ShmError};
use crate::segment::{self, NamedPath, Reservation, Segment, MEMORY_CHECK_THRESHOLD};
use crate::sys;

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

    fn named(&self, name: &str) -> NamedPath {
        NamedPath {
            name: name.to_owned(),
            path: self.path.join(name),
        }
    }

    /// Creates the segment `name` of `len` bytes (`O_CREAT | O_EXCL | O_NOFOLLOW`,
    /// mode 0600), reserves its space and maps it read-write. The contents are zero.
    ///
    /// # Errors
    /// [`ShmError::InvalidName`], [`ShmError::Exists`], [`ShmError::NoSpace`] when
    /// the filesystem has less than `len` bytes free, [`ShmError::Io`] otherwise.
    /// Nothing is left behind on error.
    pub fn create(&self, name: &str, len: usize) -> Result<Segment> {
        validate_name(name)?;
        let requested = len as u64;
        if i64::try_from(requested).is_err() {
            return Err(ShmError::SizeOverflow { len: requested });
        }
        let named = self.named(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&named.path)
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
            let _ = fs::remove_file(&named.path);
            return Err(e);
        }
        let fd = file.into();
        Segment::map(fd, len, Access::ReadWrite, Some(named.clone())).inspect_err(|_| {
            let _ = fs::remove_file(&named.path);
        })
    }

    /// Creates a segment with a fresh unique name
    /// (`npshmex-<pid>-<starttime>-<random>`), see [`ShmDir::create`].
    ///
    /// # Errors
    /// As [`ShmDir::create`].
    pub fn create_unique(&self, len: usize) -> Result<Segment> {
        loop {
            match self.create(&unique_name()?, len) {
                Err(ShmError::Exists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Opens the existing segment `name` (any valid name, for example a
    /// `data.npy` written by numpy) with `access`; its size comes from `fstat`.
    /// `O_NOFOLLOW`: a symlink is refused.
    ///
    /// # Trust
    /// A named segment is a plain tmpfs file: it cannot be sealed, so any
    /// process of the same user may `ftruncate` it while it is mapped here,
    /// and a later access past the new end raises SIGBUS (as it would for
    /// numpy's `SharedMemory` or any POSIX shm mapping). Open only names
    /// whose writers you trust; segments that cross a trust boundary should
    /// travel as sealed memfds ([`Segment::from_fd_sealed`]).
    ///
    /// # Errors
    /// [`ShmError::InvalidName`], [`ShmError::NotFound`], [`ShmError::NotRegular`],
    /// [`ShmError::Io`] otherwise.
    pub fn open(&self, name: &str, access: Access) -> Result<Segment> {
        validate_name(name)?;
        let named = self.named(name);
        // O_NONBLOCK so a fifo planted under the name cannot block the open.
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&named.path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ShmError::NotFound {
                    name: name.to_owned(),
                },
                _ => ShmError::io("open named segment", e),
            })?;
        segment::from_file(file, access, named)
    }

    /// Every managed segment (name starting with [`NAME_PREFIX`], regular file)
    /// owned by this user, sorted by name.
    ///
    /// # Errors
    /// [`ShmError::Io`] if the directory cannot be read.
    pub fn list(&self) -> Result<Vec<SegmentInfo>> {
        let uid = sys::getuid();
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
            Some(pid) => owner_is_dead(pid, info.owner_start_time),
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
        sys::fstatvfs_space(file.as_fd()).map_err(|e| ShmError::io("fstatvfs", e))?;
    // total == 0: a filesystem without a size limit (reports no blocks).
    if total != 0 && requested > free {
        return Err(ShmError::NoSpace {
            requested,
            available: free,
        });
    }
    // tmpfs pages are memory: a tmpfs may be larger than what memory can back (or
    // unlimited), and filling it would wake the OOM killer instead of failing.
    if requested >= MEMORY_CHECK_THRESHOLD && sys::is_tmpfs(file.as_fd()).unwrap_or(false) {
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

impl Segment {
    /// Creates the named segment `/dev/shm/<name>`; see [`ShmDir::create`].
    ///
    /// # Errors
    /// As [`ShmDir::create`].
    pub fn create_named(name: &str, len: usize) -> Result<Segment> {
        ShmDir::dev_shm().create(name, len)
    }

    /// Creates `/dev/shm/npshmex-<pid>-<starttime>-<random>`; see
    /// [`ShmDir::create_unique`].
    ///
    /// # Errors
    /// As [`ShmDir::create`].
    pub fn create_named_unique(len: usize) -> Result<Segment> {
        ShmDir::dev_shm().create_unique(len)
    }

    /// Opens the existing `/dev/shm/<name>`; see [`ShmDir::open`] (and its
    /// caveat on truncation by other processes: named segments cannot be
    /// sealed).
    ///
    /// # Errors
    /// As [`ShmDir::open`].
    pub fn open_named(name: &str, access: Access) -> Result<Segment> {
        ShmDir::dev_shm().open(name, access)
    }
}

/// Managed segments in `/dev/shm`; see [`ShmDir::list`].
///
/// # Errors
/// As [`ShmDir::list`].
pub fn list() -> Result<Vec<SegmentInfo>> {
    ShmDir::dev_shm().list()
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

/// A fresh unique name for this process.
fn unique_name() -> Result<String> {
    let mut random = [0u8; 8];
    sys::getrandom(&mut random).map_err(|e| ShmError::io("getrandom", e))?;
    let random = u64::from_ne_bytes(random);
    let pid = std::process::id();
    Ok(match own_start_time() {
        Some(start) => format!("{NAME_PREFIX}{pid}-{start}-{random:016x}"),
        None => format!("{NAME_PREFIX}{pid}-{random:016x}"),
    })
}

/// This process's start time, read once.
fn own_start_time() -> Option<u64> {
    static START: OnceLock<Option<u64>> = OnceLock::new();
    *START.get_or_init(|| process_state(std::process::id()).ok().map(|s| s.start_time))
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

/// What `/proc/<pid>/stat` says.
struct ProcState {
    /// Zombie or dead (state `Z`, `X` or `x`).
    defunct: bool,
    /// Field 22, clock ticks after boot.
    start_time: u64,
}

fn process_state(pid: u32) -> io::Result<ProcState> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat");
    // The command name (field 2) may contain spaces and parentheses; it ends at
    // the last ')'.
    let after = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // Field 3 is the state; field 22 is 19 fields later.
    let state = fields.next().ok_or_else(bad)?;
    let start_time = fields
        .nth(18)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok(ProcState {
        defunct: matches!(state, "Z" | "X" | "x"),
        start_time,
    })
}

/// Whether the owner `(pid, start)` is certainly gone. Unknown states (for example
/// an unreadable `/proc`) count as alive: never remove what might be in use.
fn owner_is_dead(pid: u32, start: Option<u64>) -> bool {
    match process_state(pid) {
        Ok(state) => state.defunct || start.is_some_and(|s| s != state.start_time),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!owner_is_dead(me, start));
        assert!(owner_is_dead(me, start.map(|s| s + 1)));
        let name = unique_name()?;
        assert_eq!(parse_owner(&name), (Some(me), start));
        Ok(())
    }
}
