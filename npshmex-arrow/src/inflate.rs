//! Compressed IPC files (LZ4 frame or ZSTD bodies, as pyarrow and feather
//! write them) turned into uncompressed ones: every buffer is decompressed
//! once, straight into its place in a fresh segment laid out as the same file
//! written uncompressed, which is sealed against writes and then read in
//! place like any other file.
//!
//! # Design
//! The new file keeps the original schema message and footer byte for byte
//! (so dictionary ids, metadata and field names cannot drift); only each
//! record batch / dictionary message is rebuilt (same nodes, lengths,
//! variadic counts and custom metadata, no compression, new buffer offsets
//! and lengths, every buffer 64-byte aligned) and the footer's blocks are
//! rewritten in place to point at them. Rejected: decoding the compressed
//! file with arrow-ipc's own codecs and re-encoding the batches. arrow-ipc
//! allocates each buffer at its declared size before it has seen a byte of
//! it, and the data would be written twice (decompressed, then copied into
//! shared memory).
//!
//! # Limits
//! Nothing is allocated for a declared size before it has been checked:
//! 1. the whole layout is computed with checked arithmetic first
//!    ([`ArrowShmError::DeclaredSizeOverflow`]);
//! 2. each buffer's declared length must be reachable from its compressed
//!    bytes with its codec (255× for LZ4, 32 768× for ZSTD, see
//!    `IpcCompression::max_decompressed`), so a file of a few bytes cannot
//!    claim gigabytes ([`ArrowShmError::DecompressionRatio`]);
//! 3. the decompressed file must fit the memory available now
//!    (`MemAvailable` of `/proc/meminfo`, without swap; no bound when it
//!    cannot be read, and `npshmex-shm` still refuses a segment it cannot
//!    reserve) ([`ArrowShmError::DecompressionMemory`]).
//!
//! Only then is the segment created and filled; a frame that holds fewer or
//! more bytes than declared, or is corrupt, is an error while filling it,
//! and the segment is dropped. Rejected: bounding each buffer by what its
//! type and row count need. It only works for fixed-width buffers (string
//! and view data are not bounded by row counts), and writers may write
//! buffers longer than needed, so it would refuse valid files while the
//! ratio bound already caps what a small file can ask for.

use crate::compression::{self, IpcCompression, Prefix, PREFIX_LEN};
use crate::decode::{batch_of, block_range, check_blocks, footer, framed, message};
use crate::encode::{pad, Cursor, CONTINUATION, HEADER_LEN, MAGIC};
use crate::error::{ArrowShmError, Result};
use arrow_ipc::{
    Block, DictionaryBatchBuilder, FieldNode, KeyValue, KeyValueArgs, MessageBuilder,
    MessageHeader, RecordBatchBuilder,
};
use flatbuffers::FlatBufferBuilder;
use npshmex_shm::Segment;
use std::ops::Range;

fn malformed(reason: &'static str) -> ArrowShmError {
    ArrowShmError::Malformed { reason }
}

/// Whether a record batch or dictionary message of the file `bytes` is
/// compressed. A file that does not parse is "not compressed": the in-place
/// decoder then reports what is wrong with it, exactly as before compressed
/// files were read.
pub(crate) fn is_compressed(bytes: &[u8]) -> bool {
    let Ok((footer, footer_start)) = footer(bytes) else {
        return false;
    };
    if check_blocks(&footer, footer_start).is_err() {
        return false;
    }
    let compressed = |block: &Block| -> Result<bool> {
        let (offset, meta, _) = block_range(block, footer_start)?;
        let message = message(&bytes[offset..offset + meta])?;
        Ok(batch_of(&message)?.is_some_and(|(batch, _)| batch.compression().is_some()))
    };
    let dictionaries = footer.dictionaries().into_iter().flatten();
    let records = footer.recordBatches().into_iter().flatten();
    dictionaries
        .chain(records)
        .any(|block| compressed(block).unwrap_or(false))
}

