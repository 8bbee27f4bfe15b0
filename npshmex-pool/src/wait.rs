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
        fut.on_done(move |_| {
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
    /// Set once the deadline passed (for the keyed form).
    timed_out: Option<Duration>,
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
        timed_out: None,
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
    let keyed = wait_keyed(
        futures.into_iter().map(|f| ((), f)).collect(),
        timeout,
        return_when,
    );
    WaitResult {
        done: keyed.done.into_iter().map(|(_, f)| f).collect(),
        not_done: keyed.not_done.into_iter().map(|(_, f)| f).collect(),
    }
}

/// What [`wait_keyed`] returns: the pairs it was given, split by whether
/// their future is done, each in the order given.
#[derive(Debug)]
pub struct KeyedWaitResult<K, R> {
    /// Pairs whose future is done (finished or cancelled).
    pub done: Vec<(K, Future<R>)>,
    /// Pairs whose future is not done yet.
    pub not_done: Vec<(K, Future<R>)>,
}

/// [`wait`] for futures paired with keys (the job each one runs, say), so
/// that the caller knows which finished: the Rust shape of Python's
/// `wait({pool.submit(f, job): job for job in jobs})`.
///
/// ```
/// use npshmex_pool::{wait_keyed, ProcessPoolExecutor, ReturnWhen};
///
/// fn len(s: String) -> usize {
///     s.len()
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     npshmex_pool::init();
///     let pool = ProcessPoolExecutor::new(2)?;
///     let jobs = ["a", "bcd", "ef"];
///     let pairs = jobs
///         .iter()
///         .map(|&job| Ok((job, pool.submit(len, job.to_string())?)))
///         .collect::<Result<Vec<_>, npshmex_pool::PoolError>>()?;
///     let waited = wait_keyed(pairs, None, ReturnWhen::AllCompleted);
///     assert!(waited.not_done.is_empty());
///     for (job, fut) in waited.done {
///         assert_eq!(fut.result()?, job.len());
///     }
///     Ok(())
/// }
/// ```
pub fn wait_keyed<K, R>(
    pairs: Vec<(K, Future<R>)>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> KeyedWaitResult<K, R> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let board = Arc::new(Board::default());
    for (i, (_, f)) in pairs.iter().enumerate() {
        board.watch(i, f);
    }
    let mut seen = 0;
    let satisfied = |pairs: &[(K, Future<R>)], seen: usize| match return_when {
        ReturnWhen::AllCompleted => seen == pairs.len(),
        ReturnWhen::FirstCompleted => seen > 0 || pairs.is_empty(),
        ReturnWhen::FirstException => seen == pairs.len() || pairs.iter().any(|(_, f)| f.failed()),
    };
    while !satisfied(&pairs, seen) {
        if board.next(deadline).is_none() {
            break;
        }
        seen += 1;
    }
    let (done, not_done) = pairs.into_iter().partition(|(_, f)| f.done());
    KeyedWaitResult { done, not_done }
}

/// The iterator of [`as_completed_keyed`]: each key with its task's outcome,
/// in completion order.
pub struct AsCompletedKeyed<K, R> {
    keys: Vec<Option<K>>,
    inner: AsCompleted<R>,
}

impl<K, R> std::fmt::Debug for AsCompletedKeyed<K, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedKeyed")
            .field("left", &self.inner.left)
            .finish()
    }
}

/// Yields each key with its future's outcome as the futures complete: the
/// Rust shape of Python's
/// `futures = {pool.submit(f, job): job for job in jobs}` followed by
/// `for fut in as_completed(futures): job = futures[fut]`. With a
/// `timeout`, once it has passed every key still waiting is yielded with
/// [`TaskError::WaitTimedOut`] (and its future dropped: cancelled if it had
/// not started).
///
/// ```
/// use npshmex_pool::{as_completed_keyed, ProcessPoolExecutor};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     npshmex_pool::init();
///     let pool = ProcessPoolExecutor::new(2)?;
///     let jobs = [3u64, 1, 2];
///     let mut pairs = Vec::new();
///     for job in jobs {
///         pairs.push((job, pool.submit(square, job)?));
///     }
///     for (job, result) in as_completed_keyed(pairs, None) {
///         assert_eq!(result?, job * job);
///     }
///     Ok(())
/// }
/// ```
pub fn as_completed_keyed<K, R, I>(pairs: I, timeout: Option<Duration>) -> AsCompletedKeyed<K, R>
where
    I: IntoIterator<Item = (K, Future<R>)>,
{
    let (keys, futures): (Vec<K>, Vec<Future<R>>) = pairs.into_iter().unzip();
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t).map(|d| (d, t)));
    AsCompletedKeyed {
        keys: keys.into_iter().map(Some).collect(),
        inner: as_completed_inner(futures, deadline),
    }
}

impl<K, R> Iterator for AsCompletedKeyed<K, R> {
    type Item = (K, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.inner.left > 0 {
            let waited = self.inner.deadline.map_or(Duration::ZERO, |d| d.1);
            match self.inner.board.next(self.inner.deadline.map(|d| d.0)) {
                Some(i) => {
                    self.inner.left -= 1;
                    let fut = self.inner.futures.get_mut(i).and_then(Option::take);
                    let key = self.keys.get_mut(i).and_then(Option::take);
                    if let (Some(k), Some(f)) = (key, fut) {
                        return Some((k, f.result()));
                    }
                    return self.next();
                }
                None => {
                    // Timed out: every key still waiting gets the timeout.
                    self.inner.left = 0;
                    self.inner.timed_out = Some(waited);
                }
            }
        }
        let waited = self.inner.timed_out?;
        for (i, key) in self.keys.iter_mut().enumerate() {
            if let Some(k) = key.take() {
                self.inner.futures.get_mut(i).and_then(Option::take);
                return Some((k, Err(TaskError::WaitTimedOut { waited })));
            }
        }
        None
    }
}
