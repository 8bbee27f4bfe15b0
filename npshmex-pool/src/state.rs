//! The parent's shared state: the queue of tasks not yet sent, each worker
//! slot's tasks in flight, and the dispatch rule that moves tasks from the
//! queue to workers.
//!
//! While every worker is busy, submitters leave their tasks in the
//! [`Inbox`] (its own lock) instead of taking the state lock; every
//! dispatch first moves the inbox to the back of the queue, so the order of
//! submission is kept.
//!
//! Tasks are pipelined: a worker may hold several (up to `max_in_flight`,
//! and never more inline bytes than fit its request ring, so a send to a
//! worker that reads never waits while the lock is held; one to a worker
//! that stopped reading fails within a bounded time, and the worker is
//! closed). It runs them in order, so when it dies
//! the first unanswered task is the one that killed it and the others were
//! not started: they go back to the front of the queue. A future is
//! cancellable only while its task is still in the queue.

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::channel::Channel;
use crate::future::Completion;
use crate::rx::{Assigned, Rx};
use crate::wire::{self, ExeId, Packet, TaskHead, ToWorker};
use crate::StartMethod;

/// Most tasks in one frame.
const MAX_FRAME_TASKS: usize = 64;
/// Most inline payload bytes in flight to one worker (far below the
/// request ring's size, so a send to a worker that reads never waits for
/// room while the state lock is held).
const MAX_IN_FLIGHT_BYTES: usize = 96 * 1024;

/// The builder's settings, fixed for the pool's life.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) max_workers: usize,
    pub(crate) initializer: Option<fn()>,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) start_method: StartMethod,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) initializer_timeout: Option<Duration>,
    pub(crate) spin: Duration,
    pub(crate) inline_max: usize,
    pub(crate) max_in_flight: usize,
}