/// The IPC file `bytes`, with compressed bodies, decompressed into a new
/// anonymous segment sealed against writes and resizing (`Segment::freeze`):
/// an uncompressed file of the same batches, for the in-place decoder (which
/// validates it as any other file).
///
/// # Errors
/// The compression errors of [`ArrowShmError`] (see the module docs for the
/// limits), [`ArrowShmError::Malformed`] / [`ArrowShmError::Flatbuffer`] for
/// a broken file structure, [`ArrowShmError::Shm`] when the segment cannot
/// be created.
pub(crate) fn inflate(bytes: &[u8]) -> Result<Segment> {
    let (footer, footer_start) = footer(bytes)?;
    check_blocks(&footer, footer_start)?;
    let schema = schema_message(bytes, footer_start)?;
    let dictionaries = footer.dictionaries().into_iter().flatten();
    let records = footer
        .recordBatches()
        .ok_or(malformed("footer has no record batch list"))?;
    let plans = dictionaries
        .chain(records)
        .map(|block| plan(bytes, block, footer_start))
        .collect::<Result<Vec<_>>>()?;

    // 1. the layout, with checked arithmetic
    let overflow = || ArrowShmError::DeclaredSizeOverflow;
    let mut len = HEADER_LEN + framed_len(schema.len());
    let mut blocks = Vec::with_capacity(plans.len());
    for p in &plans {
        let meta = framed_len(p.metadata.len());
        blocks.push(Block::new(
            i64::try_from(len).map_err(|_| overflow())?,
            i32::try_from(meta).map_err(|_| overflow())?,
            i64::try_from(p.body_len).map_err(|_| overflow())?,
        ));
        len = len
            .checked_add(meta)
            .and_then(|l| l.checked_add(p.body_len))
            .ok_or_else(overflow)?;
    }
    let footer_bytes = patched_footer(bytes, footer_start, &footer, &blocks)?;
    len = len
        .checked_add(8 + footer_bytes.len() + 4 + MAGIC.len())
        .ok_or_else(overflow)?;

    // 2. each frame can produce what it declares
    for p in &plans {
        for part in &p.parts {
            if let Source::Frame(range) = &part.source {
                let compressed = range.len() as u64;
                let limit = p.codec.max_decompressed(compressed);
                if part.len as u64 > limit {
                    return Err(ArrowShmError::DecompressionRatio {
                        codec: p.codec,
                        compressed,
                        declared: part.len as u64,
                        limit,
                    });
                }
            }
        }
    }
    // 3. the whole file fits in memory
    if let Some(available) = memory_available() {
        if len as u64 > available {
            return Err(ArrowShmError::DecompressionMemory {
                needed: len as u64,
                available,
            });
        }
    }

    let mut segment = Segment::anonymous(len).map_err(ArrowShmError::shm("create segment"))?;
    let out = segment
        .as_mut_slice()
        .map_err(ArrowShmError::shm("write segment"))?;
    let mut w = Cursor { out, pos: 0 };
    w.put(MAGIC);
    w.zeros(HEADER_LEN - MAGIC.len());
    put_framed(&mut w, schema);
    let mut zstd = None;
    for p in &plans {
        put_framed(&mut w, &p.metadata);
        for part in &p.parts {
            match &part.source {
                Source::Empty => {}
                Source::Raw(range) => w.put(&bytes[range.clone()]),
                Source::Frame(range) => compression::decompress_into(
                    p.codec,
                    &bytes[range.clone()],
                    w.take(part.len),
                    &mut zstd,
                )?,
            }
            w.zeros(pad(part.len) - part.len);
        }
    }
    w.put(&CONTINUATION);
    w.zeros(4);
    w.put(&footer_bytes);
    // fits: the original footer had the same length
    w.put(&(footer_bytes.len() as i32).to_le_bytes());
    w.put(MAGIC);
    debug_assert_eq!(w.pos, len);
    // Sealed before anyone else can see it: what the decoder validates next
    // can never change.
    segment
        .freeze()
        .map_err(ArrowShmError::shm("seal decompressed segment"))
}

