//! Unit tests of the encoder and decoder on heap buffers (the segment-backed
//! paths are tested in `tests/`).

use crate::decode::{decode, Decoded};
use crate::encode::FileLayout;
use crate::{sample, ArrowShmError, ReadPath};
use arrow_array::{
    ArrayRef, Decimal128Array, Int32Array, Int8Array, RecordBatch, RecordBatchOptions, StringArray,
};
use arrow_buffer::{Buffer, MutableBuffer};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// The file bytes in a 64-byte aligned heap buffer.
fn write(schema: &SchemaRef, batches: &[RecordBatch]) -> crate::Result<Buffer> {
    let layout = FileLayout::new(schema, batches)?;
    let mut out = MutableBuffer::from_len_zeroed(layout.len());
    layout.write_to(out.as_slice_mut())?;
    Ok(out.into())
}

fn roundtrip(schema: &SchemaRef, batches: &[RecordBatch]) -> crate::Result<Decoded> {
    decode(&write(schema, batches)?)
}

use crate::sample::same_batches as same;

fn aligned(bytes: &[u8]) -> Buffer {
    let mut b = MutableBuffer::from_len_zeroed(bytes.len());
    b.as_slice_mut().copy_from_slice(bytes);
    b.into()
}

#[test]
fn every_type_round_trips_zero_copy() -> TestResult {
    let batch = sample::every_type()?;
    let d = roundtrip(&batch.schema(), std::slice::from_ref(&batch))?;
    assert_eq!(d.schema, batch.schema());
    assert_eq!(d.batches, vec![batch]);
    assert_eq!(d.path, ReadPath::ZeroCopy);
    Ok(())
}

#[test]
fn arrow_reads_what_we_write_and_we_read_what_arrow_writes() -> TestResult {
    let batch = sample::every_type()?;
    let bytes = write(&batch.schema(), &[batch.clone(), batch.slice(1, 3)])?;
    let reader =
        arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)?;
    let back = reader.collect::<Result<Vec<_>, _>>()?;
    assert!(same(&back, &[batch.clone(), batch.slice(1, 3)]));

    let mut file = Vec::new();
    let mut w = FileWriter::try_new(&mut file, &batch.schema())?;
    w.write(&batch)?;
    w.write(&batch.slice(2, 3))?;
    w.finish()?;
    drop(w);
    let d = decode(&aligned(&file))?;
    assert!(same(&d.batches, &[batch.clone(), batch.slice(2, 3)]));
    assert_eq!(d.path, ReadPath::ZeroCopy);
    Ok(())
}

#[test]
fn sliced_batches_round_trip() -> TestResult {
    let batch = sample::every_type()?;
    for offset in 0..sample::ROWS {
        for len in 0..=sample::ROWS - offset {
            let s = batch.slice(offset, len);
            let d = roundtrip(&batch.schema(), std::slice::from_ref(&s))?;
            assert!(same(&d.batches, &[s]), "slice({offset}, {len})");
        }
    }
    Ok(())
}

#[test]
fn empty_and_zero_column_batches_round_trip() -> TestResult {
    let batch = sample::every_type()?;
    let empty = batch.slice(0, 0);
    let d = roundtrip(&batch.schema(), std::slice::from_ref(&empty))?;
    assert!(same(&d.batches, &[empty]));

    let schema: SchemaRef = Arc::new(Schema::empty());
    let zero_cols = RecordBatch::try_new_with_options(
        schema.clone(),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(7)),
    )?;
    let d = roundtrip(&schema, std::slice::from_ref(&zero_cols))?;
    assert_eq!(d.batches, vec![zero_cols]);
    assert_eq!(d.batches[0].num_rows(), 7);

    let none = roundtrip(&batch.schema(), &[])?;
    assert!(none.batches.is_empty());
    assert_eq!(none.schema, batch.schema());
    Ok(())
}

#[test]
fn one_dictionary_per_field_across_batches() -> TestResult {
    let batch = sample::every_type()?;
    // same dictionaries (slices share them): written once
    let d = roundtrip(&batch.schema(), &[batch.clone(), batch.slice(1, 2)])?;
    assert!(same(&d.batches, &[batch.clone(), batch.slice(1, 2)]));

    let dict = |values: Vec<&str>| -> Result<RecordBatch, arrow_schema::ArrowError> {
        let a = arrow_array::DictionaryArray::<arrow_array::types::Int32Type>::try_new(
            Int32Array::from(vec![0, 1]),
            Arc::new(StringArray::from(values)),
        )?;
        RecordBatch::try_from_iter([("d", Arc::new(a) as ArrayRef)])
    };
    let (a, b) = (dict(vec!["x", "y"])?, dict(vec!["x", "z"])?);
    let r = roundtrip(&a.schema(), &[a.clone(), b]);
    assert!(
        matches!(r, Err(ArrowShmError::DictionaryReplaced { dict_id: 0 })),
        "{:?}",
        r.err()
    );
    // equal but separately built dictionaries are accepted
    let d = roundtrip(&a.schema(), &[a.clone(), dict(vec!["x", "y"])?])?;
    assert_eq!(d.batches.len(), 2);
    Ok(())
}

