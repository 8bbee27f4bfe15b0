//! [`Future`]: the handle to one submitted task, with Python's
//! `concurrent.futures.Future` methods and `std::future::Future`.
//!
//! The result is decoded by the pool thread that receives it (so done
//! callbacks can see it by reference) and stored until taken. Waiting first
//! spins for the pool's `spin` time on an atomic flag, then blocks on a
//! condition variable: a result that arrives within microseconds is seen
//! without a thread wake-up.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::channel::Pacer;
use crate::error::TaskError;
use crate::rx::Assigned;
use crate::wire::{self, Incoming};

/// What the pool does with a task's future, without knowing `R`.
pub(crate) trait Completion: Send + Sync {
    /// Pending -> running on the worker `at`; false if the future was
    /// cancelled.
    fn start(&self, at: Option<&Assigned>) -> bool;
    /// Decodes the result and keeps it aside (the future is not done yet,
    /// so the caller can release the received memory first).
    fn stage(&self, bytes: &[u8], fds: Incoming);
    /// Completes the future with the staged result.
    fn publish(&self);
    /// Stores an error.
    fn fail(&self, err: TaskError);
    /// Pending -> cancelled (shutdown with `CancelFutures::CancelPending`).
    fn cancel(&self) -> bool;
}

type Callback<R> = Box<dyn FnOnce(Result<&R, &TaskError>) + Send>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Pending,
    Running,
    Finished,
    Cancelled,
}

/// Whether an outcome may still be decided in `phase`.
fn not_decided(phase: Phase) -> bool {
    !matches!(phase, Phase::Finished | Phase::Cancelled)
}

struct Slot<R> {
    phase: Phase,
    /// The outcome is decided but its callbacks still run (on the thread
    /// that completed it, which holds the value meanwhile): takers wait.
    settling: bool,
    /// The outcome is an error other than cancellation.
    failed: bool,
    value: Option<Result<R, TaskError>>,
    /// A decoded result not published yet.
    staged: Option<Result<R, TaskError>>,
    /// The worker the task was sent to.
    assigned: Option<Assigned>,
    callbacks: Vec<Callback<R>>,
    waker: Option<Waker>,
    waiters: usize,
    /// The task runs even if the handle is dropped ([`Future::detach`], or
    /// a done callback observes the outcome).
    detached: bool,
}

pub(crate) struct Shared<R> {
    slot: Mutex<Slot<R>>,
    cond: Condvar,
    done: AtomicBool,
    spin: Duration,
}

/// The eventual result of a task submitted to a
/// [`ProcessPoolExecutor`](crate::ProcessPoolExecutor).
///
/// Like Python's `concurrent.futures.Future`: [`result`](Future::result)
/// waits for it, [`cancel`](Future::cancel) withdraws a task that has not
/// been sent to a worker yet, [`add_done_callback`](Future::add_done_callback)
/// runs code when it completes. It is also a `std::future::Future`, so async
/// code can `.await` it (the pool's own threads drive it; any executor works).
///
/// # Dropping a future
/// Unlike Python's (which the garbage collector may drop at any time), a
/// dropped handle means nobody wants the result: a task that is still
/// pending (queued in the parent) is cancelled and never runs; a task that
/// already runs finishes on its worker and its result is discarded (its
/// shared memory released, nothing leaked). So `tokio::time::timeout(d,
/// fut)` that expires, a `select!` branch that loses, or an abandoned
/// `Vec<Future>` withdraw their queued work. To fire and forget, call
/// [`detach`](Future::detach); a future with a
/// [`done callback`](Future::add_done_callback) is detached too, since the
/// callback is how its outcome is seen.
///
/// ```
/// use npshmex_pool::ProcessPoolExecutor;
///
/// fn nap(ms: u64) -> u64 {
///     std::thread::sleep(std::time::Duration::from_millis(ms));
///     ms
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     npshmex_pool::init();
///     let pool = ProcessPoolExecutor::new(1)?;
///     let running = pool.submit(nap, 300)?; // the only worker takes it
///     let queued = pool.submit(nap, 1)?; // waits behind it, in the parent
///     drop(queued); // withdrawn: never runs
///     pool.submit(nap, 2)?.detach(); // runs; its result is discarded
///     assert_eq!(running.result()?, 300);
///     Ok(())
/// }
/// ```
pub struct Future<R> {
    shared: Arc<Shared<R>>,
}

impl<R> std::fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = self.shared.lock().phase;
        f.debug_struct("Future").field("phase", &phase).finish()
    }
}

