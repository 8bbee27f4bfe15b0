//! Arbitrary schemas and batches round-trip through a segment and the fd
//! collector (in-process; `tests/pool.rs` goes through real workers), and
//! arrow-ipc's own reader reads our files as the same batches.

mod common;

use npshmex_arrow::{ReadPath, ShmBatch};
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
