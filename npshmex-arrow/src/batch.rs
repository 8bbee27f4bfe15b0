//! [`ShmBatch`]: record batches stored as an Arrow IPC file in a shared-memory
//! segment, and named segments other processes (pyarrow) can open.
//!
//! Arrow treats buffers as immutable, and a decoded batch trusts offsets it
//! validated once; so every segment a `ShmBatch` reads in place is
//! write-sealed (nobody, anywhere, can change it after the check), and
//! every batch made here is frozen before anyone else can see it. Named
//! files, which cannot be sealed, are read through a sealed copy, or in
//! place under an `unsafe` promise ([`ShmBatch::open_named_mapped`]).

use crate::decode::{decode, guarded, ReadPath};
use crate::encode::FileLayout;
use crate::error::{ArrowShmError, Result};
use crate::file::{write_ipc_file, WriteOptions};
use crate::inflate;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::SchemaRef;
use npshmex_shm::cache::{self, Slot};
use npshmex_shm::{Access, Keep, NamedSegment, Seals, Segment, Writable};
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
/// // What a receiver does with the (sealed) segment: map and read it in place.
/// let read = ShmBatch::open(shm.segment().remap(npshmex_shm::Access::ReadOnly)?)?;
/// assert_eq!(read.batch()?, &batch);
/// assert_eq!(read.read_path(), Some(ReadPath::ZeroCopy));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ShmBatch {
    /// A write-sealed segment (or one an `unsafe` constructor vouched for).
    pub(crate) slot: Arc<Slot>,
    /// Length of the IPC file at the start of the segment.
    file_len: usize,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    read_path: Option<ReadPath>,
    /// The named segment this batch was put under or read from.
    name: Option<String>,
}

