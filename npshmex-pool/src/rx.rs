//! Receiving from a worker: the receive role, who may take it, and what is
//! done with each frame — in one place, with the pool's lock order.
//!
//! Receiving is a role ([`Rx::role`]) that the slot thread normally holds
//! and that a caller waiting on the worker's only task may take over
//! ([`help`]): the result then goes straight from the worker to the waiting
//! thread, without waking a third one (on two cores, that third thread is
//! what makes a round trip slow). Whoever holds the role is the one
//! consumer of the worker's response ring.
//!
//! # Lock order
//! 1. `Rx::role` (the receive role of one slot);
//! 2. `Inner::state` (the pool's queue and slots);
//! 3. a future's own lock (`future::Shared`), taken by dispatch under the
//!    state lock to mark a task running; or the inbox's (`state::Inbox`),
//!    taken by dispatch to move its tasks to the queue, and alone by a
//!    submitter while every worker is busy.
//!
//! A thread takes locks only in this order, never waits for the role while
//! it holds the state, and holds no future lock while it runs user code:
//! done callbacks run after their future's lock is released (see
//! `future`), so a callback may submit, cancel or drop the pool. What they
//! must not do is wait for the pool's own threads: a callback runs on a
//! thread that holds a receive role (a slot thread, or a helping caller),
//! so `shutdown` never waits inside one ([`crate::future::in_callback`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};
use std::time::{Duration, Instant};

use npshmex_shm::{Message, ShmError};

use crate::channel::Channel;
use crate::error::TaskError;
use crate::remote_error::RemoteCause;
use crate::state::{Inner, Job};
use crate::wire::{self, ResultHead, ToParent};

/// Why serving a worker ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The worker exited (or was told to).
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
    /// The worker ended before its initializer finished.
    DiedStarting,
    /// The worker's initializer ran past `initializer_timeout`.
    StartTimedOut,
}

/// Who receives from one slot's worker: the slot thread, or a caller
/// waiting on one of its futures, whoever holds `role`.
#[derive(Default)]
pub(crate) struct Rx {
    role: Mutex<()>,
    /// Callers currently polling this slot's ring.
    pub(crate) helpers: AtomicUsize,
    /// How many tasks the worker holds, as of the last change under the
    /// state lock: a hint that spares a waiting caller with nothing to gain
    /// from helping (a worker with a backlog) the state lock of
    /// [`worth_helping`] (`future::Shared::spin_and_help` checks it first).
    pub(crate) held: AtomicUsize,
    /// The slot thread is parked on the ring's futex (not on `wake`).
    pub(crate) ring_parked: AtomicBool,
    /// An ending a helper ran into, for the slot thread.
    end: Mutex<Option<End>>,
    /// The slot thread parks here while callers help.
    parked: Mutex<bool>,
    wake: Condvar,
}

