//! The pool's process-level OS operations: adopting the inherited socket,
//! keeping it (and nothing else) open across `exec`, `fork`, `SIGPIPE` and
//! `_exit`.
//!
//! System calls go through rustix. Four stay raw `libc`, where rustix has
//! no wrapper in its stable API: `close_range` (no wrapper at all), `fork`
//! (only in rustix's experimental `runtime` module, for libc replacements),
//! `signal` and `_exit` (likewise). Function addresses (the other unsafe part) live
//! in `remote_fn`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::fs::FileType;
use rustix::io::FdFlags;
use rustix::process::Signal;

/// Takes ownership of the socket fd a parent left open for this worker.
///
/// The number comes from the environment, so it is checked: it must be an
/// open socket. The caller (worker start-up) calls this once per fd number.
pub(crate) fn adopt_inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited fd {fd} is negative"),
        ));
    }
    // SAFETY: a borrow only for the fstat below; the kernel reports EBADF
    // for a number that is not open, and nothing is closed through it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = rustix::fs::fstat(borrowed)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited fd {fd} is not a socket"),
        ));
    }
    // SAFETY: the fd is open (fstat succeeded) and is the socket our parent
    // passed to this process for the worker channel; nothing else in this
    // freshly started process knows its number, so ownership is unique.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Processes this worker's tasks start must not inherit the channel, or
    // the parent would not see EOF when the worker dies.
    rustix::io::fcntl_setfd(owned.as_fd(), FdFlags::CLOEXEC)?;
    Ok(owned)
}

/// Prepares `cmd`'s child, between fork and exec: `keep` (close-on-exec in
/// the parent) survives the `exec`, every other fd above stderr is closed
/// by it (Python's spawn does the same: a worker inherits nothing the
/// program left open by accident), and the kernel kills the child when the
/// spawning thread dies (set before `exec`, so there is no window without).
pub(crate) fn prepare_child(cmd: &mut Command, keep: RawFd) {
    let hook = move || -> io::Result<()> {
        // SAFETY: `keep` is open in the child (inherited from the parent,
        // which keeps it open until the spawn returned); a borrow for the
        // fcntl below only.
        let fd = unsafe { BorrowedFd::borrow_raw(keep) };
        rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
        // Close-on-exec rather than closed: std's own exec-error pipe must
        // stay open until exec (it is close-on-exec already).
        cloexec_fds_except(keep);
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        Ok(())
    };
    // SAFETY: the hook only makes raw system calls (fcntl, close_range,
    // prctl), which are async-signal-safe, and allocates nothing, as
    // required between fork and exec.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// What `fork_worker` returns in the parent.
pub(crate) struct Forked {
    /// Pid of the child.
    pub(crate) pid: i32,
}

/// Forks; the child closes every fd but stdio and `keep`, runs `child` and
/// `_exit`s with its return value. Returns in the parent only.
///
/// The child of a multithreaded parent may only rely on what `fork` keeps
/// consistent: glibc re-initialises its allocator locks after `fork`, but a
/// lock another parent thread held (stdout, a user mutex) stays held. The
/// worker loop touches none of the pool's locks; this start method is opt-in
/// for that reason.
pub(crate) fn fork_worker(keep: RawFd, child: impl FnOnce() -> i32) -> io::Result<Forked> {
    // libc: rustix wraps fork only in its experimental `runtime` module.
    // No writable shared mapping is half made while we fork: the child
    // inherits none (they are MADV_DONTFORK), so it can neither write pages
    // this process views nor keep them from being sealed.
    // SAFETY: see the function doc: the child only runs the worker loop,
    // which uses its own socket and no lock of the parent's pool.
    let pid = npshmex_shm::without_mappings_in_flight(|| unsafe { libc::fork() });
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            close_fds_except(keep);
            let code = child();
            exit_now(code)
        }
        pid => Ok(Forked { pid }),
    }
}

/// `close_range(first, last, flags)`; errors (an old kernel) are ignored:
/// an fd left open only delays the death detection of another worker.
fn close_range(first: u32, last: u32, flags: u32) {
    // libc: rustix has no close_range wrapper.
    // SAFETY: close_range only closes (or marks close-on-exec) fds of this
    // process in the given range, which the callers keep clear of stdio and
    // of the fd they need.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, flags);
    }
}

/// Marks every fd >= 3 except `keep` close-on-exec.
fn cloexec_fds_except(keep: RawFd) {
    let keep = keep as u32;
    let cloexec = libc::CLOSE_RANGE_CLOEXEC;
    if keep > 3 {
        close_range(3, keep - 1, cloexec);
    }
    close_range(keep.saturating_add(1).max(3), u32::MAX, cloexec);
}

/// Closes every fd >= 3 except `keep` (so a forked child holds no other
/// worker's channel and cannot delay the EOF its parent waits for).
fn close_fds_except(keep: RawFd) {
    let keep = keep as u32;
    if keep > 3 {
        close_range(3, keep - 1, 0);
    }
    close_range(keep.saturating_add(1).max(3), u32::MAX, 0);
}

/// Ignores `SIGPIPE`, as Rust's `main` does: a write to a closed pipe (a
/// worker's stderr whose reader is gone) is then an `EPIPE` error, not the
/// end of the process. A worker needs it said: `init` may run before
/// `main` (from a constructor) and the parent's `Command` resets the
/// signal for the child.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no
    // handler, so nothing can run in signal context; it races with no other
    // thread's use of SIGPIPE (the worker has started none that uses it).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Ends the process at once, without running `atexit` handlers or flushing
/// stdio buffers inherited from a forked parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // libc: rustix wraps _exit only in its experimental `runtime` module.
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}
