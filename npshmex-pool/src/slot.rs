//! One worker slot: a parent thread that starts a worker, receives its
//! results, notices its death or a timeout, and replaces it.
//!
//! The thread receives with a bounded spin (non-blocking polls) after every
//! frame before it blocks, so back-to-back tasks are answered without a
//! sleeping-thread wake-up. Receiving is a role a caller waiting on the
//! worker's only task may take over (`help`): one task awaited at a time
//! then involves two threads (caller and worker), not three, which matters
//! on a two-core machine. The alternative, a shared-memory ring with futex
//! parking, would also remove the socket syscalls from the round trip; it
//! is the next step if the ~7 µs round trip must shrink. Death is seen as EOF on the socket (the worker
//! holds its only other end), then the process is reaped with `waitpid` for
//! its exit status. The thread is also the one that started the worker,
//! which matters: `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//! child ends, and this thread lives as long as the slot.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use npshmex_shm::{FdSocket, Message, ShmError};
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::error::{PoolError, TaskError, WorkerExit};
use crate::remote_error::RemoteCause;
use crate::spawn::{self, WorkerProc};
use crate::state::{close, Assigned, Inner, Job, Rx};
use crate::wire::{self, ResultHead, ToParent};

/// How often a blocked receive re-checks the running task's deadline.
const TIMEOUT_POLL: Duration = Duration::from_millis(50);
/// Longest park of the slot thread while callers receive for it (it also
/// re-checks timeouts then).
const HELPED_PARK: Duration = Duration::from_millis(1);
/// How often a blocked receive checks that the worker process still lives
/// (EOF is the fast path; this catches a worker whose socket a forked
/// grandchild still holds).
const LIVENESS_POLL: Duration = Duration::from_millis(200);

/// Workers of one slot in a row that may end on their own (not SIGKILL)
/// before they are ready before the pool is declared broken (instead of
/// respawning in a loop).
const MAX_START_DEATHS: u32 = 3;

/// Why serving a worker ended.
pub(crate) enum End {
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
    /// The worker reported why it cannot go on, and ends.
    Fatal(RemoteCause),
    /// The worker ended before its initializer finished: it is replaced,
    /// unless the slot's workers keep doing so (`MAX_START_DEATHS`), when
    /// replacing them would most likely loop and the pool is broken.
    DiedStarting,
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
        let rx = inner.lock().slots[index].rx.clone();
        rx.take_end();
        let retire = {
            let mut st = inner.lock();
            let stop = st.broken.is_some() || (st.shutting_down && st.queue.is_empty());
            let slot = &mut st.slots[index];
            slot.pid = proc.pid();
            slot.budget = inner.cfg.max_tasks_per_child;
            slot.ready = false;
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
    conn: &FdSocket,
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
        (std::mem::take(&mut slot.in_flight), broken)
    };
    close(conn);
    // A broken pool has already failed every task it held: a worker still
    // running one (maybe for hours, or hung) is killed rather than waited
    // for, or dropping the pool would block on work nobody will receive.
    if broken || matches!(end, End::TimedOut | End::Transport(_)) {
        proc.kill();
    }
    let exit = proc.wait();
    if matches!(end, End::DiedStarting) {
        // A worker killed while starting (kill -9, the OOM killer) is
        // replaced and its tasks, none of which started, run on another:
        // SIGKILL never comes from the worker itself, however often it
        // happens. Only a slot whose workers keep ending on their own
        // before they are ready (a crashing initializer or start-up code)
        // breaks the pool instead of respawning in a loop.
        let mut st = inner.lock();
        let slot = &mut st.slots[index];
        if exit != WorkerExit::Signal(libc::SIGKILL) {
            slot.start_deaths += 1;
        }
        if slot.start_deaths < MAX_START_DEATHS {
            for f in in_flight.into_iter().rev() {
                st.queue.push_front(f.job);
            }
            let stop = st.broken.is_some() || (st.shutting_down && st.queue.is_empty());
            st.dispatch(inner);
            st.retire_idle();
            return !stop;
        }
        drop(st);
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
            End::Transport(e) => TaskError::transport("receiving a result", e),
            End::Fatal(why) => TaskError::transport("sending the task to the worker", why),
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
        st.dispatch(inner);
        st.retire_idle();
        !stop
    };
    for (job, err) in failed {
        job.into_completion().fail(err);
    }
    again
}

