//! [`ProcessPoolExecutor`]: submitting tasks and shutting down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{Encoded, TaskFn};
use crate::builder::PoolBuilder;
use crate::error::{PoolError, TaskError};
use crate::executor::Executor;
use crate::future::Future;
use crate::map::{MapIter, MapOptions};
use crate::state::{Config, Inbox, Inner, Job, SlotState, State};
use crate::wire::{ExeId, PackError, Packet};

/// Whether [`shutdown`](ProcessPoolExecutor::shutdown) blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Return once every submitted task has finished and every worker has
    /// exited and been reaped (Python's `wait=True`).
    #[default]
    UntilDone,
    /// Return at once; the pool's threads finish the remaining work and
    /// reap the workers in the background (Python's `wait=False`).
    Return,
}

/// What [`shutdown`](ProcessPoolExecutor::shutdown) does with tasks not yet
/// sent to a worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CancelFutures {
    /// Run them (Python's `cancel_futures=False`).
    #[default]
    RunPending,
    /// Cancel them: their futures complete with
    /// [`TaskError::Cancelled`](crate::TaskError::Cancelled).
    CancelPending,
}

/// Options of [`ProcessPoolExecutor::shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownOptions {
    /// Block until done, or not.
    pub wait: Wait,
    /// Run or cancel the tasks still queued.
    pub cancel_futures: CancelFutures,
}

/// A pool of worker processes running plain `fn(A) -> R` items, with the
/// surface of Python's `concurrent.futures.ProcessPoolExecutor`.
///
/// `Send + Sync`: share it by reference or in an `Arc`. Dropping it shuts it
/// down and waits for submitted tasks (like leaving Python's `with` block).
pub struct ProcessPoolExecutor {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    detached: AtomicBool,
}

impl std::fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.inner.cfg.max_workers)
            .finish_non_exhaustive()
    }
}