impl<R> Shared<R> {
    fn lock(&self) -> MutexGuard<'_, Slot<R>> {
        // Every mutation under this lock is a plain field store, and user
        // code (callbacks) never runs under it: a poisoned slot is still
        // consistent.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, value: Result<R, TaskError>, phase: Phase) {
        self.complete_if(not_decided, value, phase);
    }

    /// Decides the outcome if the current phase passes `allowed`, runs the
    /// callbacks with no lock held, then stores the value and wakes
    /// waiters. Returns whether it decided.
    ///
    /// The callbacks run on this thread with the value held here (not in
    /// the slot), so no lock is held while user code runs (it may submit,
    /// cancel or drop the pool: see the lock order in `rx`); meanwhile the
    /// future is already `done()` (a callback that wakes a waiter, as
    /// `as_completed` does, finds it done) but taking its value waits for
    /// the callbacks to finish.
    fn complete_if(
        &self,
        allowed: fn(Phase) -> bool,
        value: Result<R, TaskError>,
        phase: Phase,
    ) -> bool {
        self.complete_locked(self.lock(), allowed, value, phase)
    }

    /// [`Shared::complete_if`] with the lock already held (`s`). Without
    /// callbacks the value is stored at once, under this one lock.
    fn complete_locked(
        &self,
        mut s: MutexGuard<'_, Slot<R>>,
        allowed: fn(Phase) -> bool,
        value: Result<R, TaskError>,
        phase: Phase,
    ) -> bool {
        if !allowed(s.phase) {
            return false;
        }
        s.phase = phase;
        s.failed = phase == Phase::Finished && value.is_err();
        self.done.store(true, Ordering::Release);
        if s.callbacks.is_empty() {
            self.settle(s, value);
            return true;
        }
        s.settling = true;
        let mut callbacks = std::mem::take(&mut s.callbacks);
        drop(s);
        loop {
            for cb in callbacks {
                run_callback(&value, cb);
            }
            let mut s = self.lock();
            // Callbacks added while these ran (`add_done_callback` queues
            // them while settling) run too, before the value is stored.
            callbacks = std::mem::take(&mut s.callbacks);
            if callbacks.is_empty() {
                // A future with callbacks (a `wait` or `as_completed`
                // watching it, say) may never be waited on itself: it lets
                // go of its worker's channel now. This path already runs
                // boxed callbacks; the plain one leaves the drop to the
                // waiter (see `Shared::wait`).
                let assigned = s.assigned.take();
                self.settle(s, value);
                drop(assigned);
                return true;
            }
        }
    }

    /// Stores the decided value and wakes whoever waits for it.
    fn settle(&self, mut s: MutexGuard<'_, Slot<R>>, value: Result<R, TaskError>) {
        s.value = Some(value);
        s.settling = false;
        let waker = s.waker.take();
        if s.waiters > 0 {
            self.cond.notify_all();
        }
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Pending -> cancelled, atomically with respect to dispatch (which
    /// moves pending -> running under the same lock).
    fn cancel_pending(&self) -> bool {
        self.complete_if(
            |p| p == Phase::Pending,
            Err(TaskError::Cancelled),
            Phase::Cancelled,
        )
    }

    /// Spins for the pool's `spin` time; while spinning, receives for the
    /// worker the task went to when this task is all it holds (so its
    /// result reaches this thread without a third thread in the way). True
    /// if done.
    fn spin_and_help(&self, deadline: Option<Instant>) -> bool {
        // `spin` and `deadline` are the user's: past the end of time
        // (Duration::MAX) they mean "no end", not an overflow panic.
        let mut until = Instant::now().checked_add(self.spin);
        if let Some(d) = deadline {
            until = Some(until.map_or(d, |u| u.min(d)));
        }
        // Cloned only for a worker that may be worth it (a backlog never is).
        let assigned = self
            .lock()
            .assigned
            .as_ref()
            .filter(|a| a.rx.held.load(Ordering::Relaxed) <= 1)
            .cloned();
        let helping = assigned
            .and_then(|a| a.inner.upgrade().map(|inner| (a, inner)))
            .filter(|(a, inner)| crate::rx::worth_helping(inner, a));
        if let Some((a, _)) = &helping {
            crate::rx::start_helping(a);
        }
        let mut done = false;
        // Receiving: paced against the worker's own polling.
        let mut pacer = Pacer::new(helping.as_ref().map(|(a, _)| &*a.conn));
        loop {
            if self.done.load(Ordering::Acquire) {
                done = true;
                break;
            }
            if pacer.clock_due() && until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            if let Some((a, inner)) = &helping {
                crate::rx::help(inner, a);
                if self.done.load(Ordering::Acquire) {
                    done = true;
                    break;
                }
            }
            pacer.pause();
        }
        if let Some((a, inner)) = &helping {
            crate::rx::stop_helping(inner, a);
        }
        done
    }

    /// Waits until done or `deadline`; true if done (and settled: the
    /// value is stored, its callbacks have run).
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let decided = self.done.load(Ordering::Acquire)
            || (!self.spin.is_zero() && self.spin_and_help(deadline));
        // Decided, maybe still settling: its callbacks are short, so wait
        // for them whatever the deadline.
        let deadline = if decided { None } else { deadline };
        let mut s = self.lock();
        s.waiters += 1;
        while !s.settled() {
            match deadline {
                None => s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    s = self
                        .cond
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        s.waiters -= 1;
        let settled = s.settled();
        Shared::let_go(s);
        settled
    }

    /// Once the future is settled, drops its hold on its worker's channel.
    ///
    /// Seen decided, the future needs its worker no more: a kept future
    /// must not keep a gone worker's channel (socket, control memfd,
    /// mapping) alive. Callers let go on the waiting thread, not on the pool
    /// thread that completes a plain future, where the drop would bounce the
    /// channel's refcount against the submitting thread's clones
    /// (tiny.throughput -7 to -12%, medians of 6 alternating runs).
    fn let_go(mut s: MutexGuard<'_, Slot<R>>) {
        let assigned = if s.settled() { s.assigned.take() } else { None };
        drop(s);
        drop(assigned);
    }
}

impl<R> Slot<R> {
    /// Whether the outcome is decided and its callbacks have run.
    fn settled(&self) -> bool {
        matches!(self.phase, Phase::Finished | Phase::Cancelled) && !self.settling
    }
}

thread_local! {
    /// How many done callbacks this thread is running (they nest when a
    /// callback completes another future).
    static IN_CALLBACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether this thread is inside a done callback. A callback may run on a
/// pool thread or on a caller that was receiving for a worker; either way
/// it holds state the pool's threads need, so it must not wait for them.
pub(crate) fn in_callback() -> bool {
    IN_CALLBACK.with(|c| c.get() > 0)
}

fn run_callback<R>(value: &Result<R, TaskError>, cb: Callback<R>) {
    let arg = match value {
        Ok(v) => Ok(v),
        Err(e) => Err(e),
    };
    // A panicking callback must not take the pool thread down; Python logs
    // and ignores callback exceptions too.
    IN_CALLBACK.with(|c| c.set(c.get() + 1));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(arg)));
    IN_CALLBACK.with(|c| c.set(c.get().saturating_sub(1)));
    if outcome.is_err() {
        // Not eprintln!, which panics on a closed stderr: this is a pool
        // thread.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "npshmex-pool: a done callback panicked; ignored"
        );
    }
}

