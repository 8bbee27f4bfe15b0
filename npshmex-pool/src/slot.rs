//! One worker slot: a parent thread that starts a worker, receives its
//! results, notices its death or a timeout, and replaces it.
//!
//! The thread receives with a bounded spin (non-blocking polls) after every
//! frame before it blocks, so back-to-back tasks are answered without a
//! sleeping-thread wake-up. Death is seen as EOF on the socket (the worker
//! holds its only other end), then the process is reaped with `waitpid` for
//! its exit status. The thread is also the one that started the worker,
//! which matters: `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//! child ends, and this thread lives as long as the slot.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use npshmex_shm::{FdSocket, Message, ShmError};

use crate::error::{PoolError, TaskError};
use crate::spawn::{self, WorkerProc};
use crate::state::{close, Inner, Job};
use crate::wire::{self, Failure, ResultHead, ToParent};

/// How often a blocked receive re-checks the running task's deadline.
const TIMEOUT_POLL: Duration = Duration::from_millis(50);
/// How often a blocked receive checks that the worker process still lives
/// (EOF is the fast path; this catches a worker whose socket a forked
/// grandchild still holds).
const LIVENESS_POLL: Duration = Duration::from_millis(200);

/// Why serving a worker ended.
enum End {
    /// EOF: the worker exited (or was told to).
    Closed,
    /// The head task passed the timeout.
    TimedOut,
    /// The worker broke the protocol or the transport failed.
    Transport(ShmError),
    /// Shutdown and nothing left: we closed it.
    Retired,
    /// The initializer failed; the pool is broken.
    InitFailed,
    /// The worker ended before its initializer finished: replacing it
    /// would most likely loop, so the pool is broken (as in Python).
    DiedStarting,
}

enum Event {
    Msg(Message),
    TimedOut,
    Closed,
    Failed(ShmError),
}

/// The slot thread's body. `ready` gets the outcome of the first start.
pub(crate) fn run(inner: Arc<Inner>, index: usize, ready: Sender<Result<(), PoolError>>) {
    let mut ready = Some(ready);
    loop {
        let (mut proc, conn) = match spawn::start(&inner.cfg, &inner.exe) {
            Ok(x) => x,
            Err(e) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                let reason = format!("could not replace a worker: {e}");
                let lost = inner.lock().break_pool(reason);
                let e = Arc::new(e);
                for job in lost {
                    job.into_completion()
                        .fail(TaskError::Pool { source: e.clone() });
                }
                return;
            }
        };
        let conn = Arc::new(conn);
        let retire = {
            let mut st = inner.lock();
            let stop = st.broken.is_some() || (st.shutting_down && st.queue.is_empty());
            let slot = &mut st.slots[index];
            slot.pid = proc.pid();
            slot.budget = inner.cfg.max_tasks_per_child;
            slot.ready = false;
            if !stop {
                slot.conn = Some(conn.clone());
                st.dispatch(&inner.cfg);
            }
            stop
        };
        if let Some(tx) = ready.take() {
            let _ = tx.send(Ok(()));
        }
        let end = if retire {
            End::Retired
        } else {
            serve(&inner, index, &conn, &proc)
        };
        if !teardown(&inner, index, &conn, &mut proc, end) {
            return;
        }
    }
}

/// Stops and reaps the worker, fails or requeues what it held. Returns
/// whether the slot should start a new worker.
fn teardown(inner: &Inner, index: usize, conn: &FdSocket, proc: &mut WorkerProc, end: End) -> bool {
    let in_flight = {
        let mut st = inner.lock();
        let slot = &mut st.slots[index];
        slot.conn = None;
        slot.in_flight_bytes = 0;
        std::mem::take(&mut slot.in_flight)
    };
    close(conn);
    if matches!(end, End::TimedOut | End::Transport(_)) {
        proc.kill();
    }
    let exit = proc.wait();
    if matches!(end, End::DiedStarting) {
        let reason = format!(
            "worker {} {exit} before its initializer finished",
            proc.pid()
        );
        let lost = {
            let mut st = inner.lock();
            let mut lost: Vec<Job> = in_flight.into_iter().map(|f| f.job).collect();
            lost.extend(st.break_pool(reason.clone()));
            lost
        };
        for job in lost {
            job.into_completion()
                .fail(TaskError::Initializer(reason.clone()));
        }
        return false;
    }
    let mut failed: Vec<(Job, TaskError)> = Vec::new();
    let mut rest = in_flight.into_iter();
    if let Some(head) = rest.next() {
        let err = match end {
            End::TimedOut => TaskError::TimedOut {
                // TimedOut is only produced when a timeout is configured.
                limit: inner.cfg.task_timeout.unwrap_or_default(),
            },
            End::Transport(e) => TaskError::Transport {
                op: "receiving a result",
                source: Arc::new(e),
            },
            End::Closed | End::Retired | End::InitFailed | End::DiedStarting => {
                TaskError::WorkerDied {
                    pid: proc.pid(),
                    exit,
                }
            }
        };
        failed.push((head.job, err));
    }
    let again = {
        let mut st = inner.lock();
        // The tasks behind the head were not started: run them elsewhere.
        for f in rest.rev() {
            st.queue.push_front(f.job);
        }
        let stop = st.broken.is_some() || (st.shutting_down && st.queue.is_empty());
        st.dispatch(&inner.cfg);
        st.retire_idle();
        !stop
    };
    for (job, err) in failed {
        job.into_completion().fail(err);
    }
    again
}

