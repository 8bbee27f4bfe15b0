//! Errors: [`PoolError`] for the pool as a whole, [`TaskError`] for one task.
//!
//! `TaskError` is `Clone` (sources are kept behind `Arc`) because one failure
//! can concern several results: a chunk of `map` that dies with its worker
//! fails every element of the chunk with the same error.
//!
//! Causes are kept as `source()`s, not repeated in the messages, so `{}`
//! says what failed and `{:#}` (anyhow) or an error reporter the whole
//! chain: a decode failure's typed cause (an fd that could not be
//! duplicated, a dtype mismatch) comes from the out-of-band scope it was
//! recorded in (`npshmex_shm::oob`), whatever thread decoded; one that
//! happened in a worker arrives as a [`RemoteCause`] chain.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::remote_error::RemoteCause;

/// A cause shared by clones of an error.
pub type SharedCause = Arc<dyn Error + Send + Sync + 'static>;

/// An error of the pool itself: building it, submitting to it, its transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// [`init`](crate::init) was not called before the pool was built.
    #[error(
        "npshmex_pool::init() was not called: call it as the first line of main() \
         (or put npshmex_pool::test_support!() at the top of a test binary); \
         without it a worker process would run main() again"
    )]
    NotInitialized,
    /// A builder option is out of range.
    #[error("invalid pool configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// Starting a worker process failed.
    #[error("could not start a worker process ({op})")]
    Spawn {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A new worker did not complete the handshake.
    #[error("worker handshake failed: {reason}")]
    Handshake {
        /// What went wrong.
        reason: String,
    },
    /// The worker runs another executable than this process, so function
    /// addresses cannot be trusted.
    #[error("the worker runs a different executable (parent {parent}, worker {worker})")]
    ExecutableMismatch {
        /// Identity of this process's executable.
        parent: String,
        /// Identity the worker reported.
        worker: String,
    },
    /// The shared-memory transport failed.
    #[error("shared-memory transport failed while {op}")]
    Transport {
        /// What was being done.
        op: &'static str,
        /// The transport error.
        #[source]
        source: npshmex_shm::ShmError,
    },
    /// The task argument could not be serialized.
    #[error("could not encode the task argument")]
    Encode {
        /// Why: the typed cause (an fd that could not be duplicated, a
        /// segment that could not be sealed, the message of a `Serialize`
        /// impl), or the serializer's own error.
        #[source]
        source: SharedCause,
    },
    /// The function does not lie in this executable's own code (a shared
    /// library, a `dlopen`ed plugin): a worker could not find it at the
    /// same offset, so it is refused instead of jumped to.
    #[error(
        "the function at {address:#x} is not in the main executable's code \
         (shared libraries and plugins cannot be named across processes)"
    )]
    ForeignFunction {
        /// The function's address in this process.
        address: usize,
    },
    /// [`shutdown`](crate::ProcessPoolExecutor::shutdown) was called already.
    #[error("the pool has been shut down")]
    ShutDown,
    /// The pool cannot run tasks any more (a worker initializer failed or no
    /// worker could be started).
    #[error("the pool is broken: {reason}")]
    Broken {
        /// Why.
        reason: String,
    },
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerExit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// Its status could not be collected.
    Unknown,
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkerExit::Code(c) => write!(f, "exited with status {c}"),
            WorkerExit::Signal(s) => match signal_name(s) {
                Some(name) => write!(f, "killed by signal {s} ({name})"),
                None => write!(f, "killed by signal {s}"),
            },
            WorkerExit::Unknown => f.write_str("ended with an unknown status"),
        }
    }
}

/// The conventional name of a signal number (Linux numbering).
fn signal_name(sig: i32) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .filter(|n| !n.is_empty())
}

/// What a worker knows of a panic in a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicInfo {
    message: String,
    location: Option<String>,
    pid: u32,
}

impl PanicInfo {
    pub(crate) fn new(message: String, location: Option<String>, pid: u32) -> PanicInfo {
        PanicInfo {
            message,
            location,
            pid,
        }
    }

    /// The panic message; for a payload that is not a string
    /// (`std::panic::panic_any`), a note naming that.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where it panicked, `file:line:column`, when known.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The pid of the worker that ran the task.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl fmt::Display for PanicInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task panicked in worker {}", self.pid)?;
        if let Some(l) = &self.location {
            write!(f, " at {l}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why one task produced no value.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The function panicked. The worker survives (unless the program is
    /// built with `panic = "abort"`).
    #[error("{0}")]
    Panicked(PanicInfo),
    /// The function returned an error ([`RemoteError`](crate::RemoteError),
    /// flattened into this future's error with `?`).
    #[error(transparent)]
    Failed(RemoteCause),
    /// The worker process ended while running the task (abort, signal,
    /// `exit`, `kill -9`); it has been replaced.
    #[error("worker {pid} died while running the task: {exit}")]
    WorkerDied {
        /// Pid of the dead worker.
        pid: u32,
        /// How it ended.
        exit: WorkerExit,
    },
    /// The task ran longer than the pool's `task_timeout`; its worker was
    /// killed and replaced.
    #[error("task ran longer than {limit:?}; its worker was killed")]
    TimedOut {
        /// The configured limit.
        limit: Duration,
    },
    /// The future was cancelled before it was sent to a worker.
    #[error("task was cancelled")]
    Cancelled,
    /// The worker could not decode the argument.
    #[error("the worker could not decode the task argument")]
    ArgumentDecode(#[source] RemoteCause),
    /// The worker could not encode the result (e.g. a segment type outside a
    /// collector, or a serializer error).
    #[error("the worker could not encode the result")]
    ResultEncode(#[source] RemoteCause),
    /// The result bytes could not be decoded here.
    #[error("could not decode the task result")]
    ResultDecode {
        /// Why: the typed cause, or the deserializer's own error.
        #[source]
        source: SharedCause,
    },
    /// The worker's initializer panicked; the pool is broken.
    #[error("the worker initializer failed: {0}")]
    Initializer(String),
    /// The pool could not run the task (broken, shut down, transport failure).
    #[error("the pool could not run the task")]
    Pool {
        /// The pool's error.
        #[source]
        source: Arc<PoolError>,
    },
    /// The transport failed while moving the task or its result (in a
    /// worker that ran out of file descriptors, for example).
    #[error("transport failed while {op}")]
    Transport {
        /// What was being done.
        op: &'static str,
        /// The transport error.
        #[source]
        source: SharedCause,
    },
    /// No result within the time given to `result_timeout` (or `map`'s
    /// timeout). The task goes on; the future is still usable.
    #[error("no result within {waited:?}")]
    WaitTimedOut {
        /// How long was waited.
        waited: Duration,
    },
    /// The value was already taken out of this future.
    #[error("the result was already taken from this future")]
    ResultTaken,
}

impl TaskError {
    pub(crate) fn pool(e: PoolError) -> TaskError {
        TaskError::Pool {
            source: Arc::new(e),
        }
    }

    pub(crate) fn transport(
        op: &'static str,
        source: impl Error + Send + Sync + 'static,
    ) -> TaskError {
        TaskError::Transport {
            op,
            source: Arc::new(source),
        }
    }
}
