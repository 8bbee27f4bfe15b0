//! A crash-proof process pool with the surface of Python's
//! `concurrent.futures.ProcessPoolExecutor`, for plain Rust functions on
//! serde values.
//!
//! ```
//! use npshmex_pool::{ProcessPoolExecutor, MapOptions};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     npshmex_pool::init(); // first line of main: workers stop here
//!     let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
//!     let fut = pool.submit(square, 7)?;
//!     assert_eq!(fut.result()?, 49);
//!     let squares: Result<Vec<u64>, _> = pool.map(square, 0..100, MapOptions::default())?.collect();
//!     assert_eq!(squares?[9], 81);
//!     Ok(())
//! }
//! ```
//!
//! # Setting up: `init` and `test_support!`
//! Workers are the same executable, started again (`/proc/self/exe`) with
//! the `NPSHMEX_WORKER` variable set. [`init`] must be the first call in
//! `main`: in a worker it runs the worker loop and never returns. A pool
//! built without it fails with [`PoolError::NotInitialized`] (never starts
//! copies of the program that would run `main` again).
//!
//! Test binaries (unit tests, `tests/*.rs`, under `cargo test` or
//! `cargo nextest`) have no `main` of their own; put
//! `npshmex_pool::test_support!();` at the top level of the test crate (for
//! unit tests: once, anywhere in the library's `#[cfg(test)]` code). It
//! registers a constructor that calls [`init`] before the test harness
//! starts, so a worker (the test binary run again) becomes a worker before
//! the harness looks at its arguments.
//!
//! # Functions
//! [`ProcessPoolExecutor::submit`] takes any `fn(A) -> R` (or a closure that
//! captures nothing) with `A, R: Serialize + DeserializeOwned`. Nothing is
//! registered: the function travels as its address relative to a fixed
//! function of this crate, which is the same in the worker because the
//! worker runs the same executable; the handshake checks that (device,
//! inode, size and mtime of the executable) before any address is used.
//! Functions returning `Result<T, E>` with serde `E` return their errors
//! as values.
//!
//! # Transport
//! One unix socket per worker carries postcard frames. Values are encoded
//! inside [`npshmex_shm::oob::collect`] and decoded inside
//! [`npshmex_shm::oob::with_received`] in both directions, so a type whose
//! `Serialize` hands a file descriptor to the collector (shared-memory
//! segments of the npshmex crates) travels by `SCM_RIGHTS`, and only an
//! index goes into the bytes. An encoding larger than `inline_max` (64 KiB
//! by default) travels in a sealed memfd that the receiver maps read-only.
//!
//! # Failures
//! A panicking task fails only its own future with [`TaskError::Panicked`]
//! (the worker goes on, unless the program is built with `panic = "abort"`).
//! A worker that aborts, segfaults, exits or is killed fails only the task
//! it was running with [`TaskError::WorkerDied`] and is replaced; tasks that
//! were queued behind it run elsewhere. A task past the `task_timeout`
//! fails with [`TaskError::TimedOut`], and its worker is killed and
//! replaced. Workers die with the parent (`PR_SET_PDEATHSIG` and EOF on
//! their socket), are always reaped, and share the parent's stdout and
//! stderr. If an initializer panics the pool is broken, as in Python.
//!
//! # Latency
//! Waking a sleeping CPU costs tens of µs on a VM. After every message,
//! each side polls its socket without blocking for a bounded time
//! ([`PoolBuilder::spin`], 50 µs by default) before it blocks, and
//! [`Future::result`] spins before it sleeps, receiving the result itself
//! when its task is the only one on that worker. Polls yield the CPU
//! between attempts, so spinning threads share a busy machine fairly.
//! Back-to-back tasks therefore never sleep; idle workers block and burn
//! nothing. Tasks queued together are sent to a worker in one frame (one
//! syscall); results are sent one by one, as soon as each exists, so that
//! a worker that dies can always be matched with the task that killed it.
#![deny(unsafe_code)]

pub mod backend;
mod build_id;
mod builder;
mod error;
mod executor;
mod future;
mod init;
mod map;
mod pool;
mod remote_error;
mod remote_fn;
mod slot;
mod spawn;
mod state;
mod sys;
mod wait;
mod wire;
mod worker;

pub use builder::{PoolBuilder, StartMethod};
pub use error::{PanicInfo, PoolError, SharedCause, TaskError, WorkerExit};
pub use executor::Executor;
pub use future::Future;
pub use init::init;
pub use map::{MapIter, MapOptions};
pub use pool::{CancelFutures, ProcessPoolExecutor, ShutdownOptions, Wait};
pub use remote_error::{RemoteCause, RemoteError};
pub use wait::{as_completed, as_completed_timeout, wait, AsCompleted, ReturnWhen, WaitResult};

/// The out-of-band fd hook the pool installs around every encode
/// ([`oob::collect`]) and decode ([`oob::with_received`]) of a task's
/// argument and result: a `Serialize` impl hands an fd over with
/// [`oob::push_fd`] and writes the index it gets; the matching
/// `Deserialize` impl claims it with [`oob::take_fd`].
pub use npshmex_shm::oob;

/// Makes a test binary able to host pool workers: put
/// `npshmex_pool::test_support!();` at the top level of the test crate.
///
/// It registers a constructor (run before the test harness's `main`) that
/// calls [`init`]; in a worker process, that is where the worker takes
/// over. Use it once per binary.
#[macro_export]
macro_rules! test_support {
    () => {
        #[$crate::__private::ctor]
        fn __npshmex_pool_test_support_init() {
            $crate::init();
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use ctor::ctor;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn handles_cross_threads() {
        send_sync::<ProcessPoolExecutor>();
        send_sync::<PoolBuilder>();
        send::<Future<Vec<u8>>>();
        send_sync::<TaskError>();
        send_sync::<PoolError>();
    }
}
