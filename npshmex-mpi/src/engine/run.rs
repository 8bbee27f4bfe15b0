//! The engine thread's loop: a small state machine per worker rank (idle,
//! sending a task, running it, sending back its result; retired after a
//! timeout or a bad frame; dead after a silence), advanced by testing
//! non-blocking requests, never by blocking in MPI.
//!
//! It lives apart from the handle executors share ([`super::Engine`]) so
//! that nothing outside the engine thread can touch a request or a buffer
//! MPI is using.

use std::sync::Arc;
use std::time::{Duration, Instant};

use npshmex_pool::backend::Completer;
use npshmex_pool::{PoolError, TaskError, WorkerExit};

use super::{parent_pid, Engine, Job};
use crate::error::MpiError;
use crate::frame::{self, Task, ToCaller, ToWorker};
use crate::inflight::{Buf, InFlight, Incoming};
use crate::raw::{self, Comm, Tag};

/// The task a worker runs.
struct Current {
    id: u64,
    /// `None` once the caller gave up on it (task timeout).
    completer: Option<Completer>,
    started: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retired {
    /// Its task outlived the timeout; a late result brings it back.
    TimedOut,
    /// Its stream is out of step (a bad frame, a failed transfer): only
    /// `Shutdown` is sent to it any more.
    OutOfStep,
}

struct Worker {
    rank: i32,
    pid: u32,
    last_heard: Instant,
    current: Option<Current>,
    sends: Vec<InFlight>,
    incoming: Option<Incoming>,
    retired: Option<Retired>,
    dead: bool,
}

impl Worker {
    fn idle(&self) -> bool {
        !self.dead && self.retired.is_none() && self.current.is_none() && self.incoming.is_none()
    }

    /// Fails the current task, if the caller still waits for it.
    fn fail(&mut self, err: TaskError) {
        if let Some(c) = self.current.take().and_then(|c| c.completer) {
            c.fail(err);
        }
    }
}

fn transport(op: &'static str, e: MpiError) -> TaskError {
    TaskError::Transport {
        op,
        source: Arc::new(e),
    }
}

pub(super) struct Loop {
    engine: Arc<Engine>,
    comm: Comm,
    w: Vec<Worker>,
    next_id: u64,
    /// Frames being received, in the order they were matched (MPI keeps
    /// one sender's messages in order; so is each handled).
    frames: Vec<InFlight>,
    beats: Vec<InFlight>,
    last_beat: Instant,
    ppid: u32,
    last_ppid_check: Instant,
}

impl Loop {
    pub(super) fn new(engine: Arc<Engine>, comm: Comm) -> Loop {
        let now = Instant::now();
        let w = engine
            .workers
            .iter()
            .map(|i| Worker {
                rank: i.rank,
                pid: i.pid,
                last_heard: now,
                current: None,
                sends: Vec::new(),
                incoming: None,
                retired: None,
                dead: false,
            })
            .collect();
        Loop {
            engine,
            comm,
            w,
            next_id: 0,
            frames: Vec::new(),
            beats: Vec::new(),
            last_beat: now,
            ppid: parent_pid(),
            last_ppid_check: now,
        }
    }

    fn worker(&mut self, rank: i32) -> Option<&mut Worker> {
        let i = usize::try_from(rank.checked_sub(1)?).ok()?;
        self.w.get_mut(i)
    }

    /// [`Loop::run`]; should it panic, every task fails and the engine
    /// ends, so that no future, shutdown or drop waits for a thread that
    /// is gone.
    pub(super) fn run_guarded(&mut self) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        if run.is_err() {
            self.break_all();
            self.engine
                .finish(false, Some("the MPI engine thread panicked".into()));
        }
    }

