//! The few OS operations of the pool that need `unsafe`: adopting the
//! inherited socket fd, keeping it open across `exec`, `fork`, closing
//! inherited fds in a forked child, and `_exit`.
//!
//! Everything else goes through safe wrappers (`nix`, `std::process`).
//! Function addresses (the other unsafe part) live in `remote_fn`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Takes ownership of the socket fd a parent left open for this worker.
///
/// The number comes from the environment, so it is checked: it must be an
/// open socket. The caller (worker start-up) calls this once per fd number.
pub(crate) fn adopt_inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
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
    nix::fcntl::fcntl(
        owned.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    Ok(owned)
}

/// Makes `fd` (CLOEXEC in the parent) survive the `exec` of `cmd`'s child
/// only, and asks the kernel to kill that child when the spawning thread
/// dies (set before `exec`, so there is no window where it is unset).
pub(crate) fn keep_fd_across_exec(cmd: &mut Command, fd: RawFd) {
    let hook = move || -> io::Result<()> {
        // SAFETY: fcntl and prctl are async-signal-safe and touch only this
        // (forked, not yet exec'd) child's own fd table and process state.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above; PR_SET_PDEATHSIG takes a signal number.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (fcntl, prctl)
    // and allocates nothing, as required between fork and exec.
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
    // SAFETY: see the function doc: the child only runs the worker loop,
    // which uses its own socket and no lock of the parent's pool.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked {
            pid: child.as_raw(),
        }),
        nix::unistd::ForkResult::Child => {
            close_fds_except(keep);
            let code = child();
            exit_now(code)
        }
    }
}

/// Closes every fd >= 3 except `keep` (so this child holds no other
/// worker's channel and cannot delay the EOF its parent waits for).
fn close_fds_except(keep: RawFd) {
    let keep = keep as libc::c_uint;
    if keep > 3 {
        // SAFETY: close_range only closes fds of this process; the range
        // excludes `keep` and stdio. Failure (old kernel) leaves fds open,
        // which only delays death detection of other workers.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                keep - 1,
                0 as libc::c_uint,
            )
        };
    }
    // SAFETY: as above, for the range after `keep`.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            keep + 1,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
}

/// Ends the process at once, without running `atexit` handlers or flushing
/// stdio buffers inherited from a forked parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}