impl<R: DeserializeOwned + Send + 'static> Completion for Shared<R> {
    fn start(&self, at: Option<&Assigned>) -> bool {
        let mut s = self.lock();
        match s.phase {
            Phase::Pending | Phase::Running => {
                s.phase = Phase::Running;
                s.assigned = at.cloned();
                true
            }
            Phase::Finished | Phase::Cancelled => false,
        }
    }

    fn stage(&self, bytes: &[u8], fds: Incoming) {
        // `R::deserialize` is user code running on a pool thread (or a
        // helping caller): a panic in it must fail this future, not kill
        // the thread that serves the worker (which would hang every other
        // future of that worker); `wire::decode` catches it.
        let value =
            wire::decode::<R>(bytes, fds).map_err(|source| TaskError::ResultDecode { source });
        self.lock().staged = Some(value);
    }

    fn publish(&self) {
        let mut s = self.lock();
        if let Some(value) = s.staged.take() {
            self.complete_locked(s, not_decided, value, Phase::Finished);
        }
    }

    fn fail(&self, err: TaskError) {
        self.complete(Err(err), Phase::Finished);
    }

    fn cancel(&self) -> bool {
        self.cancel_pending()
    }
}

impl<R: DeserializeOwned + Send + 'static> Future<R> {
    pub(crate) fn new(spin: Duration) -> Future<R> {
        Future {
            shared: Arc::new(Shared {
                slot: Mutex::new(Slot {
                    phase: Phase::Pending,
                    settling: false,
                    failed: false,
                    value: None,
                    staged: None,
                    assigned: None,
                    callbacks: Vec::new(),
                    waker: None,
                    waiters: 0,
                    detached: false,
                }),
                cond: Condvar::new(),
                done: AtomicBool::new(false),
                spin,
            }),
        }
    }

    pub(crate) fn completion(&self) -> Arc<dyn Completion> {
        self.shared.clone()
    }
}