#[test]
fn schema_mismatch_is_an_error() -> TestResult {
    let a = RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])?;
    let b = RecordBatch::try_from_iter([("b", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])?;
    let r = FileLayout::new(&a.schema(), &[a.clone(), b]);
    assert!(matches!(r, Err(ArrowShmError::SchemaMismatch { index: 1 })));
    Ok(())
}

#[test]
fn misaligned_buffers_are_copied_and_reported() -> TestResult {
    // Files aligned to 8 bytes (pyarrow's default) can place 16-byte decimals
    // at an address that is 8 mod 16: arrow copies those buffers.
    let mut copied = 0;
    for prefix in 0..4 {
        let mut cols: Vec<(String, ArrayRef)> = (0..prefix)
            .map(|i| {
                (
                    format!("p{i}"),
                    Arc::new(Int8Array::from(vec![1i8])) as ArrayRef,
                )
            })
            .collect();
        cols.push((
            "d".into(),
            Arc::new(Decimal128Array::from(vec![Some(1i128)]).with_precision_and_scale(10, 2)?),
        ));
        let batch = RecordBatch::try_from_iter(cols)?;
        let mut file = Vec::new();
        let options = IpcWriteOptions::try_new(8, false, arrow_ipc::MetadataVersion::V5)?;
        let mut w = FileWriter::try_new_with_options(&mut file, &batch.schema(), options)?;
        w.write(&batch)?;
        w.finish()?;
        drop(w);
        let d = decode(&aligned(&file))?;
        assert_eq!(d.batches, vec![batch]);
        if let ReadPath::Copied { buffers, bytes } = d.path {
            assert!(buffers >= 1 && bytes >= 16);
            copied += 1;
        }
    }
    assert!(copied > 0, "no layout produced a misaligned decimal buffer");
    Ok(())
}

fn small_file() -> crate::Result<Vec<u8>> {
    let batch = RecordBatch::try_from_iter([
        (
            "i",
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
        ),
        (
            "s",
            Arc::new(StringArray::from(vec![Some("ab"), Some("c"), None])) as ArrayRef,
        ),
        (
            "d",
            Arc::new(
                arrow_array::DictionaryArray::<arrow_array::types::Int32Type>::try_new(
                    Int32Array::from(vec![0, 1, 0]),
                    Arc::new(StringArray::from(vec!["x", "y"])),
                )
                .map_err(|source| ArrowShmError::Encode { source })?,
            ) as ArrayRef,
        ),
    ])
    .map_err(|source| ArrowShmError::Encode { source })?;
    Ok(write(&batch.schema(), &[batch])?.to_vec())
}

#[test]
fn every_truncation_is_an_error() -> TestResult {
    let file = small_file()?;
    for len in 0..file.len() {
        let r = decode(&aligned(&file[..len]));
        assert!(r.is_err(), "truncation to {len} of {} decoded", file.len());
        assert!(
            !matches!(r, Err(ArrowShmError::DecoderPanicked { .. })),
            "truncation to {len}: {:?}",
            r.err()
        );
    }
    Ok(())
}

/// Flips 1-3 random bits `rounds` times; returns (errors, caught panics).
fn flip(file: &[u8], rounds: usize, seed: u64) -> (usize, Vec<String>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut errors, mut panics) = (0, Vec::new());
    for _ in 0..rounds {
        let mut f = file.to_vec();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..f.len());
            f[i] ^= 1 << rng.gen_range(0..8);
        }
        // Ok is fine too: a flip in padding or in a value is a valid file
        match decode(&aligned(&f)) {
            Ok(_) => {}
            Err(ArrowShmError::DecoderPanicked { message }) => panics.push(message),
            Err(_) => errors += 1,
        }
    }
    (errors, panics)
}

#[test]
fn byte_flips_never_panic() -> TestResult {
    // Arrow would panic on many of these (bad schemas, short bitmaps,
    // misaligned or odd-sized buffers); the checks in `check` turn them
    // into errors first, and anything left would be caught as
    // DecoderPanicked. With these seeds nothing is left.
    let (errors, panics) = flip(&small_file()?, 20_000, 7);
    assert!(errors > 5_000, "{errors}");
    assert!(panics.is_empty(), "caught panics: {panics:?}");
    let batch = sample::every_type()?;
    let file = write(&batch.schema(), &[batch.clone(), batch.slice(1, 3)])?;
    let (errors, panics) = flip(file.as_slice(), 5_000, 11);
    assert!(errors > 1_000, "{errors}");
    assert!(panics.is_empty(), "caught panics: {panics:?}");
    Ok(())
}

