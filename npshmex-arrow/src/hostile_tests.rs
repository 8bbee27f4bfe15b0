//! Hand-built hostile IPC files read through the public entry point
//! (`ShmBatch::open` of a write-sealed memfd): each once cost work or memory
//! out of proportion to the file, or panicked inside arrow (stopped only by
//! the decoder's catch), and is now refused by the crate's own checks.

use crate::{ArrowShmError, ShmBatch};
use arrow_array::cast::AsArray;
use arrow_ipc::{
    Block, BodyCompression, BodyCompressionArgs, BodyCompressionMethod, CompressionType,
    DictionaryBatchBuilder, FieldNode, FooterArgs, MessageBuilder, MessageHeader, MetadataVersion,
    RecordBatchBuilder,
};
use arrow_schema::{DataType, Field, Schema};
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use npshmex_shm::Segment;
use std::sync::Arc;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Builds the footer schema into `fbb`.
type SchemaFn<'s> =
    &'s dyn Fn(&mut FlatBufferBuilder<'static>) -> WIPOffset<arrow_ipc::Schema<'static>>;

fn encoder_schema(
    schema: Schema,
) -> impl Fn(&mut FlatBufferBuilder<'static>) -> WIPOffset<arrow_ipc::Schema<'static>> {
    move |fbb| {
        let mut tracker = arrow_ipc::writer::DictionaryTracker::new(false);
        arrow_ipc::convert::IpcSchemaEncoder::new()
            .with_dictionary_tracker(&mut tracker)
            .schema_to_fb_offset(fbb, &schema)
    }
}

/// One record batch or dictionary batch message.
#[derive(Clone, Default)]
struct Msg {
    length: i64,
    nodes: Vec<(i64, i64)>,
    buffers: Vec<(i64, i64)>,
    body: Vec<u8>,
    /// `(id, is_delta)` for a dictionary batch.
    dict: Option<(i64, bool)>,
    variadic: Option<Vec<i64>>,
    compression: Option<CompressionType>,
}

impl Msg {
    fn flatbuffer(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let nodes: Vec<FieldNode> = self
            .nodes
            .iter()
            .map(|&(l, n)| FieldNode::new(l, n))
            .collect();
        let nodes = fbb.create_vector(&nodes);
        let bufs: Vec<arrow_ipc::Buffer> = self
            .buffers
            .iter()
            .map(|&(o, l)| arrow_ipc::Buffer::new(o, l))
            .collect();
        let bufs = fbb.create_vector(&bufs);
        let variadic = self.variadic.as_ref().map(|v| fbb.create_vector(v));
        let compression = self.compression.map(|codec| {
            BodyCompression::create(
                &mut fbb,
                &BodyCompressionArgs {
                    codec,
                    method: BodyCompressionMethod::BUFFER,
                },
            )
        });
        let rb = {
            let mut b = RecordBatchBuilder::new(&mut fbb);
            b.add_length(self.length);
            b.add_nodes(nodes);
            b.add_buffers(bufs);
            if let Some(v) = variadic {
                b.add_variadicBufferCounts(v);
            }
            if let Some(c) = compression {
                b.add_compression(c);
            }
            b.finish()
        };
        let (ht, header) = match self.dict {
            None => (MessageHeader::RecordBatch, rb.as_union_value()),
            Some((id, delta)) => {
                let mut d = DictionaryBatchBuilder::new(&mut fbb);
                d.add_id(id);
                d.add_data(rb);
                d.add_isDelta(delta);
                (MessageHeader::DictionaryBatch, d.finish().as_union_value())
            }
        };
        let mut m = MessageBuilder::new(&mut fbb);
        m.add_version(MetadataVersion::V5);
        m.add_header_type(ht);
        m.add_header(header);
        m.add_bodyLength(self.body.len() as i64);
        let root = m.finish();
        fbb.finish(root, None);
        fbb.finished_data().to_vec()
    }
}

fn put_framed(out: &mut Vec<u8>, fb: &[u8]) -> i32 {
    let padded = fb.len().div_ceil(8) * 8;
    out.extend_from_slice(&[0xff; 4]);
    out.extend_from_slice(&(padded as i32).to_le_bytes());
    out.extend_from_slice(fb);
    out.resize(out.len() + padded - fb.len(), 0);
    (8 + padded) as i32
}

/// An IPC file: magic, schema message, `msgs` laid out once each (body at a
/// multiple of 16 + `body_shift`), and a footer whose dictionary and record
/// batch lists name messages by index (repeats allowed).
fn ipc_file(
    schema: SchemaFn<'_>,
    msgs: &[Msg],
    dicts: &[usize],
    batches: &[usize],
    body_shift: usize,
) -> Vec<u8> {
    let mut out = b"ARROW1\0\0".to_vec();
    {
        let mut fbb = FlatBufferBuilder::new();
        let s = schema(&mut fbb);
        let mut m = MessageBuilder::new(&mut fbb);
        m.add_version(MetadataVersion::V5);
        m.add_header_type(MessageHeader::Schema);
        m.add_header(s.as_union_value());
        let root = m.finish();
        fbb.finish(root, None);
        put_framed(&mut out, fbb.finished_data());
    }
    let mut blocks = Vec::new();
    for msg in msgs {
        let fb = msg.flatbuffer();
        // Padding before the message, so that its body starts at 16k + body_shift.
        let padded = fb.len().div_ceil(8) * 8;
        while (out.len() + 8 + padded) % 16 != body_shift {
            out.extend_from_slice(&[0; 8]);
        }
        let offset = out.len() as i64;
        let meta = put_framed(&mut out, &fb);
        out.extend_from_slice(&msg.body);
        let body_len = msg.body.len();
        out.resize(out.len() + body_len.div_ceil(8) * 8 - body_len, 0);
        blocks.push(Block::new(offset, meta, body_len.div_ceil(8) as i64 * 8));
    }
    let mut fbb = FlatBufferBuilder::new();
    let s = schema(&mut fbb);
    let d: Vec<Block> = dicts.iter().map(|&i| blocks[i]).collect();
    let r: Vec<Block> = batches.iter().map(|&i| blocks[i]).collect();
    let d = fbb.create_vector(&d);
    let r = fbb.create_vector(&r);
    let footer = arrow_ipc::Footer::create(
        &mut fbb,
        &FooterArgs {
            version: MetadataVersion::V5,
            schema: Some(s),
            dictionaries: Some(d),
            recordBatches: Some(r),
            custom_metadata: None,
        },
    );
    fbb.finish(footer, None);
    let f = fbb.finished_data();
    out.extend_from_slice(f);
    out.extend_from_slice(&(f.len() as i32).to_le_bytes());
    out.extend_from_slice(b"ARROW1");
    out
}

/// The bytes in a fresh write-sealed memfd, opened as untrusted input.
/// The bytes in a fresh write-sealed memfd, opened as untrusted input.
fn open(bytes: &[u8]) -> crate::Result<ShmBatch> {
    let mut seg = Segment::anonymous(bytes.len()).map_err(ArrowShmError::shm("create"))?;
    seg.as_mut_slice()
        .map_err(ArrowShmError::shm("write"))?
        .copy_from_slice(bytes);
    ShmBatch::open(seg.freeze().map_err(ArrowShmError::shm("freeze"))?)
}

fn int_bytes(n: usize, width: usize) -> Vec<u8> {
    vec![0u8; n * width]
}

/// Opens `file` and expects a `Malformed` refusal saying `what`.
fn refused(file: &[u8], what: &str) -> TestResult {
    match open(file) {
        Err(ArrowShmError::Malformed { reason }) if reason.contains(what) => Ok(()),
        other => Err(format!("expected a refusal for {what:?}, got {:?}", other.err()).into()),
    }
}

// One record batch message listed K times in the footer, its Decimal128
// buffer at 8 mod 16 (arrow copies it on every decode): 256 MiB of copies
// from a 287 KB file before. Refused, and once listed it reads.
#[test]
fn a_footer_that_lists_a_message_twice_is_refused() -> TestResult {
    let rows: usize = 16 * 1024;
    let schema = encoder_schema(Schema::new(vec![Field::new(
        "d",
        DataType::Decimal128(10, 2),
        false,
    )]));
    let msg = Msg {
        length: rows as i64,
        nodes: vec![(rows as i64, 0)],
        buffers: vec![(0, 0), (0, (rows * 16) as i64)],
        body: int_bytes(rows, 16),
        ..Msg::default()
    };
    let once = ipc_file(&schema, std::slice::from_ref(&msg), &[], &[0], 8);
    assert_eq!(open(&once)?.batches().len(), 1);
    refused(&ipc_file(&schema, &[msg], &[], &[0; 1024], 8), "twice")
}

// A delta dictionary listed K times: arrow concatenated it each time
// (quadratic work, a dictionary K times the file).
#[test]
fn a_delta_dictionary_listed_again_is_refused() -> TestResult {
    let m: usize = 8 * 1024;
    let schema = encoder_schema(Schema::new(vec![Field::new(
        "d",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Int64)),
        false,
    )]));
    let dict = |delta| Msg {
        length: m as i64,
        nodes: vec![(m as i64, 0)],
        buffers: vec![(0, 0), (0, (m * 8) as i64)],
        body: int_bytes(m, 8),
        dict: Some((0, delta)),
        ..Msg::default()
    };
    let batch = Msg {
        length: 1,
        nodes: vec![(1, 0)],
        buffers: vec![(0, 0), (0, 4)],
        body: vec![0; 8],
        ..Msg::default()
    };
    let msgs = [dict(false), dict(true), batch];
    // Each message once: the delta extends the dictionary.
    let read = open(&ipc_file(&schema, &msgs, &[0, 1], &[2], 0))?;
    let col = read.batch()?.column(0).clone();
    assert_eq!(col.as_any_dictionary().values().len(), 2 * m);
    refused(
        &ipc_file(&schema, &msgs, &[0, 1, 1, 1, 1], &[2], 0),
        "twice",
    )
}

