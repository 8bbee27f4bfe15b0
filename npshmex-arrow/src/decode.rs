//! Reads an Arrow IPC file out of a mapped buffer without copying its data,
//! checking everything that comes from outside.
//!
//! # Design
//! The file is one [`Buffer`] over the whole mapping, owned (through
//! `bytes::Bytes::from_owner`) by the segment, so every array buffer that
//! arrow-ipc's `FileDecoder` slices out of it keeps the mapping alive: the
//! pattern of arrow-rs's `zero_copy_ipc` example, without `unsafe`.
//!
//! Untrusted bytes are checked in three layers:
//! 1. This module parses the trailer, the footer (flatbuffer verifier) and
//!    every block and message header itself and checks that every block,
//!    buffer and count lies inside the file before arrow-ipc sees it
//!    (arrow-ipc slices with panicking bounds checks).
//! 2. arrow-ipc decodes with full validation (offsets, UTF-8, dictionary
//!    keys, union type ids, ...), the same as for a file on disk.
//! 3. The whole decode runs under `catch_unwind`: arrow-rs still has
//!    `unwrap`s and `panic!`s on some malformed schemas; such a panic becomes
//!    [`ArrowShmError::DecoderPanicked`] instead of unwinding into the caller.
//!    This cannot help a program built with `panic = "abort"`. The first
//!    decode wraps the process's panic hook so that these caught panics do
//!    not print (the message is in the error); all other panics still reach
//!    the previous hook.
//!
//! Compressed files never get here: `ShmBatch` decompresses them first
//! (`inflate`, which shares this module's footer, block and message parsing)
//! into a sealed segment holding the uncompressed file, which is then
//! validated like any other.
//!
//! Buffers that are not aligned for their type (pyarrow aligns to 8 bytes
//! only, which is too little for 128-bit decimals) are copied by arrow into
//! aligned memory; [`ReadPath`] says whether that happened.

use crate::check::Walk;
use crate::encode::{CONTINUATION, MAGIC};
use crate::error::{ArrowShmError, Result};
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use arrow_ipc::reader::FileDecoder;
use arrow_ipc::{Block, MessageHeader};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};

/// How the arrays of a read file relate to the bytes they were read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadPath {
    /// Every buffer of every array points into the mapping.
    ZeroCopy,
    /// Some buffers were misaligned for their type and were copied into
    /// aligned memory; the others still point into the mapping.
    Copied {
        /// How many buffers were copied.
        buffers: usize,
        /// How many bytes they hold.
        bytes: usize,
    },
}

/// A decoded file.
pub(crate) struct Decoded {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) path: ReadPath,
}

/// Decodes the IPC file in `file`, validating everything.
pub(crate) fn decode(file: &Buffer) -> Result<Decoded> {
    guarded(|| decode_checked(file))
}

/// Runs `f` (which reads untrusted bytes) with panics caught and returned as
/// [`ArrowShmError::DecoderPanicked`], printing nothing.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_quiet_hook();
    QUIET.with(|q| q.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_string()
            };
            Err(ArrowShmError::DecoderPanicked { message })
        }
    }
}

thread_local! {
    /// Set while this thread decodes: a panic then is caught and reported as
    /// an error, so the panic hook need not print it.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process's panic hook (once) so that panics caught by
/// [`decode`] do not print; every other panic goes to the previous hook.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info)
            }
        }));
    });
}

fn malformed(reason: &'static str) -> ArrowShmError {
    ArrowShmError::Malformed { reason }
}

/// The footer of the IPC file `bytes` and the offset where it starts, after
/// checking the magic numbers, the footer length and the flatbuffer.
pub(crate) fn footer(bytes: &[u8]) -> Result<(arrow_ipc::Footer<'_>, usize)> {
    let n = bytes.len();
    // "ARROW1" + 2 bytes padding at the start; length + "ARROW1" at the end
    if n < 8 + 10 {
        return Err(malformed("shorter than the magic numbers"));
    }
    if &bytes[..6] != MAGIC {
        return Err(malformed("does not start with ARROW1"));
    }
    if &bytes[n - 6..] != MAGIC {
        return Err(malformed("does not end with ARROW1"));
    }
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&bytes[n - 10..n - 6]);
    let footer_len = usize::try_from(i32::from_le_bytes(len4))
        .map_err(|_| malformed("negative footer length"))?;
    if footer_len > n - 10 - 8 {
        return Err(malformed("footer length exceeds the file"));
    }
    let footer_start = n - 10 - footer_len;
    let footer = arrow_ipc::root_as_footer(&bytes[footer_start..n - 10]).map_err(|source| {
        ArrowShmError::Flatbuffer {
            what: "footer",
            source,
        }
    })?;
    Ok((footer, footer_start))
}

