//! Sending a [`ShmBatch`] through serde: the segment travels out of band as a
//! file descriptor (`npshmex_shm::oob`), the serialized bytes carry only its
//! index, the file length and the [`Transfer`] mode.
//!
//! # Receive modes
//! Arrow buffers are immutable, so unlike `npshmex-ndarray` there is no
//! writable or copy-on-write mode; the receiver always maps read-only and
//! reads in place. The modes differ in what is promised about the bytes:
//! - [`Transfer::Move`]: the sender hands its segment over (the pool
//!   consumes what it sends, so the receiver holds the only mapping once the
//!   sender's value is dropped). Cheapest: nothing to seal beyond the size.
//! - [`Transfer::ReadOnly`]: the segment is sealed against writes
//!   (`F_SEAL_WRITE`, via `Segment::freeze`), so sender and any number of
//!   receivers can share it at once and the validated bytes can never change
//!   under the reader. The receiver checks the seal.
//!
//! Outside a pool task (no fd collector) serialization fails with a serde
//! error: there is no inline fallback, because a batch is exactly what should
//! not be copied through a socket. The receiver treats the segment as
//! untrusted and validates the whole file; serde formats such as postcard
//! keep no message of custom errors, so the typed cause is also kept for
//! [`take_last_error`].

use crate::batch::ShmBatch;
use crate::error::ArrowShmError;
use npshmex_shm::{oob, Access, Seals, Segment};
use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;

/// How the receiver of a serialized [`ShmBatch`] gets it (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Transfer {
    /// The receiver takes the segment over; sealed against resizing only.
    Move,
    /// The segment is sealed against writes; shared by sender and receivers.
    ReadOnly,
}

/// What travels in the serialized bytes.
#[derive(Serialize, Deserialize)]
struct Wire {
    fd: u32,
    file_len: u64,
    transfer: Transfer,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<ArrowShmError>> = const { RefCell::new(None) };
}

/// The typed cause of the last failed (de)serialization of a type of this
/// crate on this thread, taken out (serde formats keep only a message, some
/// not even that).
pub fn take_last_error() -> Option<ArrowShmError> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

fn remember(e: ArrowShmError) -> String {
    let msg = format!("npshmex-arrow: {e}");
    set_last_error(e);
    msg
}

pub(crate) fn set_last_error(e: ArrowShmError) {
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(e));
}

impl Serialize for ShmBatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !oob::is_collecting() {
            return Err(ser::Error::custom(
                "npshmex segment types can only be serialized inside a pool task (no fd collector)",
            ));
        }
        let fd = lendable_fd(self).map_err(|e| ser::Error::custom(remember(e)))?;
        let index = oob::push_fd(fd).map_err(|source| {
            ser::Error::custom(remember(ArrowShmError::Shm {
                op: "hand the segment to the fd collector",
                source,
            }))
        })?;
        Wire {
            fd: index,
            file_len: self.file_len() as u64,
            transfer: self.transfer(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ShmBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        receive(wire).map_err(|e| de::Error::custom(remember(e)))
    }
}

/// The fd to send for `batch`: its own segment when that is sealed against
/// shrinking (every segment this crate writes is), otherwise (a named segment,
/// e.g. a file pyarrow wrote into /dev/shm, which cannot be sealed) a sealed
/// copy of its file, since receivers refuse unsealed segments.
fn lendable_fd(batch: &ShmBatch) -> Result<std::os::fd::OwnedFd, ArrowShmError> {
    let seg = batch.segment();
    if seg.seals().is_ok_and(|s| s.contains(Seals::SHRINK)) {
        return seg
            .try_clone_fd()
            .map_err(ArrowShmError::shm("dup segment fd"));
    }
    let len = batch.file_len();
    let mut copy = Segment::anonymous(len).map_err(ArrowShmError::shm("create segment"))?;
    let src = seg.as_slice().get(..len).ok_or(ArrowShmError::Malformed {
        reason: "file length past the end of its segment",
    })?;
    copy.as_mut_slice()
        .map_err(ArrowShmError::shm("write segment"))?
        .copy_from_slice(src);
    let seals = match batch.transfer() {
        Transfer::ReadOnly => Seals::SIZE | Seals::WRITE,
        _ => Seals::SIZE,
    };
    if seals.contains(Seals::WRITE) {
        // Sealing against writes needs no writable mapping: freeze unmaps it.
        let frozen = copy.freeze().map_err(ArrowShmError::shm("seal segment"))?;
        return frozen
            .try_clone_fd()
            .map_err(ArrowShmError::shm("dup segment fd"));
    }
    copy.seal(seals)
        .map_err(ArrowShmError::shm("seal segment"))?;
    copy.try_clone_fd()
        .map_err(ArrowShmError::shm("dup segment fd"))
}

fn receive(wire: Wire) -> Result<ShmBatch, ArrowShmError> {
    let fd = oob::take_fd(wire.fd).map_err(ArrowShmError::shm("take received fd"))?;
    // Only a segment sealed against shrinking is mapped: the sender (or
    // anyone else holding the file) could otherwise truncate it under our
    // reads, a SIGBUS instead of an error.
    let segment = Segment::from_fd_sealed(fd, Access::ReadOnly, wire.file_len, Seals::NONE)
        .map_err(ArrowShmError::shm("map received segment"))?;
    if wire.transfer == Transfer::ReadOnly {
        let seals = segment.seals().map_err(ArrowShmError::shm("read seals"))?;
        if !seals.contains(Seals::WRITE | Seals::SHRINK) {
            return Err(ArrowShmError::MissingSeals {
                missing: "write and shrink",
            });
        }
    }
    let file_len = usize::try_from(wire.file_len).map_err(|_| ArrowShmError::Malformed {
        reason: "file length does not fit this machine",
    })?;
    ShmBatch::read(segment, file_len, wire.transfer)
}
