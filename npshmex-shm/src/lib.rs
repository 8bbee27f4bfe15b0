//! Shared-memory segments for npshmex: anonymous (`memfd_create`) and named
//! (`/dev/shm`) segments, mapping, sealing, reservation of space, and passing
//! segments between processes over unix sockets.
//!
//! - [`Segment`]: a mapped region, [`Access::ReadWrite`], [`Access::ReadOnly`] or
//!   [`Access::CopyOnWrite`]. Space is reserved with `fallocate` at creation, so a
//!   full `/dev/shm` or exhausted memory is [`ShmError::NoSpace`], never a SIGBUS.
//! - [`Seals`]: seal a memfd's size before it leaves the process; [`Segment::freeze`]
//!   makes it immutable for everyone.
//! - Named segments in `/dev/shm` ([`Segment::create_named`], [`Segment::open_named`])
//!   and their management: [`list`], [`remove`], [`clear`], [`clear_stale`];
//!   [`ShmDir`] does the same for another directory.
//! - [`FdSocket`]: framed messages with any number of fds over a unix socket.
//! - [`oob`]: the thread-local fd collector that lets `Serialize` impls send
//!   segments out of band.
//! - [`hugepage`]: ask for transparent huge pages for a large `Vec` before
//!   filling it (copying out of a segment into fresh heap memory).
//!
//! All OS calls live in one private module; everything is Linux-only.
//!
//! ```
//! use npshmex_shm::{Access, FdSocket, Seals, Segment};
//!
//! let mut seg = Segment::anonymous(4096)?;
//! seg.as_mut_slice()?[..5].copy_from_slice(b"hello");
//! seg.seal(Seals::SIZE)?; // no receiver can shrink it under our mapping
//!
//! let (a, b) = FdSocket::pair()?;
//! a.send(b"one segment", &[seg.fd()])?;
//! let msg = b.recv()?;
//! assert_eq!(msg.bytes, b"one segment");
//! let fd = msg.fds.into_iter().next().ok_or("no fd")?;
//! let received = Segment::from_fd_expect(fd, Access::ReadOnly, 4096)?;
//! assert_eq!(&received.as_slice()[..5], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
mod error;
pub mod hugepage;
mod named;
pub mod oob;
mod seals;
mod segment;
mod socket;
mod sys;

pub use access::Access;
pub use error::{Result, ShmError};
pub use named::{
    clear, clear_stale, list, remove, validate_name, SegmentInfo, ShmDir, MAX_NAME_LEN, NAME_PREFIX,
};
pub use seals::Seals;
pub use segment::Segment;
pub use socket::{FdSocket, Message, MAX_FRAME_FDS, MAX_FRAME_LEN};