// A compressed message listed K times: every listing was planned (its
// metadata copied) before any size check. Refused before planning.
#[test]
fn a_compressed_message_listed_again_is_refused() -> TestResult {
    let schema = encoder_schema(Schema::new(vec![Field::new("i", DataType::Int64, false)]));
    let msg = Msg {
        length: 0,
        nodes: vec![(0, 0)],
        buffers: vec![(0, 0); 1000],
        body: vec![],
        compression: Some(CompressionType::LZ4_FRAME),
        ..Msg::default()
    };
    refused(&ipc_file(&schema, &[msg], &[], &[0; 64], 0), "twice")
}

// FixedSizeList<Null, i32::MAX> of 2^40 lists: arrow-data's checked
// multiplication panicked (only the decoder's catch stopped it).
#[test]
fn a_fixed_size_list_whose_size_overflows_is_refused() -> TestResult {
    let schema = encoder_schema(Schema::new(vec![Field::new(
        "l",
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Null, true)), i32::MAX),
        false,
    )]));
    let len = 1i64 << 40;
    let msg = Msg {
        length: len,
        nodes: vec![(len, 0), (0, 0)],
        buffers: vec![(0, 0)],
        body: vec![],
        ..Msg::default()
    };
    refused(&ipc_file(&schema, &[msg], &[], &[0], 0), "overflows")
}

