//! [`MpiPoolExecutor`]: the pool's surface over MPI ranks, an
//! [`Executor`] like `ProcessPoolExecutor`, so code written against the
//! trait runs on either by changing only how the executor is built.
//!
//! Submitting encodes the argument on the caller's thread (its segments
//! resolved into this process's own slots or sealed mappings, ready to be
//! sent from their pages) and queues it for the engine thread; the future
//! is the pool's own [`Future`], completed by the engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use npshmex_pool::backend::{self, Encoded, TaskFn};
use npshmex_pool::{
    CancelFutures, Executor, Future, MapIter, MapOptions, PoolError, ShutdownOptions, Wait,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::engine::{Engine, Job, WorkerInfo};
use crate::error::MpiError;
use crate::inflight::Outgoing;
use crate::session::Mpi;

/// Settings of a new [`MpiPoolExecutor`].
#[derive(Clone, Debug, Default)]
pub struct MpiPoolBuilder {
    task_timeout: Option<Duration>,
}

impl MpiPoolBuilder {
    /// Fails a task running longer than `limit` with
    /// [`TaskError::TimedOut`](npshmex_pool::TaskError::TimedOut). Its rank
    /// cannot be replaced (MPI ranks are fixed): it gets no task until
    /// the late result arrives, and leaves with the others at shutdown
    /// even if the task never ends.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// An executor over every worker rank of `mpi`.
    ///
    /// # Errors
    /// [`MpiError::NoWorkers`] when the job has one rank,
    /// [`MpiError::WorkersTaken`] when another executor has the workers
    /// (or its shutdown ended them).
    pub fn build(self, mpi: &Mpi) -> Result<MpiPoolExecutor, MpiError> {
        let engine = mpi.engine().clone();
        engine.take(self.task_timeout)?;
        Ok(MpiPoolExecutor {
            engine,
            detached: AtomicBool::new(false),
        })
    }
}

/// A pool of MPI worker ranks running plain `fn(A) -> R` items, with the
/// surface of [`ProcessPoolExecutor`](npshmex_pool::ProcessPoolExecutor)
/// (Python: `mpi4py.futures.MPIPoolExecutor`).
///
/// `Send + Sync`. Dropping it shuts it down and waits for submitted tasks;
/// its shutdown ends the worker ranks.
pub struct MpiPoolExecutor {
    engine: Arc<Engine>,
    detached: AtomicBool,
}

impl std::fmt::Debug for MpiPoolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiPoolExecutor")
            .field("workers", &self.engine.workers().len())
            .finish_non_exhaustive()
    }
}

impl MpiPoolExecutor {
    /// Settings for a new executor.
    pub fn builder() -> MpiPoolBuilder {
        MpiPoolBuilder::default()
    }

    /// An executor over every worker rank, with default settings.
    ///
    /// # Errors
    /// As [`MpiPoolBuilder::build`].
    pub fn new(mpi: &Mpi) -> Result<Self, MpiError> {
        Self::builder().build(mpi)
    }

    /// The worker ranks.
    pub fn workers(&self) -> &[WorkerInfo] {
        self.engine.workers()
    }

    /// Schedules `f(arg)` on a worker rank and returns its future (see
    /// [`Executor::submit`]).
    ///
    /// # Errors
    /// As [`Executor::submit`].
    pub fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Executor::submit(self, f, arg)
    }

    /// `f` over every item of `args`, ordered and lazy (see
    /// [`Executor::map`]).
    ///
    /// # Errors
    /// As [`Executor::map`].
    pub fn map<A, R, I>(
        &self,
        f: fn(A) -> R,
        args: I,
        opts: MapOptions,
    ) -> Result<MapIter<'_, Self, A, R, I::IntoIter>, PoolError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Executor::map(self, f, args, opts)
    }

    /// Stops taking tasks; once the remaining ones are done (or
    /// cancelled) the worker ranks leave MPI and exit. Idempotent. Inside
    /// a done callback it never waits (callbacks run on the engine thread).
    pub fn shutdown(&self, opts: ShutdownOptions) {
        self.engine
            .close(opts.cancel_futures == CancelFutures::CancelPending);
        let wait = if self.engine.on_engine_thread() {
            Wait::Return
        } else {
            opts.wait
        };
        match wait {
            Wait::UntilDone => self.engine.wait_ended(),
            Wait::Return => self.detached.store(true, Ordering::SeqCst),
        }
    }
}

impl Executor for MpiPoolExecutor {
    fn submit_encoded<R>(&self, f: TaskFn, arg: Encoded) -> Result<Future<R>, PoolError>
    where
        R: DeserializeOwned + Send + 'static,
    {
        self.engine.check_open()?;
        let opts = self.engine.options();
        let arg = Outgoing::new(arg, opts.inline_max).map_err(|e| match e {
            MpiError::Shm { op, source } => PoolError::Transport { op, source },
            other => PoolError::Broken {
                reason: other.to_string(),
            },
        })?;
        let (fut, completer) = backend::pending_with_spin::<R>(opts.spin);
        self.engine.push(Job { f, arg, completer })?;
        Ok(fut)
    }

    fn max_workers(&self) -> usize {
        self.engine.workers().len()
    }

    fn check_open(&self) -> Result<(), PoolError> {
        self.engine.check_open()
    }

    fn shutdown(&self, opts: ShutdownOptions) {
        MpiPoolExecutor::shutdown(self, opts);
    }
}

impl Drop for MpiPoolExecutor {
    fn drop(&mut self) {
        let wait = if self.detached.load(Ordering::SeqCst) {
            Wait::Return
        } else {
            Wait::UntilDone
        };
        self.shutdown(ShutdownOptions {
            wait,
            cancel_futures: CancelFutures::RunPending,
        });
    }
}