/// What every thread of a pool shares.
pub(crate) struct Inner {
    /// This very `Inner`, for futures that help receive (see `Assigned`).
    pub(crate) me: Weak<Inner>,
    pub(crate) cfg: Config,
    pub(crate) exe: ExeId,
    pub(crate) state: Mutex<State>,
    /// Tasks submitted while no worker could take more.
    pub(crate) inbox: Inbox,
    /// The last task id handed out (ids start at 1: a worker announces 0
    /// for "no task", see `channel`).
    pub(crate) last_id: AtomicU64,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock (completions run outside
        // it), so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new task id.
    pub(crate) fn next_id(&self) -> u64 {
        self.last_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Where a task submitted while every worker's pipeline is full waits for
/// the next dispatch, so that its submitter takes only this lock and not
/// the state lock that the slot threads take for every result: with tiny
/// tasks the submitter and the slot threads contended for that lock on
/// every task, and a holder preempted on a busy machine stalled the others.
///
/// The rule: a dispatch that leaves a worker with room clears `saturated`
/// and then looks at `len`; a submitter bumps `len` and then looks at
/// `saturated` (both sequentially consistent), so one of the two always
/// sees the other and the task is dispatched at once. A dispatch that
/// leaves no room is followed by another (a result, a worker that starts
/// or ends), which takes the inbox first. Shutdown and a broken pool set
/// `closed` and then empty the inbox; a submitter that sees `closed` after
/// its push withdraws its task if it is still waiting (see
/// `ProcessPoolExecutor::submit_packet`).
#[derive(Default)]
pub(crate) struct Inbox {
    jobs: Mutex<Vec<Job>>,
    len: AtomicUsize,
    /// No worker has room: a submit may leave its task here.
    saturated: AtomicBool,
    /// The pool takes no more tasks (shutting down or broken).
    closed: AtomicBool,
}

impl Inbox {
    /// Whether a submit should leave its task here rather than dispatch.
    pub(crate) fn takes_tasks(&self) -> bool {
        self.saturated.load(Ordering::SeqCst) && !self.closed.load(Ordering::SeqCst)
    }

    /// Leaves `job` for the next dispatch.
    pub(crate) fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
        self.len.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a dispatch left room since the caller's push (then the
    /// caller dispatches: its task may be the one no dispatch saw).
    pub(crate) fn room_since(&self) -> bool {
        !self.saturated.load(Ordering::SeqCst)
    }

    /// Whether the pool stopped taking tasks.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// One task, encoded and ready to send.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) tramp: i64,
    pub(crate) func: i64,
    pub(crate) packet: Packet,
    pub(crate) completion: Arc<dyn Completion>,
}

impl Job {
    /// The future's side, after closing the task's argument (memfd and
    /// out-of-band fds), so that no fd of the task is open any more once
    /// its future completes.
    pub(crate) fn into_completion(self) -> Arc<dyn Completion> {
        self.completion
    }
}

/// A task sent to a worker and not answered yet.
pub(crate) struct InFlight {
    pub(crate) job: Job,
    /// When it started running (known for the head of the pipeline only).
    pub(crate) started: Option<Instant>,
}

/// One worker slot as the dispatcher sees it.
#[derive(Default)]
pub(crate) struct SlotState {
    /// The receiving role of this slot (lives across worker restarts).
    pub(crate) rx: Arc<Rx>,
    /// The live worker's socket; `None` while (re)starting or stopped.
    pub(crate) conn: Option<Arc<Channel>>,
    pub(crate) pid: u32,
    pub(crate) in_flight: VecDeque<InFlight>,
    pub(crate) in_flight_bytes: usize,
    /// Tasks this worker may still be sent (`max_tasks_per_child`).
    pub(crate) budget: Option<u64>,
    /// The worker's initializer has finished (task timers start then).
    pub(crate) ready: bool,
    /// When a worker that is not ready yet is given up
    /// (`initializer_timeout`).
    pub(crate) ready_by: Option<Instant>,
    /// Workers of this slot in a row that died before they were ready.
    pub(crate) start_deaths: u32,
    /// Smoothed run time of this slot's recent tasks; `None` until one
    /// finished.
    pub(crate) avg_task: Option<Duration>,
}

/// Tasks longer than this on average are not pipelined deeply: the saved
/// round trip is negligible next to them, and a deep pipeline would leave
/// other workers idle while tasks wait behind a long one.
const LONG_TASK: Duration = Duration::from_micros(500);
/// Pipeline depth for long tasks, and for a worker whose task length is not
/// known yet: one, as Python's pool, so a queued task goes to whichever
/// worker frees up first instead of waiting behind a long one. The round
/// trip it costs (a few microseconds) is below 1% of such a task.
const LONG_TASK_DEPTH: usize = 1;
/// How much work (by the slot's average task time) a worker may hold ahead:
/// enough tiny tasks that a refill frame is shared by dozens of them, and
/// at most this long for another worker to sit idle at the end of a batch
/// while tasks wait behind this one.
const QUEUED_WORK: Duration = Duration::from_micros(250);
/// The least depth of a short-task pipeline (one running, one waiting).
const SHORT_TASK_DEPTH: usize = 2;

/// The mutable part.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) queue: VecDeque<Job>,
    pub(crate) slots: Vec<SlotState>,
    pub(crate) shutting_down: bool,
    pub(crate) broken: Option<String>,
}

impl State {
    /// Moves the inbox's tasks to the back of the queue (lock order: the
    /// state, then the inbox).
    pub(crate) fn take_inbox(&mut self, inner: &Inner) {
        let inbox = &inner.inbox;
        if inbox.len.load(Ordering::SeqCst) > 0 {
            let mut jobs = inbox.jobs.lock().unwrap_or_else(|p| p.into_inner());
            inbox.len.store(0, Ordering::SeqCst);
            self.queue.extend(jobs.drain(..));
        }
    }

    /// No more tasks are taken: submitters stop using the inbox, and what
    /// it holds joins the queue.
    pub(crate) fn close(&mut self, inner: &Inner) {
        inner.inbox.closed.store(true, Ordering::SeqCst);
        self.take_inbox(inner);
    }

    /// Sends queued tasks (the inbox's first) to workers with room, in
    /// batches, and tells submitters whether any room is left.
    pub(crate) fn dispatch(&mut self, inner: &Inner) {
        loop {
            self.take_inbox(inner);
            self.dispatch_queue(inner);
            let room = self.broken.is_some() || self.slots.iter().any(|s| s.has_room(&inner.cfg));
            inner.inbox.saturated.store(!room, Ordering::SeqCst);
            // A task pushed before the flag was cleared may have been
            // missed by its submitter's check: take it now.
            if !room || self.broken.is_some() || inner.inbox.len.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }

    fn dispatch_queue(&mut self, inner: &Inner) {
        let cfg = &inner.cfg;
        if self.broken.is_some() {
            return;
        }
        while let Some(front) = self.queue.front() {
            let len = front.packet.inline().len();
            // Only a slot that can take the front task: `send_batch` sends
            // nothing to one that cannot, and picking it again would spin
            // here forever with the lock held.
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.has_room(cfg) && s.fits(len))
                .min_by_key(|(_, s)| s.in_flight.len())
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            self.send_batch(i, inner);
        }
    }

    fn send_batch(&mut self, i: usize, inner: &Inner) {
        let cfg = &inner.cfg;
        let slot = &mut self.slots[i];
        let Some(conn) = slot.conn.clone() else {
            return;
        };
        let at = Assigned {
            inner: inner.me.clone(),
            index: i,
            conn: conn.clone(),
            rx: slot.rx.clone(),
        };
        let mut batch: Vec<Job> = Vec::new();
        let mut bytes = slot.in_flight_bytes;
        let mut fds = 0usize;
        let depth = slot.depth(cfg);
        while let Some(job) = self.queue.front() {
            let room = depth.saturating_sub(slot.in_flight.len() + batch.len());
            let budget = slot.budget.map_or(usize::MAX, |b| b as usize);
            if room == 0 || batch.len() >= budget || batch.len() >= MAX_FRAME_TASKS {
                break;
            }
            let len = job.packet.inline().len();
            let empty = slot.in_flight.is_empty() && batch.is_empty();
            if !empty && bytes + len > MAX_IN_FLIGHT_BYTES {
                break;
            }
            // pack() keeps every job below the frame's fd limit; a batch
            // must stay below it too.
            let nfds = job.packet.fd_count() as usize;
            if !batch.is_empty() && fds + nfds > npshmex_shm::MAX_FRAME_FDS as usize {
                break;
            }
            fds += nfds;
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            // A cancelled future's task is dropped here, unsent.
            if !job.completion.start(Some(&at)) {
                continue;
            }
            bytes += len;
            batch.push(job);
        }
        if batch.is_empty() {
            return;
        }
        let heads: Vec<TaskHead> = batch
            .iter()
            .map(|j| TaskHead {
                id: j.id,
                tramp: j.tramp,
                func: j.func,
                body: j.packet.body(),
                fds: j.packet.fd_count(),
                moved: j.packet.moved().to_vec(),
            })
            .collect();
        let payload_len: usize = batch.iter().map(|j| j.packet.inline().len()).sum();
        let frame = ToWorker::Tasks(heads);
        match wire::encode_frame(&frame, payload_len) {
            Ok(head) => {
                let mut parts: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
                parts.push(&head);
                parts.extend(
                    batch
                        .iter()
                        .map(|j| j.packet.inline())
                        .filter(|b| !b.is_empty()),
                );
                let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
                for j in &batch {
                    j.packet.push_fds(&mut fds);
                }
                // A failed send means the worker is gone (or the channel is
                // broken, then closing it makes it so): its slot thread sees
                // that and requeues or fails what is in flight.
                if conn.send(&parts, &fds).is_err() {
                    conn.close();
                }
            }
            Err(_) => {
                // Headers are plain integers; postcard cannot fail on them
                // short of running out of memory. Should it, closing the
                // worker makes its slot requeue or fail what is in flight.
                conn.close();
            }
        }
        let now = Instant::now();
        if let Some(b) = &mut slot.budget {
            *b = b.saturating_sub(batch.len() as u64);
        }
        slot.in_flight_bytes = bytes;
        for job in batch {
            let started = (slot.in_flight.is_empty() && slot.ready).then_some(now);
            slot.in_flight.push_back(InFlight { job, started });
        }
        slot.note_held();
    }

    /// Marks the pool broken: nothing more is dispatched, every worker is
    /// told to stop. Returns the tasks that will never run.
    pub(crate) fn break_pool(&mut self, inner: &Inner, reason: String) -> Vec<Job> {
        if self.broken.is_none() {
            self.broken = Some(reason);
        }
        self.close(inner);
        let mut lost: Vec<Job> = self.queue.drain(..).collect();
        for slot in &mut self.slots {
            lost.extend(slot.in_flight.drain(..).map(|f| f.job));
            slot.in_flight_bytes = 0;
            slot.note_held();
            if let Some(conn) = &slot.conn {
                conn.close();
            }
        }
        lost
    }

    /// Tells idle workers to stop once the pool is shutting down and no
    /// work is left for them.
    pub(crate) fn retire_idle(&mut self) {
        if !self.shutting_down || !self.queue.is_empty() {
            return;
        }
        for slot in &mut self.slots {
            if slot.in_flight.is_empty() {
                if let Some(conn) = &slot.conn {
                    conn.close();
                }
            }
        }
    }
}

impl SlotState {
    /// How many tasks this worker may hold: one while its tasks are long
    /// or not known yet, else about [`QUEUED_WORK`] of them, within
    /// `max_in_flight`.
    fn depth(&self, cfg: &Config) -> usize {
        match self.avg_task {
            Some(avg) if avg <= LONG_TASK => {
                let by_time = QUEUED_WORK.as_nanos() / avg.as_nanos().max(1);
                usize::try_from(by_time)
                    .unwrap_or(usize::MAX)
                    .max(SHORT_TASK_DEPTH)
                    .min(cfg.max_in_flight)
            }
            _ => cfg.max_in_flight.min(LONG_TASK_DEPTH),
        }
    }

    /// Publishes how many tasks the worker holds, for callers deciding
    /// without the state lock whether to receive for it (`Rx::held`).
    /// Called after every change of `in_flight`.
    pub(crate) fn note_held(&self) {
        self.rx.held.store(self.in_flight.len(), Ordering::Relaxed);
    }

    /// Records that the head task took `took`.
    pub(crate) fn observe(&mut self, took: Duration) {
        // Exponential average, weight 1/4: adapts within a few tasks.
        self.avg_task = Some(match self.avg_task {
            Some(avg) => (avg * 3 + took) / 4,
            None => took,
        });
    }

    /// The initializer finished: the head task starts running now.
    pub(crate) fn mark_ready(&mut self, now: Instant) {
        self.ready = true;
        self.start_deaths = 0;
        if let Some(head) = self.in_flight.front_mut() {
            head.started.get_or_insert(now);
        }
    }

    /// Whether a task of `len` inline bytes may join what this worker
    /// holds (the rule `send_batch` applies to its first task).
    fn fits(&self, len: usize) -> bool {
        self.in_flight.is_empty() || self.in_flight_bytes + len <= MAX_IN_FLIGHT_BYTES
    }

    /// Whether to send this worker more now. Past half its pipeline it
    /// waits until it drains to half, so refills go out as batches (one
    /// frame, one syscall) rather than one frame per finished task.
    fn has_room(&self, cfg: &Config) -> bool {
        let depth = self.depth(cfg);
        self.conn.is_some()
            && self.in_flight.len() <= depth / 2
            && self.in_flight.len() < depth
            && self.budget.is_none_or(|b| b > 0)
            && (self.in_flight.is_empty() || self.in_flight_bytes < MAX_IN_FLIGHT_BYTES)
    }
}
