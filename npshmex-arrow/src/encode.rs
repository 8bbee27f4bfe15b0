//! Lays out an Arrow IPC file so that it can be written straight into a
//! segment of exactly the right size: one copy of each buffer, into pages
//! touched once.
//!
//! # Design
//! arrow-ipc's `FileWriter` first copies every buffer of a batch into a
//! growing `Vec<u8>` (the message body, reallocated as it grows) and then
//! copies that `Vec` into the writer. Writing into shared memory with it
//! means either a second full copy (write into a `Vec`, size the segment,
//! copy) or a counting pass that does all the copying once for nothing.
//!
//! Instead this module computes the file in two cheap steps:
//! 1. [`FileLayout::new`] walks the arrays exactly as arrow-ipc's writer does
//!    (same field nodes, same buffer truncation for sliced arrays, same
//!    dictionary ids) but only *records* each body buffer as a reference
//!    counted [`Buffer`] handle; the flatbuffer metadata (a few bytes per
//!    buffer) is built for real. Only sliced booleans/validity bitmaps whose
//!    offset is not a multiple of 8, and offsets of sliced variable-size
//!    arrays, are materialised as small new buffers, as arrow-ipc does.
//!    The exact file size is then known: [`FileLayout::len`].
//! 2. [`FileLayout::write_to`] copies the metadata and each recorded buffer
//!    once into the destination (a fresh segment), padding every buffer to
//!    64 bytes.
//!
//! The result is byte-for-byte what arrow-ipc's `FileWriter` produces with
//! 64-byte alignment and metadata V5, except that a validity bitmap of an
//! array without nulls is written with length 0 (the IPC format allows it,
//! pyarrow does the same) instead of a synthesised all-valid bitmap.
//! Rejected alternative: growing a mapping while writing (`mremap`): it still
//! needs arrow-ipc's body `Vec`, so it saves nothing.
//!
//! For files on disk ([`write_ipc_file`](crate::write_ipc_file)) every body
//! buffer can be compressed as the layout is planned
//! ([`FileLayout::with_compression`]); the planned file then holds the
//! compressed buffers. Segments are never compressed.
//!
//! The walk indexes an array's buffers and children by position: the input
//! is a `RecordBatch` built through arrow's safe constructors, whose layout
//! invariants guarantee them (untrusted bytes never reach this module; they
//! are validated into arrays by `decode` first).

use crate::compression::{Compressor, IpcCompression};
use crate::error::{ArrowShmError, Result};
use arrow_array::{types, Array, ArrowNativeTypeOp, RecordBatch, RunArray};
use arrow_buffer::{ArrowNativeType, Buffer, BufferBuilder, MutableBuffer, OffsetBuffer};
use arrow_data::{layout, ArrayData, ArrayDataBuilder, BufferSpec};
use arrow_ipc::convert::IpcSchemaEncoder;
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_ipc::{
    Block, BodyCompressionBuilder, BodyCompressionMethod, DictionaryBatchBuilder, FieldNode,
    FooterBuilder, MessageBuilder, MessageHeader, MetadataVersion, RecordBatchBuilder,
};
use arrow_schema::{DataType, SchemaRef, UnionMode};
use flatbuffers::FlatBufferBuilder;
use std::collections::HashMap;

/// Alignment of every message and body buffer in the files written here.
pub(crate) const ALIGNMENT: usize = 64;
/// The magic bytes at both ends of an IPC file.
pub(crate) const MAGIC: &[u8; 6] = b"ARROW1";
/// Marks the start of an encapsulated message (IPC format >= 0.15).
pub(crate) const CONTINUATION: [u8; 4] = [0xff; 4];
/// File header: magic padded to the alignment, so bodies are 64-aligned.
pub(crate) const HEADER_LEN: usize = ALIGNMENT;
/// The metadata version written (the current one; pyarrow >= 1.0 reads it).
const VERSION: MetadataVersion = MetadataVersion::V5;

/// One encapsulated message: metadata flatbuffer and body buffers.
struct Message {
    metadata: Vec<u8>,
    body: Vec<Buffer>,
    body_len: usize,
}

impl Message {
    /// Bytes of the message prefix + metadata, padded.
    fn meta_len(&self) -> usize {
        pad(self.metadata.len() + 8)
    }
}

