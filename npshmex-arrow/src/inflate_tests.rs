//! Tests of reading compressed IPC files: round trips through both codecs
//! (our writer and arrow-ipc's), and every kind of hostile compressed buffer
//! refused with its typed error before anything of its declared size exists.

use super::*;
use crate::{sample, write_ipc_file, ReadPath, ShmBatch, WriteOptions};
use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use npshmex_shm::Seals;
use rand::SeedableRng;
use std::sync::Arc;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const CODECS: [IpcCompression; 2] = [IpcCompression::Lz4Frame, IpcCompression::Zstd];

fn file(codec: IpcCompression, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let options = WriteOptions::default().with_compression(codec);
    write_ipc_file(&mut out, &batches[0].schema(), batches, &options)?;
    Ok(out)
}

/// The bytes in a fresh segment, opened as untrusted input.
fn open(bytes: &[u8]) -> Result<ShmBatch> {
    let mut seg = Segment::anonymous(bytes.len()).map_err(ArrowShmError::shm("create"))?;
    seg.as_mut_slice()
        .map_err(ArrowShmError::shm("write"))?
        .copy_from_slice(bytes);
    ShmBatch::open(seg.freeze().map_err(ArrowShmError::shm("freeze"))?)
}

/// A batch whose buffers compress well: long frames with both codecs.
fn compressible() -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let ids: Vec<i64> = (0..2000).map(|i| i % 7).collect();
    let names: Vec<Option<&str>> = (0..2000)
        .map(|i| (i % 5 != 0).then_some("repeated text"))
        .collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
    ])
}

/// One buffer of the first record batch of a file: where its `Buffer`
/// struct (offset, length) is in the file, and where its bytes are.
struct Located {
    field: usize,
    bytes: Range<usize>,
}

fn buffers(file: &[u8]) -> std::result::Result<Vec<Located>, Box<dyn std::error::Error>> {
    let (footer, start) = footer(file)?;
    let block = footer.recordBatches().ok_or("no batches")?.get(0);
    let (offset, meta, _) = block_range(block, start)?;
    let message = message(&file[offset..offset + meta])?;
    let (batch, _) = batch_of(&message)?.ok_or("no batch")?;
    let list = batch.buffers().ok_or("no buffers")?;
    let base = list.bytes().as_ptr() as usize - file.as_ptr() as usize;
    let body = offset + meta;
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, b)| Located {
            field: base + 16 * i,
            bytes: body + b.offset() as usize..body + (b.offset() + b.length()) as usize,
        })
        .collect())
}

/// The buffers holding a frame (prefix > 0), with their declared lengths.
fn frames(file: &[u8]) -> std::result::Result<Vec<(Located, u64)>, Box<dyn std::error::Error>> {
    Ok(buffers(file)?
        .into_iter()
        .filter_map(|b| match compression::prefix(&file[b.bytes.clone()]) {
            Ok(Prefix::Frame(n)) => Some((b, n)),
            _ => None,
        })
        .collect())
}

fn set_prefix(file: &mut [u8], b: &Located, n: i64) {
    file[b.bytes.start..b.bytes.start + 8].copy_from_slice(&n.to_le_bytes());
}

#[test]
fn compressed_files_of_every_type_read_in_place_from_a_sealed_segment() -> TestResult {
    let t = sample::every_type()?;
    let batches = [t.clone(), t.slice(1, 3), t.slice(0, 0)];
    for codec in CODECS {
        let bytes = file(codec, &batches)?;
        assert!(is_compressed(&bytes));
        let read = open(&bytes)?;
        assert!(sample::same_batches(read.batches(), &batches));
        assert_eq!(read.read_path(), Some(ReadPath::ZeroCopy));
        let seals = read.segment().seals()?;
        assert!(seals.contains(Seals::WRITE | Seals::SIZE), "{seals:?}");
        // the segment holds an uncompressed file that anyone can read
        let inner = &read.segment().as_slice()[..read.file_len()];
        assert!(!is_compressed(inner));
        let by_arrow = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(inner), None)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        assert!(sample::same_batches(&by_arrow, &batches));
    }
    Ok(())
}

#[test]
fn uncompressed_files_are_not_inflated() -> TestResult {
    let t = sample::every_type()?;
    let bytes = file(IpcCompression::None, std::slice::from_ref(&t))?;
    assert!(!is_compressed(&bytes));
    let read = open(&bytes)?;
    // read in the very segment it was opened from: no new one was made
    assert_eq!(read.file_len(), bytes.len());
    assert_eq!(&read.segment().as_slice()[..bytes.len()], &bytes[..]);
    assert_eq!(read.batch()?, &t);
    Ok(())
}

