//! [`as_completed`] and [`wait`]: waiting on several futures, as Python's
//! `concurrent.futures` module functions do.
//!
//! Both hook a done callback onto every future that records its index in
//! a shared, condvar-guarded list, so waiting costs no polling.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::TaskError;
use crate::future::Future;

/// Indices of futures in completion order.
#[derive(Default)]
struct Board {
    done: Mutex<VecDeque<usize>>,
    cond: Condvar,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, VecDeque<usize>> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch<R>(self: &Arc<Self>, i: usize, fut: &Future<R>) {
        let board = self.clone();
        fut.add_done_callback(move |_| {
            board.lock().push_back(i);
            board.cond.notify_all();
        });
    }

    /// The next completed index, waiting until `deadline`.
    fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut q = self.lock();
        loop {
            if let Some(i) = q.pop_front() {
                return Some(i);
            }
            match deadline {
                None => q = self.cond.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    q = self
                        .cond
                        .wait_timeout(q, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<R> {
    futures: Vec<Option<Future<R>>>,
    left: usize,
    board: Arc<Board>,
    deadline: Option<(Instant, Duration)>,
}

impl<R> std::fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("left", &self.left)
            .finish()
    }
}

/// Yields the futures as they complete (finished or cancelled), like
/// Python's `as_completed`; futures already done come first.
pub fn as_completed<R, I>(futures: I) -> AsCompleted<R>
where
    I: IntoIterator<Item = Future<R>>,
{
    as_completed_inner(futures, None)
}

/// [`as_completed`] with a total time limit: once it has passed, the
/// iterator yields `Err(TaskError::WaitTimedOut)` once and ends (Python
/// raises `TimeoutError`).
pub fn as_completed_timeout<R, I>(futures: I, timeout: Duration) -> AsCompleted<R>
where
    I: IntoIterator<Item = Future<R>>,
{
    // A timeout past the end of time (Duration::MAX) is no timeout.
    let deadline = Instant::now().checked_add(timeout).map(|d| (d, timeout));
    as_completed_inner(futures, deadline)
}

fn as_completed_inner<R, I>(futures: I, deadline: Option<(Instant, Duration)>) -> AsCompleted<R>
where
    I: IntoIterator<Item = Future<R>>,
{
    let board = Arc::new(Board::default());
    let futures: Vec<Option<Future<R>>> = futures.into_iter().map(Some).collect();
    for (i, f) in futures.iter().enumerate() {
        if let Some(f) = f {
            board.watch(i, f);
        }
    }
    AsCompleted {
        left: futures.len(),
        futures,
        board,
        deadline,
    }
}

impl<R> Iterator for AsCompleted<R> {
    type Item = Result<Future<R>, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        match self.board.next(self.deadline.map(|d| d.0)) {
            Some(i) => {
                self.left -= 1;
                self.futures.get_mut(i).and_then(Option::take).map(Ok)
            }
            None => {
                self.left = 0;
                let waited = self.deadline.map_or(Duration::ZERO, |d| d.1);
                Some(Err(TaskError::WaitTimedOut { waited }))
            }
        }
    }
}

/// When [`wait`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// When any future finishes or is cancelled.
    FirstCompleted,
    /// When any future finishes with an error (not cancellation); if none
    /// does, when all are done.
    FirstException,
    /// When all futures are done.
    AllCompleted,
}

/// The futures [`wait`] was given, split by whether they are done.
#[derive(Debug)]
pub struct WaitResult<R> {
    /// Done (finished or cancelled), in the order given.
    pub done: Vec<Future<R>>,
    /// Not done yet, in the order given.
    pub not_done: Vec<Future<R>>,
}

/// Waits for `futures` as `return_when` says, or until `timeout`, and
/// splits them into done and not done (Python's `concurrent.futures.wait`).
pub fn wait<R>(
    futures: Vec<Future<R>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> WaitResult<R> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let board = Arc::new(Board::default());
    for (i, f) in futures.iter().enumerate() {
        board.watch(i, f);
    }
    let mut seen = 0;
    let satisfied = |futs: &[Future<R>], seen: usize| match return_when {
        ReturnWhen::AllCompleted => seen == futs.len(),
        ReturnWhen::FirstCompleted => seen > 0 || futs.is_empty(),
        ReturnWhen::FirstException => seen == futs.len() || futs.iter().any(Future::failed),
    };
    while !satisfied(&futures, seen) {
        if board.next(deadline).is_none() {
            break;
        }
        seen += 1;
    }
    let (done, not_done) = futures.into_iter().partition(Future::done);
    WaitResult { done, not_done }
}