#[test]
fn garbage_is_an_error() {
    for bytes in [&b""[..], b"ARROW1", b"ARROW1\0\0ARROW1", &[0xff; 64]] {
        assert!(decode(&aligned(bytes)).is_err());
    }
    let mut fake = b"ARROW1\0\0".to_vec();
    fake.extend_from_slice(&[0; 32]);
    fake.extend_from_slice(&(i32::MAX).to_le_bytes());
    fake.extend_from_slice(b"ARROW1");
    assert!(matches!(
        decode(&aligned(&fake)),
        Err(ArrowShmError::Malformed { .. })
    ));
    let _ = DataType::Null;
    let _ = Field::new("x", DataType::Null, true);
}

mod shm {
    use super::*;
    use crate::{via_shm, Keep, ShmBatch};
    use npshmex_shm::Seals;
    use npshmex_shm::Transfer;
    use npshmex_testkit::{oob_roundtrip as send, own_shm_entries as shm_names};
    use serde::{Deserialize, Serialize};

    fn points_into(array: &ArrayRef, seg: &npshmex_shm::Segment) -> bool {
        let range = seg.as_ptr() as usize..seg.as_ptr() as usize + seg.len();
        array
            .to_data()
            .buffers()
            .iter()
            .all(|b| range.contains(&(b.as_ptr() as usize)))
    }

    #[test]
    fn shm_batch_is_send_and_sync() {
        fn assert<T: Send + Sync + Clone>() {}
        assert::<ShmBatch>();
    }

    #[test]
    fn shm_batch_moves_by_fd_and_reads_in_place() -> TestResult {
        let batch = sample::every_type()?;
        let shm = ShmBatch::from_batch(&batch)?;
        assert_eq!(shm.read_path(), None);
        assert_eq!(shm.batch()?, &batch);
        assert!(shm.segment().seals()?.contains(Seals::SIZE | Seals::WRITE));
        let received = send(shm)?;
        assert!(same(received.batches(), &[batch]));
        assert_eq!(received.read_path(), Some(ReadPath::ZeroCopy));
        let ints = received
            .batch()?
            .column_by_name("int64")
            .ok_or("int64")?
            .clone();
        assert!(points_into(&ints, received.segment()));
        // the arrays keep the mapping alive after the ShmBatch is gone
        drop(received);
        assert_eq!(ints.len(), sample::ROWS);
        assert_eq!(ints.to_data().buffers()[0].len(), sample::ROWS * 8);
        Ok(())
    }

    #[test]
    fn batches_are_sealed_before_anyone_reads_them() -> TestResult {
        // Issue 11, cases 4 and 5: the segment a batch reads in place is
        // write-sealed from the moment it is made; no handle anywhere can
        // change validated offsets, and the segment cannot be mapped
        // writable again.
        let batch = sample::every_type()?;
        let shm = ShmBatch::from_batch(&batch)?;
        assert!(shm.segment().seals()?.contains(Seals::WRITE | Seals::SIZE));
        assert!(matches!(
            shm.segment().remap(npshmex_shm::Access::ReadWrite),
            Err(npshmex_shm::ShmError::NotExclusive { .. })
        ));
        let kept = shm.clone();
        let received = send(shm)?;
        assert!(same(received.batches(), std::slice::from_ref(&batch)));
        // sender and receiver share the sealed pages; forwarding works too
        assert!(same(kept.batches(), std::slice::from_ref(&batch)));
        assert_eq!(
            received.segment().file_key()?,
            kept.segment().file_key()?,
            "the same pages, no copy"
        );
        let again = send(received)?;
        assert!(same(again.batches(), &[batch]));
        Ok(())
    }

    #[test]
    fn serializing_outside_a_pool_task_is_an_error() -> TestResult {
        let batch = sample::every_type()?;
        let shm = ShmBatch::from_batch(&batch)?;
        let e = postcard::to_allocvec(&shm)
            .err()
            .ok_or("serialized without a collector")?;
        assert!(matches!(e, postcard::Error::SerdeSerCustom));
        #[derive(Serialize)]
        struct S {
            #[serde(with = "via_shm")]
            b: RecordBatch,
        }
        assert!(postcard::to_allocvec(&S { b: batch }).is_err());
        Ok(())
    }

    #[derive(Serialize, Deserialize)]
    struct Task {
        #[serde(with = "via_shm")]
        table: RecordBatch,
        #[serde(with = "via_shm::array")]
        weights: ArrayRef,
        label: String,
    }

