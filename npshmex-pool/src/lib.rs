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
//! # Setting up: `init`, `init_before_main!`, `test_support!`
//! Workers are the same executable, started again (`/proc/self/exe`) with
//! the `NPSHMEX_WORKER` variable set. [`init`] must be the first call in
//! `main`: in a worker it runs the worker loop and never returns. A pool
//! built without it fails with [`PoolError::NotInitialized`] (never starts
//! copies of the program that would run `main` again). Instead of the
//! call, [`init_before_main!`] at the top level of the binary calls it
//! from a constructor, before `main` starts: nothing of `main` (nor of an
//! attribute wrapping it) ever runs in a worker.
//!
//! Test binaries (unit tests, `tests/*.rs`, under `cargo test` or
//! `cargo nextest`) have no `main` of their own; put
//! `npshmex_pool::test_support!();` at the top level of the test crate (for
//! unit tests: once, anywhere in the library's `#[cfg(test)]` code): the
//! same constructor, so a worker (the test binary run again) becomes a
//! worker before the harness looks at its arguments.
//!
//! # Async programs
//! A [`Future`] is a `std::future::Future` too: the pool's own threads
//! complete it, so any executor can `.await` it, and `tokio::join!`,
//! `select!` and `timeout` work. Use [`init_before_main!`] rather than
//! `init()` inside `#[tokio::main]`: the attribute builds the runtime
//! before the body's first line, so every worker would build a runtime for
//! nothing. (`init()` there still works: a worker started late runs its
//! tasks on a fresh thread outside the runtime, so a task may build a
//! runtime of its own.) Tasks themselves are plain functions; one that
//! wants async code builds a runtime inside.
//!
//! ```
//! use std::time::Duration;
//!
//! use npshmex_pool::ProcessPoolExecutor;
//!
//! npshmex_pool::init_before_main!();
//!
//! fn fetch_all(n: u32) -> u32 {
//!     // A task may run async code on a runtime of its own.
//!     let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//!     rt.block_on(async { n * 2 })
//! }
//!
//! fn nap(ms: u64) -> u64 {
//!     std::thread::sleep(Duration::from_millis(ms));
//!     ms
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pool = ProcessPoolExecutor::new(2)?;
//!     let (a, b) = tokio::join!(pool.submit(fetch_all, 1)?, pool.submit(fetch_all, 2)?);
//!     assert_eq!((a?, b?), (2, 4));
//!     // A future dropped un-awaited (here: the timeout expires) cancels
//!     // its task if it is still queued; a running one finishes on its
//!     // worker and its result is discarded. Nothing leaks either way.
//!     let slow = pool.submit(nap, 300)?;
//!     assert!(tokio::time::timeout(Duration::from_millis(10), slow).await.is_err());
//!     Ok(())
//! }
//! ```
//!
//! # Functions and arguments
//! [`ProcessPoolExecutor::submit`] takes any `fn(A) -> R` (or a closure that
//! captures nothing) with `A, R: Serialize + DeserializeOwned`. Nothing is
//! registered: the function travels as its address relative to a fixed
//! function of this crate, which is the same in the worker because the
//! worker runs the same executable; the handshake checks that (device,
//! inode, size and mtime of the executable) before any address is used, and `submit` refuses a function that is not code of
//! the executable ([`PoolError::ForeignFunction`]).
//!
//! Several arguments travel as one tuple, and Python's
//! `pool.map(f, xs, ys)` over several iterables is a `map` over their zip:
//!
//! ```
//! use npshmex_pool::{MapOptions, ProcessPoolExecutor};
//!
//! fn scale((values, factor): (Vec<f64>, f64)) -> Vec<f64> {
//!     values.iter().map(|v| v * factor).collect()
//! }
//!
//! fn add((a, b): (i64, i64)) -> i64 {
//!     a + b
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     npshmex_pool::init();
//!     let pool = ProcessPoolExecutor::new(2)?;
//!     assert_eq!(pool.submit(scale, (vec![1.0, 2.0], 3.0))?.result()?, [3.0, 6.0]);
//!     let xs = [1, 2, 3];
//!     let ys = [10, 20, 30];
//!     let sums: Vec<i64> = pool
//!         .map(add, xs.into_iter().zip(ys), MapOptions::default())?
//!         .collect::<Result<_, _>>()?;
//!     assert_eq!(sums, [11, 22, 33]);
//!     Ok(())
//! }
//! ```
//!
//! # Waiting, and knowing which job finished
//! [`as_completed`] and [`wait`] take futures as Python's do. Python's
//! `{pool.submit(f, job): job for job in jobs}` idiom is
//! [`as_completed_keyed`] (and [`wait_keyed`]): `(key, future)` pairs in,
//! `(key, result)` out in completion order. Dropping a [`Future`] cancels
//! its task if it has not started (see
//! [Dropping a future](Future#dropping-a-future)); [`Future::detach`] lets
//! it run.
//!
//! # Errors
//! [`PoolError`] says why the pool could not take a task, [`TaskError`]
//! why one task has no value. Both expose their causes through
//! `Error::source`, so `anyhow`'s `{:#}` prints the whole chain (a
//! `Deserialize` impl's own message included). A panic comes back as
//! [`TaskError::Panicked`] with its message, `file:line:column` and the
//! worker's pid, and the worker's stderr line says it came from a worker.
//! A task that fails returns `Result<R, RemoteError>`: any
//! `std::error::Error` converts into [`RemoteError`] with `?` inside the
//! task, keeping its chain of sources, and the caller flattens it with one
//! more `?` into `anyhow::Error`, `Box<dyn Error>` or [`TaskError`].
//!
//! # Transport
//! Each worker has a pair of rings in a shared memory region (requests and
//! responses, 1 MiB each) with futex doorbells, and a unix socket beside
//! them for file descriptors and for noticing the peer's death. Values are
//! encoded with postcard inside [`npshmex_shm::oob::collect`] and decoded
//! inside [`npshmex_shm::oob::with_received`] in both directions, so a type
//! whose `Serialize` hands a file descriptor to the collector
//! (shared-memory segments of the npshmex crates) travels by
//! `SCM_RIGHTS`, and only an index goes into the bytes. An encoding larger
//! than `inline_max` (64 KiB by default) travels in a sealed memfd that the
//! receiver maps read-only. Other transports (npshmex-mpi) build the same
//! surface from [`backend`] and the [`Executor`] trait.
//!
//! # Failures
//! A panicking task fails only its own future with [`TaskError::Panicked`]
//! (the worker goes on, unless the program is built with `panic = "abort"`).
//! A worker that aborts, segfaults, exits or is killed fails only the task
//! it was running with [`TaskError::WorkerDied`] and is replaced; tasks that
//! were queued behind it run elsewhere, and a worker killed from outside
//! while it starts or idles fails no task at all (a worker announces each
//! task in the shared region before running it). A task past the
//! `task_timeout` fails with [`TaskError::TimedOut`], and its worker is
//! killed and replaced. Workers die with the parent (`PR_SET_PDEATHSIG`
//! and EOF on their socket), are always reaped, and share the parent's
//! stdout and stderr. If an initializer fails the pool is broken, as in
//! Python; one that hangs past [`PoolBuilder::initializer_timeout`] counts
//! as a failed start (three in a row break the pool).
//!
//! # Latency
//! Waking a sleeping thread costs tens of µs on a VM. After every message
//! each side polls its ring for a bounded time ([`PoolBuilder::spin`],
//! 50 µs by default) before it parks on the ring's futex, and
//! [`Future::result`] spins before it sleeps, receiving the result itself
//! when its task is the only one on that worker. Back-to-back tasks
//! therefore never sleep; idle workers park and burn nothing. Short tasks
//! are pipelined (about 250 µs of work per worker by its recent task times,
//! up to [`PoolBuilder::max_in_flight`], sent in batches); a worker whose
//! tasks are long, or not known yet, holds one at a time, so queued work
//! goes to whichever worker frees up first.
#![deny(unsafe_code)]