/// Where a block of the footer lies: `(offset, metadata length, body
/// length)`, checked to lie in `[8, footer_start)` with its body at a
/// multiple of 8 bytes.
pub(crate) fn block_range(block: &Block, footer_start: usize) -> Result<(usize, usize, usize)> {
    let offset = usize::try_from(block.offset()).map_err(|_| malformed("negative block offset"))?;
    let meta = usize::try_from(block.metaDataLength())
        .map_err(|_| malformed("negative metadata length"))?;
    let body =
        usize::try_from(block.bodyLength()).map_err(|_| malformed("negative body length"))?;
    let end = offset
        .checked_add(meta)
        .and_then(|e| e.checked_add(body))
        .ok_or(malformed("block size overflows"))?;
    if offset < 8 || meta < 8 || end > footer_start {
        return Err(malformed("block outside the file"));
    }
    if (offset + meta) % 8 != 0 {
        return Err(malformed("message body not at a multiple of 8 bytes"));
    }
    Ok((offset, meta, body))
}

/// Checks every block the footer lists (dictionaries and record batches)
/// with [`block_range`], and that no two of them share a byte.
///
/// A writer lays each message out once. A footer that lists one message
/// many times, or blocks that overlap, would have each listing decoded
/// again: 24 bytes of footer per listing buying the work and memory of a
/// whole message (a misaligned buffer copied, a delta dictionary grown, a
/// compressed message planned and inflated), so a small file could ask for
/// any amount of both.
pub(crate) fn check_blocks(footer: &arrow_ipc::Footer<'_>, footer_start: usize) -> Result<()> {
    let mut ranges = Vec::new();
    for list in [footer.dictionaries(), footer.recordBatches()]
        .into_iter()
        .flatten()
    {
        for block in list {
            let (offset, meta, body) = block_range(block, footer_start)?;
            // No overflow: block_range checked offset + meta + body.
            ranges.push((offset, offset + meta + body));
        }
    }
    ranges.sort_unstable();
    if ranges.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(malformed(
            "the footer lists a message twice, or two that overlap",
        ));
    }
    Ok(())
}

/// The flatbuffer of the encapsulated message that starts `meta` (its
/// length prefix, with or without the continuation marker, stripped).
pub(crate) fn framed(meta: &[u8]) -> Result<&[u8]> {
    if meta.len() < 8 {
        return Err(malformed("message metadata shorter than its prefix"));
    }
    let (prefix, declared) = if meta[..4] == CONTINUATION {
        let mut l = [0u8; 4];
        l.copy_from_slice(&meta[4..8]);
        (8, i32::from_le_bytes(l))
    } else {
        let mut l = [0u8; 4];
        l.copy_from_slice(&meta[..4]);
        (4, i32::from_le_bytes(l))
    };
    let declared =
        usize::try_from(declared).map_err(|_| malformed("negative message metadata length"))?;
    if declared > meta.len() - prefix {
        return Err(malformed("message metadata length exceeds its block"));
    }
    Ok(&meta[prefix..prefix + declared])
}

/// The encapsulated message in `meta` (a block's metadata: prefix and
/// flatbuffer), verified, of metadata version V4 or later.
pub(crate) fn message(meta: &[u8]) -> Result<arrow_ipc::Message<'_>> {
    let message =
        arrow_ipc::root_as_message(framed(meta)?).map_err(|source| ArrowShmError::Flatbuffer {
            what: "message",
            source,
        })?;
    if message.version() < arrow_ipc::MetadataVersion::V4 {
        return Err(malformed(
            "metadata version before V4 (Arrow < 0.15) is not supported",
        ));
    }
    Ok(message)
}

