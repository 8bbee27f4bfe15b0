//! One worker slot: a parent thread that starts a worker, receives its
//! results (see `rx`), notices its death or a timeout, and replaces it.
//!
//! After every frame the thread polls the worker's response ring for the
//! pool's `spin` time, then parks on the ring's futex, so back-to-back
//! tasks are answered without a sleeping-thread wake-up and an idle slot
//! burns nothing. While parked it wakes on a timeout to check the task's
//! deadline and whether the worker process still lives (its death cannot
//! wake a futex; `waitid` without reaping tells). The thread is also the one
//! that started the worker, which matters: `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child ends, and this thread lives as long as
//! the slot.
//!
//! # Faults
//! A worker killed from outside at any moment is replaced, and only a task
//! that really ran in it fails: the worker announces each task in the
//! control region before running any of its code, so after a death the
//! first unanswered task failed only if it was announced; the others go
//! back to the queue. A worker that dies while starting, before or after
//! its handshake, is replaced too when a signal killed it (SIGKILL never
//! comes from the worker itself); only a slot whose workers keep ending on
//! their own before they are ready (a failing initializer or start-up code)
//! breaks the pool.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{Channel, Pacer};
use crate::error::{PoolError, TaskError, WorkerExit};
use crate::rx::{self, End, Rx};
use crate::spawn::{self, WorkerProc};
use crate::state::{Inner, Job};

/// How often a parked slot checks the running task's deadline.
const TIMEOUT_POLL: Duration = Duration::from_millis(20);
/// Longest park of the slot thread while callers receive for it (it also
/// re-checks timeouts then).
const HELPED_PARK: Duration = Duration::from_millis(1);
/// How often a parked slot checks that its worker process still lives
/// while tasks are in flight...
const BUSY_LIVENESS: Duration = Duration::from_millis(20);
/// ...and while it is idle (nothing is lost by noticing later).
const IDLE_LIVENESS: Duration = Duration::from_millis(250);

/// Workers of one slot in a row that may end on their own (not by a
/// signal) before they are ready before the pool is declared broken
/// (instead of respawning in a loop).
const MAX_START_DEATHS: u32 = 3;
/// How long a worker whose connection ended may take to exit before it is
/// killed (one that closed its end exits within milliseconds).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Whether a worker that ended before it was up should be replaced: a
/// signal came from outside (an operator, the OOM killer); anything else
/// it did itself.
fn killed_from_outside(exit: WorkerExit) -> bool {
    matches!(exit, WorkerExit::Signal(sig) if sig == rustix::process::Signal::KILL.as_raw())
}

/// The slot thread's body. `ready` gets the outcome of the first start.
pub(crate) fn run(inner: Arc<Inner>, index: usize, ready: Sender<Result<(), PoolError>>) {
    let mut ready = Some(ready);
    loop {
        let (mut proc, conn) = match spawn::start(&inner.cfg, &inner.exe) {
            Ok(x) => x,
            Err(f) => {
                let give_up = match f.exit {
                    Some(exit) if killed_from_outside(exit) => false,
                    Some(_) => {
                        let mut st = inner.lock();
                        let slot = &mut st.slots[index];
                        slot.start_deaths += 1;
                        slot.start_deaths >= MAX_START_DEATHS
                    }
                    None => true,
                };
                let stopped = {
                    let st = inner.lock();
                    st.broken.is_some() || st.shutting_down
                };
                if !give_up && !stopped {
                    continue;
                }
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(f.error));
                    return;
                }
                if stopped {
                    return;
                }
                let reason = format!("could not replace a worker: {}", f.error);
                let lost = inner.lock().break_pool(&inner, reason);
                let e = Arc::new(f.error);
                for job in lost {
                    job.into_completion()
                        .fail(TaskError::Pool { source: e.clone() });
                }
                return;
            }
        };
        let conn = Arc::new(conn);
        let rx = inner.lock().slots[index].rx.clone();
        rx.take_end();
        let retire = {
            let mut st = inner.lock();
            let stop = st.broken.is_some() || (st.shutting_down && st.queue.is_empty());
            let slot = &mut st.slots[index];
            slot.pid = proc.pid();
            slot.budget = inner.cfg.max_tasks_per_child;
            slot.ready = false;
            // A limit past the end of time (Duration::MAX) never expires.
            slot.ready_by = inner
                .cfg
                .initializer_timeout
                .and_then(|limit| Instant::now().checked_add(limit));
            if !stop {
                slot.conn = Some(conn.clone());
                st.dispatch(&inner);
            }
            stop
        };
        if let Some(tx) = ready.take() {
            let _ = tx.send(Ok(()));
        }
        let end = if retire {
            End::Retired
        } else {
            serve(&inner, index, &conn, &proc, &rx)
        };
        if !teardown(&inner, index, &conn, &mut proc, &rx, end) {
            return;
        }
    }
}