/// An IPC file, planned: metadata built, body buffers referenced.
pub(crate) struct FileLayout {
    schema_message: Message,
    messages: Vec<Message>,
    footer: Vec<u8>,
    len: usize,
}

/// `len` rounded up to the alignment.
pub(crate) fn pad(len: usize) -> usize {
    len.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn to_i64(what: &'static str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| ArrowShmError::TooLarge {
        what,
        value: v as u64,
    })
}

impl FileLayout {
    /// Plans an IPC file holding `batches`, all with schema `schema`.
    pub(crate) fn new(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<FileLayout> {
        FileLayout::with_compression(schema, batches, IpcCompression::None)
    }

    /// [`new`](Self::new) with every record batch and dictionary body
    /// compressed with `codec` (each buffer compressed here, so the planned
    /// file holds the compressed buffers instead of references).
    pub(crate) fn with_compression(
        schema: &SchemaRef,
        batches: &[RecordBatch],
        codec: IpcCompression,
    ) -> Result<FileLayout> {
        for (index, b) in batches.iter().enumerate() {
            if b.schema_ref().fields() != schema.fields() {
                return Err(ArrowShmError::SchemaMismatch { index });
            }
        }
        let options = IpcWriteOptions::default();
        let mut tracker = DictionaryTracker::new(true);
        let schema_fb = IpcDataGenerator::default()
            .schema_to_bytes_with_dictionary_tracker(schema, &mut tracker, &options)
            .ipc_message;
        let dict_ids = tracker.dict_id().to_vec();

        let mut written: HashMap<i64, ArrayData> = HashMap::new();
        let mut messages = Vec::new();
        let mut dict_blocks = Vec::new();
        let mut record_blocks = Vec::new();
        for batch in batches {
            let mut ids = dict_ids.iter().copied();
            for column in batch.columns() {
                let data = column.to_data();
                walk_dictionaries(&data, &mut ids, &mut |id, values| {
                    if let Some(old) = written.get(&id) {
                        if ArrayData::ptr_eq(old, values) || old == values {
                            return Ok(());
                        }
                        return Err(ArrowShmError::DictionaryReplaced { dict_id: id });
                    }
                    written.insert(id, values.clone());
                    let mut body = Body::new(codec);
                    body.array(values)?;
                    messages.push((true, body.finish(Header::Dictionary(id), values.len())?));
                    Ok(())
                })?;
            }
            let mut body = Body::new(codec);
            for column in batch.columns() {
                body.array(&column.to_data())?;
            }
            messages.push((false, body.finish(Header::RecordBatch, batch.num_rows())?));
        }

        let schema_message = Message {
            metadata: schema_fb,
            body: Vec::new(),
            body_len: 0,
        };
        let mut offset = HEADER_LEN + schema_message.meta_len();
        for (is_dict, m) in &messages {
            let meta = i32::try_from(m.meta_len()).map_err(|_| ArrowShmError::TooLarge {
                what: "message metadata",
                value: m.meta_len() as u64,
            })?;
            let block = Block::new(
                to_i64("file", offset)?,
                meta,
                to_i64("message body", m.body_len)?,
            );
            if *is_dict {
                dict_blocks.push(block);
            } else {
                record_blocks.push(block);
            }
            offset += m.meta_len() + m.body_len;
        }
        // end-of-stream marker
        offset += 8;

        let mut fbb = FlatBufferBuilder::new();
        let dictionaries = fbb.create_vector(&dict_blocks);
        let records = fbb.create_vector(&record_blocks);
        let mut footer_tracker = DictionaryTracker::new(true);
        let fb_schema = IpcSchemaEncoder::new()
            .with_dictionary_tracker(&mut footer_tracker)
            .schema_to_fb_offset(&mut fbb, schema);
        let root = {
            let mut f = FooterBuilder::new(&mut fbb);
            f.add_version(VERSION);
            f.add_schema(fb_schema);
            f.add_dictionaries(dictionaries);
            f.add_recordBatches(records);
            f.finish()
        };
        fbb.finish(root, None);
        let footer = fbb.finished_data().to_vec();
        i32::try_from(footer.len()).map_err(|_| ArrowShmError::TooLarge {
            what: "footer",
            value: footer.len() as u64,
        })?;
        offset += footer.len() + 4 + MAGIC.len();
        Ok(FileLayout {
            schema_message,
            messages: messages.into_iter().map(|(_, m)| m).collect(),
            footer,
            len: offset,
        })
    }

    /// Exact size of the file in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes the file into `out`, whose length must be [`len`](Self::len).
    pub(crate) fn write_to(&self, out: &mut [u8]) -> Result<()> {
        if out.len() != self.len {
            return Err(ArrowShmError::Malformed {
                reason: "internal: destination size differs from the planned file size",
            });
        }
        let mut w = Cursor { out, pos: 0 };
        self.emit(&mut w)?;
        debug_assert_eq!(w.pos, self.len);
        Ok(())
    }

    /// Writes the file to `out` (a file on disk, a socket), [`len`](Self::len) bytes.
    pub(crate) fn write_into(&self, out: impl std::io::Write) -> Result<()> {
        let mut w = WriteSink { out };
        self.emit(&mut w)?;
        w.out.flush().map_err(|source| ArrowShmError::Io { source })
    }

    fn emit(&self, w: &mut impl Sink) -> Result<()> {
        w.put(MAGIC)?;
        w.zeros(HEADER_LEN - MAGIC.len())?;
        for m in std::iter::once(&self.schema_message).chain(&self.messages) {
            let meta_len = m.meta_len();
            w.put(&CONTINUATION)?;
            // fits: checked in `new` (schema message is small)
            w.put(&((meta_len - 8) as i32).to_le_bytes())?;
            w.put(&m.metadata)?;
            w.zeros(meta_len - 8 - m.metadata.len())?;
            for b in &m.body {
                w.put(b.as_slice())?;
                w.zeros(pad(b.len()) - b.len())?;
            }
        }
        w.put(&CONTINUATION)?;
        w.zeros(4)?;
        w.put(&self.footer)?;
        w.put(&(self.footer.len() as i32).to_le_bytes())?;
        w.put(MAGIC)
    }
}

/// Where [`FileLayout`] writes: a slice sized in advance or an `io::Write`.
trait Sink {
    fn put(&mut self, bytes: &[u8]) -> Result<()>;
    fn zeros(&mut self, n: usize) -> Result<()>;
}

impl Sink for Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        Cursor::put(self, bytes);
        Ok(())
    }

    fn zeros(&mut self, n: usize) -> Result<()> {
        Cursor::zeros(self, n);
        Ok(())
    }
}