/// The record batch of a record batch or dictionary message and, for a
/// dictionary, its id; `None` for a message without header.
pub(crate) fn batch_of<'a>(
    message: &arrow_ipc::Message<'a>,
) -> Result<Option<(arrow_ipc::RecordBatch<'a>, Option<i64>)>> {
    match message.header_type() {
        MessageHeader::RecordBatch => Ok(Some((
            message
                .header_as_record_batch()
                .ok_or(malformed("record batch message without a header"))?,
            None,
        ))),
        MessageHeader::DictionaryBatch => {
            let d = message
                .header_as_dictionary_batch()
                .ok_or(malformed("dictionary message without a header"))?;
            let data = d
                .data()
                .ok_or(malformed("dictionary message without data"))?;
            Ok(Some((data, Some(d.id()))))
        }
        MessageHeader::NONE => Ok(None),
        _ => Err(malformed("unexpected message type in a file block")),
    }
}

fn decode_checked(file: &Buffer) -> Result<Decoded> {
    let bytes = file.as_slice();
    let (footer, footer_start) = footer(bytes)?;
    check_blocks(&footer, footer_start)?;
    let fb_schema = footer.schema().ok_or(malformed("footer has no schema"))?;
    if !fb_schema.endianness().equals_to_target_endianness() {
        return Err(malformed(
            "written on a machine of the other byte order (not supported)",
        ));
    }
    crate::check::schema(fb_schema)?;
    let schema: SchemaRef = Arc::new(arrow_ipc::convert::fb_to_schema(fb_schema));
    let types = Types::new(&schema);
    // pyarrow writes a V5 footer even when its messages are V4 (its
    // `metadata_version` option), and arrow-ipc refuses a message whose
    // version differs from the footer's unless the footer says V1. Each
    // message is decoded by its own version anyway, so pass V1.
    let mut decoder = FileDecoder::new(schema.clone(), arrow_ipc::MetadataVersion::V1);

    // Blocks: checked to lie in [8, footer_start) before anything slices them.
    let block_buffer = |block: &Block| -> Result<(Buffer, usize)> {
        let (offset, meta, body) = block_range(block, footer_start)?;
        check_message(&bytes[offset..offset + meta], body, &types)?;
        Ok((file.slice_with_length(offset, meta + body), meta))
    };

    if let Some(dicts) = footer.dictionaries() {
        for block in dicts {
            let (buf, _) = block_buffer(block)?;
            decoder
                .read_dictionary(block, &buf)
                .map_err(ArrowShmError::invalid("dictionary batch"))?;
        }
    }
    let blocks = footer
        .recordBatches()
        .ok_or(malformed("footer has no record batch list"))?;
    let mut batches = Vec::with_capacity(blocks.len());
    for block in blocks {
        let (buf, _) = block_buffer(block)?;
        if let Some(batch) = decoder
            .read_record_batch(block, &buf)
            .map_err(ArrowShmError::invalid("record batch"))?
        {
            batches.push(batch);
        }
    }
    let path = read_path(file, &batches);
    Ok(Decoded {
        schema,
        batches,
        path,
    })
}