/// Stops and reaps the worker, fails or requeues what it held. Returns
/// whether the slot should start a new worker.
fn teardown(
    inner: &Inner,
    index: usize,
    conn: &Channel,
    proc: &mut WorkerProc,
    rx: &Rx,
    end: End,
) -> bool {
    let (in_flight, broken) = {
        // With the role: no helper is in the middle of a frame of this
        // worker, and none will process one once `conn` is cleared.
        let _role = rx.lock_role();
        let mut st = inner.lock();
        let broken = st.broken.is_some();
        let slot = &mut st.slots[index];
        slot.conn = None;
        slot.in_flight_bytes = 0;
        let held = std::mem::take(&mut slot.in_flight);
        slot.note_held();
        (held, broken)
    };
    // The task the worker announced last (0: none), read before anything
    // else can touch the region.
    let running = conn.running();
    conn.close();
    // A broken pool has already failed every task it held: a worker still
    // running one (maybe for hours, or hung) is killed rather than waited
    // for, or dropping the pool would block on work nobody will receive.
    if broken
        || matches!(
            end,
            End::TimedOut | End::StartTimedOut | End::Transport(_) | End::Fatal(_)
        )
    {
        proc.kill();
    }
    let exit = proc.wait_or_kill(EXIT_GRACE);
    let hung = matches!(end, End::StartTimedOut);
    if hung || matches!(end, End::DiedStarting) {
        let mut st = inner.lock();
        let slot = &mut st.slots[index];
        // A hung initializer was killed by us: it failed all the same.
        if hung || !killed_from_outside(exit) {
            slot.start_deaths += 1;
        }
        if slot.start_deaths < MAX_START_DEATHS {
            // Nothing it held ever started: run it on another worker.
            for f in in_flight.into_iter().rev() {
                st.queue.push_front(f.job);
            }
            let stop = st.broken.is_some() || (st.shutting_down && st.queue.is_empty());
            st.dispatch(inner);
            st.retire_idle();
            return !stop;
        }
        drop(st);
        let reason = match inner.cfg.initializer_timeout {
            Some(limit) if hung => format!(
                "the initializer of worker {} ran past initializer_timeout ({limit:?}), \
                 {MAX_START_DEATHS} workers in a row",
                proc.pid()
            ),
            _ => format!(
                "worker {} {exit} before its initializer finished",
                proc.pid()
            ),
        };
        let lost = {
            let mut st = inner.lock();
            let mut lost: Vec<Job> = in_flight.into_iter().map(|f| f.job).collect();
            lost.extend(st.break_pool(inner, reason.clone()));
            lost
        };
        for job in lost {
            job.into_completion()
                .fail(TaskError::Initializer(reason.clone()));
        }
        return false;
    }
    let mut failed: Vec<(Job, TaskError)> = Vec::new();
    let mut rest = in_flight.into_iter().peekable();
    // The head task failed only if it was running: announced by the
    // worker, or past its deadline. A worker killed while idle, or between
    // two tasks, leaves every task it held unstarted.
    let head_ran = rest
        .peek()
        .is_some_and(|h| h.job.id == running || matches!(end, End::TimedOut | End::Fatal(_)));
    if head_ran {
        if let Some(head) = rest.next() {
            let err = match end {
                End::TimedOut => TaskError::TimedOut {
                    // TimedOut is only produced when a timeout is configured.
                    limit: inner.cfg.task_timeout.unwrap_or_default(),
                },
                End::Transport(e) => TaskError::transport("receiving a result", e),
                End::Fatal(why) => TaskError::transport("sending the task to the worker", why),
                End::Closed
                | End::Retired
                | End::InitFailed
                | End::DiedStarting
                | End::StartTimedOut => TaskError::WorkerDied {
                    pid: proc.pid(),
                    exit,
                },
            };
            failed.push((head.job, err));
        }
    }
    let again = {
        let mut st = inner.lock();
        // The tasks that were not started: run them elsewhere.
        let rest: Vec<_> = rest.collect();
        for f in rest.into_iter().rev() {
            st.queue.push_front(f.job);
        }
        let stop = st.broken.is_some() || (st.shutting_down && st.queue.is_empty());
        st.dispatch(inner);
        st.retire_idle();
        !stop
    };
    for (job, err) in failed {
        job.into_completion().fail(err);
    }
    again
}

