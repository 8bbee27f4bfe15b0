//! IPC files for disk and sockets: [`write_ipc_file`] and its
//! [`WriteOptions`] (body compression).
//!
//! The file is laid out by the same code as a segment (`encode`), so it is
//! the same file byte for byte when uncompressed; compressed, each body
//! buffer is replaced by its compressed form. Compression is offered only
//! here: a segment is meant to be read in place, which compressed buffers
//! cannot be. Rejected: arrow-ipc's `FileWriter` with
//! `IpcWriteOptions::try_with_compression`: it writes sliced unions and
//! validity bitmaps differently from the segments (see `encode`), and two
//! layout engines would drift.

use crate::compression::IpcCompression;
use crate::encode::FileLayout;
use crate::error::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// How [`write_ipc_file`] writes a file.
///
/// ```
/// use npshmex_arrow::{IpcCompression, WriteOptions};
///
/// let options = WriteOptions::default().with_compression(IpcCompression::Zstd);
/// assert_eq!(options.compression(), IpcCompression::Zstd);
/// assert_eq!(WriteOptions::default().compression(), IpcCompression::None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WriteOptions {
    compression: IpcCompression,
}

impl WriteOptions {
    /// The defaults: uncompressed.
    pub fn new() -> WriteOptions {
        WriteOptions::default()
    }

    /// Compresses every record batch and dictionary body with `compression`.
    #[must_use]
    pub fn with_compression(mut self, compression: IpcCompression) -> WriteOptions {
        self.compression = compression;
        self
    }

    /// The body compression.
    pub fn compression(&self) -> IpcCompression {
        self.compression
    }
}

/// Writes `batches`, which all have `schema`, to `out` as an Arrow IPC file
/// (metadata V5, buffers 64-byte aligned), compressed as `options` says;
/// returns the number of bytes written. pyarrow reads it with
/// `pa.ipc.open_file(path)` (or `pyarrow.feather.read_table`), and so does
/// [`ShmBatch::open`](crate::ShmBatch::open) once it is in a segment.
///
/// `out` gets many small writes: pass a `BufWriter` around a file.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{ArrayRef, Int64Array, RecordBatch};
/// use npshmex_arrow::{write_ipc_file, IpcCompression, ShmBatch, WriteOptions};
///
/// let batch = RecordBatch::try_from_iter([
///     ("x", Arc::new(Int64Array::from(vec![7; 1000])) as ArrayRef),
/// ])?;
/// let mut file = Vec::new();
/// let options = WriteOptions::default().with_compression(IpcCompression::Lz4Frame);
/// let len = write_ipc_file(&mut file, &batch.schema(), &[batch.clone()], &options)?;
/// assert_eq!(len, file.len() as u64);
/// assert!(file.len() < 8000); // the 8000 bytes of values, compressed
///
/// // read back: `open` wants a sealed segment (nobody can change it under
/// // the reader); the compressed bodies are decompressed once into a
/// // fresh sealed segment, read in place
/// let mut segment = npshmex_shm::Segment::anonymous(file.len())?;
/// segment.as_mut_slice()?.copy_from_slice(&file);
/// assert_eq!(ShmBatch::open(segment.freeze()?)?.batch()?, &batch);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`ShmBatch::from_batches`](crate::ShmBatch::from_batches) for the
/// batches, [`ArrowShmError::Compress`](crate::ArrowShmError::Compress) if
/// the codec fails, [`ArrowShmError::Io`](crate::ArrowShmError::Io) if `out`
/// does.
pub fn write_ipc_file(
    out: impl std::io::Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    options: &WriteOptions,
) -> Result<u64> {
    let layout = FileLayout::with_compression(schema, batches, options.compression)?;
    layout.write_into(out)?;
    Ok(layout.len() as u64)
}
