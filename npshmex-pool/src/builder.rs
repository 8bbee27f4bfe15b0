//! [`PoolBuilder`]: the pool's settings, with Python's names where Python
//! has one.

use std::time::Duration;

use crate::error::PoolError;

/// Largest `inline_max`: a frame of tasks must fit a ring entry of the
/// control channel (larger payloads travel in a memfd of their own).
const MAX_INLINE: usize = 128 << 10;
use crate::state::Config;
use crate::ProcessPoolExecutor;

/// How worker processes are started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartMethod {
    /// Re-execute `/proc/self/exe` (the default). Safe in multithreaded
    /// programs; the worker starts from scratch and only runs until
    /// [`init`](crate::init).
    #[default]
    Spawn,
    /// `fork()` the parent. Faster to start and inherits the parent's
    /// memory, but a child of a multithreaded parent inherits locks other
    /// threads held at the moment of the fork (stdout, user mutexes): tasks
    /// that take such a lock can deadlock. Opt-in for that reason.
    Fork,
}

/// Settings of a [`ProcessPoolExecutor`]; start with
/// [`ProcessPoolExecutor::builder`].
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    cfg: Config,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            cfg: Config {
                max_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
                initializer: None,
                max_tasks_per_child: None,
                start_method: StartMethod::Spawn,
                task_timeout: None,
                initializer_timeout: None,
                spin: Duration::from_micros(50),
                inline_max: 64 * 1024,
                max_in_flight: 128,
            },
        }
    }
}

impl PoolBuilder {
    /// The settings as they stand (for tests that build a pool's state by
    /// hand).
    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// Number of worker processes (default: the number of CPUs).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.cfg.max_workers = n;
        self
    }

    /// A function every worker runs once before its first task. If it
    /// panics, the pool is broken (as Python's `BrokenProcessPool`): the
    /// futures it would have run fail with
    /// [`TaskError::Initializer`](crate::TaskError::Initializer) and later
    /// submits return [`PoolError::Broken`].
    pub fn initializer(mut self, f: fn()) -> Self {
        self.cfg.initializer = Some(f);
        self
    }

    /// Replace each worker after it has run this many tasks.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.cfg.max_tasks_per_child = Some(n);
        self
    }

    /// How workers are started (default [`StartMethod::Spawn`]).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.cfg.start_method = m;
        self
    }

    /// Longest a task may run; past it the worker is killed and replaced and
    /// the task fails with [`TaskError::TimedOut`](crate::TaskError::TimedOut).
    /// Measured from when the task started on its worker: a worker's
    /// initializer does not count (see
    /// [`initializer_timeout`](Self::initializer_timeout)).
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.cfg.task_timeout = Some(d);
        self
    }

    /// Longest a worker's initializer may run (default: no limit, as
    /// Python's, since an initializer may load a lot). Past it the worker
    /// is killed and counts as a failed start: a slot whose workers fail to
    /// start three times in a row breaks the pool, and the futures it held
    /// fail with [`TaskError::Initializer`](crate::TaskError::Initializer)
    /// instead of waiting forever on an initializer that hangs.
    pub fn initializer_timeout(mut self, d: Duration) -> Self {
        self.cfg.initializer_timeout = Some(d);
        self
    }

    /// How long a side that expects a message polls for it before it
    /// sleeps (default 50 µs; zero disables spinning). Spinning avoids the
    /// cost of waking a sleeping CPU for short tasks; idle threads and
    /// workers always end up blocked, never burning CPU.
    pub fn spin(mut self, d: Duration) -> Self {
        self.cfg.spin = d;
        self
    }

    /// Payloads (arguments and results) larger than this many encoded bytes
    /// travel in a sealed memfd instead of inline in the control channel
    /// (default 64 KiB, at most 128 KiB).
    pub fn inline_max(mut self, bytes: usize) -> Self {
        self.cfg.inline_max = bytes;
        self
    }

    /// Most tasks sent ahead to one worker (default 128). Within it a
    /// worker holds about 250 µs of work by its recent task times (one task
    /// while they are long, from 500 µs, or not known yet). Tasks sent
    /// ahead can no longer be cancelled; 1 gives Python's behaviour.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.cfg.max_in_flight = n;
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// [`PoolError::NotInitialized`] if [`init`](crate::init) was not called,
    /// [`PoolError::InvalidConfig`] for zero workers or a zero limit, and
    /// the errors of starting a worker ([`PoolError::Spawn`],
    /// [`PoolError::Handshake`], [`PoolError::ExecutableMismatch`]).
    pub fn build(self) -> Result<ProcessPoolExecutor, PoolError> {
        if !crate::init::is_initialized() {
            return Err(PoolError::NotInitialized);
        }
        let c = &self.cfg;
        if c.max_workers == 0 {
            return Err(PoolError::InvalidConfig {
                reason: "max_workers must be at least 1",
            });
        }
        if c.max_in_flight == 0 {
            return Err(PoolError::InvalidConfig {
                reason: "max_in_flight must be at least 1",
            });
        }
        if c.max_tasks_per_child == Some(0) {
            return Err(PoolError::InvalidConfig {
                reason: "max_tasks_per_child must be at least 1",
            });
        }
        if c.inline_max > MAX_INLINE {
            return Err(PoolError::InvalidConfig {
                reason: "inline_max must be at most 128 KiB (larger payloads belong in a memfd)",
            });
        }
        if let Some(f) = c.initializer {
            crate::remote_fn::initializer_offset(f)?;
        }
        if c.task_timeout.is_some_and(|d| d.is_zero()) {
            return Err(PoolError::InvalidConfig {
                reason: "task_timeout must be positive",
            });
        }
        if c.initializer_timeout.is_some_and(|d| d.is_zero()) {
            return Err(PoolError::InvalidConfig {
                reason: "initializer_timeout must be positive",
            });
        }
        ProcessPoolExecutor::start(self.cfg)
    }
}
