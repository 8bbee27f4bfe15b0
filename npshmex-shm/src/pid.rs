//! This process's id, without a system call each time it is asked.
//!
//! The segment cache asks "is this still the process that made it?" on
//! every allocation, drop and task scope: a forked child inherits the
//! cache's bookkeeping but not its mappings (`MADV_DONTFORK`). `getpid` is
//! a system call (glibc stopped caching it in 2.25), ~0.1–0.2 µs here, and a
//! tiny task asked it several times. The id is asked once and kept; a
//! `pthread_atfork` child handler forgets it in every child that libc's
//! `fork` makes (the pool's forked workers among them), so the child asks
//! again. A child made by a raw `clone` system call that bypasses libc,
//! which takes `unsafe` code, must not use this crate before it execs.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;

/// The kept id; 0: not known (never asked, or forgotten in a child).
static PID: AtomicU32 = AtomicU32::new(0);
/// Whether the child handler is installed (only then may the id be kept).
static HANDLER: AtomicBool = AtomicBool::new(false);

extern "C" fn forget_in_child() {
    PID.store(0, Ordering::Relaxed);
}

/// This process's id (as [`std::process::id`]).
pub(crate) fn current() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // libc: rustix has no wrapper for pthread_atfork (a libc facility,
        // not a system call).
        // SAFETY: the handler is an `extern "C" fn()` that lives for the
        // whole program and only stores to an atomic, which is
        // async-signal-safe, as a handler that runs in a forked child must
        // be; no prepare or parent handler is given.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
        HANDLER.store(rc == 0, Ordering::Relaxed);
    });
    // Installed before the id is kept: a fork after the store below runs
    // the handler, and a fork before it copies a 0.
    let me = std::process::id();
    if HANDLER.load(Ordering::Relaxed) {
        PID.store(me, Ordering::Relaxed);
    }
    me
}

#[cfg(test)]
mod tests {
    use super::{current, HANDLER, PID};
    use std::sync::atomic::Ordering;

    #[test]
    fn matches_the_system_and_is_kept() {
        assert_eq!(current(), std::process::id());
        assert!(HANDLER.load(Ordering::Relaxed), "pthread_atfork refused");
        assert_eq!(PID.load(Ordering::Relaxed), std::process::id(), "kept");
        assert_eq!(current(), std::process::id());
    }

    #[test]
    fn a_forked_child_knows_its_own_id() {
        let parent = current();
        // SAFETY: the child makes only async-signal-safe calls (getpid, atomic
        // loads and stores, `_exit`): it allocates nothing and takes no lock.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let me = current();
            let code = i32::from(me == parent || me != std::process::id());
            // SAFETY: ends the forked child at once, running no destructor
            // or exit handler of the parent's state.
            unsafe { libc::_exit(code) };
        }
        assert!(child > 0, "fork failed");
        let pid = rustix::process::Pid::from_raw(child).expect("a child's pid is positive");
        let (_, status) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
                .expect("waitpid")
                .expect("the child's status");
        assert_eq!(
            status.exit_status(),
            Some(0),
            "the child saw its parent's id"
        );
        assert_eq!(current(), parent);
    }
}