// A Utf8View column whose views buffer is not a multiple of 16 bytes:
// arrow's typed_data assertion panicked (only the catch stopped it).
#[test]
fn a_view_buffer_of_partial_views_is_refused() -> TestResult {
    let schema = encoder_schema(Schema::new(vec![Field::new(
        "v",
        DataType::Utf8View,
        false,
    )]));
    let msg = |views: usize| Msg {
        length: 1,
        nodes: vec![(1, 0)],
        buffers: vec![(0, 0), (0, views as i64)],
        body: vec![0; views.div_ceil(8) * 8],
        variadic: Some(vec![0]),
        ..Msg::default()
    };
    // One whole (empty, inline) view reads.
    let read = open(&ipc_file(&schema, &[msg(16)], &[], &[0], 0))?;
    assert_eq!(read.batch()?.column(0).as_string_view().value(0), "");
    refused(&ipc_file(&schema, &[msg(24)], &[], &[0], 0), "multiple")
}

// Two fields sharing dictionary id 0 with different value
// types (Utf8 and Int64). arrow decodes the dictionary as the first field's
// type; the second column must be refused (child type mismatch), never read
// a Utf8 array as Int64.
#[test]
fn a_dictionary_id_shared_by_two_types_is_refused() -> TestResult {
    use arrow_ipc::{DictionaryEncodingArgs, FieldArgs, IntArgs, SchemaArgs, Type};
    let schema = |fbb: &mut FlatBufferBuilder<'static>| {
        let field = |fbb: &mut FlatBufferBuilder<'static>, name: &str, utf8: bool| {
            let name = fbb.create_string(name);
            let (tt, t) = if utf8 {
                (
                    Type::Utf8,
                    arrow_ipc::Utf8::create(fbb, &arrow_ipc::Utf8Args {}).as_union_value(),
                )
            } else {
                let i = arrow_ipc::Int::create(
                    fbb,
                    &IntArgs {
                        bitWidth: 64,
                        is_signed: true,
                    },
                );
                (Type::Int, i.as_union_value())
            };
            let index = arrow_ipc::Int::create(
                fbb,
                &IntArgs {
                    bitWidth: 32,
                    is_signed: true,
                },
            );
            let dict = arrow_ipc::DictionaryEncoding::create(
                fbb,
                &DictionaryEncodingArgs {
                    id: 0,
                    indexType: Some(index),
                    ..Default::default()
                },
            );
            arrow_ipc::Field::create(
                fbb,
                &FieldArgs {
                    name: Some(name),
                    nullable: true,
                    type_type: tt,
                    type_: Some(t),
                    dictionary: Some(dict),
                    children: None,
                    custom_metadata: None,
                },
            )
        };
        let a = field(fbb, "a", true);
        let b = field(fbb, "b", false);
        let fields = fbb.create_vector(&[a, b]);
        arrow_ipc::Schema::create(
            fbb,
            &SchemaArgs {
                fields: Some(fields),
                ..Default::default()
            },
        )
    };
    // dictionary 0: one Utf8 value "abcdefgh"
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(&8i32.to_le_bytes());
    body.extend_from_slice(b"abcdefgh");
    let dict = Msg {
        length: 1,
        nodes: vec![(1, 0)],
        buffers: vec![(0, 0), (0, 8), (8, 8)],
        body,
        dict: Some((0, false)),
        ..Msg::default()
    };
    let batch = Msg {
        length: 1,
        nodes: vec![(1, 0), (1, 0)],
        buffers: vec![(0, 0), (0, 4), (8, 0), (8, 4)],
        body: vec![0; 16],
        ..Msg::default()
    };
    let file = ipc_file(&schema, &[dict, batch], &[0], &[1], 0);
    let r = open(&file);
    eprintln!("shared dict id: {:?}", r.as_ref().err());
    assert!(
        matches!(r, Err(ArrowShmError::Invalid { .. })),
        "{:?}",
        r.err()
    );
    Ok(())
}