    #[test]
    fn plain_fields_travel_through_shm() -> TestResult {
        let table = sample::every_type()?;
        let weights: ArrayRef = table
            .column_by_name("list_dictionary")
            .ok_or("col")?
            .slice(1, 3);
        let back = send(Task {
            table: table.clone(),
            weights: weights.clone(),
            label: "x".into(),
        })?;
        assert!(same(&[back.table], &[table]));
        assert_eq!(&back.weights, &weights);
        assert_eq!(back.label, "x");
        Ok(())
    }

    #[test]
    fn receiving_garbage_is_a_typed_error() -> TestResult {
        // a segment that is not an IPC file, read as a ShmBatch would be
        let mut seg = npshmex_shm::Segment::anonymous(4096)?;
        seg.as_mut_slice()?[..6].copy_from_slice(b"ARROW1");
        let seg = seg.freeze()?;
        let fake = ShmBatch::open(seg.remap(npshmex_shm::Access::ReadOnly)?);
        assert!(matches!(fake, Err(ArrowShmError::Malformed { .. })));
        // A segment that is not write-sealed is refused before it is read.
        let unsealed = npshmex_shm::Segment::anonymous(4096)?;
        assert!(matches!(
            ShmBatch::open(unsealed),
            Err(ArrowShmError::MissingSeals { .. })
        ));
        #[derive(Serialize)]
        struct Wire {
            segment: (u32, Transfer),
            file_len: u64,
        }
        let receive = |fd: std::os::fd::OwnedFd, transfer: Transfer| {
            let (index, collected) = npshmex_shm::oob::collect(|| npshmex_shm::oob::push_fd(fd));
            let bytes = postcard::to_allocvec(&Wire {
                segment: (index?, transfer),
                file_len: 4096,
            })?;
            let fds = collected.finish()?.into_fds();
            let (r, cause) =
                npshmex_shm::oob::with_received(fds, || postcard::from_bytes::<ShmBatch>(&bytes));
            assert!(r.is_err());
            Ok::<_, Box<dyn std::error::Error>>(cause.ok_or("a typed cause")?)
        };
        // Not even sealed against shrinking, claimed as a move: refused
        // before it is mapped.
        let writable = npshmex_shm::Segment::anonymous(4096)?;
        let cause = receive(writable.into_fd()?, Transfer::Move)?;
        assert!(matches!(
            cause.downcast_ref::<ArrowShmError>(),
            Some(ArrowShmError::Shm {
                source: npshmex_shm::ShmError::NotSealed { .. },
                ..
            })
        ));
        // Sealed but garbage: the decoder's typed error.
        let cause = receive(seg.try_clone_fd()?, Transfer::ReadOnly)?;
        assert!(matches!(
            cause.downcast_ref::<ArrowShmError>(),
            Some(ArrowShmError::Malformed { .. })
        ));
        Ok(())
    }

    #[test]
    fn named_put_open_pop() -> TestResult {
        let before = shm_names();
        let batch = sample::every_type()?;
        let put = ShmBatch::put_unique(&batch)?;
        let name = put.name().ok_or("no name")?.to_owned();
        assert!(name.starts_with("npshmex-"));
        assert!(matches!(
            ShmBatch::put(&name, &batch),
            Err(ArrowShmError::Shm {
                source: npshmex_shm::ShmError::Exists { .. },
                ..
            })
        ));
        let opened = ShmBatch::open_named(&name)?;
        assert_eq!(opened.read_path(), Some(ReadPath::ZeroCopy));
        assert!(same(opened.batches(), std::slice::from_ref(&batch)));
        assert_eq!(opened.name(), Some(name.as_str()));
        // In place, under the promise that nobody writes the file meanwhile.
        #[allow(unsafe_code)]
        // SAFETY: only this test knows the unique name; nothing writes it.
        let mapped = unsafe { ShmBatch::open_named_mapped(&name) }?;
        assert!(same(mapped.batches(), std::slice::from_ref(&batch)));
        let kept = ShmBatch::pop(&name, Keep::Yes)?;
        assert!(same(kept.batches(), std::slice::from_ref(&batch)));
        let popped = ShmBatch::pop(&name, Keep::No)?;
        assert!(same(popped.batches(), &[batch]));
        assert!(matches!(
            ShmBatch::del(&name),
            Err(ArrowShmError::Shm {
                source: npshmex_shm::ShmError::NotFound { .. },
                ..
            })
        ));
        assert!(matches!(
            ShmBatch::open_named(&name),
            Err(ArrowShmError::Shm {
                source: npshmex_shm::ShmError::NotFound { .. },
                ..
            })
        ));
        assert_eq!(shm_names(), before);
        Ok(())
    }
}
