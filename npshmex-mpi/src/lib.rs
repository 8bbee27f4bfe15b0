//! The npshmex pool across machines: MPI ranks as workers, started by
//! `mpiexec` (or a cluster's launcher) as Python's `mpi4py.futures` is,
//! with the surface of [`npshmex_pool`]: the same [`Executor`] trait, the
//! same [`Future`], [`TaskError`], [`as_completed`](npshmex_pool::as_completed),
//! [`wait`](npshmex_pool::wait) and `.await`.
//!
//! ```no_run
//! use npshmex_pool::{Executor, MapOptions};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First line of main, on every rank: rank 0 goes on, the others
//!     // serve tasks until the executor shuts down.
//!     let mpi = npshmex_mpi::init()?;
//!     let pool = npshmex_mpi::MpiPoolExecutor::new(&mpi)?;
//!     assert_eq!(pool.submit(square, 7)?.result()?, 49);
//!     let squares: Result<Vec<u64>, _> = pool.map(square, 0..100, MapOptions::default())?.collect();
//!     assert_eq!(squares?[9], 81);
//!     Ok(())
//! }
//! ```
//! Run it as `mpiexec -n 4 ./prog` (three workers) or `srun -n 4 ./prog`.
//!
//! # Launch
//! Every rank runs the program; [`init`] tells them apart. Rank 0 returns
//! an [`Mpi`] and is the caller; ranks 1..N become workers and never return
//! from `init`. Before any task, every rank proves it runs the same build
//! ([`BuildId`](npshmex_pool::backend::BuildId): the linker's build-id note,
//! or a hash of the executable; paths, inodes and mtimes differ between
//! hosts), because functions travel as offsets in the executable, as in the
//! local pool. A mismatch is [`MpiError::BuildMismatch`] from `init` on
//! rank 0, and every rank leaves MPI.
//!
//! # Transport
//! Built only on [`npshmex_pool::backend`]: a task is its function's
//! offsets and its argument encoded with the out-of-band collector. Small
//! encodings travel inside the task's frame; larger ones, and every
//! shared-memory segment a value holds (`ShmArray`, `Shm`, `ShmBatch`…),
//! travel as raw MPI messages read straight from the segment's pages. The
//! receiver allocates a segment (reusing already-faulted ones) and receives
//! into it, then decodes the value as if the segment had come over a local
//! socket: the receive modes (moved, read-only, copy-on-write) keep their
//! meaning. Messages past 1 GiB are cut into pieces (MPI counts are `int`),
//! so payloads past 2 and 4 GiB work. MPI does the rest: shared memory
//! between ranks of one host, TCP or RDMA between hosts.
//!
//! # Failures: what survives
//! - A task that panics fails only its own future
//!   ([`TaskError::Panicked`]); the rank goes on.
//! - A task past the executor's `task_timeout` fails with
//!   [`TaskError::TimedOut`]. MPI ranks cannot be replaced, so that rank
//!   gets no task until its late result comes back; at shutdown it leaves
//!   with the others even if the task never ends (its watchdog thread
//!   reads the shutdown, finalizes and `_exit`s).
//! - A rank that dies (abort, segfault, `kill -9`): under `mpiexec`'s
//!   default, the launcher then ends the whole job, rank 0 included: that
//!   is OpenMPI's policy, not something a library can change. Started
//!   with `mpiexec --enable-recovery`, the job goes on: the dead rank's
//!   heartbeats stop, and after [`InitOptions::silence`] its task fails
//!   with [`TaskError::WorkerDied`] and the other ranks keep serving.
//! - Rank 0 killed: the launcher ends the job; with recovery enabled the
//!   workers notice rank 0's silence and exit. If the launcher itself dies,
//!   every worker notices that its parent is gone (watchdog, 100 ms) and
//!   exits, and rank 0's futures fail with `WorkerDied`.
//! - Every wait is bounded or cancellable: the engine never blocks in MPI
//!   (non-blocking requests, polled), the start-up handshake has a
//!   deadline, and shutdown waits only for tasks whose caller still waits.
//! - Bad frames are typed errors ([`MpiError::BadFrame`]); a rank whose
//!   stream is out of step gets no further task. That includes a result
//!   for a task the worker was not running, or a second one for the same
//!   task: the task it runs fails with a typed error.
//! - With a `task_timeout`, the limit covers the result's transfer too
//!   (from its frame): announced bytes that never come fail the task.
//! - A result's announced size is checked against the memory available
//!   (from 64 MiB) before anything is allocated, and its buffer is only
//!   backed as its bytes arrive.
//!
//! # Trust
//! Rank 0 does not trust the workers' frames: what they announce is
//! checked, and no view over memory a worker can still write is handed
//! out. The workers do trust rank 0 on one point: it names the function a
//! task runs (as offsets in the executable, after every rank proved it
//! runs the same build), as the parent of the local pool does.
//!
//! Communicators use `MPI_ERRORS_RETURN`, so MPI failures are typed errors
//! ([`MpiError::Call`]) instead of an abort.
#![deny(unsafe_code)]

/// `eprintln!` that cannot panic: a closed stderr (the launcher that
/// collected it is gone) must not end the engine or watchdog thread.
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `now + d`, or a time past any wait for a `d` too long to add (a
/// setting of `Duration::MAX` means "no limit", not a panic).
pub(crate) fn after(now: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(1 << 32)))
        .unwrap_or(now)
}

mod engine;
mod error;
mod executor;
mod frame;
#[cfg(feature = "hostile-peer")]
#[doc(hidden)]
pub mod hostile;
mod inflight;
mod raw;
mod session;
mod worker;

pub use engine::WorkerInfo;
pub use error::MpiError;
pub use executor::{MpiPoolBuilder, MpiPoolExecutor};
pub use session::{init, init_with, InitOptions, Mpi};

pub use npshmex_pool::{Executor, Future, TaskError};

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_cross_threads() {
        // The executor and its futures go where the local pool's go; the
        // Mpi handle stays on the thread that initialized MPI (it is not
        // Send: MPI_Finalize must run there).
        send_sync::<MpiPoolExecutor>();
        send_sync::<MpiError>();
        send_sync::<WorkerInfo>();
        fn send<T: Send>() {}
        send::<Future<Vec<u8>>>();
    }
}