#[test]
fn arrow_ipc_reads_our_compressed_files_and_we_read_its() -> TestResult {
    let t = sample::every_type()?;
    // arrow-ipc's writer cannot write sliced unions (see `encode`): a whole batch
    let batches = std::slice::from_ref(&t);
    for (codec, theirs) in [
        (
            IpcCompression::Lz4Frame,
            arrow_ipc::CompressionType::LZ4_FRAME,
        ),
        (IpcCompression::Zstd, arrow_ipc::CompressionType::ZSTD),
    ] {
        let ours = file(codec, batches)?;
        let by_arrow = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(ours), None)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        assert_eq!(by_arrow, batches);

        let mut written = Vec::new();
        let options = IpcWriteOptions::default().try_with_compression(Some(theirs))?;
        let mut w = FileWriter::try_new_with_options(&mut written, &t.schema(), options)?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
        drop(w);
        assert!(is_compressed(&written));
        assert!(sample::same_batches(open(&written)?.batches(), batches));
    }
    Ok(())
}

#[test]
fn a_declared_length_far_past_the_frame_is_refused_before_allocating() -> TestResult {
    for codec in CODECS {
        let mut bytes = file(codec, &[compressible()?])?;
        let (b, _) = frames(&bytes)?.into_iter().next().ok_or("no frame")?;
        set_prefix(&mut bytes, &b, 1 << 40);
        let compressed = (b.bytes.len() - 8) as u64;
        match open(&bytes) {
            Err(ArrowShmError::DecompressionRatio {
                codec: c,
                compressed: n,
                declared,
                limit,
            }) => {
                assert_eq!((c, n, declared), (codec, compressed, 1 << 40));
                assert_eq!(limit, codec.max_decompressed(compressed));
            }
            other => panic!("{codec}: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn a_declared_length_other_than_the_frames_is_refused() -> TestResult {
    for codec in CODECS {
        let good = file(codec, &[compressible()?])?;
        let (b, real) = frames(&good)?.into_iter().next().ok_or("no frame")?;

        let mut bytes = good.clone();
        set_prefix(&mut bytes, &b, real as i64 + 1000);
        match open(&bytes) {
            Err(ArrowShmError::DecompressedShort {
                codec: c,
                declared,
                actual,
            }) => assert_eq!((c, declared, actual), (codec, real + 1000, real)),
            other => panic!("{codec}: {other:?}"),
        }

        let mut bytes = good.clone();
        set_prefix(&mut bytes, &b, real as i64 - 1);
        match open(&bytes) {
            Err(ArrowShmError::DecompressedLong { codec: c, declared }) => {
                assert_eq!((c, declared), (codec, real - 1))
            }
            other => panic!("{codec}: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn negative_lengths_other_than_minus_one_are_refused() -> TestResult {
    for codec in CODECS {
        for n in [-2, -8, i64::MIN] {
            let mut bytes = file(codec, &[compressible()?])?;
            let (b, _) = frames(&bytes)?.into_iter().next().ok_or("no frame")?;
            set_prefix(&mut bytes, &b, n);
            match open(&bytes) {
                Err(ArrowShmError::NegativeUncompressedLength { length }) => assert_eq!(length, n),
                other => panic!("{codec} {n}: {other:?}"),
            }
        }
    }
    Ok(())
}

#[test]
fn corrupt_frames_are_refused() -> TestResult {
    for codec in CODECS {
        let good = file(codec, &[compressible()?])?;
        let (b, _) = frames(&good)?.into_iter().next().ok_or("no frame")?;
        // the frame's magic number, then its last bytes (end mark / block)
        let last = b.bytes.end - 4..b.bytes.end;
        for range in [b.bytes.start + 8..b.bytes.start + 12, last] {
            let mut bytes = good.clone();
            for x in &mut bytes[range.clone()] {
                *x ^= 0x5a;
            }
            match open(&bytes) {
                Err(ArrowShmError::Decompress { codec: c, .. }) => assert_eq!(c, codec),
                // a corrupt last block can also end the data early
                Err(ArrowShmError::DecompressedShort { codec: c, .. }) => assert_eq!(c, codec),
                other => panic!("{codec} {range:?}: {other:?}"),
            }
        }
    }
    Ok(())
}

#[test]
fn a_buffer_too_short_for_its_prefix_or_past_the_body_is_refused() -> TestResult {
    for codec in CODECS {
        let good = file(codec, &[compressible()?])?;
        let (b, _) = frames(&good)?.into_iter().next().ok_or("no frame")?;
        let mut bytes = good.clone();
        bytes[b.field + 8..b.field + 16].copy_from_slice(&5i64.to_le_bytes());
        match open(&bytes) {
            Err(ArrowShmError::CompressedBufferTooShort { len }) => assert_eq!(len, 5),
            other => panic!("{codec}: {other:?}"),
        }
        let mut bytes = good.clone();
        bytes[b.field + 8..b.field + 16].copy_from_slice(&(1i64 << 40).to_le_bytes());
        match open(&bytes) {
            Err(ArrowShmError::Malformed { reason }) => {
                assert_eq!(reason, "buffer outside the message body")
            }
            other => panic!("{codec}: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn declared_lengths_that_overflow_are_refused() -> TestResult {
    for codec in CODECS {
        let mut bytes = file(codec, &[compressible()?])?;
        let frames = frames(&bytes)?;
        assert!(frames.len() >= 2, "{codec}: {} frames", frames.len());
        for (b, _) in &frames {
            set_prefix(&mut bytes, b, i64::MAX);
        }
        match open(&bytes) {
            Err(ArrowShmError::DeclaredSizeOverflow) => {}
            other => panic!("{codec}: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn a_file_larger_than_the_memory_available_is_refused_before_allocating() -> TestResult {
    let Some(available) = memory_available() else {
        eprintln!("MemAvailable unreadable: the memory bound is not applied here");
        return Ok(());
    };
    // a ZSTD buffer may declare 32 768 times its size: enough bytes that the
    // ratio allows more than the memory available (random bytes are stored
    // uncompressed; their prefix is rewritten)
    let declared = available + (1 << 30);
    let payload = usize::try_from(declared.div_ceil(1 << 15))? + 1;
    let mut noise = vec![0u8; payload];
    rand::Rng::fill(&mut rand::rngs::StdRng::seed_from_u64(1), &mut noise[..]);
    let batch = RecordBatch::try_from_iter([(
        "b",
        Arc::new(BinaryArray::from(vec![noise.as_slice()])) as ArrayRef,
    )])?;
    let mut bytes = file(IpcCompression::Zstd, &[batch])?;
    let b = buffers(&bytes)?
        .into_iter()
        .max_by_key(|b| b.bytes.len())
        .ok_or("no buffer")?;
    assert_eq!(
        compression::prefix(&bytes[b.bytes.clone()])?,
        Prefix::Stored
    );
    set_prefix(&mut bytes, &b, i64::try_from(declared)?);
    match open(&bytes) {
        Err(ArrowShmError::DecompressionMemory { needed, available }) => {
            assert!(needed > declared && needed > available)
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[test]
fn an_unknown_codec_is_refused() -> TestResult {
    let mut bytes = file(IpcCompression::Zstd, &[compressible()?])?;
    let (footer, start) = footer(&bytes)?;
    let block = footer.recordBatches().ok_or("no batches")?.get(0);
    let (offset, meta, _) = block_range(block, start)?;
    let message = message(&bytes[offset..offset + meta])?;
    let (batch, _) = batch_of(&message)?.ok_or("no batch")?;
    let c = batch.compression().ok_or("not compressed")?;
    // ZSTD (1) is not the default, so the codec byte is stored: find it
    let tab = c._tab;
    let field = tab.vtable().get(arrow_ipc::BodyCompression::VT_CODEC) as usize;
    assert_ne!(field, 0);
    let at = tab.buf().as_ptr() as usize - bytes.as_ptr() as usize + tab.loc() + field;
    assert_eq!(bytes[at], 1);
    bytes[at] = 5;
    match open(&bytes) {
        Err(ArrowShmError::UnknownCompression { codec, method }) => {
            assert_eq!((codec, method), (5, 0))
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[test]
fn byte_flips_in_compressed_files_never_panic() -> TestResult {
    use rand::{Rng, SeedableRng};
    let t = sample::every_type()?;
    for (seed, codec) in CODECS.into_iter().enumerate() {
        let good = file(codec, std::slice::from_ref(&t))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
        let mut errors = 0;
        for _ in 0..2_000 {
            let mut f = good.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..f.len());
                f[i] ^= 1 << rng.gen_range(0..8);
            }
            match open(&f) {
                Ok(read) => {
                    for b in read.batches() {
                        for c in b.columns() {
                            c.to_data().validate_full()?;
                        }
                    }
                }
                Err(ArrowShmError::DecoderPanicked { message }) => {
                    panic!("{codec}: caught panic {message}")
                }
                Err(_) => errors += 1,
            }
        }
        assert!(errors > 200, "{codec}: {errors}");
    }
    Ok(())
}

#[test]
fn a_compressed_named_segment_pops_and_its_name_goes() -> TestResult {
    let before = npshmex_testkit::own_shm_entries();
    let batch = compressible()?;
    let bytes = file(IpcCompression::Lz4Frame, std::slice::from_ref(&batch))?;
    let named = npshmex_shm::NamedSegment::create_unique(bytes.len())?;
    named.write_at(0, &bytes)?;
    let name = named.name().to_owned();
    drop(named);
    let kept = ShmBatch::pop(&name, crate::Keep::Yes)?;
    assert_eq!(kept.batch()?, &batch);
    assert_eq!(kept.name(), Some(name.as_str()));
    let popped = ShmBatch::pop(&name, crate::Keep::No)?;
    assert_eq!(popped.batch()?, &batch);
    assert!(matches!(
        ShmBatch::open_named(&name),
        Err(ArrowShmError::Shm {
            source: npshmex_shm::ShmError::NotFound { .. },
            ..
        })
    ));
    assert_eq!(npshmex_testkit::own_shm_entries(), before);
    Ok(())
}