/// Where the bytes of one buffer of the new file come from.
enum Source {
    Empty,
    /// Stored uncompressed: copied.
    Raw(Range<usize>),
    /// A frame of the message's codec.
    Frame(Range<usize>),
}

struct Part {
    source: Source,
    /// Uncompressed length.
    len: usize,
}

/// One record batch or dictionary message of the new file.
struct Planned {
    codec: IpcCompression,
    metadata: Vec<u8>,
    parts: Vec<Part>,
    body_len: usize,
}

/// Bytes of a message's prefix and metadata flatbuffer, padded.
fn framed_len(metadata: usize) -> usize {
    pad(metadata + 8)
}

fn put_framed(w: &mut Cursor<'_>, metadata: &[u8]) {
    let len = framed_len(metadata.len());
    w.put(&CONTINUATION);
    // fits: the metadata comes from a block's i32 length, or was rebuilt
    // from such a one with fewer fields and checked in `inflate`
    w.put(&((len - 8) as i32).to_le_bytes());
    w.put(metadata);
    w.zeros(len - 8 - metadata.len());
}

/// The metadata flatbuffer of the schema message that starts the file
/// (right after the magic padded to 8 bytes, or to 64 as this crate writes
/// files), verified.
fn schema_message(bytes: &[u8], footer_start: usize) -> Result<&[u8]> {
    let mut start = 8;
    while start < HEADER_LEN && bytes.get(start..start + 8) == Some(&[0; 8]) {
        start += 8;
    }
    let stream = bytes
        .get(start..footer_start)
        .ok_or(malformed("no schema message before the footer"))?;
    let fb = framed(stream)?;
    let m = arrow_ipc::root_as_message(fb).map_err(|source| ArrowShmError::Flatbuffer {
        what: "schema message",
        source,
    })?;
    if m.header_type() != MessageHeader::Schema {
        return Err(malformed("the file does not start with a schema message"));
    }
    Ok(fb)
}

