//! Every system call of the crate, each in its own small `unsafe` block.
//!
//! Raw `libc` rather than `nix`: the socket path carries tiny frames at 100k+/s and
//! must not allocate (nix's `sendmsg`/`recvmsg` build vectors of control messages),
//! and one binding style for all calls keeps this module easy to audit. Everything
//! else in the crate is safe code on top of these wrappers.

use std::collections::VecDeque;
use std::ffi::CStr;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

/// Most fds the kernel accepts in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MSG: usize = 253;

/// Most iovecs one `sendmsg` accepts (`IOV_MAX` on Linux).
pub(crate) const IOV_MAX: usize = 1024;

/// `-1` → the current OS error.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `-1` → the current OS error, for calls returning `ssize_t`.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Retries `f` while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A length as `off_t`, `EFBIG` if it does not fit.
fn to_off(len: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`.
pub(crate) fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; the
    // flags are valid for memfd_create.
    let fd = cvt(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ftruncate(fd, len)`.
pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = to_off(len)?;
    retry(|| {
        // SAFETY: `fd` is a valid open fd for the duration of the borrow.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
    })
}

/// `fallocate(fd, 0, 0, len)`: allocates the backing of the first `len` bytes.
pub(crate) fn fallocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = to_off(len)?;
    retry(|| {
        // SAFETY: `fd` is a valid open fd for the duration of the borrow; mode 0
        // only allocates blocks.
        cvt(unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) }).map(drop)
    })
}

/// What `fstat` says about a file, as far as this crate cares.
pub(crate) struct FileStat {
    /// Size in bytes.
    pub(crate) size: u64,
    /// Whether it is a regular file.
    pub(crate) regular: bool,
}

/// `fstat(fd)`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is valid for the borrow and `st` points to writable memory
    // large enough for a `struct stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(FileStat {
        size: u64::try_from(st.st_size).unwrap_or(0),
        regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
    })
}

/// Free space (bytes available to unprivileged users) and total size of the
/// filesystem holding `fd`.
pub(crate) fn fstatvfs_space(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `fd` is valid for the borrow and `st` points to writable memory
    // large enough for a `struct statvfs`.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    Ok((
        st.f_bavail.saturating_mul(frsize),
        st.f_blocks.saturating_mul(frsize),
    ))
}

/// Whether `fd` lives on a tmpfs (`fstatfs` magic `TMPFS_MAGIC`).
pub(crate) fn is_tmpfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `fd` is valid for the borrow and `st` points to writable memory
    // large enough for a `struct statfs`.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok(st.f_type == libc::TMPFS_MAGIC)
}

/// `fcntl(fd, F_ADD_SEALS, seals)`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    let seals =
        libc::c_int::try_from(seals).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    retry(|| {
        // SAFETY: `fd` is valid for the borrow; F_ADD_SEALS takes an int argument.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
    })
}

/// `fcntl(fd, F_GET_SEALS)`.
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: `fd` is valid for the borrow; F_GET_SEALS takes no argument.
    let seals = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })?;
    Ok(seals as u32)
}

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

/// An owned `mmap` region of non-zero length; unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    prot: Prot,
}