pub mod backend;
mod build_id;
mod builder;
mod channel;
mod error;
mod executor;
mod future;
mod init;
mod map;
mod pool;
mod remote_error;
mod remote_fn;
mod rx;
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
pub use wait::{
    as_completed, as_completed_keyed, as_completed_timeout, wait, wait_keyed, AsCompleted,
    AsCompletedKeyed, KeyedWaitResult, ReturnWhen, WaitResult,
};

/// The out-of-band fd hook the pool installs around every encode
/// ([`oob::collect`]) and decode ([`oob::with_received`]) of a task's
/// argument and result: a `Serialize` impl hands an fd over with
/// [`oob::push_fd`] and writes the index it gets; the matching
/// `Deserialize` impl claims it with [`oob::take_fd`].
pub use npshmex_shm::oob;

/// Calls [`init`] before `main` starts: put
/// `npshmex_pool::init_before_main!();` at the top level of the binary
/// crate (once per binary).
///
/// It registers a constructor (an `.init_array` entry, run by the loader
/// before `main`), so in a worker process the worker takes over before any
/// code of `main` runs: an attribute such as `#[tokio::main]` never builds
/// its runtime in workers, and nothing `main` does is repeated there. See
/// [Async programs](crate#async-programs).
#[macro_export]
macro_rules! init_before_main {
    () => {
        #[$crate::__private::ctor]
        fn __npshmex_pool_init_before_main() {
            $crate::init();
        }
    };
}

/// Makes a test binary able to host pool workers: put
/// `npshmex_pool::test_support!();` at the top level of the test crate.
///
/// The same as [`init_before_main!`]: the test harness's `main` never runs
/// in a worker, which takes over before the harness looks at its
/// arguments. Use it once per binary.
#[macro_export]
macro_rules! test_support {
    () => {
        $crate::init_before_main!();
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