impl<R> Drop for Future<R> {
    fn drop(&mut self) {
        let detached = self.shared.lock().detached;
        if !detached {
            // Nobody can see the outcome any more: withdraw the task if it
            // has not been sent (no-op once it runs or is done).
            self.shared.cancel_pending();
        }
    }
}

impl<R> Future<R> {
    /// Lets the task run to its end without this handle: dropping a future
    /// otherwise cancels a task that has not started (see
    /// [Dropping a future](Future#dropping-a-future)). Its result is
    /// discarded.
    pub fn detach(self) {
        self.shared.lock().detached = true;
    }

    /// Withdraws the task if it has not been sent to a worker yet (then the
    /// future completes with [`TaskError::Cancelled`]). Returns whether the
    /// future is cancelled; `false` once the task runs or has finished.
    pub fn cancel(&self) -> bool {
        self.shared.cancel_pending() || self.cancelled()
    }

    /// Waits for the task and returns its value (or why there is none).
    ///
    /// # Errors
    /// The task's [`TaskError`].
    pub fn result(self) -> Result<R, TaskError> {
        self.shared.wait(None);
        self.take()
    }

    /// Waits at most `timeout`. On [`TaskError::WaitTimedOut`] the task goes
    /// on and the future stays usable; any other outcome is final, and the
    /// value is moved out (a later call returns [`TaskError::ResultTaken`]).
    ///
    /// # Errors
    /// [`TaskError::WaitTimedOut`] or the task's error.
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<R, TaskError> {
        let deadline = Instant::now().checked_add(timeout);
        if !self.shared.wait(deadline) {
            return Err(TaskError::WaitTimedOut { waited: timeout });
        }
        self.take()
    }

    fn take(&self) -> Result<R, TaskError> {
        // `wait` returned: settled (callbacks done, value stored).
        self.shared
            .lock()
            .value
            .take()
            .unwrap_or(Err(TaskError::ResultTaken))
    }

    /// Whether the future was cancelled.
    pub fn cancelled(&self) -> bool {
        self.shared.lock().phase == Phase::Cancelled
    }

    /// Whether the task has been sent to a worker and has not finished.
    pub fn running(&self) -> bool {
        self.shared.lock().phase == Phase::Running
    }

    /// Whether the future has a final outcome (value, error or cancelled).
    pub fn done(&self) -> bool {
        let done = self.shared.done.load(Ordering::Acquire);
        if done {
            Shared::let_go(self.shared.lock());
        }
        done
    }

    /// Whether the future is done with an error other than cancellation
    /// (for [`ReturnWhen::FirstException`](crate::ReturnWhen)).
    pub(crate) fn failed(&self) -> bool {
        self.shared.lock().failed
    }

    /// Runs `f` with the outcome once the future is done (at once, in this
    /// thread, if it is done already; otherwise in the pool thread that
    /// completes it, so keep it short). A panicking callback is reported on
    /// stderr and ignored. The future is then [detached](Future::detach):
    /// dropping the handle no longer cancels the task, since the callback
    /// still wants its outcome.
    pub fn add_done_callback<F>(&self, f: F)
    where
        F: FnOnce(Result<&R, &TaskError>) + Send + 'static,
    {
        self.shared.lock().detached = true;
        self.on_done(f);
    }

    /// [`add_done_callback`](Future::add_done_callback) without detaching:
    /// for watchers (`wait`, `as_completed`) that hold the handle.
    pub(crate) fn on_done<F>(&self, f: F)
    where
        F: FnOnce(Result<&R, &TaskError>) + Send + 'static,
    {
        let mut s = self.shared.lock();
        if !s.settled() {
            // Pending, running, or settling: the completing thread runs it.
            s.callbacks.push(Box::new(f));
            return;
        }
        // Run here, with no lock held: the value is lent out of the slot
        // meanwhile. Nothing else can take it: that needs this very handle
        // by value or `&mut`, and it is borrowed by this call.
        let value = s.value.take();
        drop(s);
        match &value {
            Some(v) => run_callback(v, Box::new(f)),
            None => run_callback(&Err(TaskError::ResultTaken), Box::new(f)),
        }
        let mut s = self.shared.lock();
        if s.value.is_none() {
            s.value = value;
        }
    }
}

impl<R> std::future::Future for Future<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.shared.lock();
        if s.settled() {
            return Poll::Ready(s.value.take().unwrap_or(Err(TaskError::ResultTaken)));
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
