//! The leak check a test wraps around what it does: nothing it made may
//! outlive it (no `/dev/shm` name, no held segment, no fd, no worker, no
//! zombie).

use crate::fds::open_fds;
use crate::procs::{children, wait_no_worker_children};
use crate::shm::{family_shm_entries, held_segments};
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long [`LeakCheck::finish`] waits for the workers of a dropped pool
/// to exit (generous: the machine may be loaded).
const WORKER_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Leak checks count process-wide resources, so checked tests of one test
/// binary run one at a time (nextest runs each test in its own process
/// anyway; `cargo test` runs them on threads of one).
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    // a test that failed while holding it poisons it: the next one may run
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A baseline of what a test must leave as it found it; holds this test
/// binary's leak-check lock until [`finish`](LeakCheck::finish).
///
/// ```
/// let leaks = npshmex_testkit::LeakCheck::start();
/// let seg = npshmex_shm::Segment::anonymous(4096)?;
/// drop(seg);
/// leaks.finish();
/// # Ok::<(), npshmex_shm::ShmError>(())
/// ```
#[must_use = "call finish() at the end of the test"]
pub struct LeakCheck {
    _serial: MutexGuard<'static, ()>,
    settle: fn(),
    fds: usize,
    shm: BTreeSet<String>,
    held: BTreeSet<String>,
}

impl LeakCheck {
    /// Takes the lock and snapshots fds, `/dev/shm` names of this process
    /// and its workers, and the shared-memory files this process holds.
    /// Before each snapshot it empties this process's segment cache
    /// (`npshmex_shm::cache`), which keeps segments on purpose.
    pub fn start() -> LeakCheck {
        LeakCheck::start_after(|| {
            npshmex_shm::cache::clear();
        })
    }

    /// As [`start`](LeakCheck::start), but runs `settle` before each
    /// snapshot, for state a crate keeps on purpose between calls (e.g.
    /// `npshmex_ndarray::cache::clear`).
    pub fn start_after(settle: fn()) -> LeakCheck {
        let serial = serial();
        settle();
        LeakCheck {
            _serial: serial,
            settle,
            fds: open_fds(),
            shm: family_shm_entries(),
            held: held_segments(),
        }
    }

    /// Asserts (after the caller dropped its values and its pool) that no
    /// worker child is left (waiting up to 10 s for exiting ones), no child
    /// at all (no zombie), the same number of fds is open, and no new
    /// `/dev/shm` name or held segment exists.
    ///
    /// # Panics
    /// On any of those, naming what was left behind.
    pub fn finish(self) {
        (self.settle)();
        let workers = wait_no_worker_children(WORKER_EXIT_TIMEOUT);
        assert!(
            workers.is_empty(),
            "worker processes left behind: {workers:?}"
        );
        let kids = children();
        assert!(
            kids.is_empty(),
            "child processes (zombies?) left behind: {kids:?}"
        );
        let shm = family_shm_entries();
        let new_shm: Vec<_> = shm.difference(&self.shm).collect();
        assert!(
            new_shm.is_empty(),
            "/dev/shm entries left behind: {new_shm:?}"
        );
        let held = held_segments();
        let new_held: Vec<_> = held.difference(&self.held).collect();
        assert!(new_held.is_empty(), "segments still held: {new_held:?}");
        assert_eq!(open_fds(), self.fds, "file descriptors leaked");
    }
}

#[cfg(test)]
mod tests {
    use super::LeakCheck;

    // that a leak fails the check is tested in tests/detects.rs, a binary
    // of its own: a failing check releases the lock before the test drops
    // what it leaked, which would disturb other checks running meanwhile

    #[test]
    fn a_clean_test_passes() -> Result<(), npshmex_shm::ShmError> {
        let leaks = LeakCheck::start();
        let seg = npshmex_shm::Segment::anonymous(4096)?;
        let child = std::process::Command::new("true").status();
        drop(seg);
        assert!(child.is_ok_and(|s| s.success()));
        leaks.finish();
        Ok(())
    }
}
