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

/// `a == b`, except that run-end encoded columns (whose `==` arrow only
/// implements for unsliced arrays) are compared by their logical values.
fn same(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    fn expand(batch: &RecordBatch) -> RecordBatch {
        use arrow_array::cast::AsArray;
        use arrow_array::Array;
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            if let DataType::RunEndEncoded(_, values) = f.data_type() {
                let r = c.as_run::<arrow_array::types::Int32Type>();
                let idx: arrow_array::UInt32Array = (0..r.len())
                    .map(|i| r.get_physical_index(i) as u32)
                    .collect();
                columns.push(arrow_select::take::take(r.values(), &idx, None).expect("take"));
                fields.push(Field::new(f.name(), values.data_type().clone(), true));
            } else {
                columns.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("same schema")
    }
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| expand(x) == expand(y))
}

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

#[test]
fn byte_flips_never_panic() -> TestResult {
    use rand::{Rng, SeedableRng};
    let file = small_file()?;
    let original = decode(&aligned(&file))?.batches;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut errors, mut panics) = (0, Vec::new());
    for _ in 0..3000 {
        let mut f = file.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..f.len());
            f[i] ^= 1 << rng.gen_range(0..8);
        }
        match decode(&aligned(&f)) {
            Ok(d) => {
                // a flip in padding or in a value is a valid file
                let _ = d.batches == original;
            }
            Err(ArrowShmError::DecoderPanicked { message }) => panics.push(message),
            Err(_) => errors += 1,
        }
    }
    // Arrow still panics on some corrupt schemas and buffer lists; those
    // are caught and reported as DecoderPanicked (an Err, not an unwind).
    eprintln!(
        "{errors} errors, {} caught panics of 3000 flips",
        panics.len()
    );
    assert!(errors > panics.len());
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
