//! Arrow arrays and record batches through shared memory, zero-copy, in the
//! Arrow IPC file format that pyarrow and every Arrow implementation read.
//!
//! - [`ShmBatch`]: record batches written as an IPC file into a segment
//!   (64-byte aligned, sized exactly in advance, one copy of each buffer),
//!   read back without copying: the arrays' buffers point into the mapping,
//!   which lives as long as any of them.
//! - Through `npshmex-pool`: `ShmBatch` is `Serialize + Deserialize`; the
//!   segment, sealed before anyone reads it, travels as a file descriptor
//!   and is read in place on the other side, and
//!   [`via_shm`] does the same for plain `RecordBatch` / `ArrayRef` fields
//!   ([`Shm`] for bare arguments and results).
//! - Named segments: [`ShmBatch::put`] writes `/dev/shm/<name>`, which
//!   pyarrow opens with `pa.ipc.open_file(pa.memory_map('/dev/shm/<name>'))`;
//!   [`ShmBatch::open_named`] / [`ShmBatch::pop`] read files pyarrow wrote.
//! - Compressed IPC files (LZ4 frame or ZSTD bodies: pyarrow's
//!   `compression=`, feather's default) are read by decompressing each
//!   buffer once into a fresh segment, sealed, laid out as the uncompressed
//!   file; [`write_ipc_file`] writes files for disk, compressed as
//!   [`WriteOptions`] says ([`IpcCompression`]).
//! - Untrusted input (received segments, named files) is fully validated;
//!   malformed files are errors, never panics ([`ArrowShmError`]). Buffers
//!   misaligned for their type are copied, and [`ReadPath`] says so. As a
//!   last line of defence a panic inside arrow's decoder is caught and
//!   returned as [`ArrowShmError::DecoderPanicked`]; the first read wraps the
//!   process's panic hook so that those caught panics print nothing (other
//!   panics reach the previous hook unchanged).
//!
//! Every type the IPC format carries round-trips: primitives, booleans,
//! nulls, (large/view) utf8 and binary, fixed-size binary, decimals, dates,
//! times, timestamps with zones, durations, intervals, (large/view/fixed-size)
//! lists, structs, maps, unions, dictionaries (also nested), run-end encoded
//! arrays, and sliced arrays of all of them.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{ArrayRef, Float64Array, RecordBatch};
//! use npshmex_arrow::{Keep, ShmBatch};
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("x", Arc::new(Float64Array::from(vec![1.0, 2.5])) as ArrayRef),
//! ])?;
//! // a named segment another process (pyarrow) can map
//! let put = ShmBatch::put_unique(&batch)?;
//! let name = put.name().ok_or("named")?.to_owned();
//! let popped = ShmBatch::pop(&name, Keep::No)?; // read in place, name removed
//! assert_eq!(popped.batch()?, &batch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

mod batch;
mod check;
mod compression;
mod decode;
mod encode;
mod error;
mod file;
mod inflate;
pub mod sample;
mod transfer;
pub mod via_shm;

pub use batch::ShmBatch;
pub use compression::IpcCompression;
pub use decode::ReadPath;
pub use error::{ArrowShmError, Result};
pub use file::{write_ipc_file, WriteOptions};
/// Whether [`ShmBatch::pop`] leaves the named segment in place (shared by
/// the adapters).
pub use npshmex_shm::Keep;
pub use via_shm::Shm;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hostile_tests;