/// Checks the metadata of one message: prefix, flatbuffer, header kind, and
/// that every buffer lies inside the body of `body_len` bytes.
fn check_message(meta: &[u8], body_len: usize, types: &Types) -> Result<()> {
    let message = message(meta)?;
    let (batch, columns) = match batch_of(&message)? {
        None => return Ok(()),
        Some((batch, None)) => (batch, Some(types.columns.clone())),
        Some((batch, Some(id))) => (batch, types.dictionaries.get(&id).map(|t| vec![t.clone()])),
    };
    if batch.length() < 0 {
        return Err(malformed("negative batch length"));
    }
    if batch.compression().is_some() {
        // `ShmBatch` decompresses a compressed file (`inflate`) before it
        // gets here; arrow-ipc would decompress into unchecked allocations
        return Err(malformed(
            "internal: a compressed message reached the in-place decoder",
        ));
    }
    let buffers = batch
        .buffers()
        .ok_or(malformed("record batch without buffer list"))?;
    for b in buffers {
        let start = usize::try_from(b.offset()).map_err(|_| malformed("negative buffer offset"))?;
        let len = usize::try_from(b.length()).map_err(|_| malformed("negative buffer length"))?;
        if start.checked_add(len).is_none_or(|end| end > body_len) {
            return Err(malformed("buffer outside the message body"));
        }
        // The format pads every buffer to 8 bytes; arrow-ipc reinterprets
        // some (union offsets) without checking their alignment.
        if start % 8 != 0 {
            return Err(malformed("buffer not at a multiple of 8 bytes"));
        }
    }
    let nodes = batch
        .nodes()
        .ok_or(malformed("record batch without field nodes"))?;
    for node in nodes {
        if node.length() < 0 || node.null_count() < 0 || node.null_count() > node.length() {
            return Err(malformed("field node with a bad length or null count"));
        }
    }
    if let Some(counts) = batch.variadicBufferCounts() {
        let mut total: usize = 0;
        for c in counts {
            let c = usize::try_from(c).map_err(|_| malformed("negative variadic buffer count"))?;
            total = total.saturating_add(c);
        }
        if total > buffers.len() {
            return Err(malformed("more variadic buffers than buffers"));
        }
    }
    if let (Some(columns), Some(walk)) = (columns, Walk::new(batch, message.version())) {
        walk.columns(&columns)?;
    }
    Ok(())
}

/// The types of the columns and of each dictionary (by id), for [`Walk`].
struct Types {
    columns: Vec<DataType>,
    dictionaries: HashMap<i64, DataType>,
}

impl Types {
    fn new(schema: &Schema) -> Types {
        fn children(t: &DataType) -> Vec<&Field> {
            match t {
                DataType::List(c)
                | DataType::LargeList(c)
                | DataType::ListView(c)
                | DataType::LargeListView(c)
                | DataType::FixedSizeList(c, _)
                | DataType::Map(c, _) => vec![c.as_ref()],
                DataType::Struct(cs) => cs.iter().map(|c| c.as_ref()).collect(),
                DataType::Union(cs, _) => cs.iter().map(|(_, c)| c.as_ref()).collect(),
                DataType::RunEndEncoded(a, b) => vec![a.as_ref(), b.as_ref()],
                // nested dictionaries live in the value type's fields
                DataType::Dictionary(_, values) => children(values),
                _ => vec![],
            }
        }
        fn visit(f: &Field, out: &mut HashMap<i64, DataType>) {
            if let DataType::Dictionary(_, values) = f.data_type() {
                // the id fb_to_schema read from the file
                #[allow(deprecated)]
                if let Some(id) = f.dict_id() {
                    out.insert(id, values.as_ref().clone());
                }
            }
            for c in children(f.data_type()) {
                visit(c, out);
            }
        }
        let mut dictionaries = HashMap::new();
        for f in schema.fields() {
            visit(f, &mut dictionaries);
        }
        Types {
            columns: schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
            dictionaries,
        }
    }
}

/// Whether every buffer of `batches` points into `file`.
fn read_path(file: &Buffer, batches: &[RecordBatch]) -> ReadPath {
    let base = file.as_ptr() as usize;
    let range = base..base + file.len();
    let (mut buffers, mut bytes) = (0, 0);
    let mut visit = |b: &Buffer| {
        let p = b.as_ptr() as usize;
        let inside = range.contains(&p) && p + b.len() <= range.end;
        if !b.is_empty() && !inside {
            buffers += 1;
            bytes += b.len();
        }
    };
    fn walk(d: &ArrayData, visit: &mut impl FnMut(&Buffer)) {
        if let Some(n) = d.nulls() {
            visit(n.buffer());
        }
        for b in d.buffers() {
            visit(b);
        }
        for c in d.child_data() {
            walk(c, visit);
        }
    }
    for batch in batches {
        for column in batch.columns() {
            walk(&column.to_data(), &mut visit);
        }
    }
    if buffers == 0 {
        ReadPath::ZeroCopy
    } else {
        ReadPath::Copied { buffers, bytes }
    }
}
