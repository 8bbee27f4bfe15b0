//! [`ShmBatch`]: record batches stored as an Arrow IPC file in a shared-memory
//! segment, and named segments other processes (pyarrow) can open.

use crate::decode::{decode, guarded, ReadPath};
use crate::encode::FileLayout;
use crate::error::{ArrowShmError, Result};
use crate::file::{write_ipc_file, WriteOptions};
use crate::inflate;
use crate::transfer::Transfer;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::SchemaRef;
use npshmex_shm::{Access, Seals, Segment};
use std::sync::Arc;

/// Record batches with one schema, stored in a shared-memory segment as an
/// Arrow IPC file (64-byte aligned, metadata V5), so that another process can
/// map them without copying: a worker of `npshmex-pool` (the segment travels
/// as a file descriptor when a `ShmBatch` is serialized), or pyarrow
/// (`pa.ipc.open_file(pa.memory_map('/dev/shm/<name>'))` for a named one).
///
/// A `ShmBatch` made here ([`from_batch`](Self::from_batch),
/// [`from_batches`](Self::from_batches), [`put`](Self::put)) keeps the batches
/// it was made from for [`batches`](Self::batches) (they are reference counted:
/// nothing is copied twice); one that was read ([`open`](Self::open), received
/// from another process) holds batches whose buffers point into the segment,
/// which stays mapped as long as any of their arrays lives.
///
/// A compressed file (LZ4 frame or ZSTD bodies, as pyarrow writes with
/// `compression=` and `feather.write_feather` by default) is read by
/// decompressing each buffer once into a fresh anonymous segment laid out as
/// the uncompressed file and sealed against writes; that segment is the one
/// the batch then holds ([`segment`](Self::segment)). To write compressed
/// files (for disk), see [`write_ipc_file`](Self::write_ipc_file).
///
/// Cloning is cheap (reference counts).
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
/// use npshmex_arrow::{ReadPath, ShmBatch};
///
/// let batch = RecordBatch::try_from_iter([
///     ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
///     ("name", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
/// ])?;
/// let shm = ShmBatch::from_batch(&batch)?;
///
/// // What a receiver does with the segment: map and read it in place.
/// let read = ShmBatch::open(shm.segment().remap(npshmex_shm::Access::ReadOnly)?)?;
/// assert_eq!(read.batch()?, &batch);
/// assert_eq!(read.read_path(), Some(ReadPath::ZeroCopy));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ShmBatch {
    segment: Arc<Segment>,
    /// Length of the IPC file at the start of the segment.
    file_len: usize,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    read_path: Option<ReadPath>,
    transfer: Transfer,
}

/// Owns the mapping for the arrow buffers that point into it.
struct Mapping(Arc<Segment>);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Whether [`ShmBatch::pop`] leaves the named segment in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Remove the name: the popped batch holds the last reference.
    No,
    /// Leave the segment for other readers.
    Yes,
}

impl ShmBatch {
    /// Writes `batch` into a new anonymous segment (a memfd, freed by the
    /// kernel when the last process lets go of it), sized exactly, with one
    /// copy of each buffer.
    ///
    /// # Errors
    /// [`ArrowShmError::Shm`] when the segment cannot be created (no memory),
    /// [`ArrowShmError::Encode`] / [`ArrowShmError::TooLarge`] if the batch
    /// cannot be laid out.
    pub fn from_batch(batch: &RecordBatch) -> Result<ShmBatch> {
        ShmBatch::from_batches(batch.schema(), std::slice::from_ref(batch))
    }

    /// Writes `batches`, which all have `schema`, into one anonymous segment.
    ///
    /// # Errors
    /// As [`from_batch`](Self::from_batch), and
    /// [`ArrowShmError::SchemaMismatch`] / [`ArrowShmError::DictionaryReplaced`]
    /// (one dictionary per field in an IPC file).
    pub fn from_batches(schema: SchemaRef, batches: &[RecordBatch]) -> Result<ShmBatch> {
        let layout = FileLayout::new(&schema, batches)?;
        let mut segment =
            Segment::anonymous(layout.len()).map_err(ArrowShmError::shm("create segment"))?;
        write(&layout, &mut segment)?;
        // Before any other process can map it: nobody may shrink it under a
        // mapping (SIGBUS).
        segment
            .seal(Seals::SIZE)
            .map_err(ArrowShmError::shm("seal segment size"))?;
        Ok(ShmBatch::made(segment, layout.len(), schema, batches))
    }

    /// Writes `batch` into the new named segment `/dev/shm/<name>`; it stays
    /// until removed ([`pop`](Self::pop) with [`Keep::No`],
    /// `npshmex_shm::remove`). Names starting with `npshmex-` are managed by
    /// `npshmex_shm::list`/`clear`.
    ///
    /// # Errors
    /// `Shm(Exists)` when the name is taken, `Shm(InvalidName)`, as
    /// [`from_batch`](Self::from_batch) otherwise; nothing is left behind.
    pub fn put(name: &str, batch: &RecordBatch) -> Result<ShmBatch> {
        ShmBatch::put_batches(name, batch.schema(), std::slice::from_ref(batch))
    }