/// Plans one message: where each buffer comes from, how long it is
/// uncompressed, and the new metadata.
fn plan(bytes: &[u8], block: &Block, footer_start: usize) -> Result<Planned> {
    let (offset, meta, body_len) = block_range(block, footer_start)?;
    let message = message(&bytes[offset..offset + meta])?;
    let (batch, dictionary) =
        batch_of(&message)?.ok_or(malformed("file block without a record batch or dictionary"))?;
    let codec = IpcCompression::from_fb(batch.compression())?;
    let body = offset + meta;
    let overflow = || ArrowShmError::DeclaredSizeOverflow;

    let buffers = batch
        .buffers()
        .ok_or(malformed("record batch without buffer list"))?;
    let mut parts = Vec::with_capacity(buffers.len());
    let mut new_buffers = Vec::with_capacity(buffers.len());
    let mut at: usize = 0;
    for b in buffers {
        let start = usize::try_from(b.offset()).map_err(|_| malformed("negative buffer offset"))?;
        let len = usize::try_from(b.length()).map_err(|_| malformed("negative buffer length"))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= body_len)
            .ok_or(malformed("buffer outside the message body"))?;
        let range = body + start..body + end;
        let part = if codec == IpcCompression::None {
            Part {
                source: Source::Raw(range),
                len,
            }
        } else if len == 0 {
            Part {
                source: Source::Empty,
                len: 0,
            }
        } else {
            let payload = range.start + PREFIX_LEN..range.end;
            match compression::prefix(&bytes[range])? {
                Prefix::Stored => Part {
                    len: payload.len(),
                    source: Source::Raw(payload),
                },
                Prefix::Empty => Part {
                    source: Source::Empty,
                    len: 0,
                },
                Prefix::Frame(n) => Part {
                    source: Source::Frame(payload),
                    len: usize::try_from(n).map_err(|_| overflow())?,
                },
            }
        };
        new_buffers.push(arrow_ipc::Buffer::new(
            i64::try_from(at).map_err(|_| overflow())?,
            i64::try_from(part.len).map_err(|_| overflow())?,
        ));
        at = part
            .len
            .checked_next_multiple_of(crate::encode::ALIGNMENT)
            .and_then(|p| at.checked_add(p))
            .ok_or_else(overflow)?;
        parts.push(part);
    }
    let body_len = at;

    let mut fbb = FlatBufferBuilder::new();
    let nodes: Vec<FieldNode> = batch
        .nodes()
        .ok_or(malformed("record batch without field nodes"))?
        .iter()
        .copied()
        .collect();
    let nodes = fbb.create_vector(&nodes);
    let buffers = fbb.create_vector(&new_buffers);
    let variadic = batch.variadicBufferCounts().map(|v| {
        let counts: Vec<i64> = v.iter().collect();
        fbb.create_vector(&counts)
    });
    let custom = message.custom_metadata().map(|kvs| {
        let kvs: Vec<_> = kvs
            .iter()
            .map(|kv| {
                let args = KeyValueArgs {
                    key: kv.key().map(|k| fbb.create_string(k)),
                    value: kv.value().map(|v| fbb.create_string(v)),
                };
                KeyValue::create(&mut fbb, &args)
            })
            .collect();
        fbb.create_vector(&kvs)
    });
    let record = {
        let mut b = RecordBatchBuilder::new(&mut fbb);
        b.add_length(batch.length());
        b.add_nodes(nodes);
        b.add_buffers(buffers);
        if let Some(v) = variadic {
            b.add_variadicBufferCounts(v);
        }
        b.finish()
    };
    let (header_type, header) = match dictionary {
        None => (MessageHeader::RecordBatch, record.as_union_value()),
        Some(id) => {
            let is_delta = message
                .header_as_dictionary_batch()
                .is_some_and(|d| d.isDelta());
            let mut d = DictionaryBatchBuilder::new(&mut fbb);
            d.add_id(id);
            d.add_data(record);
            d.add_isDelta(is_delta);
            (MessageHeader::DictionaryBatch, d.finish().as_union_value())
        }
    };
    let root = {
        let mut m = MessageBuilder::new(&mut fbb);
        m.add_version(message.version());
        m.add_header_type(header_type);
        m.add_header(header);
        m.add_bodyLength(i64::try_from(body_len).map_err(|_| overflow())?);
        if let Some(c) = custom {
            m.add_custom_metadata(c);
        }
        m.finish()
    };
    fbb.finish(root, None);
    let metadata = fbb.finished_data().to_vec();
    if i32::try_from(framed_len(metadata.len())).is_err() {
        return Err(overflow());
    }
    Ok(Planned {
        codec,
        metadata,
        parts,
        body_len,
    })
}

/// The original footer with its blocks (dictionaries, then record batches,
/// in the order `blocks` was planned) rewritten in place: the schema and
/// everything else stay byte for byte.
fn patched_footer(
    bytes: &[u8],
    footer_start: usize,
    footer: &arrow_ipc::Footer<'_>,
    blocks: &[Block],
) -> Result<Vec<u8>> {
    let original = &bytes[footer_start..bytes.len() - 10];
    let mut out = original.to_vec();
    let mut new = blocks.iter();
    for list in [footer.dictionaries(), footer.recordBatches()]
        .into_iter()
        .flatten()
    {
        // the vector's elements lie inside the verified footer
        let raw = list.bytes();
        let at = (raw.as_ptr() as usize)
            .checked_sub(original.as_ptr() as usize)
            .ok_or(malformed("internal: footer blocks outside the footer"))?;
        let dest = out
            .get_mut(at..at + raw.len())
            .ok_or(malformed("internal: footer blocks outside the footer"))?;
        for chunk in dest.chunks_exact_mut(size_of::<Block>()) {
            let block = new
                .next()
                .ok_or(malformed("internal: fewer blocks planned than listed"))?;
            chunk.copy_from_slice(&block.0);
        }
    }
    Ok(out)
}

/// `MemAvailable` of `/proc/meminfo` in bytes, if it can be read.
fn memory_available() -> Option<u64> {
    npshmex_shm::procfs::MemInfo::read().map(|m| m.available)
}

#[cfg(test)]
#[path = "inflate_tests.rs"]
mod tests;
