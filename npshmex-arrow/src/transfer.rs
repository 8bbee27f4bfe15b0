//! Sending a [`ShmBatch`] through serde: the segment travels out of band
//! (`npshmex_shm::oob`), the serialized bytes carry only its
//! [`SegmentRef`] and the file length.
//!
//! Arrow buffers are immutable, and the decoder validates offsets once, so
//! a batch always travels write-sealed ([`Transfer::ReadOnly`]): sender and
//! any number of receivers share the same pages, which nobody can change.
//! The receiver asks for a sealed segment whatever the sender claims, and
//! validates the whole file.
//!
//! Outside a pool task (no fd collector) serialization fails with a serde
//! error: there is no inline fallback, because a batch is exactly what should
//! not be copied through a socket. Errors keep their typed cause in the
//! encoding or decoding scope (`oob::ser_error` / `oob::de_error`).

use crate::batch::ShmBatch;
use crate::error::ArrowShmError;
use npshmex_shm::oob::{self, SegmentRef};
use npshmex_shm::Transfer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What travels in the serialized bytes.
#[derive(Serialize, Deserialize)]
struct Wire {
    segment: SegmentRef,
    file_len: u64,
}

impl Serialize for ShmBatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !oob::is_collecting() {
            return Err(oob::ser_error(ArrowShmError::NoCollector));
        }
        let segment = oob::send(&self.slot, Transfer::ReadOnly).map_err(|source| {
            oob::ser_error(ArrowShmError::Shm {
                op: "hand the segment to the fd collector",
                source,
            })
        })?;
        Wire {
            segment,
            file_len: self.file_len() as u64,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ShmBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        receive(wire).map_err(oob::de_error)
    }
}

fn receive(wire: Wire) -> Result<ShmBatch, ArrowShmError> {
    // Read-only whatever the sender says: `oob::receive` then insists on a
    // segment sealed against writes and shrinking.
    let slot = oob::receive(wire.segment.with_transfer(Transfer::ReadOnly))
        .map_err(ArrowShmError::shm("map received segment"))?;
    let file_len = usize::try_from(wire.file_len).map_err(|_| ArrowShmError::Malformed {
        reason: "file length does not fit this machine",
    })?;
    ShmBatch::read(slot, file_len)
}