struct WriteSink<W> {
    out: W,
}

impl<W: std::io::Write> Sink for WriteSink<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|source| ArrowShmError::Io { source })
    }

    fn zeros(&mut self, mut n: usize) -> Result<()> {
        const ZEROS: [u8; ALIGNMENT] = [0; ALIGNMENT];
        while n > 0 {
            let k = n.min(ZEROS.len());
            self.put(&ZEROS[..k])?;
            n -= k;
        }
        Ok(())
    }
}

/// A sequential writer over a slice whose size was computed in advance.
pub(crate) struct Cursor<'a> {
    pub(crate) out: &'a mut [u8],
    pub(crate) pos: usize,
}

impl Cursor<'_> {
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        // The layout computed every length in advance and `write_to` checked
        // the destination size, so this range is in bounds.
        // Large buffers are copied on several threads (`npshmex_shm::copy`).
        npshmex_shm::copy::copy(&mut self.out[self.pos..self.pos + bytes.len()], bytes);
        self.pos += bytes.len();
    }

    // Explicit zeros: the segment may come from a cache and hold old data.
    pub(crate) fn zeros(&mut self, n: usize) {
        self.out[self.pos..self.pos + n].fill(0);
        self.pos += n;
    }

    /// The next `n` bytes, to be filled by the caller.
    pub(crate) fn take(&mut self, n: usize) -> &mut [u8] {
        let start = self.pos;
        self.pos += n;
        &mut self.out[start..self.pos]
    }
}

enum Header {
    RecordBatch,
    Dictionary(i64),
}

/// The nodes and buffers of one message body, in IPC order.
struct Body {
    nodes: Vec<FieldNode>,
    buffers: Vec<arrow_ipc::Buffer>,
    parts: Vec<Buffer>,
    len: usize,
    variadic_counts: Vec<i64>,
    compressor: Compressor,
}

