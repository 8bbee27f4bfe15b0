//! [`Executor`]: the surface every executor of this family offers —
//! [`ProcessPoolExecutor`](crate::ProcessPoolExecutor) on one machine, and
//! executors of other transports (npshmex-mpi's across machines). A program
//! written against it moves from one to the other by changing only how it
//! builds its executor.
//!
//! An implementation provides [`Executor::submit_encoded`] (hand a named
//! function and an encoded argument to a worker) and a few facts; `submit`
//! and `map` are provided on top, identically for every transport.
//!
//! ```
//! use npshmex_pool::{Executor, MapOptions, ProcessPoolExecutor};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! /// Works with any executor of the family.
//! fn sum_of_squares(ex: &impl Executor, n: u64) -> Result<u64, Box<dyn std::error::Error>> {
//!     let mut total = 0;
//!     for r in ex.map(square, 0..n, MapOptions::default())? {
//!         total += r?;
//!     }
//!     Ok(total)
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     npshmex_pool::init();
//!     let pool = ProcessPoolExecutor::new(2)?;
//!     assert_eq!(sum_of_squares(&pool, 10)?, 285);
//!     Ok(())
//! }
//! ```

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{self, Encoded, TaskFn};
use crate::error::PoolError;
use crate::future::Future;
use crate::map::{MapIter, MapOptions};
use crate::pool::ShutdownOptions;

/// An executor of tasks `fn(A) -> R` on worker processes, with the surface
/// of Python's `concurrent.futures.Executor`.
pub trait Executor {
    /// Hands the task `f` with an encoded argument to a worker and returns
    /// its future. The building block of [`Executor::submit`] and
    /// [`Executor::map`].
    ///
    /// # Errors
    /// [`PoolError::ShutDown`] / [`PoolError::Broken`] when the executor
    /// takes no tasks; transport errors.
    fn submit_encoded<R>(&self, f: TaskFn, arg: Encoded) -> Result<Future<R>, PoolError>
    where
        R: DeserializeOwned + Send + 'static;

    /// Number of workers.
    fn max_workers(&self) -> usize;

    /// How many chunks of `map` to keep in flight at once (enough to keep
    /// every worker busy).
    fn map_window(&self, chunksize: usize) -> usize {
        let _ = chunksize;
        self.max_workers().saturating_mul(2).max(2)
    }

    /// Whether new tasks are taken (`Ok`), or why not.
    ///
    /// # Errors
    /// [`PoolError::ShutDown`] or [`PoolError::Broken`].
    fn check_open(&self) -> Result<(), PoolError> {
        Ok(())
    }

    /// Stops taking tasks and ends the workers once the remaining tasks are
    /// done (or cancelled); see
    /// [`ProcessPoolExecutor::shutdown`](crate::ProcessPoolExecutor::shutdown).
    fn shutdown(&self, opts: ShutdownOptions);

    /// Schedules `f(arg)` on a worker and returns its future. `f` is a `fn`
    /// item or a closure that captures nothing; for several arguments, take
    /// a tuple (`fn(( u64, String )) -> R`, submitted with `(7, s)`).
    ///
    /// # Errors
    /// [`PoolError::ForeignFunction`], [`PoolError::Encode`], and as
    /// [`Executor::submit_encoded`].
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let f = TaskFn::of(f)?;
        self.submit_encoded(f, backend::encode(arg)?)
    }

    /// `f` over every item of `args`, like Python's `Executor.map`:
    /// ordered, lazy (a bounded window of chunks is in flight), each
    /// item's outcome its own. For several iterables, zip them into tuples
    /// (`a.into_iter().zip(b)` for `fn((A, B)) -> R`).
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`] for a zero chunksize, as
    /// [`Executor::check_open`] otherwise.
    fn map<A, R, I>(
        &self,
        f: fn(A) -> R,
        args: I,
        opts: MapOptions,
    ) -> Result<MapIter<'_, Self, A, R, I::IntoIter>, PoolError>
    where
        Self: Sized,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MapIter::start(self, f, args.into_iter(), opts)
    }
}
