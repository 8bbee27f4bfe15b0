//! Arbitrary schemas and batches round-trip through a segment and the fd
//! collector (in-process; `tests/pool.rs` goes through real workers), and
//! arrow-ipc's own reader reads our files as the same batches; compressed
//! files (both codecs) round-trip between our writer, arrow-ipc's reader and
//! writer, and `ShmBatch::open`.

mod common;

use arrow_array::RecordBatch;
use npshmex_arrow::{write_ipc_file, IpcCompression, ReadPath, ShmBatch, WriteOptions};
use npshmex_shm::Segment;
use npshmex_testkit::{oob_roundtrip, own_shm_entries};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_batches_round_trip((types, rows, seed) in common::schema_rows_seed(), cut in 0usize..12) {
        let before = own_shm_entries();
        let batch = common::batch(&types, rows, seed);
        let parts = common::slices(&batch, cut);
        let shm = ShmBatch::from_batches(batch.schema(), &parts).map_err(|e| TestCaseError::fail(e.to_string()))?;

        // arrow-ipc's reader agrees with our writer
        let file = shm.segment().as_slice()[..shm.file_len()].to_vec();
        let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(file), None)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let by_arrow = reader.collect::<Result<Vec<_>, _>>().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&by_arrow, &parts);

        let back = oob_roundtrip(shm).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.read_path(), Some(ReadPath::ZeroCopy));
        prop_assert_eq!(back.schema(), &batch.schema());
        prop_assert_eq!(back.batches(), &parts[..]);
        drop(back);
        prop_assert_eq!(own_shm_entries(), before);
    }

    #[test]
    fn arbitrary_compressed_files_round_trip(
        (types, rows, seed) in common::schema_rows_seed(),
        cut in 0usize..12,
        zstd in any::<bool>(),
    ) {
        let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
        let (codec, theirs) = if zstd {
            (IpcCompression::Zstd, arrow_ipc::CompressionType::ZSTD)
        } else {
            (IpcCompression::Lz4Frame, arrow_ipc::CompressionType::LZ4_FRAME)
        };
        let batch = common::batch(&types, rows, seed);
        let parts = common::slices(&batch, cut);

        // ours, compressed: arrow-ipc reads it, and so do we
        let mut file = Vec::new();
        let options = WriteOptions::default().with_compression(codec);
        write_ipc_file(&mut file, &batch.schema(), &parts, &options).map_err(|e| fail(&e))?;
        let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(file.clone()), None)
            .map_err(|e| fail(&e))?;
        let by_arrow = reader.collect::<Result<Vec<_>, _>>().map_err(|e| fail(&e))?;
        prop_assert_eq!(&by_arrow, &parts);
        let read = open(&file).map_err(|e| fail(&e))?;
        prop_assert_eq!(read.read_path(), Some(ReadPath::ZeroCopy));
        prop_assert_eq!(read.batches(), &parts[..]);

        // arrow-ipc's, compressed (whole batch: its writer mishandles sliced
        // unions): we read it
        let mut theirs_file = Vec::new();
        let options = arrow_ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(theirs))
            .map_err(|e| fail(&e))?;
        let mut w = arrow_ipc::writer::FileWriter::try_new_with_options(&mut theirs_file, &batch.schema(), options)
            .map_err(|e| fail(&e))?;
        w.write(&batch).map_err(|e| fail(&e))?;
        w.finish().map_err(|e| fail(&e))?;
        drop(w);
        let read = open(&theirs_file).map_err(|e| fail(&e))?;
        prop_assert_eq!(read.batches(), std::slice::from_ref(&batch));
    }
}

/// The bytes in a fresh segment, opened as untrusted input.
fn open(bytes: &[u8]) -> Result<ShmBatch, Box<dyn std::error::Error>> {
    let mut segment = Segment::anonymous(bytes.len())?;
    segment.as_mut_slice()?.copy_from_slice(bytes);
    Ok(ShmBatch::open(segment.freeze()?)?)
}

#[test]
fn a_compressed_file_of_zero_batches_reads() -> Result<(), Box<dyn std::error::Error>> {
    let schema = common::batch(&[arrow_schema::DataType::Utf8], 0, 1).schema();
    for codec in [IpcCompression::Lz4Frame, IpcCompression::Zstd] {
        let mut file = Vec::new();
        write_ipc_file(
            &mut file,
            &schema,
            &[] as &[RecordBatch],
            &WriteOptions::default().with_compression(codec),
        )?;
        let read = open(&file)?;
        assert_eq!(read.schema(), &schema);
        assert!(read.batches().is_empty());
    }
    Ok(())
}

#[test]
fn empty_and_zero_column_batches() -> Result<(), Box<dyn std::error::Error>> {
    let empty = common::batch(
        &[arrow_schema::DataType::Utf8, arrow_schema::DataType::Int64],
        0,
        1,
    );
    let back = oob_roundtrip(ShmBatch::from_batch(&empty)?)?;
    assert_eq!(back.batch()?, &empty);
    let zero_cols = common::batch(&[], 5, 1);
    let back = oob_roundtrip(ShmBatch::from_batch(&zero_cols)?)?;
    assert_eq!(back.batch()?, &zero_cols);
    assert_eq!(back.num_rows(), 5);
    Ok(())
}