impl Body {
    fn new(codec: IpcCompression) -> Body {
        Body {
            nodes: Vec::new(),
            buffers: Vec::new(),
            parts: Vec::new(),
            len: 0,
            variadic_counts: Vec::new(),
            compressor: Compressor::new(codec),
        }
    }

    fn push(&mut self, b: Buffer) -> Result<()> {
        let b = match self.compressor.codec() {
            IpcCompression::None => b,
            _ => Buffer::from_vec(self.compressor.compress(b.as_slice())?),
        };
        self.buffers.push(arrow_ipc::Buffer::new(
            to_i64("message body", self.len)?,
            to_i64("buffer", b.len())?,
        ));
        self.len += pad(b.len());
        self.parts.push(b);
        Ok(())
    }

    /// Records `data` as arrow-ipc's `write_array_data` writes it.
    fn array(&mut self, data: &ArrayData) -> Result<()> {
        let dt = data.data_type();
        let len = data.len();
        let null_count = match dt {
            DataType::Null => len,
            _ => data.null_count(),
        };
        self.nodes.push(FieldNode::new(
            to_i64("array length", len)?,
            to_i64("null count", null_count)?,
        ));
        if !matches!(
            dt,
            DataType::Null | DataType::Union(_, _) | DataType::RunEndEncoded(_, _)
        ) {
            match data.nulls() {
                Some(nulls) if nulls.null_count() > 0 => self.push(nulls.inner().sliced())?,
                _ => self.push(Buffer::from(MutableBuffer::new(0)))?,
            }
        }
        match dt {
            DataType::Binary | DataType::Utf8 => {
                let (offsets, values) = byte_array::<i32>(data);
                self.push(offsets)?;
                self.push(values)?;
            }
            DataType::LargeBinary | DataType::LargeUtf8 => {
                let (offsets, values) = byte_array::<i64>(data);
                self.push(offsets)?;
                self.push(values)?;
            }
            DataType::BinaryView | DataType::Utf8View => {
                // Views are sliced; the data buffers are written whole (like
                // arrow-ipc: proving which ones are unused would need a scan).
                self.push(truncated(data))?;
                for b in data.buffers().iter().skip(1) {
                    self.push(b.clone())?;
                }
                self.variadic_counts.push(to_i64(
                    "buffer count",
                    data.buffers().len().saturating_sub(1),
                )?);
            }
            DataType::Boolean => {
                self.push(data.buffers()[0].bit_slice(data.offset(), len))?;
            }
            DataType::List(_) | DataType::Map(_, _) => {
                let (offsets, child) = list_array::<i32>(data);
                self.push(offsets)?;
                return self.array(&child);
            }
            DataType::LargeList(_) => {
                let (offsets, child) = list_array::<i64>(data);
                self.push(offsets)?;
                return self.array(&child);
            }
            DataType::ListView(_) | DataType::LargeListView(_) => {
                let width = if matches!(dt, DataType::ListView(_)) {
                    4
                } else {
                    8
                };
                for b in &data.buffers()[..2] {
                    self.push(if len == 0 {
                        Buffer::from(MutableBuffer::new(0))
                    } else {
                        b.slice_with_length(data.offset() * width, len * width)
                    })?;
                }
                return self.array(&data.child_data()[0]);
            }
            DataType::Union(_, mode) => {
                // An `ArrayData` slice of a union keeps an offset and whole
                // buffers and children (arrow-ipc writes them as they are,
                // which readers reject): slice type ids, dense offsets and
                // sparse children here. (`UnionArray::from` would, but it
                // slices struct children that `ArrayData::slice` already
                // sliced a second time.)
                let offset = data.offset();
                self.push(data.buffers()[0].slice_with_length(offset, len))?;
                if *mode == UnionMode::Dense {
                    self.push(data.buffers()[1].slice_with_length(offset * 4, len * 4))?;
                    for child in data.child_data() {
                        self.array(child)?;
                    }
                } else {
                    for child in data.child_data() {
                        self.array(&child.slice(offset, len))?;
                    }
                }
                return Ok(());
            }
            DataType::FixedSizeList(_, size) => {
                let size = usize::try_from(*size).unwrap_or(0);
                let child = data.child_data()[0].slice(data.offset() * size, len * size);
                return self.array(&child);
            }
            dt if dt.is_numeric()
                || dt.is_temporal()
                || matches!(
                    dt,
                    DataType::FixedSizeBinary(_) | DataType::Dictionary(_, _)
                ) =>
            {
                self.push(truncated(data))?;
            }
            _ => {
                for b in data.buffers() {
                    self.push(b.clone())?;
                }
            }
        }
        match dt {
            DataType::Dictionary(_, _) => {}
            DataType::RunEndEncoded(_, _) => {
                let unsliced = unslice_run_array(data)?;
                for child in unsliced.child_data() {
                    self.array(child)?;
                }
            }
            _ => {
                for child in data.child_data() {
                    self.array(child)?;
                }
            }
        }
        Ok(())
    }