/// How a worker that is gone ends the slot.
fn gone(inner: &Inner, index: usize) -> End {
    let st = inner.lock();
    // Our own close during shutdown is not a failed start.
    if !st.slots[index].ready && !st.shutting_down {
        End::DiedStarting
    } else {
        End::Closed
    }
}

/// Receives and completes results until the worker ends.
///
/// While callers help (see `rx`), this thread parks; otherwise it polls
/// the ring for the spin time after every frame, then parks on its futex.
fn serve(inner: &Inner, index: usize, conn: &Arc<Channel>, proc: &WorkerProc, rx: &Rx) -> End {
    let mut checked = Instant::now();
    loop {
        if let Some(end) = rx.take_end() {
            return end;
        }
        // Everything that is ready now, unless callers receive for this
        // worker: then the role stays theirs (taking it here would put this
        // thread, just woken, between the worker and the waiting caller).
        let got = if rx.helpers.load(Ordering::SeqCst) > 0 {
            false
        } else {
            let _role = rx.lock_role();
            if let Some(end) = rx.take_end() {
                return end;
            }
            let had = conn.has_incoming();
            if let Err(end) = rx::drain(inner, index, conn) {
                return end;
            }
            had
        };
        if conn.is_closed() {
            // Closed by us (shutdown, a broken pool): wait for the exit.
            return End::Closed;
        }
        // Frames keep coming, no task has a deadline and the liveness check
        // is not due: nothing below needs the state lock taken again.
        if got && inner.cfg.task_timeout.is_none() && checked.elapsed() < BUSY_LIVENESS {
            continue;
        }
        let (busy, ready, deadline) = {
            let st = inner.lock();
            let slot = &st.slots[index];
            let deadline = if slot.ready {
                let started = slot.in_flight.front().and_then(|f| f.started);
                // A limit past the end of time (Duration::MAX) never expires.
                inner
                    .cfg
                    .task_timeout
                    .and_then(|limit| started.and_then(|t| t.checked_add(limit)))
            } else {
                slot.ready_by
            };
            (
                !slot.in_flight.is_empty() || !slot.ready,
                slot.ready,
                deadline,
            )
        };
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return if ready {
                End::TimedOut
            } else {
                End::StartTimedOut
            };
        }
        let liveness = if busy { BUSY_LIVENESS } else { IDLE_LIVENESS };
        if now.saturating_duration_since(checked) >= liveness {
            checked = now;
            if proc.has_exited() {
                // Whatever it published before dying is read first.
                let _role = rx.lock_role();
                if let Err(end) = rx::drain(inner, index, conn) {
                    return end;
                }
                return gone(inner, index);
            }
        }
        if got {
            continue;
        }
        let mut wait = liveness;
        if inner.cfg.task_timeout.is_some() {
            wait = wait.min(TIMEOUT_POLL);
        }
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if rx.helpers.load(Ordering::SeqCst) > 0 {
            rx.park(wait.min(HELPED_PARK));
            continue;
        }
        // A bounded poll of the ring, then the futex.
        let spin = if busy { inner.cfg.spin } else { Duration::ZERO };
        let spun = spin_for(conn, rx, spin);
        if !spun {
            // Announced before the helper count is read: a caller that
            // starts helping now mutes the worker's wake-ups, and the last
            // one to leave re-arms them only for a slot thread parked there.
            rx.ring_parked.store(true, Ordering::SeqCst);
            if rx.helpers.load(Ordering::SeqCst) == 0 {
                let _role = rx.lock_role();
                if !conn.has_incoming() {
                    drop(_role);
                    conn.park(wait.max(Duration::from_micros(100)));
                }
            }
            rx.ring_parked.store(false, Ordering::SeqCst);
        }
    }
}

/// Polls the ring for at most `spin` (stopping when callers take over);
/// whether something arrived.
fn spin_for(conn: &Channel, rx: &Rx, spin: Duration) -> bool {
    if spin.is_zero() {
        return false;
    }
    // A spin past the end of time (Duration::MAX) spins without end.
    let until = Instant::now().checked_add(spin);
    let mut pacer = Pacer::new(Some(conn));
    loop {
        if conn.has_incoming() {
            return true;
        }
        if rx.helpers.load(Ordering::SeqCst) > 0
            || (pacer.clock_due() && until.is_some_and(|u| Instant::now() >= u))
        {
            return false;
        }
        pacer.pause();
    }
}