/// Receives and completes results until the worker ends.
fn serve(inner: &Inner, index: usize, conn: &FdSocket, proc: &WorkerProc) -> End {
    let mut ready = false;
    loop {
        let msg = match next_event(inner, index, conn, proc) {
            Event::Msg(m) => m,
            Event::TimedOut => return End::TimedOut,
            // Our own close during shutdown is not a failed start.
            Event::Closed if !ready && !inner.lock().shutting_down => return End::DiedStarting,
            Event::Closed => return End::Closed,
            Event::Failed(e) => return End::Transport(e),
        };
        let (head, mut inline) = match wire::decode_frame::<ToParent>(&msg.bytes) {
            Ok(x) => x,
            Err(e) => {
                return End::Transport(frame_error(format!("malformed frame from a worker: {e}")))
            }
        };
        let heads = match head {
            ToParent::Results(heads) => heads,
            ToParent::Ready(None) => {
                ready = true;
                inner.lock().slots[index].mark_ready(Instant::now());
                continue;
            }
            ToParent::Ready(Some(message)) => {
                let lost = inner
                    .lock()
                    .break_pool(format!("a worker initializer failed: {message}"));
                for job in lost {
                    job.into_completion()
                        .fail(TaskError::Initializer(message.clone()));
                }
                return End::InitFailed;
            }
            ToParent::Hello(_) => {
                return End::Transport(frame_error("a second hello from a worker"))
            }
        };
        let now = Instant::now();
        let mut done: Vec<(Job, ResultHead)> = Vec::with_capacity(heads.len());
        let mut mismatch = false;
        let retire = {
            let mut st = inner.lock();
            let slot = &mut st.slots[index];
            for h in heads {
                match slot.in_flight.front() {
                    Some(f) if f.job.id == h.id => {}
                    _ => {
                        mismatch = true;
                        break;
                    }
                }
                if let Some(f) = slot.in_flight.pop_front() {
                    if let Some(t) = f.started {
                        slot.observe(now.saturating_duration_since(t));
                    }
                    slot.in_flight_bytes = slot
                        .in_flight_bytes
                        .saturating_sub(f.job.packet.inline().len());
                    done.push((f.job, h));
                }
            }
            if let Some(next) = slot.in_flight.front_mut() {
                next.started = Some(now);
            }
            let idle = slot.in_flight.is_empty();
            st.dispatch(&inner.cfg);
            st.shutting_down && st.queue.is_empty() && idle
        };
        let mut fds = msg.fds.into_iter();
        for (job, h) in done {
            let c = job.into_completion();
            match h.outcome {
                Ok((body, nfds)) => {
                    match wire::with_payload(body, nfds, &mut inline, &mut fds, |b, f| {
                        c.stage(b, f)
                    }) {
                        // Published after the result's memfd is unmapped.
                        Ok(()) => c.publish(),
                        Err(e) => c.fail(TaskError::Transport {
                            op: "receiving a result",
                            source: Arc::new(e),
                        }),
                    }
                }
                Err(f) => c.fail(match f {
                    Failure::Panicked(m) => TaskError::Panicked(m),
                    Failure::ArgumentDecode(m) => TaskError::ArgumentDecode(m),
                    Failure::ResultEncode(m) => TaskError::ResultEncode(m),
                }),
            }
        }
        if mismatch {
            return End::Transport(frame_error("a worker answered out of order"));
        }
        if retire {
            return End::Retired;
        }
    }
}

fn frame_error(reason: impl Into<String>) -> ShmError {
    ShmError::Frame {
        reason: reason.into(),
    }
}

fn classify(r: Result<Option<Message>, ShmError>) -> Option<Event> {
    match r {
        Ok(Some(m)) => Some(Event::Msg(m)),
        Ok(None) => None,
        Err(ShmError::PeerClosed) => Some(Event::Closed),
        Err(e) => Some(Event::Failed(e)),
    }
}

/// The next frame, with a bounded spin first; or a timeout / EOF.
fn next_event(inner: &Inner, index: usize, conn: &FdSocket, proc: &WorkerProc) -> Event {
    let cfg = &inner.cfg;
    if !cfg.spin.is_zero() {
        let until = Instant::now() + cfg.spin;
        loop {
            if let Some(ev) = classify(conn.try_recv()) {
                return ev;
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::yield_now();
        }
    }
    loop {
        let mut wait = LIVENESS_POLL;
        if let Some(limit) = cfg.task_timeout {
            wait = wait.min(TIMEOUT_POLL);
            let started = inner.lock().slots[index]
                .in_flight
                .front()
                .and_then(|f| f.started);
            if let Some(t) = started {
                let deadline = t + limit;
                let now = Instant::now();
                if now >= deadline {
                    return Event::TimedOut;
                }
                wait = wait.min(deadline - now);
            }
        }
        if let Some(ev) = classify(conn.recv_timeout(wait)) {
            return ev;
        }
        if proc.has_exited() {
            return Event::Closed;
        }
    }
}
