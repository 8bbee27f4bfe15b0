//! [`init`]: the one call that turns a re-executed copy of the program
//! into a worker, and marks the parent as ready to start workers.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::worker::{self, WORKER_ENV};

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Call this first thing in `main`, or let [`init_before_main!`] call it
/// before `main` starts (test binaries: [`test_support!`]).
///
/// In a worker process (started by a pool with the `NPSHMEX_WORKER`
/// variable set) it never returns: it runs the worker loop and exits the
/// process. Everything `main` does before this call is done again in every
/// worker, so keep it first. Called inside an async runtime (`init()` as
/// the first line of a `#[tokio::main]` function: the runtime was built
/// before), it still works: the worker runs its tasks on a fresh thread,
/// outside the runtime, so tasks may build runtimes of their own; but every
/// worker has built an idle runtime first, which [`init_before_main!`]
/// avoids. In any other process it only records that the
/// program is ready to start workers; a pool built without it fails with
/// [`PoolError::NotInitialized`](crate::PoolError::NotInitialized) instead
/// of starting copies of the program that would run `main` again.
///
/// [`init_before_main!`]: crate::init_before_main
/// [`test_support!`]: crate::test_support
pub fn init() {
    // Set first, so a task in a worker may start a pool of its own.
    INITIALIZED.store(true, Ordering::SeqCst);
    if let Some(value) = std::env::var_os(WORKER_ENV) {
        // Code the worker's tasks run must not believe it is a worker too.
        std::env::remove_var(WORKER_ENV);
        worker::main_spawned(value);
    }
}

pub(crate) fn is_initialized() -> bool {
    INITIALIZED.load(Ordering::SeqCst)
}