impl ProcessPoolExecutor {
    /// Settings for a new pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// A pool of `max_workers` workers with default settings.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(max_workers: usize) -> Result<Self, PoolError> {
        Self::builder().max_workers(max_workers).build()
    }

    pub(crate) fn start(cfg: Config) -> Result<Self, PoolError> {
        let exe = ExeId::current().map_err(|source| PoolError::Spawn {
            op: "reading /proc/self/exe",
            source,
        })?;
        let n = cfg.max_workers;
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            cfg,
            exe,
            state: Mutex::new(State {
                slots: (0..n).map(|_| SlotState::default()).collect(),
                ..State::default()
            }),
            inbox: Inbox::default(),
            last_id: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        let mut first_error = None;
        for i in 0..n {
            let (inner, tx) = (inner.clone(), tx.clone());
            match std::thread::Builder::new()
                .name(format!("npshmex-slot-{i}"))
                .spawn(move || crate::slot::run(inner, i, tx))
            {
                Ok(h) => threads.push(h),
                Err(source) => {
                    first_error = Some(PoolError::Spawn {
                        op: "starting a slot thread",
                        source,
                    });
                    break;
                }
            }
        }
        drop(tx);
        for _ in 0..threads.len() {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        let pool = ProcessPoolExecutor {
            inner,
            threads: Mutex::new(threads),
            detached: AtomicBool::new(false),
        };
        match first_error {
            // Dropping the pool stops the workers that did start.
            Some(e) => Err(e),
            None => Ok(pool),
        }
    }

    /// Schedules `f(arg)` on a worker and returns its future.
    ///
    /// `f` is any `fn` item, or a closure that captures nothing; it travels
    /// as an address relative to this crate's code (no registration). The
    /// argument is encoded here, with postcard, inside an fd collector (so
    /// values holding shared-memory segments send them out of band); past
    /// the pool's `inline_max` the encoding travels in a sealed memfd.
    ///
    /// # Errors
    /// [`PoolError::ForeignFunction`] if `f` is not code of this executable
    /// (a shared library's, a plugin's), [`PoolError::Encode`] if `arg`
    /// cannot be serialized, [`PoolError::Transport`] if its memfd cannot be made,
    /// [`PoolError::ShutDown`] / [`PoolError::Broken`] if the pool no longer
    /// takes tasks.
    pub fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Executor::submit(self, f, arg)
    }

    /// `f` over every item of `args`, like Python's `Executor.map`: ordered,
    /// but lazy (a bounded window of chunks is in flight at a time). Each
    /// item's outcome is its own: a panic fails only that item. For several
    /// iterables, zip them into tuples.
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`] for a zero chunksize,
    /// [`PoolError::ShutDown`] / [`PoolError::Broken`] if the pool takes no
    /// tasks. Errors while the iterator submits later chunks are yielded as
    /// [`TaskError::Pool`].
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

    pub(crate) fn submit_packet<R>(
        &self,
        tramp: i64,
        func: i64,
        packet: Packet,
    ) -> Result<Future<R>, PoolError>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let fut = Future::new(self.inner.cfg.spin);
        let job = Job {
            id: self.inner.next_id(),
            tramp,
            func,
            packet,
            completion: fut.completion(),
        };
        let inbox = &self.inner.inbox;
        if inbox.takes_tasks() {
            // Every worker is busy: the next dispatch (a result coming
            // back) takes it; the state lock is left to the slot threads.
            let id = job.id;
            inbox.push(job);
            if inbox.is_closed() {
                return self.withdraw(id).map(|()| fut);
            }
            if inbox.room_since() {
                self.inner.lock().dispatch(&self.inner);
            }
            return Ok(fut);
        }
        let mut st = self.inner.lock();
        if let Some(err) = closed_error(&st) {
            return Err(err);
        }
        st.take_inbox(&self.inner);
        st.queue.push_back(job);
        st.dispatch(&self.inner);
        Ok(fut)
    }

    /// A task pushed to the inbox as the pool stopped taking tasks: it is
    /// withdrawn (the submit fails as if it came later) unless shutdown or
    /// the breaking pool already took it, which then decides its fate
    /// (run, cancelled or failed, like every other pending task).
    fn withdraw(&self, id: u64) -> Result<(), PoolError> {
        let mut st = self.inner.lock();
        st.take_inbox(&self.inner);
        let Some(at) = st.queue.iter().position(|j| j.id == id) else {
            return Ok(());
        };
        let job = st.queue.remove(at);
        let err = closed_error(&st).unwrap_or(PoolError::ShutDown);
        drop(st);
        drop(job);
        Err(err)
    }

    /// The number of worker processes.
    pub fn max_workers(&self) -> usize {
        self.inner.cfg.max_workers
    }

    fn check_open(&self) -> Result<(), PoolError> {
        closed_error(&self.inner.lock()).map_or(Ok(()), Err)
    }

    /// Pids of the live worker processes (for monitoring and leak checks).
    pub fn worker_pids(&self) -> Vec<u32> {
        let st = self.inner.lock();
        st.slots
            .iter()
            .filter(|s| s.conn.is_some())
            .map(|s| s.pid)
            .collect()
    }

    /// Stops taking tasks and lets the workers exit once the remaining ones
    /// are done (or cancelled). Idempotent; later submits return
    /// [`PoolError::ShutDown`]. Called (or the pool dropped) inside a done
    /// callback, it never waits, whatever `opts.wait` says: the callback
    /// holds up the very threads it would wait for.
    pub fn shutdown(&self, opts: ShutdownOptions) {
        let cancelled = {
            let mut st = self.inner.lock();
            st.shutting_down = true;
            st.close(&self.inner);
            let cancelled: Vec<Job> = match opts.cancel_futures {
                CancelFutures::CancelPending => st.queue.drain(..).collect(),
                CancelFutures::RunPending => Vec::new(),
            };
            st.retire_idle();
            cancelled
        };
        for job in cancelled {
            let c = job.into_completion();
            if !c.cancel() {
                c.fail(TaskError::Cancelled);
            }
        }
        // Inside a done callback, waiting would deadlock: the callback runs
        // on a slot thread, or on a caller receiving for a worker while it
        // holds that worker's receive role, which its slot thread needs to
        // finish. The threads finish in the background instead.
        let wait = if crate::future::in_callback() {
            Wait::Return
        } else {
            opts.wait
        };
        match wait {
            Wait::UntilDone => {
                let threads =
                    std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
                let me = std::thread::current().id();
                for t in threads {
                    // A done callback (run by a slot thread) that shuts the
                    // pool down must not join its own thread.
                    if t.thread().id() == me {
                        continue;
                    }
                    // A slot thread does not panic; if it did, its worker
                    // was reaped by WorkerProc's drop during unwinding.
                    let _ = t.join();
                }
            }
            Wait::Return => self.detached.store(true, Ordering::SeqCst),
        }
    }
}

impl Executor for ProcessPoolExecutor {
    fn submit_encoded<R>(&self, f: TaskFn, arg: Encoded) -> Result<Future<R>, PoolError>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let packet = Packet::from_encoded(arg, self.inner.cfg.inline_max).map_err(|e| match e {
            PackError::Encode(source) => PoolError::Encode { source },
            PackError::Shm(op, source) => PoolError::Transport { op, source },
        })?;
        let (tramp, func) = f.to_raw();
        self.submit_packet(tramp, func, packet)
    }

    fn max_workers(&self) -> usize {
        self.inner.cfg.max_workers
    }

    fn map_window(&self, chunksize: usize) -> usize {
        // Enough chunks to keep every worker's pipeline busy.
        let per_worker = self
            .inner
            .cfg
            .max_in_flight
            .div_ceil(chunksize.max(1))
            .max(2);
        self.inner.cfg.max_workers.saturating_mul(per_worker).max(2)
    }

    fn check_open(&self) -> Result<(), PoolError> {
        ProcessPoolExecutor::check_open(self)
    }

    fn shutdown(&self, opts: ShutdownOptions) {
        ProcessPoolExecutor::shutdown(self, opts);
    }
}

impl Drop for ProcessPoolExecutor {
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

/// Why the pool takes no more tasks, if it does not.
fn closed_error(st: &State) -> Option<PoolError> {
    if let Some(reason) = &st.broken {
        return Some(PoolError::Broken {
            reason: reason.clone(),
        });
    }
    st.shutting_down.then_some(PoolError::ShutDown)
}