    fn run(&mut self) {
        let spin = self.engine.opts.spin;
        let mut last_progress = Instant::now();
        let mut backoff = Duration::from_micros(20);
        loop {
            let progress = match self.step() {
                Ok(p) => p,
                Err(e) => {
                    self.break_all();
                    self.engine.finish(false, Some(e.to_string()));
                    return;
                }
            };
            if self.launcher_gone() {
                self.break_all();
                self.engine
                    .finish(true, Some("the MPI launcher of this job is gone".into()));
                return;
            }
            if self.closing_done() {
                self.end_workers();
                self.engine.finish(false, None);
                return;
            }
            let now = Instant::now();
            if progress {
                last_progress = now;
                backoff = Duration::from_micros(20);
                continue;
            }
            // MPI moves bytes only inside its calls (no progress thread
            // for TCP): while a transfer is under way, poll without sleep.
            if now.duration_since(last_progress) < spin || self.transferring() {
                std::thread::yield_now();
            } else if self.active() {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(1));
            } else {
                self.park();
            }
        }
    }

    /// Whether bytes are moving (a frame, a task's data or a result's).
    /// Sends to a worker out of step may never complete: they are polled,
    /// but not worth a spinning engine.
    fn transferring(&self) -> bool {
        !self.frames.is_empty()
            || self.w.iter().any(|w| {
                !w.dead
                    && w.retired != Some(Retired::OutOfStep)
                    && (w.incoming.is_some() || !w.sends.is_empty())
            })
    }

    /// Whether anything is out that MPI must be polled for.
    fn active(&self) -> bool {
        !self.frames.is_empty()
            || self.w.iter().any(|w| {
                !w.dead && (w.current.is_some() || w.incoming.is_some() || !w.sends.is_empty())
            })
    }

    /// Sleeps until a job comes, or the next heartbeat is due.
    fn park(&mut self) {
        let beat = self.engine.opts.heartbeat;
        let until = crate::after(self.last_beat, beat);
        let mut c = self.engine.lock();
        if !c.queue.is_empty() || c.closing {
            return;
        }
        let now = Instant::now();
        if now >= until {
            return;
        }
        c.parked = true;
        let wait = (until - now).min(Duration::from_millis(100));
        let (mut c, _) = self
            .engine
            .wake
            .wait_timeout(c, wait)
            .unwrap_or_else(|p| p.into_inner());
        c.parked = false;
    }

    fn step(&mut self) -> Result<bool, MpiError> {
        let mut progress = self.dispatch();
        progress |= self.poll_sends();
        progress |= self.receive_frames()?;
        progress |= self.poll_incoming();
        progress |= self.heartbeats()?;
        self.check_time();
        self.check_left();
        Ok(progress)
    }

    /// When no worker can ever take a task again (all dead, or out of
    /// step), queued tasks fail instead of waiting forever, and the
    /// executor is broken.
    fn check_left(&mut self) {
        let usable = self
            .w
            .iter()
            .any(|w| !w.dead && w.retired != Some(Retired::OutOfStep));
        if usable {
            return;
        }
        let queued: Vec<Job> = {
            let mut c = self.engine.lock();
            c.broken
                .get_or_insert_with(|| "no worker rank is left".to_string());
            c.queue.drain(..).collect()
        };
        for job in queued {
            job.completer.fail(TaskError::Pool {
                source: Arc::new(PoolError::Broken {
                    reason: "no worker rank is left".to_string(),
                }),
            });
        }
    }

    /// Sends queued jobs to idle workers.
    fn dispatch(&mut self) -> bool {
        let mut progress = false;
        loop {
            let Some(i) = self.w.iter().position(Worker::idle) else {
                return progress;
            };
            let job = {
                let mut c = self.engine.lock();
                match c.queue.pop_front() {
                    Some(j) => j,
                    None => return progress,
                }
            };
            progress = true;
            if !job.completer.start() {
                continue; // cancelled meanwhile
            }
            let id = self.next_id;
            self.next_id += 1;
            let (tramp, func) = job.f.to_raw();
            let w = &mut self.w[i];
            let head = ToWorker::Task(Task {
                id,
                tramp,
                func,
                arg: job.arg.payload.clone(),
            });
            let mut flight = InFlight::new(w.rank);
            let sent = frame::encode(0, &head, &job.arg.inline)
                .and_then(|bytes| job.arg.post(&self.comm, bytes, &mut flight));
            w.sends.push(flight);
            match sent {
                Ok(()) => {
                    w.current = Some(Current {
                        id,
                        completer: Some(job.completer),
                        started: Instant::now(),
                    });
                }
                Err(e) => {
                    job.completer
                        .fail(transport("sending a task to a worker rank", e));
                    w.retired = Some(Retired::OutOfStep);
                }
            }
        }
    }

    fn poll_sends(&mut self) -> bool {
        let mut progress = false;
        for w in &mut self.w {
            if w.dead || w.sends.is_empty() {
                continue;
            }
            let mut failed = None;
            for f in &mut w.sends {
                if let Err(e) = f.poll() {
                    failed.get_or_insert(e);
                }
            }
            let before = w.sends.len();
            // Completed sends give their buffers back (moved segments go
            // to this process's cache).
            w.sends = std::mem::take(&mut w.sends)
                .into_iter()
                .filter_map(|f| f.into_bufs().err())
                .collect();
            progress |= w.sends.len() != before;
            if let Some(e) = failed {
                w.fail(transport("sending a task to a worker rank", e));
                w.retired = Some(Retired::OutOfStep);
                progress = true;
            }
        }
        progress
    }

    fn receive_frames(&mut self) -> Result<bool, MpiError> {
        let mut progress = false;
        while let Some(m) = self.comm.probe(raw::any_source(), Tag::Frame)? {
            progress = true;
            let mut f = InFlight::new(m.source);
            f.receive_matched(m, Vec::new())?;
            self.frames.push(f);
        }
        let mut i = 0;
        while i < self.frames.len() {
            let done = match self.frames[i].poll() {
                Ok(d) => d,
                Err(e) => {
                    let f = self.frames.remove(i);
                    if let Some(w) = self.worker(f.peer()) {
                        w.fail(transport("receiving a result frame", e));
                        w.retired = Some(Retired::OutOfStep);
                    }
                    progress = true;
                    continue;
                }
            };
            if !done {
                i += 1;
                continue;
            }
            progress = true;
            let f = self.frames.remove(i);
            let peer = f.peer();
            let bytes = f.into_frame().unwrap_or_default();
            self.on_frame(peer, &bytes);
        }
        Ok(progress)
    }

    fn on_frame(&mut self, peer: i32, bytes: &[u8]) {
        let comm = self.comm;
        let Some(w) = self.worker(peer) else { return };
        if w.dead {
            // Its task already failed and its transfers are buried.
            return;
        }
        w.last_heard = Instant::now();
        let (head, inline) = match frame::decode::<ToCaller>(peer, bytes) {
            Ok(x) => x,
            Err(e) => {
                w.fail(transport("reading a worker rank's frame", e));
                w.retired = Some(Retired::OutOfStep);
                return;
            }
        };
        match head {
            ToCaller::Done { id, outcome } => {
                // A worker answers the task it runs, once: a result for
                // another id (never sent, or answered already) or a second
                // one while the first is still coming in means its stream
                // is out of step. The task it runs fails; it is not
                // replaced by the stray id, which would leave its future
                // waiting forever.
                let expected =
                    w.incoming.is_none() && w.current.as_ref().is_some_and(|c| c.id == id);
                if !expected {
                    w.fail(transport(
                        "reading a worker rank's frame",
                        MpiError::BadFrame {
                            rank: peer,
                            reason: "a result for a task the worker was not running",
                            source: None,
                        },
                    ));
                    w.incoming = None;
                    w.retired = Some(Retired::OutOfStep);
                    return;
                }
                let completer = w.current.as_mut().and_then(|c| c.completer.take());
                match outcome {
                    Ok(payload) => match Incoming::post(&comm, peer, &payload, inline) {
                        Ok(inc) => {
                            // The future is completed when the bytes are in.
                            w.current = Some(Current {
                                id,
                                completer,
                                started: Instant::now(),
                            });
                            w.incoming = Some(inc);
                        }
                        Err(e) => {
                            if let Some(c) = completer {
                                c.fail(transport("receiving a task's result", e));
                            }
                            w.current = None;
                            w.retired = Some(Retired::OutOfStep);
                        }
                    },
                    Err(failure) => {
                        if let Some(c) = completer {
                            c.fail(failure.into_task_error());
                        }
                        w.current = None;
                        if w.retired == Some(Retired::TimedOut) {
                            w.retired = None;
                        }
                    }
                }
            }
            ToCaller::Confused { reason } => {
                let e = MpiError::BadFrame {
                    rank: peer,
                    reason: "the worker could not read a frame of rank 0",
                    source: None,
                };
                warn!("npshmex-mpi: worker rank {peer} is out of step: {reason}");
                w.fail(transport("talking to a worker rank", e));
                w.retired = Some(Retired::OutOfStep);
            }
            ToCaller::Hello { .. } => {}
        }
    }

    fn poll_incoming(&mut self) -> bool {
        let mut progress = false;
        for w in &mut self.w {
            let Some(inc) = w.incoming.as_mut() else {
                continue;
            };
            match inc.poll() {
                Ok(false) => {}
                Ok(true) => {
                    progress = true;
                    let Some(inc) = w.incoming.take() else {
                        continue;
                    };
                    let completer = w.current.take().and_then(|c| c.completer);
                    match inc.finish() {
                        Ok(got) => {
                            if let Some(c) = completer {
                                c.finish(&got.bytes, got.items);
                            }
                        }
                        Err(_) => {
                            // poll() said every receive completed, so this
                            // cannot happen; should it, the task fails
                            // rather than waiting forever.
                            if let Some(c) = completer {
                                c.fail(transport(
                                    "receiving a task's result",
                                    MpiError::Size {
                                        rank: w.rank,
                                        len: 0,
                                        reason: "a receive did not complete",
                                    },
                                ));
                            }
                            w.retired = Some(Retired::OutOfStep);
                            continue;
                        }
                    }
                    if w.retired == Some(Retired::TimedOut) {
                        w.retired = None;
                    }
                }
                Err(e) => {
                    progress = true;
                    w.incoming = None;
                    w.fail(transport("receiving a task's result", e));
                    w.retired = Some(Retired::OutOfStep);
                }
            }
        }
        progress
    }

    fn heartbeats(&mut self) -> Result<bool, MpiError> {
        let mut progress = false;
        while let Some(m) = self.comm.probe(raw::any_source(), Tag::Beat)? {
            let from = m.source;
            let mut f = InFlight::new(from);
            f.receive_matched(m, vec![0; 1])?;
            self.beats.push(f);
            if let Some(w) = self.worker(from) {
                w.last_heard = Instant::now();
            }
            progress = true;
        }
        let now = Instant::now();
        if now.duration_since(self.last_beat) >= self.engine.opts.heartbeat {
            self.last_beat = now;
            for w in &self.w {
                if w.dead {
                    continue;
                }
                let mut f = InFlight::new(w.rank);
                f.send(&self.comm, Tag::Beat, Buf::Bytes(vec![0]))?;
                self.beats.push(f);
            }
        }
        let mut kept = Vec::with_capacity(self.beats.len());
        for mut f in self.beats.drain(..) {
            let dead = self.w.iter().any(|w| w.dead && w.rank == f.peer());
            // Beats to a dead rank never complete: dropping them buries
            // their one-byte buffers until finalize.
            if dead || f.poll().unwrap_or(true) {
                continue;
            }
            kept.push(f);
        }
        self.beats = kept;
        Ok(progress)
    }

    /// Task timeouts and silent workers.
    fn check_time(&mut self) {
        let now = Instant::now();
        let limit = self.engine.lock().task_timeout;
        let silence = self.engine.opts.silence;
        for w in &mut self.w {
            if w.dead {
                continue;
            }
            if let (Some(limit), Some(cur)) = (limit, w.current.as_mut()) {
                // The limit covers the result's transfer too (measured from
                // its frame): announced bytes that never come must not keep
                // the future, or shutdown, waiting.
                // A late result's transfer (its task already timed out) is
                // bounded the same way.
                let late = cur.completer.is_none();
                if (!late || w.incoming.is_some()) && now.duration_since(cur.started) > limit {
                    if let Some(c) = cur.completer.take() {
                        c.fail(TaskError::TimedOut { limit });
                    }
                    w.retired = Some(if w.incoming.is_some() {
                        // Where its stream stands is unknown now: the
                        // receives stay posted, their buffers buried.
                        w.incoming = None;
                        Retired::OutOfStep
                    } else {
                        Retired::TimedOut
                    });
                }
            }
            if now.duration_since(w.last_heard) > silence {
                warn!(
                    "npshmex-mpi: worker rank {} (pid {}) silent for {:?}: taken for dead",
                    w.rank, w.pid, silence
                );
                w.dead = true;
                w.fail(TaskError::WorkerDied {
                    pid: w.pid,
                    exit: WorkerExit::Unknown,
                });
                // Requests to or from it may never complete: their buffers
                // are buried until finalize.
                w.sends.clear();
                w.incoming = None;
            }
        }
    }

    fn launcher_gone(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last_ppid_check) < Duration::from_millis(100) {
            return false;
        }
        self.last_ppid_check = now;
        parent_pid() != self.ppid
    }

    /// Whether shutdown may end the workers now: closing, nothing queued,
    /// no task whose caller still waits.
    fn closing_done(&self) -> bool {
        let c = self.engine.lock();
        if !c.closing || !c.queue.is_empty() {
            return false;
        }
        drop(c);
        // A result still coming in is waited for even without a caller (a
        // late one, its task timed out): its transfer is bounded by the
        // task timeout (check_time), and a worker still sending it could
        // not read the shutdown.
        self.w.iter().all(|w| {
            w.dead
                || w.current.as_ref().is_none_or(|c| c.completer.is_none()) && w.incoming.is_none()
        })
    }

    /// Tells every live worker to leave (busy ones read it on their
    /// watchdog thread), waiting a bounded time for the sends.
    fn end_workers(&mut self) {
        // After a death (only survivable with --enable-recovery), the
        // finalize fence may wait for the dead rank forever: nobody
        // finalizes then, every rank just exits.
        let finalize = !self.w.iter().any(|w| w.dead);
        if !finalize {
            self.engine.lock().lost_rank = true;
        }
        let Ok(bytes) = frame::encode(0, &ToWorker::Shutdown { finalize }, &[]) else {
            return;
        };
        let mut flights = Vec::new();
        for w in &self.w {
            if w.dead {
                continue;
            }
            let mut f = InFlight::new(w.rank);
            if f.send(&self.comm, Tag::Frame, Buf::Bytes(bytes.clone()))
                .is_ok()
            {
                flights.push(f);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let mut all = true;
            for f in &mut flights {
                all &= f.poll().unwrap_or(true);
            }
            if all {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Fails every task (the job is gone or the engine failed).
    fn break_all(&mut self) {
        for w in &mut self.w {
            w.fail(TaskError::WorkerDied {
                pid: w.pid,
                exit: WorkerExit::Unknown,
            });
            w.dead = true;
            w.sends.clear();
            w.incoming = None;
        }
        self.frames.clear();
        self.beats.clear();
    }
}
