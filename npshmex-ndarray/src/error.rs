//! The one error type of the crate: why an array could not be placed in,
//! viewed from, sent through or received from shared memory.

use npshmex_codec::{CodecError, DType};
use npshmex_shm::ShmError;

/// `Result` with [`NdarrayError`] as the default error.
pub type Result<T, E = NdarrayError> = std::result::Result<T, E>;

/// Why an array operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NdarrayError {
    /// The shared-memory layer refused (creating, mapping, sealing, naming,
    /// passing a file descriptor).
    #[error("shared memory: {0}")]
    Shm(#[from] ShmError),
    /// The `.npy` header or a typed view was refused.
    #[error("npy layout: {0}")]
    Codec(#[from] CodecError),
    /// The segment holds another element type than the one asked for.
    #[error(
        "dtype mismatch: expected {}, the segment holds {}",
        .expected.to_descr(),
        .found.to_descr()
    )]
    DTypeMismatch {
        /// The dtype of the Rust element type.
        expected: Box<DType>,
        /// The dtype found in the segment's header.
        found: Box<DType>,
    },
    /// The segment holds an array of another dimensionality than `D`.
    #[error("dimension mismatch: expected {expected} axes, the segment holds shape {found:?}")]
    DimMismatch {
        /// Number of axes of `D`.
        expected: usize,
        /// Shape found in the segment's header.
        found: Vec<usize>,
    },
    /// The segment is shorter than its header says.
    #[error("segment too small: header + data need {needed} bytes, the segment has {actual}")]
    TooSmall {
        /// Bytes the header announces (header + data).
        needed: u64,
        /// Bytes in the segment.
        actual: u64,
    },
    /// The data of the segment does not start at a multiple of the element
    /// alignment (a hand-written `.npy` with an odd header length).
    #[error("data offset {offset} is not a multiple of the element alignment {align}")]
    Misaligned {
        /// Offset of the data in the segment.
        offset: usize,
        /// Alignment the element type needs.
        align: usize,
    },
    /// Writing was asked of an array mapped read-only (shared read-only
    /// receive mode, or a frozen array).
    #[error("the array is read-only (shared read-only receive mode or frozen)")]
    ReadOnly,
    /// A value sent as shared read-only arrived in a segment that is not
    /// sealed against writes, so its data could change under the receiver.
    #[error("a read-only transfer arrived in a segment that is not write-sealed")]
    NotSealed,
    /// Freezing needs an anonymous segment: a named `/dev/shm` file cannot be
    /// sealed.
    #[error("named segment {name:?} cannot be frozen: only anonymous segments can be sealed")]
    NamedNotSealable {
        /// The segment's name.
        name: String,
    },
    /// A shape whose byte size overflows `usize`.
    #[error("shape {shape:?} of {itemsize}-byte elements overflows the address space")]
    SizeOverflow {
        /// The requested shape.
        shape: Vec<usize>,
        /// Size of one element.
        itemsize: usize,
    },
    /// An index outside the array's shape ([`crate::ShmArray::set`]).
    #[error("index {index} is out of bounds for shape {shape:?}")]
    OutOfBounds {
        /// The index, as written (`Debug` of ndarray's index type).
        index: String,
        /// The array's shape.
        shape: Vec<usize>,
    },
    /// ndarray refused a shape (internal: layouts are validated before).
    #[error("ndarray shape: {0}")]
    Shape(#[from] ndarray::ShapeError),
    /// A segment-bearing value was serialized or deserialized outside a pool
    /// task, where no file descriptor can travel.
    #[error(
        "npshmex segment types can only be serialized inside a pool task (no fd collector); \
         use npshmex_ndarray::via_shm for plain arrays, which falls back to inline bytes"
    )]
    NoCollector,
}

impl NdarrayError {
    pub(crate) fn dtype_mismatch(expected: &DType, found: &DType) -> NdarrayError {
        NdarrayError::DTypeMismatch {
            expected: Box::new(expected.clone()),
            found: Box::new(found.clone()),
        }
    }
}