/// Owns the mapping for the arrow buffers that point into it.
struct Mapping(Arc<Slot>);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        self.0.segment().as_slice()
    }
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
        let mut slot =
            cache::alloc_exact(layout.len()).map_err(ArrowShmError::shm("create segment"))?;
        write(&layout, slot.segment_mut())?;
        // Frozen before any other process can map it: nobody can change
        // (or shrink) it once a reader has validated it.
        let slot = slot
            .freeze(layout.len())
            .map_err(ArrowShmError::shm("freeze segment"))?;
        Ok(ShmBatch::made(slot, layout.len(), schema, batches))
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
        let made = ShmBatch::from_batches(schema, batches)?;
        let named = NamedSegment::create(name, made.file_len)
            .map_err(ArrowShmError::shm("create named segment"))?;
        made.finish_named(named)
    }

    /// [`put`](Self::put) under a fresh unique name
    /// (`npshmex-<pid>-<starttime>-<random>`, see [`name`](Self::name)).
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub fn put_unique(batch: &RecordBatch) -> Result<ShmBatch> {
        let made = ShmBatch::from_batch(batch)?;
        let named = NamedSegment::create_unique(made.file_len)
            .map_err(ArrowShmError::shm("create named segment"))?;
        made.finish_named(named)
    }

    /// Copies the IPC file into the named segment (`pwrite`: a named file
    /// is never mapped, see `npshmex_shm::NamedSegment`).
    fn finish_named(mut self, named: NamedSegment) -> Result<ShmBatch> {
        let file = &self.slot.segment().as_slice()[..self.file_len];
        if let Err(e) = named.write_at(0, file) {
            let _ = named.unlink();
            return Err(ArrowShmError::Shm {
                op: "write named segment",
                source: e,
            });
        }
        self.name = Some(named.name().to_owned());
        Ok(self)
    }

    fn made(slot: Slot, file_len: usize, schema: SchemaRef, batches: &[RecordBatch]) -> Self {
        ShmBatch {
            slot: Arc::new(slot),
            file_len,
            schema,
            batches: batches.to_vec(),
            read_path: None,
            name: None,
        }
    }

    /// Reads the IPC file that fills `segment` (written here, by pyarrow or
    /// any Arrow implementation) without copying: the arrays' buffers point
    /// into the mapping, except misaligned ones, which are copied (see
    /// [`read_path`](Self::read_path)). The contents are untrusted and fully
    /// validated.
    ///
    /// The segment must be write-sealed ([`Segment::freeze`],
    /// [`Segment::from_fd_sealed`]): validation holds only if nobody can
    /// change the bytes afterwards. [`ShmBatch::open_unchecked`] reads any
    /// segment under that promise.
    ///
    /// A file with compressed bodies (LZ4 frame or ZSTD, as Feather V2 and
    /// `pandas.DataFrame.to_feather` write by default) is decompressed once
    /// into a new segment laid out as the uncompressed file, frozen before
    /// it is read, and `segment` is let go.
    ///
    /// # Errors
    /// [`ArrowShmError::MissingSeals`] for a segment that is not
    /// write-sealed; [`ArrowShmError::Malformed`], [`ArrowShmError::Flatbuffer`],
    /// [`ArrowShmError::Invalid`] or [`ArrowShmError::DecoderPanicked`] for
    /// anything that is not a valid IPC file; for a compressed file also the
    /// errors about its compressed buffers (from
    /// [`ArrowShmError::CompressedBufferTooShort`] to
    /// [`ArrowShmError::DecompressedLong`]), and [`ArrowShmError::Shm`] when
    /// the segment for the decompressed file cannot be created.
    pub fn open(segment: Segment) -> Result<ShmBatch> {
        let seals = segment.seals().map_err(ArrowShmError::shm("read seals"))?;
        if !seals.contains(Seals::WRITE | Seals::SHRINK) {
            return Err(ArrowShmError::MissingSeals {
                missing: "write and shrink",
            });
        }
        let len = segment.len();
        let slot = Slot::uncached(segment).map_err(ArrowShmError::shm("identify segment"))?;
        ShmBatch::read(slot, len)
    }

    /// [`ShmBatch::open`] for a segment that is not write-sealed.
    ///
    /// # Safety
    /// While the batch or any array read from it lives, nobody may write
    /// the segment's pages: the decoder validated offsets and lengths once,
    /// and arrays trust them afterwards (a changed offset is an
    /// out-of-bounds read).
    ///
    /// # Errors
    /// As [`ShmBatch::open`], but for the seals.
    #[allow(unsafe_code)]
    pub unsafe fn open_unchecked(segment: Segment) -> Result<ShmBatch> {
        let len = segment.len();
        let slot = Slot::uncached(segment).map_err(ArrowShmError::shm("identify segment"))?;
        ShmBatch::read(slot, len)
    }

    pub(crate) fn read(slot: Slot, file_len: usize) -> Result<ShmBatch> {
        let file = slot
            .segment()
            .as_slice()
            .get(..file_len)
            .ok_or(ArrowShmError::Malformed {
                reason: "file length exceeds the segment",
            })?;
        if inflate::is_compressed(file) {
            let inflated = guarded(|| inflate::inflate(file))?;
            let len = inflated.len();
            let slot = Slot::uncached(inflated).map_err(ArrowShmError::shm("identify segment"))?;
            return ShmBatch::read_in_place(slot, len);
        }
        ShmBatch::read_in_place(slot, file_len)
    }

    fn read_in_place(slot: Slot, file_len: usize) -> Result<ShmBatch> {
        let slot = Arc::new(slot);
        let whole = Buffer::from(bytes::Bytes::from_owner(Mapping(slot.clone())));
        let decoded = decode(&whole.slice_with_length(0, file_len))?;
        Ok(ShmBatch {
            slot,
            file_len,
            schema: decoded.schema,
            batches: decoded.batches,
            read_path: Some(decoded.path),
            name: None,
        })
    }

    /// Reads the named segment `/dev/shm/<name>` (a file pyarrow or any
    /// process wrote there) through a copy into a sealed segment of this
    /// process; the name stays. One copy: a named file can be written or
    /// truncated by any process of the user, so it is not read in place
    /// (see [`ShmBatch::open_named_mapped`]).
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(InvalidName)`, or as [`open`](Self::open).
    pub fn open_named(name: &str) -> Result<ShmBatch> {
        let named = NamedSegment::open(name, Writable::No)
            .map_err(ArrowShmError::shm("open named segment"))?;
        ShmBatch::copy_named(&named, name)
    }

    /// A sealed copy of `named`, validated, remembering `name`.
    fn copy_named(named: &NamedSegment, name: &str) -> Result<ShmBatch> {
        let copy = named
            .to_segment()
            .map_err(ArrowShmError::shm("copy named segment"))?
            .freeze()
            .map_err(ArrowShmError::shm("freeze segment"))?;
        let mut batch = ShmBatch::open(copy)?;
        batch.name = Some(name.to_owned());
        Ok(batch)
    }

    /// Reads the named segment `/dev/shm/<name>` in place, without copying;
    /// the name stays.
    ///
    /// # Safety
    /// While the batch or any array read from it lives, no process may
    /// write or truncate the file (a named file cannot be sealed, so the
    /// kernel does not enforce it): a changed offset is an out-of-bounds
    /// read, a truncation a SIGBUS. Prefer [`ShmBatch::open_named`].
    ///
    /// # Errors
    /// As [`ShmBatch::open_named`].
    #[allow(unsafe_code)]
    pub unsafe fn open_named_mapped(name: &str) -> Result<ShmBatch> {
        let named = NamedSegment::open(name, Writable::No)
            .map_err(ArrowShmError::shm("open named segment"))?;
        let fd = named.try_clone_fd().map_err(ArrowShmError::shm("dup fd"))?;
        // SAFETY: the caller promises nobody writes or truncates the file
        // while the batch lives (this function's contract).
        let segment = unsafe { Segment::from_fd_unchecked(fd, Access::ReadOnly, 0) }
            .map_err(ArrowShmError::shm("map named segment"))?;
        // SAFETY: as above.
        let mut batch = unsafe { ShmBatch::open_unchecked(segment) }?;
        batch.name = Some(name.to_owned());
        Ok(batch)
    }

    /// Reads the named segment like [`open_named`](Self::open_named) and,
    /// with [`Keep::No`], removes its name.
    ///
    /// # Errors
    /// As [`open_named`](Self::open_named); the name is not removed when the
    /// file is invalid.
    pub fn pop(name: &str, keep: Keep) -> Result<ShmBatch> {
        if keep == Keep::Yes {
            return ShmBatch::open_named(name);
        }
        // Taken from its name first, so that of several processes popping
        // it exactly one gets it; dropped on error, it gets its name back.
        let taken = NamedSegment::take(name, Writable::No)
            .map_err(ArrowShmError::shm("take named segment"))?;
        let batch = ShmBatch::copy_named(taken.segment(), name)?;
        taken
            .remove()
            .map_err(ArrowShmError::shm("remove named segment"))?;
        Ok(batch)
    }

    /// Writes the batches as an Arrow IPC file to `out` (a file on disk, for
    /// instance), compressed as `options` says (see
    /// [`write_ipc_file`](crate::write_ipc_file)); returns the number of
    /// bytes written. Segments in shared memory stay uncompressed.
    ///
    /// # Errors
    /// As [`write_ipc_file`](crate::write_ipc_file).
    pub fn write_ipc_file(&self, out: impl std::io::Write, options: &WriteOptions) -> Result<u64> {
        write_ipc_file(out, &self.schema, &self.batches, options)
    }

    /// Removes the named segment `/dev/shm/<name>` (batches already read
    /// from it keep their data), like `npshmex_ndarray::shm_del`.
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(InvalidName)`, `Shm(Io)`.
    pub fn del(name: &str) -> Result<()> {
        npshmex_shm::remove(name).map_err(ArrowShmError::shm("remove named segment"))
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

    /// The segment holding the IPC file: write-sealed, so sharing its fd
    /// (with pyarrow, say) cannot change what this batch has validated.
    pub fn segment(&self) -> &Segment {
        self.slot.segment()
    }

    /// Length in bytes of the IPC file at the start of the segment.
    pub fn file_len(&self) -> usize {
        self.file_len
    }

    /// The name of the named segment (`/dev/shm/<name>`) this batch was put
    /// under ([`put`](Self::put)) or read from.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

fn write(layout: &FileLayout, segment: &mut Segment) -> Result<()> {
    let out = segment
        .as_mut_slice()
        .map_err(ArrowShmError::shm("write segment"))?;
    // A reused segment may be larger than the file; readers get the file's
    // length with the segment.
    let out = out
        .get_mut(..layout.len())
        .ok_or(ArrowShmError::Malformed {
            reason: "internal: the segment is smaller than the planned file",
        })?;
    layout.write_to(out)
}
