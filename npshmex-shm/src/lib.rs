//! Shared-memory segments for npshmex: anonymous segments (`memfd_create`)
//! and named ones (`/dev/shm`), mapping, sealing, reservation of space, a
//! per-process cache of already-faulted segments, and passing segments
//! between processes over unix sockets and through serde.
//!
//! - [`Segment`]: a mapped region, [`Access::ReadWrite`], [`Access::ReadOnly`] or
//!   [`Access::CopyOnWrite`]. Space is reserved with `fallocate` at creation, so a
//!   full `/dev/shm` or exhausted memory is [`ShmError::NoSpace`], never a SIGBUS.
//! - [`Seals`]: the memfd seals; [`Segment::freeze`] makes a segment immutable
//!   for everyone.
//! - [`NamedSegment`]: files in `/dev/shm` that outlive the process, read and
//!   written by copying; their management: [`list`], [`remove`], [`clear`],
//!   [`clear_stale`]; [`ShmDir`] does the same for another directory.
//! - [`cache`]: reuse of already-faulted segments and live mappings across
//!   transfers, with the lock protocol that makes reuse safe between processes.
//! - [`FdSocket`]: framed messages with any number of fds over a unix socket.
//! - [`oob`]: segments inside serde values, sent out of band, with the receive
//!   modes [`Transfer::Move`], [`Transfer::ReadOnly`], [`Transfer::CopyOnWrite`].
//! - [`hugepage`]: transparent huge pages for a large `Vec` about to be filled.
//! - [`procfs`]: `/proc/<pid>/stat`, parsed once for the workspace.
//!
//! # Safety model
//! Shared memory is memory that other processes may write. Rust's rules say
//! that the bytes behind a `&[u8]` do not change while it lives and that a
//! `&mut [u8]` is the only way to them; a page another process writes under
//! such a borrow is undefined behaviour, and for types with invalid bit
//! patterns (`bool`, Arrow offsets) a path to invalid values and
//! out-of-bounds reads. So this crate, and every crate built on it, keeps
//! one rule: **a safe view exists only over pages that nobody can write
//! while it lives**. That holds for exactly three kinds of pages:
//!
//! 1. **write-sealed** pages (`F_SEAL_WRITE`): the kernel refuses the seal
//!    while any writable shared mapping exists and refuses every later
//!    write, so holding the seal is proof ([`Segment::freeze`],
//!    [`Segment::from_fd_sealed`], [`Transfer::ReadOnly`]);
//! 2. pages **owned exclusively** by the handle: created in this process and
//!    never shared writable ([`Segment::anonymous`], which never hands out
//!    its fd: [`ShmError::Exclusive`]), or received by a *move* whose sender
//!    gave up every writable mapping and fd ([`Transfer::Move`]: sending
//!    consumes the handle, proven by [`oob::Collected::finish`], and trusted
//!    by the receiver only through the `unsafe` [`oob::with_received_moves`];
//!    the sender reuses lent pages only for receivers that keep the lend
//!    lock, through the `unsafe` [`oob::Collected::finish_trusted`]);
//! 3. a **private** (`MAP_PRIVATE`) mapping of a write-sealed file
//!    ([`Access::CopyOnWrite`], [`Transfer::CopyOnWrite`]): a snapshot the
//!    receiver may scribble on.
//!
//! Everything else — a named `/dev/shm` file any process of the user can
//! open, an fd from outside — is reachable zero-copy only through
//! [`Segment::from_fd_unchecked`], an `unsafe` constructor with a `# Safety`
//! contract, or safely by copying ([`NamedSegment::read_at`],
//! [`NamedSegment::to_segment`]). Structure that a decoder validates once
//! (`.npy` headers, Arrow offsets, ring entries) is read only from pages of
//! the three kinds, so it cannot change after the check. Receivers also map
//! only files sealed against shrinking, so a peer cannot turn a read into
//! SIGBUS by truncating them.
//!
//! What the model does not cover: another process of the same user writing
//! through `/proc/<pid>/mem` or re-opening `/proc/<pid>/fd/<n>` with write
//! access, which Rust's safety guarantees exclude as they do for
//! `/proc/self/mem` (see `std::os::unix::io`).
//!
//! The paths the model forbids stay closed by tests: a second writable
//! mapping of an exclusive segment does not compile without `unsafe`:
//!
//! ```compile_fail,E0133
//! use npshmex_shm::{Access, Segment};
//! let a = Segment::anonymous(4096)?;
//! let fd = a.into_fd()?;
//! let b = Segment::from_fd_unchecked(fd, Access::ReadWrite, 0)?; // needs `unsafe`
//! # Ok::<(), npshmex_shm::ShmError>(())
//! ```
//!
//! and the safe operations that could alias refuse with typed errors:
//!
//! ```
//! use npshmex_shm::{Access, Segment, ShmError};
//! let a = Segment::anonymous(4096)?;
//! assert!(matches!(a.remap(Access::ReadWrite), Err(ShmError::NotExclusive { .. })));
//! assert!(matches!(a.remap(Access::ReadOnly), Err(ShmError::NotSealed { .. })));
//! assert!(matches!(a.try_clone_fd(), Err(ShmError::Exclusive)));
//! # Ok::<(), ShmError>(())
//! ```
//!
//! All system calls go through rustix; the only `unsafe` code creates,
//! destroys and views mappings (one private module). Linux only.
//!
//! ```
//! use npshmex_shm::{Access, FdSocket, Segment};
//!
//! let mut seg = Segment::anonymous(4096)?;
//! seg.as_mut_slice()?[..5].copy_from_slice(b"hello");
//! let seg = seg.freeze()?; // sealed for everyone: its fd may travel
//!
//! let (a, b) = FdSocket::pair()?;
//! a.send(b"one segment", &[seg.fd()?])?;
//! let msg = b.recv()?;
//! assert_eq!(msg.bytes, b"one segment");
//! let fd = msg.fds.into_iter().next().ok_or("no fd")?;
//! let received = Segment::from_fd_sealed(fd, Access::ReadOnly, 4096)?;
//! assert_eq!(&received.as_slice()[..5], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod access;
mod atomic;
pub mod cache;
mod carried;
pub mod copy;
mod error;
pub mod hugepage;
mod mapping;
mod named;
pub mod oob;
mod pid;
pub mod procfs;
mod seals;
mod segment;
mod socket;

pub use access::Access;
pub use atomic::AtomicRegion;
pub use carried::{Carried, CarriedBuf, Keep};
pub use error::{Result, ShmError};
pub use mapping::without_mappings_in_flight;
pub use named::{
    clear, clear_stale, list, owner, pop_with, remove, set_owner, validate_name, NamedSegment,
    SegmentInfo, ShmDir, Taken, Writable, MAX_NAME_LEN, NAME_PREFIX,
};
pub use oob::Transfer;
pub use seals::Seals;
pub use segment::{FileKey, Segment};
pub use socket::{FdSocket, Message, MAX_FRAME_FDS, MAX_FRAME_LEN};