// SAFETY: a Mapping is an owned region of memory like a Box<[u8]>; nothing about it
// is tied to the thread that created it. Moving it to another thread is sound.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only exposes the pointer and length; every read or write
// through them is done by `Segment`, which hands out `&[u8]` for `&self` and
// `&mut [u8]` only for `&mut self`, so Rust aliasing rules hold within the process.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`.
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        prot: Prot,
        sharing: Sharing,
    ) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let prot_bits = match prot {
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        let flags = match sharing {
            Sharing::Shared => libc::MAP_SHARED,
            Sharing::Private => libc::MAP_PRIVATE,
        };
        // SAFETY: a fresh mapping at an address the kernel chooses (NULL hint, no
        // MAP_FIXED) cannot alias any existing Rust object; `fd` is valid for the
        // borrow and `len` is non-zero.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot_bits,
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mapping { ptr, len, prot })
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapped bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, alive as long as `self`;
        // within this process writes need `&mut self`, so no `&mut` alias exists
        // while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapped bytes, writable; `None` for a read-only mapping.
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if self.prot != Prot::ReadWrite {
            return None;
        }
        // SAFETY: the mapping is `len` writable bytes (PROT_WRITE), alive as long
        // as `self`, and `&mut self` guarantees no other borrow in this process.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
    }

    /// `madvise(MADV_HUGEPAGE)`, ignoring errors: huge pages are an optimisation
    /// the kernel may refuse (for shmem they depend on `shmem_enabled`).
    pub(crate) fn advise_hugepage(&self) {
        // SAFETY: the range is exactly our own mapping; MADV_HUGEPAGE changes no
        // contents, only how the kernel backs the pages.
        let _ = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_HUGEPAGE) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nothing borrows it any more (borrows of
        // the bytes are tied to the owner's lifetime). munmap can only fail for
        // invalid arguments, which our invariants exclude; there is nothing useful
        // to do with an error in drop, so it is ignored.
        let _ = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `madvise(addr, len, MADV_HUGEPAGE)` on any range of this process.
///
/// A safe function although it takes a raw address: `MADV_HUGEPAGE` only
/// changes how the kernel backs the pages of the range (it may use 2 MiB
/// pages from the next fault on, or collapse existing ones), never their
/// contents, protection or whether they are mapped. A range that is not
/// mapped, or not page aligned, is refused by the kernel with an error.
pub(crate) fn madvise_hugepage(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: madvise reads no memory of ours and MADV_HUGEPAGE leaves the
    // contents and validity of every page as they were (see above), so no Rust
    // object can observe the call; invalid ranges only make it fail.
    cvt(unsafe { libc::madvise(addr.cast(), len, libc::MADV_HUGEPAGE) }).map(drop)
}

/// Control-message buffer with room for `MAX_FDS_PER_MSG` fds, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 1040]);

/// `CMSG_SPACE` for `n` fds.
fn cmsg_space(n: usize) -> usize {
    let bytes = (n * size_of::<RawFd>()) as libc::c_uint;
    // SAFETY: CMSG_SPACE is pure arithmetic.
    unsafe { libc::CMSG_SPACE(bytes) as usize }
}

/// `sendmsg(fd, bufs, SCM_RIGHTS(fds), MSG_NOSIGNAL)`; returns bytes written.
///
/// `fds.len()` must be at most [`MAX_FDS_PER_MSG`] and `bufs` at most [`IOV_MAX`]
/// long; when `fds` is non-empty `bufs` must hold at least one byte.
pub(crate) fn sendmsg(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    debug_assert!(fds.len() <= MAX_FDS_PER_MSG);
    debug_assert!(bufs.len() <= IOV_MAX);
    let mut cmsg = CmsgBuf([0; 1040]);
    debug_assert!(cmsg_space(MAX_FDS_PER_MSG) <= cmsg.0.len());
    // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI compatible with iovec on unix; sendmsg only reads it.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    if !fds.is_empty() {
        let fds = &fds[..fds.len().min(MAX_FDS_PER_MSG)];
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
        // SAFETY: msg_control points to a buffer of at least msg_controllen bytes,
        // aligned for cmsghdr, so CMSG_FIRSTHDR returns a valid header pointer into it.
        let hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        debug_assert!(!hdr.is_null());
        let data_len = (fds.len() * size_of::<RawFd>()) as libc::c_uint;
        // SAFETY: `hdr` points into `cmsg` with room for the header and `fds.len()`
        // fds (checked by the capacity assertion above); CMSG_DATA points just past
        // the header inside the same buffer, and unaligned writes are used for data.
        unsafe {
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(data_len) as _;
            let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a process-killing SIGPIPE.
    let flags = libc::MSG_NOSIGNAL;
    // SAFETY: `msg` points to iovecs and control data that live for the call; the
    // fds in the control data are valid (borrowed) for the call.
    cvt_size(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) })
}

/// Result of one [`recvmsg`].
pub(crate) struct Received {
    /// Bytes read (0 = end of file).
    pub(crate) bytes: usize,
    /// The kernel truncated the control data (`MSG_CTRUNC`): fds were lost.
    pub(crate) truncated: bool,
}

/// `recvmsg(fd, buf, MSG_CMSG_CLOEXEC)`; received fds are appended to `fds`
/// (close-on-exec, owned) even when the control data was truncated.
pub(crate) fn recvmsg(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<Received> {
    let mut cmsg = CmsgBuf([0; 1040]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len() as _;
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: `iov` describes `buf`, which is writable for its whole length; the
    // control buffer is writable for msg_controllen bytes and aligned for cmsghdr.
    let n = cvt_size(unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) })?;
    // SAFETY: after a successful recvmsg, msg_control/msg_controllen describe the
    // control data the kernel wrote into `cmsg`, so walking it with CMSG_FIRSTHDR /
    // CMSG_NXTHDR stays inside the buffer.
    let mut hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !hdr.is_null() {
        // SAFETY: `hdr` is non-null and was returned by CMSG_FIRSTHDR/NXTHDR, so it
        // points to a complete cmsghdr inside the buffer.
        let (level, kind, len) = unsafe {
            (
                (*hdr).cmsg_level,
                (*hdr).cmsg_type,
                (*hdr).cmsg_len as usize,
            )
        };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is pure arithmetic.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(header) / size_of::<RawFd>();
            // SAFETY: `hdr` is a valid header; its data follows it in the buffer.
            let data = unsafe { libc::CMSG_DATA(hdr) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: the kernel wrote `count` fds after the header (cmsg_len
                // covers them); unaligned read because CMSG_DATA need not be aligned
                // for RawFd in principle.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: SCM_RIGHTS installed `raw` as a new fd in this process that
                // nothing else owns; we take ownership exactly once.
                fds.push_back(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `hdr` is a valid header of `msg`'s control data.
        hdr = unsafe { libc::CMSG_NXTHDR(&msg, hdr) };
    }
    Ok(Received {
        bytes: n,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Readiness a [`poll`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// `POLLIN`.
    Read,
    /// `POLLOUT`.
    Write,
}

/// `poll` on one fd; `None` waits forever. Returns whether it became ready (or hung
/// up / errored, which the following read or write reports). `EINTR` counts as "not
/// ready yet": callers loop with their own deadline.
pub(crate) fn poll(
    fd: BorrowedFd<'_>,
    interest: Interest,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let timeout = match timeout {
        None => -1,
        // Round up so a short remaining time does not spin with timeout 0.
        Some(d) => {
            libc::c_int::try_from(d.as_millis().saturating_add(1)).unwrap_or(libc::c_int::MAX)
        }
    };
    // SAFETY: `pfd` is one valid pollfd and nfds is 1.
    match cvt(unsafe { libc::poll(&mut pfd, 1, timeout) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fills `buf` with random bytes from the kernel.
pub(crate) fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is writable for `rest.len()` bytes.
        match cvt_size(unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) }) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The real user id of this process.
pub(crate) fn getuid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
