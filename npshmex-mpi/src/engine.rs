//! Rank 0's engine: the one thread that makes MPI calls in the caller's
//! process. Executors hand it jobs through a queue; it sends each to an
//! idle worker, receives results into fresh segments, completes the
//! futures, keeps time (task timeouts, heartbeats, silent workers) and ends
//! the workers at shutdown.
//!
//! One thread owns every request, so MPI runs at `MPI_THREAD_SERIALIZED`
//! without a lock around it, and a submit costs a queue push. The engine
//! never blocks in MPI: it tests non-blocking requests, spinning for a
//! short while after each message and then backing off to sleeps of at
//! most a millisecond while tasks are out, and parks on a condition
//! variable when nothing is (waking for the heartbeat). Python's
//! `mpi4py.futures` works the same way (a manager thread with a backoff).
//!
//! A worker gets one task at a time: its next frame can then only be that
//! task's result, and a worker busy in a task can only be sent `Shutdown`,
//! which its watchdog thread reads. This file holds what executors share
//! with the engine thread; the thread's loop is in `engine/run.rs`.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use npshmex_pool::backend::{BuildId, Completer, TaskFn};
use npshmex_pool::{PoolError, TaskError};

mod run;

use crate::error::MpiError;
use crate::inflight::Outgoing;
use crate::raw::Comm;
use crate::session::InitOptions;

/// A worker rank, as it introduced itself at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its rank (1..N).
    pub rank: i32,
    /// The host it runs on (`MPI_Get_processor_name`).
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
}

/// A task waiting for a worker.
pub(crate) struct Job {
    pub(crate) f: TaskFn,
    pub(crate) arg: Outgoing,
    pub(crate) completer: Completer,
}

#[derive(Default)]
struct Control {
    queue: VecDeque<Job>,
    task_timeout: Option<Duration>,
    /// An executor owns the workers (or did: its shutdown ended them).
    taken: bool,
    /// No new tasks; end the workers once the queue and tasks are done.
    closing: bool,
    /// The engine loop has ended (workers told to leave, or the job is
    /// gone).
    ended: bool,
    broken: Option<String>,
    launcher_gone: bool,
    /// A worker died: MPI_Finalize could wait for it forever.
    lost_rank: bool,
    /// The engine is parked on `wake`.
    parked: bool,
}

/// What executors and [`Mpi`](crate::Mpi) share with the engine thread.
pub(crate) struct Engine {
    ctl: Mutex<Control>,
    wake: Condvar,
    ended: Condvar,
    workers: Vec<WorkerInfo>,
    build: BuildId,
    opts: InitOptions,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: Mutex<Option<std::thread::ThreadId>>,
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, Control> {
        // Nothing panics while holding it; a poisoned lock is consistent.
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn workers(&self) -> &[WorkerInfo] {
        &self.workers
    }

    pub(crate) fn build_id(&self) -> &BuildId {
        &self.build
    }

    pub(crate) fn options(&self) -> &InitOptions {
        &self.opts
    }

    /// Gives the workers to an executor.
    pub(crate) fn take(&self, task_timeout: Option<Duration>) -> Result<(), MpiError> {
        if self.workers.is_empty() {
            return Err(MpiError::NoWorkers);
        }
        let mut c = self.lock();
        if c.taken || c.closing {
            return Err(MpiError::WorkersTaken);
        }
        c.taken = true;
        c.task_timeout = task_timeout;
        Ok(())
    }

    pub(crate) fn check_open(&self) -> Result<(), PoolError> {
        let c = self.lock();
        if let Some(reason) = &c.broken {
            return Err(PoolError::Broken {
                reason: reason.clone(),
            });
        }
        if c.closing || c.ended {
            return Err(PoolError::ShutDown);
        }
        Ok(())
    }

    /// Queues a job for the engine.
    pub(crate) fn push(&self, job: Job) -> Result<(), PoolError> {
        let mut c = self.lock();
        if let Some(reason) = &c.broken {
            return Err(PoolError::Broken {
                reason: reason.clone(),
            });
        }
        if c.closing || c.ended {
            return Err(PoolError::ShutDown);
        }
        c.queue.push_back(job);
        if c.parked {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// No more tasks; with `cancel`, queued ones are cancelled.
    pub(crate) fn close(&self, cancel: bool) {
        let cancelled: Vec<Job> = {
            let mut c = self.lock();
            c.closing = true;
            self.wake.notify_one();
            if cancel {
                c.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for job in cancelled {
            let c = job.completer;
            if !c.cancel() {
                c.fail(TaskError::Cancelled);
            }
        }
    }

    /// Whether the calling thread is the engine's (done callbacks run
    /// there; they must not wait for it).
    pub(crate) fn on_engine_thread(&self) -> bool {
        *self.thread_id.lock().unwrap_or_else(|p| p.into_inner())
            == Some(std::thread::current().id())
    }

    /// Waits until the engine loop has ended.
    pub(crate) fn wait_ended(&self) {
        let mut c = self.lock();
        while !c.ended {
            c = self.ended.wait(c).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Ends the engine (workers told to leave once running tasks are done)
    /// and joins its thread. Returns whether MPI can be finalized (false
    /// when the launcher is gone or a rank died: `MPI_Finalize` waits for
    /// every rank).
    pub(crate) fn stop(&self) -> bool {
        self.close(false);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            // The engine catches nothing: if it panicked, its requests are
            // abandoned (their buffers were buried) and MPI is still
            // finalized by the caller.
            let _ = h.join();
        }
        let c = self.lock();
        !c.launcher_gone && !c.lost_rank
    }

    fn finish(&self, launcher_gone: bool, broken: Option<String>) {
        let queued: Vec<Job> = {
            let mut c = self.lock();
            c.ended = true;
            c.launcher_gone |= launcher_gone;
            if let Some(b) = broken {
                c.broken.get_or_insert(b);
            }
            self.ended.notify_all();
            c.queue.drain(..).collect()
        };
        for job in queued {
            if !job.completer.cancel() {
                job.completer.fail(TaskError::Cancelled);
            }
        }
    }
}

/// Starts the engine thread for the workers that passed the handshake.
pub(crate) fn start(
    comm: Comm,
    workers: Vec<WorkerInfo>,
    build: BuildId,
    opts: InitOptions,
) -> Result<Arc<Engine>, MpiError> {
    let engine = Arc::new(Engine {
        ctl: Mutex::new(Control::default()),
        wake: Condvar::new(),
        ended: Condvar::new(),
        workers,
        build,
        opts,
        thread: Mutex::new(None),
        thread_id: Mutex::new(None),
    });
    let mut lp = run::Loop::new(engine.clone(), comm);
    let handle = std::thread::Builder::new()
        .name("npshmex-mpi-engine".into())
        .spawn(move || lp.run_guarded())
        .map_err(MpiError::Thread)?;
    *engine.thread_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.thread().id());
    *engine.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    Ok(engine)
}

/// The parent process id (the launcher's daemon).
pub(crate) fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}
