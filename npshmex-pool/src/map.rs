//! [`ProcessPoolExecutor::map`]: an ordered, lazy map over an iterator,
//! with `chunksize` and a total timeout.
//!
//! Arguments are grouped into chunks, each chunk is one task (one trampoline
//! call runs the function on every element, catching panics per element),
//! and at most a bounded window of chunks is in flight, so an endless
//! iterator works and memory stays bounded. Results come back in argument
//! order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{PanicInfo, PoolError, TaskError};
use crate::future::Future;
use crate::remote_fn::{call_chunk_offset, fn_offset};
use crate::ProcessPoolExecutor;

/// Options of [`ProcessPoolExecutor::map`].
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

/// The iterator [`ProcessPoolExecutor::map`] returns: one
/// `Result<R, TaskError>` per argument, in order.
pub struct MapIter<'p, A, R, I> {
    pool: &'p ProcessPoolExecutor,
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

impl<A, R, I> std::fmt::Debug for MapIter<'_, A, R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapIter")
            .field("chunksize", &self.chunksize)
            .field("chunks_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl ProcessPoolExecutor {
    /// `f` over every item of `args`, like Python's `Executor.map`: ordered,
    /// but lazy (a bounded window of chunks is in flight at a time). Each
    /// item's outcome is its own: a panic fails only that item.
    ///
    /// # Errors
    /// [`PoolError::InvalidConfig`] for a zero chunksize,
    /// [`PoolError::ShutDown`] / [`PoolError::Broken`] if the pool takes no
    /// tasks. Errors while the iterator submits later chunks are yielded as
    /// [`TaskError::Pool`].
    pub fn map<A, R, I>(
        &self,
        f: fn(A) -> R,
        args: I,
        opts: MapOptions,
    ) -> Result<MapIter<'_, A, R, I::IntoIter>, PoolError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if opts.chunksize == 0 {
            return Err(PoolError::InvalidConfig {
                reason: "chunksize must be at least 1",
            });
        }
        {
            let st = self.inner().lock();
            if let Some(reason) = &st.broken {
                return Err(PoolError::Broken {
                    reason: reason.clone(),
                });
            }
            if st.shutting_down {
                return Err(PoolError::ShutDown);
            }
        }
        // Enough chunks to keep every worker's pipeline busy.
        let per_worker = self
            .inner()
            .cfg
            .max_in_flight
            .div_ceil(opts.chunksize)
            .max(2);
        let window = self.max_workers().saturating_mul(per_worker).max(2);
        let mut it = MapIter {
            pool: self,
            f,
            args: args.into_iter(),
            chunksize: opts.chunksize,
            window,
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
}

impl<A, R, I> MapIter<'_, A, R, I>
where
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Submits chunks until the window is full or the arguments run out.
    fn fill(&mut self) {
        while !self.stop_submitting && self.in_flight.len() < self.window {
            let chunk: Vec<A> = self.args.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                return;
            }
            let n = chunk.len();
            let submitted = call_chunk_offset::<A, R>()
                .and_then(|tramp| Ok((tramp, fn_offset(self.f)?)))
                .and_then(|(tramp, func)| {
                    let p = self.pool.pack(chunk)?;
                    self.pool.submit_packet::<Chunk<R>>(tramp, func, p)
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

impl<A, R, I> Iterator for MapIter<'_, A, R, I>
where
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

impl<A, R, I> MapIter<'_, A, R, I> {
    /// Cancels every chunk not yet sent and ends the iteration.
    fn cancel_rest(&mut self) {
        for (fut, _) in self.in_flight.drain(..) {
            fut.cancel();
        }
        self.ready.clear();
        self.finished = true;
    }
}

impl<A, R, I> Drop for MapIter<'_, A, R, I> {
    fn drop(&mut self) {
        // Abandoned chunks that have not been sent are not worth running.
        for (fut, _) in self.in_flight.drain(..) {
            fut.cancel();
        }
    }
}