/// Receives and completes results until the worker ends.
///
/// Receiving is a role (`Rx::role`) that a caller waiting on one of this
/// worker's futures may take too (see [`help`]): then the result goes
/// straight from the worker to the waiting thread, without waking this one.
/// While callers help, this thread parks; otherwise it spins briefly after
/// every frame, then blocks in `poll` on the socket.
fn serve(inner: &Inner, index: usize, conn: &Arc<FdSocket>, proc: &WorkerProc, rx: &Rx) -> End {
    loop {
        // Everything that is ready now.
        {
            let _role = rx.lock_role();
            if let Some(end) = rx.take_end() {
                return end;
            }
            if let Err(end) = drain(inner, index, conn) {
                return end;
            }
        }
        // A bounded spin, unless callers are receiving for us.
        // A spin past the end of time (Duration::MAX) spins without end
        // rather than panicking this thread.
        let until = Instant::now().checked_add(inner.cfg.spin);
        let mut got = false;
        while !inner.cfg.spin.is_zero() && rx.helpers.load(Ordering::SeqCst) == 0 {
            {
                let _role = rx.lock_role();
                match conn.try_recv() {
                    Ok(Some(m)) => {
                        got = true;
                        if let Some(end) = process(inner, index, conn, m) {
                            return end;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return closed(inner, index, e),
                }
            }
            if got || until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            std::thread::yield_now();
        }
        if got {
            continue;
        }
        // Block: until a frame, the head task's deadline, or a liveness check.
        let mut wait = LIVENESS_POLL;
        if let Some(limit) = inner.cfg.task_timeout {
            wait = wait.min(TIMEOUT_POLL);
            let started = inner.lock().slots[index]
                .in_flight
                .front()
                .and_then(|f| f.started);
            // A limit past the end of time (Duration::MAX) never expires;
            // `t + limit` would panic this thread and hang the slot.
            if let Some(deadline) = started.and_then(|t| t.checked_add(limit)) {
                let now = Instant::now();
                if now >= deadline {
                    return End::TimedOut;
                }
                wait = wait.min(deadline - now);
            }
        }
        if rx.helpers.load(Ordering::SeqCst) > 0 {
            rx.park(wait.min(HELPED_PARK));
            continue;
        }
        let mut fds = [PollFd::from_borrowed_fd(conn.as_fd(), PollFlags::IN)];
        let timeout = Timespec::try_from(wait.max(Duration::from_millis(1))).ok();
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => {
                if proc.has_exited() {
                    // Whatever it sent before dying is read first.
                    let _role = rx.lock_role();
                    if let Err(end) = drain(inner, index, conn) {
                        return end;
                    }
                    return closed(inner, index, ShmError::PeerClosed);
                }
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return End::Transport(ShmError::Io {
                    op: "poll",
                    source: e.into(),
                })
            }
        }
    }
}

/// How an ended stream ends the slot.
fn closed(inner: &Inner, index: usize, e: ShmError) -> End {
    match e {
        ShmError::PeerClosed => {
            let st = inner.lock();
            // Our own close during shutdown is not a failed start.
            if !st.slots[index].ready && !st.shutting_down {
                End::DiedStarting
            } else {
                End::Closed
            }
        }
        e => End::Transport(e),
    }
}

/// Processes every frame ready now (the caller holds the role).
fn drain(inner: &Inner, index: usize, conn: &Arc<FdSocket>) -> Result<(), End> {
    loop {
        match conn.try_recv() {
            Ok(Some(m)) => {
                if let Some(end) = process(inner, index, conn, m) {
                    return Err(end);
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(closed(inner, index, e)),
        }
    }
}

/// A caller waiting on a future of this worker receives for it: takes the
/// role if free and processes what is ready. An ending it runs into is
/// left for the slot thread (which it wakes by closing the socket).
pub(crate) fn help(inner: &Inner, a: &Assigned) {
    let Some(_role) = a.rx.try_lock_role() else {
        return;
    };
    loop {
        match a.conn.try_recv() {
            Ok(Some(m)) => {
                if let Some(end) = process(inner, a.index, &a.conn, m) {
                    a.rx.set_end(end);
                    close(&a.conn);
                    return;
                }
            }
            // EOF and errors are sticky on the socket: the slot thread
            // sees them itself.
            Ok(None) | Err(_) => return,
        }
    }
}

/// Whether a caller waiting on a task of this worker should receive for
/// it: only when that task is all the worker holds (one caller waiting on
/// one task at a time, where the slot thread would be a third spinning
/// thread in the round trip). With a backlog the slot thread is busy
/// anyway, and handing the role back and forth would only add wake-ups.
pub(crate) fn worth_helping(inner: &Inner, a: &Assigned) -> bool {
    let st = inner.lock();
    let slot = &st.slots[a.index];
    slot.in_flight.len() <= 1 && slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &a.conn))
}

/// A caller stops helping; the last one hands receiving back to the slot
/// thread at once if the worker still holds tasks.
pub(crate) fn stop_helping(inner: &Inner, a: &Assigned) {
    if a.rx.helpers.fetch_sub(1, Ordering::SeqCst) == 1 {
        let busy = !inner.lock().slots[a.index].in_flight.is_empty();
        if busy {
            a.rx.unpark();
        }
    }
}

/// Handles one frame of the worker in slot `index` (role held). Frames of
/// a worker that is no longer the slot's (read late by a helper) are
/// dropped: its tasks were already failed or requeued.
fn process(inner: &Inner, index: usize, conn: &Arc<FdSocket>, msg: Message) -> Option<End> {
    let (head, mut inline) = match wire::decode_frame::<ToParent>(&msg.bytes) {
        Ok(x) => x,
        Err(e) => {
            return Some(End::Transport(frame_error(format!(
                "malformed frame from a worker: {e}"
            ))))
        }
    };
    let current = |st: &crate::state::State| {
        st.slots[index]
            .conn
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, conn))
    };
    let heads = match head {
        ToParent::Results(heads) => heads,
        ToParent::Ready(None) => {
            let mut st = inner.lock();
            if current(&st) {
                st.slots[index].mark_ready(Instant::now());
            }
            return None;
        }
        ToParent::Ready(Some(message)) => {
            let lost = inner
                .lock()
                .break_pool(format!("a worker initializer failed: {message}"));
            for job in lost {
                job.into_completion()
                    .fail(TaskError::Initializer(message.clone()));
            }
            return Some(End::InitFailed);
        }
        ToParent::Hello(_) => {
            return Some(End::Transport(frame_error("a second hello from a worker")))
        }
        ToParent::Fatal(why) => return Some(End::Fatal(why)),
    };
    let now = Instant::now();
    let mut done: Vec<(Job, ResultHead)> = Vec::with_capacity(heads.len());
    let mut mismatch = false;
    let retire = {
        let mut st = inner.lock();
        if !current(&st) {
            return None;
        }
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
        st.dispatch(inner);
        st.shutting_down && st.queue.is_empty() && idle
    };
    let mut fds = msg.fds.into_iter();
    for (job, h) in done {
        let c = job.into_completion();
        match h.outcome {
            Ok(p) => {
                let staged =
                    wire::with_payload(p.body, p.fds, &p.moved, &mut inline, &mut fds, |b, f| {
                        c.stage(b, f)
                    });
                match staged {
                    // Published after the result's memfd is unmapped.
                    Ok(()) => c.publish(),
                    Err(e) => c.fail(TaskError::transport("receiving a result", e)),
                }
            }
            Err(f) => c.fail(f.into()),
        }
    }
    if mismatch {
        return Some(End::Transport(frame_error(
            "a worker answered out of order",
        )));
    }
    retire.then_some(End::Retired)
}

fn frame_error(reason: impl Into<String>) -> ShmError {
    ShmError::Frame {
        reason: reason.into(),
    }
}
