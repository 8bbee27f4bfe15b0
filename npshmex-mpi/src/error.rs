//! [`MpiError`]: what can go wrong in this crate (starting the ranks,
//! the MPI library, frames between ranks), with the causes as sources.
//!
//! Errors of one task are the pool's own [`TaskError`](npshmex_pool::TaskError)
//! and of the executor [`PoolError`](npshmex_pool::PoolError), so code
//! written against [`Executor`](npshmex_pool::Executor) handles both
//! transports alike; an `MpiError` reaches it as their typed source
//! ([`TaskError::Transport`](npshmex_pool::TaskError::Transport)).

use std::time::Duration;

use npshmex_pool::backend::BuildId;

/// An error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MpiError {
    /// `MPI_Init_thread` was not possible: MPI was initialized already (by
    /// another library, or a second [`init`](crate::init)).
    #[error("MPI was already initialized in this process")]
    AlreadyInitialized,
    /// The MPI library gives less thread support than the executor needs
    /// (`MPI_THREAD_SERIALIZED`: rank 0 calls MPI from its engine thread,
    /// a worker from its watchdog too, never at the same time).
    #[error("the MPI library provides thread level {provided}, below MPI_THREAD_SERIALIZED")]
    ThreadSupport {
        /// The level `MPI_Init_thread` returned.
        provided: i32,
    },
    /// An MPI call returned an error code (the communicators use
    /// `MPI_ERRORS_RETURN`).
    #[error("MPI call {call} failed with code {code}: {message}")]
    Call {
        /// The MPI function.
        call: &'static str,
        /// Its return code.
        code: i32,
        /// `MPI_Error_string` of the code.
        message: String,
    },
    /// A rank runs another build of the executable than rank 0, so function
    /// offsets cannot be trusted; found at start, before any task.
    #[error("rank {rank} runs a different build (rank 0: {ours}; rank {rank}: {theirs})")]
    BuildMismatch {
        /// The rank that differs.
        rank: i32,
        /// Rank 0's build.
        ours: BuildId,
        /// That rank's build.
        theirs: BuildId,
    },
    /// Reading this executable's build id failed.
    #[error("could not read the build id of this executable")]
    BuildId(#[source] std::io::Error),
    /// A rank did not answer the start-up handshake in time (it is not
    /// running this program's `init`, or it hangs).
    #[error("rank {rank} did not answer the start-up handshake within {waited:?}")]
    HandshakeTimeout {
        /// The silent rank.
        rank: i32,
        /// How long was waited.
        waited: Duration,
    },
    /// A frame between ranks could not be decoded (or encoded).
    #[error("bad frame from rank {rank}: {reason}")]
    BadFrame {
        /// The rank the frame came from (or was for).
        rank: i32,
        /// What is wrong.
        reason: &'static str,
        /// The decoder's error.
        #[source]
        source: Option<postcard::Error>,
    },
    /// A message length that MPI or this process cannot hold.
    #[error("a message of {len} bytes from rank {rank} does not fit: {reason}")]
    Size {
        /// The rank.
        rank: i32,
        /// The length announced.
        len: u64,
        /// Why it does not fit.
        reason: &'static str,
    },
    /// Shared memory for a received segment could not be had.
    #[error("shared memory failed while {op}")]
    Shm {
        /// What was being done.
        op: &'static str,
        /// The segment error.
        #[source]
        source: npshmex_shm::ShmError,
    },
    /// This program runs alone (`mpiexec -n 1`, or without `mpiexec`):
    /// there is no rank to be a worker.
    #[error("no worker ranks: start the program with `mpiexec -n N` (N >= 2)")]
    NoWorkers,
    /// An executor already owns the workers of this process's ranks (one at
    /// a time; its shutdown ends them).
    #[error("the worker ranks are already used by an executor (or were ended by its shutdown)")]
    WorkersTaken,
    /// The engine thread of rank 0 could not be started.
    #[error("could not start the MPI engine thread")]
    Thread(#[source] std::io::Error),
    /// The MPI job is gone (the launcher died): no rank can be reached.
    #[error("the MPI launcher of this job is gone (parent process {ppid} exited)")]
    LauncherGone {
        /// The parent pid seen at start.
        ppid: u32,
    },
}

impl MpiError {
    pub(crate) fn frame(rank: i32, reason: &'static str, source: postcard::Error) -> MpiError {
        MpiError::BadFrame {
            rank,
            reason,
            source: Some(source),
        }
    }
}