    fn finish(self, header: Header, length: usize) -> Result<Message> {
        let mut fbb = FlatBufferBuilder::new();
        let buffers = fbb.create_vector(&self.buffers);
        let nodes = fbb.create_vector(&self.nodes);
        let variadic =
            (!self.variadic_counts.is_empty()).then(|| fbb.create_vector(&self.variadic_counts));
        let compression = self.compressor.codec().to_fb().map(|codec| {
            let mut c = BodyCompressionBuilder::new(&mut fbb);
            c.add_codec(codec);
            c.add_method(BodyCompressionMethod::BUFFER);
            c.finish()
        });
        let batch = {
            let mut b = RecordBatchBuilder::new(&mut fbb);
            b.add_length(to_i64("batch length", length)?);
            b.add_nodes(nodes);
            b.add_buffers(buffers);
            if let Some(v) = variadic {
                b.add_variadicBufferCounts(v);
            }
            if let Some(c) = compression {
                b.add_compression(c);
            }
            b.finish()
        };
        let (header_type, header) = match header {
            Header::RecordBatch => (MessageHeader::RecordBatch, batch.as_union_value()),
            Header::Dictionary(id) => {
                let mut d = DictionaryBatchBuilder::new(&mut fbb);
                d.add_id(id);
                d.add_data(batch);
                d.add_isDelta(false);
                (MessageHeader::DictionaryBatch, d.finish().as_union_value())
            }
        };
        let root = {
            let mut m = MessageBuilder::new(&mut fbb);
            m.add_version(VERSION);
            m.add_header_type(header_type);
            m.add_bodyLength(to_i64("message body", self.len)?);
            m.add_header(header);
            m.finish()
        };
        fbb.finish(root, None);
        Ok(Message {
            metadata: fbb.finished_data().to_vec(),
            body: self.parts,
            body_len: self.len,
        })
    }
}

/// Calls `f(id, values)` for every dictionary under `data`, children first,
/// taking ids from `ids` in the order arrow-ipc's schema encoder assigned them.
fn walk_dictionaries(
    data: &ArrayData,
    ids: &mut impl Iterator<Item = i64>,
    f: &mut impl FnMut(i64, &ArrayData) -> Result<()>,
) -> Result<()> {
    if let DataType::Dictionary(_, _) = data.data_type() {
        let values = &data.child_data()[0];
        walk_children(values, ids, f)?;
        let id = ids.next().ok_or(ArrowShmError::Malformed {
            reason: "internal: schema has fewer dictionary ids than the batch has dictionaries",
        })?;
        f(id, values)
    } else {
        walk_children(data, ids, f)
    }
}

