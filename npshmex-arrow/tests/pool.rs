//! Batches and arrays through real worker processes of `npshmex-pool`:
//! arbitrary batches go out and come back equal, workers read them in place
//! and allocate results in shm, and nothing is left in `/dev/shm` or the
//! process table.

mod common;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use npshmex_arrow::{via_shm, ReadPath, ShmBatch};
use npshmex_pool::ProcessPoolExecutor;
use npshmex_testkit::LeakCheck;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

npshmex_pool::test_support!();

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `f` with a fresh one-worker pool, then checks that the workers are
/// gone and nothing is left: no child, fd, held segment or `/dev/shm` name.
fn with_pool(f: impl FnOnce(&ProcessPoolExecutor) -> TestResult) -> TestResult {
    let leaks = LeakCheck::start();
    let pool = ProcessPoolExecutor::new(1)?;
    let result = f(&pool);
    let pids = pool.worker_pids();
    drop(pool);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} still exists"
        );
    }
    leaks.finish();
    result
}

/// Runs in the worker: checks what it got was read in place, sends it back.
fn echo(b: ShmBatch) -> Result<ShmBatch, String> {
    match b.read_path() {
        Some(ReadPath::ZeroCopy) => Ok(b),
        other => Err(format!("worker read path {other:?}")),
    }
}

#[test]
fn arbitrary_batches_through_a_worker() -> TestResult {
    with_pool(|pool| {
        let mut runner = TestRunner::new(Config {
            cases: 24,
            ..Config::default()
        });
        runner.run(
            &(common::schema_rows_seed(), 0usize..12),
            |((types, rows, seed), cut)| {
                let batch = common::batch(&types, rows, seed);
                let parts = common::slices(&batch, cut);
                let shm = ShmBatch::from_batches(batch.schema(), &parts)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back = pool
                    .submit(echo, shm)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .result()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .map_err(TestCaseError::fail)?;
                prop_assert_eq!(back.read_path(), Some(ReadPath::ZeroCopy));
                prop_assert_eq!(back.batches(), &parts[..]);
                Ok(())
            },
        )?;
        Ok(())
    })
}

#[derive(Serialize, Deserialize)]
struct Task {
    #[serde(with = "via_shm")]
    table: RecordBatch,
    #[serde(with = "via_shm::array")]
    extra: ArrayRef,
}

/// A worker computing a new batch from its inputs; the result is written
/// into a segment by the worker and read in place by the parent.
fn sum_columns(t: Task) -> Result<(u32, ShmBatch), String> {
    let ints = t
        .table
        .column_by_name("int64")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
        .ok_or("no int64 column")?;
    let sums: Int64Array = ints
        .iter()
        .map(|v| v.map(|v| v.wrapping_add(t.extra.len() as i64)))
        .collect();
    let out = RecordBatch::try_from_iter([("sum", Arc::new(sums) as ArrayRef)])
        .map_err(|e| e.to_string())?;
    let out = ShmBatch::from_batch(&out).map_err(|e| e.to_string())?;
    Ok((std::process::id(), out))
}

#[test]
fn workers_compute_on_batches_in_place() -> TestResult {
    with_pool(|pool| {
        let table = npshmex_arrow::sample::every_type()?;
        let extra: ArrayRef = table.column(0).slice(1, 3);
        let (pid, out) = pool
            .submit(sum_columns, Task { table, extra })?
            .result()??;
        assert_ne!(pid, std::process::id());
        assert!(out.segment().seals()?.contains(npshmex_shm::Seals::WRITE));
        assert_eq!(out.read_path(), Some(ReadPath::ZeroCopy));
        let sums = out
            .batch()?
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("int64")?
            .clone();
        assert_eq!(
            sums.iter().collect::<Vec<_>>(),
            vec![
                Some(i64::MIN + 3),
                Some(4),
                None,
                Some(6),
                Some(i64::MAX.wrapping_add(3))
            ]
        );
        Ok(())
    })
}

#[test]
fn every_type_family_through_a_worker_and_back() -> TestResult {
    with_pool(|pool| {
        let batch = npshmex_arrow::sample::every_type()?;
        for b in [batch.clone(), batch.slice(0, 3)] {
            // run-end encoded arrays only compare equal unsliced (arrow-rs)
            let shm = ShmBatch::from_batch(&b)?;
            let back = pool.submit(echo, shm)?.result()??;
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&i| {
                    b.schema().field(i).name() != "run_end_encoded"
                        || b.num_rows() == batch.num_rows()
                })
                .collect();
            assert_eq!(back.batch()?.project(&keep)?, b.project(&keep)?);
        }
        Ok(())
    })
}

fn reverse(a: npshmex_arrow::Shm<ArrayRef>) -> Result<npshmex_arrow::Shm<ArrayRef>, String> {
    let indices = arrow_array::UInt32Array::from_iter_values((0..a.len() as u32).rev());
    arrow_select::take::take(a.as_ref(), &indices, None)
        .map(npshmex_arrow::Shm)
        .map_err(|e| e.to_string())
}

fn count_rows(b: npshmex_arrow::Shm<RecordBatch>) -> usize {
    b.num_rows()
}

#[test]
fn bare_arrays_and_batches_through_a_worker() -> TestResult {
    with_pool(|pool| {
        let batch = npshmex_arrow::sample::every_type()?;
        let dict = batch
            .column_by_name("list_dictionary")
            .ok_or("column")?
            .clone();
        let back = pool
            .submit(reverse, npshmex_arrow::Shm(dict.clone()))?
            .result()??;
        let indices = arrow_array::UInt32Array::from_iter_values((0..dict.len() as u32).rev());
        assert_eq!(
            &back.into_inner(),
            &arrow_select::take::take(&dict, &indices, None)?
        );
        let rows = pool
            .submit(count_rows, npshmex_arrow::Shm(batch.slice(1, 3)))?
            .result()?;
        assert_eq!(rows, 3);
        Ok(())
    })
}
