//! [`Access`]: how a segment is mapped into this process.

use serde::{Deserialize, Serialize};

/// How a segment is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// `MAP_SHARED`, readable and writable: writes are seen by every process.
    ReadWrite,
    /// `MAP_SHARED`, read-only: [`Segment::as_mut_slice`](crate::Segment::as_mut_slice)
    /// returns [`ShmError::ReadOnly`](crate::ShmError::ReadOnly).
    ReadOnly,
    /// `MAP_PRIVATE`, writable: writes stay private to this mapping (copy on write).
    CopyOnWrite,
}

impl Access {
    /// Whether this mapping may be written through.
    pub fn is_writable(self) -> bool {
        !matches!(self, Access::ReadOnly)
    }
}
