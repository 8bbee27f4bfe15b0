//! [`Executor::map`]: an ordered, lazy map over an iterator, with
//! `chunksize` and a total timeout, the same for every executor.
//!
//! Arguments are grouped into chunks, each chunk is one task (one trampoline
//! call runs the function on every element, catching panics per element),
//! and at most a bounded window of chunks is in flight, so an endless
//! iterator works and memory stays bounded. Results come back in argument
//! order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{self, TaskFn};
use crate::error::{PanicInfo, PoolError, TaskError};
use crate::executor::Executor;
use crate::future::Future;

/// Options of [`ProcessPoolExecutor::map`](crate::ProcessPoolExecutor::map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapOptions {
    /// Arguments per task (default 1). Larger chunks amortise the per-task
    /// cost for cheap functions.
    pub chunksize: usize,
    /// Total time allowed, from the `map` call, for all results; past it the
    /// iterator yields [`TaskError::WaitTimedOut`] once, cancels what is
    /// still queued and ends.
    pub timeout: Option<Duration>,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            chunksize: 1,
            timeout: None,
        }
    }
}

type Chunk<R> = Vec<Result<R, PanicInfo>>;

/// The iterator [`Executor::map`] returns: one `Result<R, TaskError>` per
/// argument, in order.
pub struct MapIter<'p, E, A, R, I> {
    executor: &'p E,
    f: fn(A) -> R,
    args: I,
    chunksize: usize,
    window: usize,
    deadline: Option<(Instant, Duration)>,
    in_flight: VecDeque<(Future<Chunk<R>>, usize)>,
    ready: VecDeque<Result<R, TaskError>>,
    stop_submitting: bool,
    finished: bool,
}

impl<E, A, R, I> std::fmt::Debug for MapIter<'_, E, A, R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapIter")
            .field("chunksize", &self.chunksize)
            .field("chunks_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl<'p, E, A, R, I> MapIter<'p, E, A, R, I>
where
    E: Executor,
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// The iteration of [`Executor::map`], with its first chunks submitted.
    pub(crate) fn start(
        executor: &'p E,
        f: fn(A) -> R,
        args: I,
        opts: MapOptions,
    ) -> Result<Self, PoolError> {
        if opts.chunksize == 0 {
            return Err(PoolError::InvalidConfig {
                reason: "chunksize must be at least 1",
            });
        }
        executor.check_open()?;
        let mut it = MapIter {
            executor,
            f,
            args,
            chunksize: opts.chunksize,
            window: executor.map_window(opts.chunksize),
            // A timeout past the end of time (Duration::MAX) is no timeout.
            deadline: opts
                .timeout
                .and_then(|t| Instant::now().checked_add(t).map(|d| (d, t))),
            in_flight: VecDeque::new(),
            ready: VecDeque::new(),
            stop_submitting: false,
            finished: false,
        };
        it.fill();
        Ok(it)
    }

    /// Submits chunks until the window is full or the arguments run out.
    fn fill(&mut self) {
        while !self.stop_submitting && self.in_flight.len() < self.window {
            let chunk: Vec<A> = self.args.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                return;
            }
            let n = chunk.len();
            let submitted = TaskFn::chunk_of(self.f).and_then(|f| {
                let arg = backend::encode(chunk)?;
                self.executor.submit_encoded::<Chunk<R>>(f, arg)
            });
            match submitted {
                Ok(fut) => self.in_flight.push_back((fut, n)),
                Err(e) => {
                    // Reported in order, after what is already in flight;
                    // no further chunk is submitted.
                    let fut = Future::new(Duration::ZERO);
                    fut.completion().fail(TaskError::pool(e));
                    self.in_flight.push_back((fut, n));
                    self.stop_submitting = true;
                    return;
                }
            }
        }
    }
}

impl<E, A, R, I> Iterator for MapIter<'_, E, A, R, I>
where
    E: Executor,
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        if self.finished {
            return None;
        }
        self.fill();
        let Some((mut fut, n)) = self.in_flight.pop_front() else {
            self.finished = true;
            return None;
        };
        let outcome = match self.deadline {
            None => fut.result(),
            Some((deadline, total)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match fut.result_timeout(left) {
                    Err(TaskError::WaitTimedOut { .. }) => {
                        fut.cancel();
                        self.cancel_rest();
                        return Some(Err(TaskError::WaitTimedOut { waited: total }));
                    }
                    other => other,
                }
            }
        };
        match outcome {
            Ok(items) => self
                .ready
                .extend(items.into_iter().map(|r| r.map_err(TaskError::Panicked))),
            Err(e) => self.ready.extend(std::iter::repeat_n(e, n).map(Err)),
        }
        self.fill();
        self.ready.pop_front().or_else(|| self.next())
    }
}

impl<E, A, R, I> MapIter<'_, E, A, R, I> {
    /// Cancels every chunk not yet sent and ends the iteration.
    fn cancel_rest(&mut self) {
        for (fut, _) in self.in_flight.drain(..) {
            fut.cancel();
        }
        self.ready.clear();
        self.finished = true;
    }
}

impl<E, A, R, I> Drop for MapIter<'_, E, A, R, I> {
    fn drop(&mut self) {
        // Abandoned chunks that have not been sent are not worth running.
        for (fut, _) in self.in_flight.drain(..) {
            fut.cancel();
        }
    }
}