impl Rx {
    pub(crate) fn lock_role(&self) -> MutexGuard<'_, ()> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn try_lock_role(&self) -> Option<MutexGuard<'_, ()>> {
        match self.role.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn set_end(&self, end: End) {
        let mut e = self.end.lock().unwrap_or_else(|p| p.into_inner());
        e.get_or_insert(end);
    }

    pub(crate) fn take_end(&self) -> Option<End> {
        self.end.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Parks the slot thread for at most `d` (or until `unpark`).
    pub(crate) fn park(&self, d: Duration) {
        let mut woken = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = self
                .wake
                .wait_timeout(woken, d)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *woken = false;
    }

    pub(crate) fn unpark(&self) {
        *self.parked.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_one();
    }
}

/// Where a dispatched task is, so that a caller waiting on its future can
/// receive for that worker.
#[derive(Clone)]
pub(crate) struct Assigned {
    pub(crate) inner: Weak<Inner>,
    pub(crate) index: usize,
    pub(crate) conn: Arc<Channel>,
    pub(crate) rx: Arc<Rx>,
}

/// Processes every frame ready now (the caller holds the role).
pub(crate) fn drain(inner: &Inner, index: usize, conn: &Arc<Channel>) -> Result<(), End> {
    loop {
        match conn.try_recv() {
            Ok(Some(m)) => {
                if let Some(end) = process(inner, index, conn, m) {
                    return Err(end);
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(End::Transport(e)),
        }
    }
}

/// A caller waiting on a future of this worker receives for it: takes the
/// role if free and processes what is ready. An ending it runs into is
/// left for the slot thread (which it wakes by closing the channel).
pub(crate) fn help(inner: &Inner, a: &Assigned) {
    let Some(_role) = a.rx.try_lock_role() else {
        return;
    };
    if let Err(end) = drain(inner, a.index, &a.conn) {
        a.rx.set_end(end);
        a.conn.close();
        a.rx.unpark();
    }
}

/// Whether a caller waiting on a task of this worker should receive for
/// it: only when that task is all the worker holds (one caller waiting on
/// one task at a time, where the slot thread would be a third polling
/// thread in the round trip). With a backlog the slot thread is busy
/// anyway, and handing the role back and forth would only add wake-ups.
pub(crate) fn worth_helping(inner: &Inner, a: &Assigned) -> bool {
    let st = inner.lock();
    let slot = &st.slots[a.index];
    slot.in_flight.len() <= 1 && slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &a.conn))
}

/// A caller starts helping: the worker stops waking the slot thread for
/// results (the caller polls for them), and the slot thread keeps out of
/// the way until the last helper leaves.
pub(crate) fn start_helping(a: &Assigned) {
    a.rx.helpers.fetch_add(1, Ordering::SeqCst);
    a.conn.mute_wakes();
}

/// A caller stops helping; the last one hands receiving back to the slot
/// thread: the worker wakes it again (at once if something is waiting on
/// the ring), and so does this caller if the worker still holds tasks.
pub(crate) fn stop_helping(inner: &Inner, a: &Assigned) {
    if a.rx.helpers.fetch_sub(1, Ordering::SeqCst) == 1 {
        a.conn.forget_cpu();
        if a.rx.ring_parked.load(Ordering::SeqCst) {
            a.conn.rearm_wakes();
        }
        let busy = !inner.lock().slots[a.index].in_flight.is_empty();
        if busy {
            a.rx.unpark();
        }
    }
}

fn frame_error(reason: impl Into<String>) -> ShmError {
    ShmError::Frame {
        reason: reason.into(),
    }
}

/// Handles one frame of the worker in slot `index` (role held). Frames of
/// a worker that is no longer the slot's (read late by a helper) are
/// dropped: its tasks were already failed or requeued.
fn process(inner: &Inner, index: usize, conn: &Arc<Channel>, msg: Message) -> Option<End> {
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
            // An initializer runs once, before the first task: a report
            // from a worker that said it was ready is a broken protocol,
            // which ends that worker, not the pool.
            if inner.lock().slots[index].ready {
                return Some(End::Transport(frame_error(
                    "an initializer failure from a worker that was ready",
                )));
            }
            let lost = inner
                .lock()
                .break_pool(inner, format!("a worker initializer failed: {message}"));
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
        slot.note_held();
        st.dispatch(inner);
        // Idle after dispatching: the last queued task may just have been
        // given to this very worker.
        st.shutting_down && st.queue.is_empty() && st.slots[index].in_flight.is_empty()
    };
    // Completed with no pool lock held (futures run their callbacks).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Inbox, SlotState, State};
    use npshmex_shm::FdSocket;
    use std::sync::atomic::AtomicU64;

    /// A pool state with one slot whose worker end is returned.
    fn one_slot(ready: bool) -> (Arc<Inner>, Arc<Channel>, Channel) {
        let (a, b) = FdSocket::pair().expect("socketpair");
        let parent = Arc::new(Channel::parent(a).expect("control region"));
        let region = parent.region_fd().try_clone_to_owned().expect("dup");
        let worker = Channel::worker(b, region).expect("map the region");
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            cfg: crate::PoolBuilder::default().config().clone(),
            exe: wire::ExeId::current().expect("exe"),
            state: Mutex::new(State {
                slots: vec![SlotState::default()],
                ..State::default()
            }),
            inbox: Inbox::default(),
            last_id: AtomicU64::new(0),
        });
        {
            let mut st = inner.lock();
            st.slots[0].conn = Some(parent.clone());
            st.slots[0].ready = ready;
        }
        (inner, parent, worker)
    }

    fn send(worker: &Channel, head: &ToParent) {
        let frame = wire::encode_frame(head, 0).expect("encode");
        worker.send(&[&frame], &[]).expect("send");
    }

    #[test]
    fn an_initializer_failure_breaks_the_pool_only_before_ready() {
        let failed = ToParent::Ready(Some("refused".into()));
        // Before the worker is ready: the initializer failed, as in Python.
        let (inner, parent, worker) = one_slot(false);
        send(&worker, &failed);
        assert!(matches!(drain(&inner, 0, &parent), Err(End::InitFailed)));
        assert!(inner.lock().broken.is_some());
        // After: a broken protocol, which ends that worker alone.
        let (inner, parent, worker) = one_slot(true);
        send(&worker, &failed);
        assert!(matches!(drain(&inner, 0, &parent), Err(End::Transport(_))));
        assert!(inner.lock().broken.is_none());
    }
}