    /// [`put`](Self::put) for several batches with one schema.
    ///
    /// # Errors
    /// As [`put`](Self::put) and [`from_batches`](Self::from_batches).
    pub fn put_batches(name: &str, schema: SchemaRef, batches: &[RecordBatch]) -> Result<ShmBatch> {
        let layout = FileLayout::new(&schema, batches)?;
        let segment = Segment::create_named(name, layout.len())
            .map_err(ArrowShmError::shm("create named segment"))?;
        ShmBatch::finish_named(segment, layout, schema, batches)
    }

    /// [`put`](Self::put) under a fresh unique name
    /// (`npshmex-<pid>-<starttime>-<random>`, see [`name`](Self::name)).
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub fn put_unique(batch: &RecordBatch) -> Result<ShmBatch> {
        let schema = batch.schema();
        let batches = std::slice::from_ref(batch);
        let layout = FileLayout::new(&schema, batches)?;
        let segment = Segment::create_named_unique(layout.len())
            .map_err(ArrowShmError::shm("create named segment"))?;
        ShmBatch::finish_named(segment, layout, schema, batches)
    }

    fn finish_named(
        mut segment: Segment,
        layout: FileLayout,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<ShmBatch> {
        if let Err(e) = write(&layout, &mut segment) {
            let _ = segment.unlink();
            return Err(e);
        }
        Ok(ShmBatch::made(segment, layout.len(), schema, batches))
    }

    fn made(segment: Segment, file_len: usize, schema: SchemaRef, batches: &[RecordBatch]) -> Self {
        ShmBatch {
            segment: Arc::new(segment),
            file_len,
            schema,
            batches: batches.to_vec(),
            read_path: None,
            transfer: Transfer::Move,
        }
    }

    /// Reads the IPC file that fills `segment` (written here, by pyarrow or
    /// any Arrow implementation) without copying: the arrays' buffers point
    /// into the mapping, except misaligned ones, which are copied (see
    /// [`read_path`](Self::read_path)). The contents are untrusted and fully
    /// validated.
    ///
    /// A file with compressed bodies is decompressed into a new segment
    /// first (see the type's docs), sealed against writes
    /// ([`Transfer::ReadOnly`]), and `segment` is let go.
    ///
    /// Validation cannot protect against another process *changing* the
    /// bytes afterwards: open only segments nobody writes any more, or
    /// sealed ones ([`Transfer::ReadOnly`]).
    ///
    /// # Errors
    /// [`ArrowShmError::Malformed`], [`ArrowShmError::Flatbuffer`],
    /// [`ArrowShmError::Invalid`] or [`ArrowShmError::DecoderPanicked`] for
    /// anything that is not a valid IPC file; for a compressed file also the
    /// errors about its compressed buffers (from
    /// [`ArrowShmError::CompressedBufferTooShort`] to
    /// [`ArrowShmError::DecompressedLong`]), and [`ArrowShmError::Shm`] when
    /// the segment for the decompressed file cannot be created.
    pub fn open(segment: Segment) -> Result<ShmBatch> {
        let len = segment.len();
        ShmBatch::read(segment, len, Transfer::Move)
    }

    pub(crate) fn read(segment: Segment, file_len: usize, transfer: Transfer) -> Result<ShmBatch> {
        ShmBatch::read_shared(Arc::new(segment), file_len, transfer)
    }

    fn read_shared(segment: Arc<Segment>, file_len: usize, transfer: Transfer) -> Result<ShmBatch> {
        let file = segment
            .as_slice()
            .get(..file_len)
            .ok_or(ArrowShmError::Malformed {
                reason: "file length exceeds the segment",
            })?;
        if inflate::is_compressed(file) {
            let inflated = guarded(|| inflate::inflate(file))?;
            let len = inflated.len();
            return ShmBatch::read_in_place(Arc::new(inflated), len, Transfer::ReadOnly);
        }
        ShmBatch::read_in_place(segment, file_len, transfer)
    }

    fn read_in_place(
        segment: Arc<Segment>,
        file_len: usize,
        transfer: Transfer,
    ) -> Result<ShmBatch> {
        let whole = Buffer::from(bytes::Bytes::from_owner(Mapping(segment.clone())));
        let decoded = decode(&whole.slice_with_length(0, file_len))?;
        Ok(ShmBatch {
            segment,
            file_len,
            schema: decoded.schema,
            batches: decoded.batches,
            read_path: Some(decoded.path),
            transfer,
        })
    }

    /// Opens the named segment `/dev/shm/<name>` read-only and reads it (see
    /// [`open`](Self::open)); the name stays.
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(InvalidName)`, or as [`open`](Self::open).
    pub fn open_named(name: &str) -> Result<ShmBatch> {
        let segment = Segment::open_named(name, Access::ReadOnly)
            .map_err(ArrowShmError::shm("open named segment"))?;
        ShmBatch::open(segment)
    }

    /// Opens the named segment like [`open_named`](Self::open_named) and, with
    /// [`Keep::No`], removes its name (the data lives on in this mapping, or
    /// in the decompressed segment of a compressed file).
    ///
    /// # Errors
    /// As [`open_named`](Self::open_named); the name is not removed when the
    /// file is invalid.
    pub fn pop(name: &str, keep: Keep) -> Result<ShmBatch> {
        let segment = Arc::new(
            Segment::open_named(name, Access::ReadOnly)
                .map_err(ArrowShmError::shm("open named segment"))?,
        );
        let len = segment.len();
        let batch = ShmBatch::read_shared(segment.clone(), len, Transfer::Move)?;
        if keep == Keep::No {
            segment
                .unlink()
                .map_err(ArrowShmError::shm("remove named segment"))?;
        }
        Ok(batch)
    }

    /// Writes the batches to `out` as an IPC file, compressed as `options`
    /// says (see [`write_ipc_file`](crate::write_ipc_file)); returns the
    /// number of bytes written.
    ///
    /// # Errors
    /// As [`write_ipc_file`](crate::write_ipc_file).
    pub fn write_ipc_file(&self, out: impl std::io::Write, options: &WriteOptions) -> Result<u64> {
        write_ipc_file(out, &self.schema, &self.batches, options)
    }

    /// Chooses how a receiver gets this batch when it is serialized; see
    /// [`Transfer`]. [`Transfer::ReadOnly`] seals the segment against writes
    /// (for a batch made here: unmaps, seals and maps it read-only again).
    ///
    /// Choose it where the batch is written: a batch that was read here
    /// (received, opened) cannot be sealed any more, since Linux refuses
    /// `F_SEAL_WRITE` while any shared mapping of a writable fd exists, even
    /// a read-only one.
    ///
    /// # Errors
    /// `Shm(NotSealable)` for named segments, `Shm(Io)` with `EBUSY` while
    /// another mapping of the segment exists.
    pub fn with_transfer(mut self, transfer: Transfer) -> Result<ShmBatch> {
        if transfer == Transfer::ReadOnly {
            self.segment = match Arc::try_unwrap(self.segment) {
                Ok(segment) if segment.access() != Access::ReadOnly => Arc::new(
                    segment
                        .freeze()
                        .map_err(ArrowShmError::shm("freeze segment"))?,
                ),
                Ok(segment) => {
                    segment
                        .seal(Seals::SIZE | Seals::WRITE)
                        .map_err(ArrowShmError::shm("seal segment"))?;
                    Arc::new(segment)
                }
                Err(shared) => {
                    shared
                        .seal(Seals::SIZE | Seals::WRITE)
                        .map_err(ArrowShmError::shm("seal segment"))?;
                    shared
                }
            };
        }
        self.transfer = transfer;
        Ok(self)
    }

    /// How a receiver gets this batch (see [`with_transfer`](Self::with_transfer)).
    pub fn transfer(&self) -> Transfer {
        self.transfer
    }

    /// The schema of the batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The batches.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// The batch, when there is exactly one.
    ///
    /// # Errors
    /// [`ArrowShmError::NotOneBatch`] otherwise.
    pub fn batch(&self) -> Result<&RecordBatch> {
        match self.batches.as_slice() {
            [b] => Ok(b),
            other => Err(ArrowShmError::NotOneBatch {
                actual: other.len(),
            }),
        }
    }

    /// The batches; their buffers keep the mapping alive.
    pub fn into_batches(self) -> Vec<RecordBatch> {
        self.batches
    }

    /// The batch, when there is exactly one.
    ///
    /// # Errors
    /// [`ArrowShmError::NotOneBatch`] otherwise.
    pub fn into_batch(self) -> Result<RecordBatch> {
        let actual = self.batches.len();
        let mut it = self.batches.into_iter();
        match (it.next(), it.next()) {
            (Some(b), None) => Ok(b),
            _ => Err(ArrowShmError::NotOneBatch { actual }),
        }
    }

    /// Total rows over all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// How the batches were read: `None` for a batch made here (its batches
    /// are the ones it was made from), `Some(ReadPath::ZeroCopy)` when every
    /// buffer points into the segment.
    pub fn read_path(&self) -> Option<ReadPath> {
        self.read_path
    }

    /// The segment holding the IPC file.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Length in bytes of the IPC file at the start of the segment.
    pub fn file_len(&self) -> usize {
        self.file_len
    }

    /// The name of a named segment (`/dev/shm/<name>`).
    pub fn name(&self) -> Option<&str> {
        self.segment.name()
    }
}

fn write(layout: &FileLayout, segment: &mut Segment) -> Result<()> {
    let out = segment
        .as_mut_slice()
        .map_err(ArrowShmError::shm("write segment"))?;
    layout.write_to(out)
}
