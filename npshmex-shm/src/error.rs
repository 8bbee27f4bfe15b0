//! The crate's one error type, [`ShmError`], and its [`Result`] alias.

use std::io;

/// Result with [`ShmError`] as the default error.
pub type Result<T, E = ShmError> = std::result::Result<T, E>;

/// Everything that can go wrong with segments, sockets and the fd collector.
///
/// OS failures keep the `io::Error` as their [`source`](std::error::Error::source)
/// and say in `op` what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// A system call failed.
    #[error("{op} failed")]
    Io {
        /// What was being done (for example `"mmap"` or `"open named segment"`).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Not enough space (tmpfs size or memory) to reserve the segment.
    #[error("no space for a segment of {requested} bytes ({available} bytes available)")]
    NoSpace {
        /// Bytes asked for.
        requested: u64,
        /// Bytes that were available when the request failed (best estimate).
        available: u64,
    },
    /// A segment name that cannot be used (see [`validate_name`](crate::validate_name)).
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A named segment with this name already exists.
    #[error("segment {name:?} already exists")]
    Exists {
        /// The name.
        name: String,
    },
    /// No named segment with this name exists.
    #[error("segment {name:?} not found")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The named entry or fd is not a regular file (a directory, fifo, socket...).
    #[error("{name:?} is not a regular file")]
    NotRegular {
        /// The name (or `fd N` for an fd).
        name: String,
    },
    /// A segment is smaller than its sender claims.
    #[error("segment is {actual} bytes, expected at least {expected}")]
    TooSmall {
        /// The size the caller expects.
        expected: u64,
        /// The size `fstat` reports.
        actual: u64,
    },
    /// A size that cannot be mapped on this platform.
    #[error("segment size {len} is too large to map")]
    SizeOverflow {
        /// The size asked for.
        len: u64,
    },
    /// Write access to a read-only mapping.
    #[error("segment is mapped read-only")]
    ReadOnly,
    /// The segment cannot be sealed.
    #[error("segment cannot be sealed: {reason}")]
    NotSealable {
        /// Why.
        reason: &'static str,
    },
    /// A received segment lacks seals the receiver requires (see
    /// [`Segment::from_fd_sealed`](crate::Segment::from_fd_sealed)).
    #[error("segment is missing the seals {missing:?}")]
    NotSealed {
        /// The required seals that are not set.
        missing: crate::Seals,
    },
    /// The file descriptor of a segment this handle owns exclusively was
    /// asked for: with it, `write(2)` or a second mapping could change the
    /// pages under this handle's views.
    #[error(
        "the segment is owned exclusively by its handle and does not hand out its fd \
         (send it with into_fd, or freeze it to share it)"
    )]
    Exclusive,
    /// A safe view was asked of pages that someone else may write while it
    /// lives (see the crate's safety model).
    #[error("refused: {reason} could be written by others while viewed here")]
    NotExclusive {
        /// What was asked.
        reason: &'static str,
    },
    /// A bounded wait ran out: the peer did not make room (stopped reading)
    /// in time.
    #[error("{op} timed out")]
    TimedOut {
        /// What was being waited for.
        op: &'static str,
    },
    /// The peer closed the socket (end of file between frames).
    #[error("peer closed the socket")]
    PeerClosed,
    /// A malformed or oversized frame, truncated control data, or a bad fd count.
    #[error("bad frame: {reason}")]
    Frame {
        /// What was wrong.
        reason: String,
    },
    /// [`oob::push_fd`](crate::oob::push_fd) or [`oob::take_fd`](crate::oob::take_fd)
    /// called outside [`oob::collect`](crate::oob::collect) /
    /// [`oob::with_received`](crate::oob::with_received).
    #[error("no out-of-band fd collector is installed on this thread")]
    NoCollector,
    /// [`oob::take_fd`](crate::oob::take_fd) with an index that is out of range or
    /// already taken.
    #[error("fd index {index} is missing ({available} fds were received)")]
    MissingFd {
        /// The index asked for.
        index: u32,
        /// How many fds the current receiver holds (taken or not).
        available: u32,
    },
}

impl ShmError {
    /// An [`ShmError::Io`] for `op`.
    pub(crate) fn io(op: &'static str, source: io::Error) -> ShmError {
        ShmError::Io { op, source }
    }

    /// A [`ShmError::Frame`] with `reason`.
    pub(crate) fn frame(reason: impl Into<String>) -> ShmError {
        ShmError::Frame {
            reason: reason.into(),
        }
    }
}