fn walk_children(
    data: &ArrayData,
    ids: &mut impl Iterator<Item = i64>,
    f: &mut impl FnMut(i64, &ArrayData) -> Result<()>,
) -> Result<()> {
    match data.data_type() {
        DataType::RunEndEncoded(_, _) => walk_dictionaries(&data.child_data()[1], ids, f),
        DataType::Struct(_)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Map(_, _)
        | DataType::Union(_, _) => {
            for child in data.child_data() {
                walk_dictionaries(child, ids, f)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The first buffer of a fixed-width array, without the elements sliced away.
fn truncated(data: &ArrayData) -> Buffer {
    let buffer = &data.buffers()[0];
    let width = match layout(data.data_type()).buffers.first() {
        Some(BufferSpec::FixedWidth { byte_width, .. }) => *byte_width,
        _ => return buffer.clone(),
    };
    let min_len = data.len() * width;
    if data.offset() == 0 && min_len >= buffer.len() {
        return buffer.clone();
    }
    let start = data.offset() * width;
    let len = min_len.min(buffer.len().saturating_sub(start));
    buffer.slice_with_length(start, len)
}

/// Offsets rebased to start at 0, and the range of values they cover.
fn rebase<O: arrow_array::OffsetSizeTrait>(data: &ArrayData) -> (Buffer, usize, usize) {
    // A valid array's offsets buffer has offset + len + 1 aligned entries.
    let offsets = OffsetBuffer::<O>::new(arrow_buffer::ScalarBuffer::new(
        data.buffers()[0].clone(),
        data.offset(),
        data.len() + 1,
    ));
    let start = offsets[0];
    let end = offsets[offsets.len() - 1];
    let buffer = if start.as_usize() == 0 {
        offsets.into_inner().into_inner()
    } else {
        offsets.iter().map(|o| *o - start).collect::<Buffer>()
    };
    (buffer, start.as_usize(), (end - start).as_usize())
}

/// The offsets of an empty array: one zero. (arrow-ipc writes no offsets at
/// all, which readers accept but then allocate the zero themselves, so the
/// read would not be entirely zero-copy.)
fn zero_offset<O: arrow_array::OffsetSizeTrait>() -> Buffer {
    Buffer::from_vec(vec![O::usize_as(0)])
}

fn byte_array<O: arrow_array::OffsetSizeTrait>(data: &ArrayData) -> (Buffer, Buffer) {
    if data.is_empty() {
        return (zero_offset::<O>(), MutableBuffer::new(0).into());
    }
    let (offsets, start, len) = rebase::<O>(data);
    (offsets, data.buffers()[1].slice_with_length(start, len))
}

fn list_array<O: arrow_array::OffsetSizeTrait>(data: &ArrayData) -> (Buffer, ArrayData) {
    if data.is_empty() {
        return (zero_offset::<O>(), data.child_data()[0].slice(0, 0));
    }
    let (offsets, start, len) = rebase::<O>(data);
    (offsets, data.child_data()[0].slice(start, len))
}

/// A run-end encoded array with offset 0 and runs ending at its length.
fn unslice_run_array(data: &ArrayData) -> Result<ArrayData> {
    match data.data_type() {
        DataType::RunEndEncoded(k, _) => match k.data_type() {
            DataType::Int16 => unslice::<types::Int16Type>(data),
            DataType::Int32 => unslice::<types::Int32Type>(data),
            DataType::Int64 => unslice::<types::Int64Type>(data),
            _ => Err(ArrowShmError::Malformed {
                reason: "run ends must be Int16, Int32 or Int64",
            }),
        },
        _ => Ok(data.clone()),
    }
}

fn unslice<R: types::RunEndIndexType>(data: &ArrayData) -> Result<ArrayData> {
    let array = RunArray::<R>::from(data.clone());
    if array.is_empty() {
        // zero runs: run ends must be positive, so no entry at all
        return ArrayDataBuilder::new(data.data_type().clone())
            .len(0)
            .add_child_data(ArrayData::new_empty(&R::DATA_TYPE))
            .add_child_data(ArrayData::new_empty(array.values().data_type()))
            .build()
            .map_err(|source| ArrowShmError::Encode { source });
    }
    let run_ends = array.run_ends();
    if run_ends.offset() == 0 && run_ends.max_value() == run_ends.len() {
        return Ok(data.clone());
    }
    let start = run_ends.get_start_physical_index();
    let end = run_ends.get_end_physical_index();
    let physical_len = end - start + 1;
    let offset = R::Native::usize_as(run_ends.offset());
    let mut ends = BufferBuilder::<R::Native>::new(physical_len);
    for e in &run_ends.values()[start..end] {
        ends.append(e.sub_wrapping(offset));
    }
    ends.append(R::Native::usize_as(array.len()));
    let ends = ArrayDataBuilder::new(R::DATA_TYPE)
        .len(physical_len)
        .add_buffer(ends.finish())
        .build()
        .map_err(|source| ArrowShmError::Encode { source })?;
    let values = array.values().slice(start, physical_len).into_data();
    ArrayDataBuilder::new(data.data_type().clone())
        .len(array.len())
        .add_child_data(ends)
        .add_child_data(values)
        .build()
        .map_err(|source| ArrowShmError::Encode { source })
}
