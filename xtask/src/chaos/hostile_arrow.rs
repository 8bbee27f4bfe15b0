//! Hostile Arrow IPC files: a seed corpus (every Arrow type family as laid
//! out by npshmex-arrow, plus a file from arrow-ipc's own writer, plus LZ4-
//! and ZSTD-compressed files whose buffers are real frames) mutated at
//! random, each put in a fresh segment and opened with `ShmBatch::open`, the
//! untrusted reader. Every input must give `Ok` or a typed `Err`: no panic,
//! no slow input; and what it accepts must pass arrow's full validation.

use super::mutate::{Mutator, Stats};
use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use npshmex_arrow::{write_ipc_file, IpcCompression, ShmBatch, WriteOptions};
use npshmex_shm::Segment;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SLOW: Duration = Duration::from_secs(2);

const TOKENS: &[&str] = &[
    "ARROW1",
    "\u{0}\u{0}\u{0}\u{0}",
    "\u{7f}\u{7f}\u{7f}\u{7f}",
    "\u{1}\u{0}\u{0}\u{0}",
    "\u{10}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}",
];

/// IPC file bytes of the seed batches.
pub fn corpus() -> Result<Vec<Vec<u8>>> {
    let small = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc")])) as ArrayRef,
        ),
    ])?;
    let every = npshmex_arrow::sample::every_type()?;
    let mut out = Vec::new();
    for b in [&small, &every] {
        let shm = ShmBatch::from_batch(b)?;
        out.push(shm.segment().as_slice()[..shm.file_len()].to_vec());
    }
    let mut theirs = Vec::new();
    {
        let mut w = arrow_ipc::writer::FileWriter::try_new(&mut theirs, &small.schema())?;
        w.write(&small)?;
        w.finish()?;
    }
    out.push(theirs);
    // compressed: 3-row buffers are stored (prefix -1), 2000-row ones are frames
    let ids: Vec<i64> = (0..2000).map(|i| i % 7).collect();
    let names: Vec<Option<&str>> = (0..2000).map(|i| (i % 5 != 0).then_some("abc")).collect();
    let long = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
    ])?;
    for codec in [IpcCompression::Lz4Frame, IpcCompression::Zstd] {
        let options = WriteOptions::default().with_compression(codec);
        for b in [&small, &long] {
            let mut file = Vec::new();
            write_ipc_file(&mut file, &b.schema(), std::slice::from_ref(b), &options)?;
            out.push(file);
        }
    }
    Ok(out)
}

/// Opens `n` mutated files; `Err` on the first panic, hang or invalid acceptance.
pub fn fuzz(n: usize, seed: u64) -> Result<Stats> {
    let seeds = corpus().context("building the seed corpus")?;
    for s in &seeds {
        open(s).with_context(|| format!("a valid seed file of {} bytes is refused", s.len()))?;
    }
    let mut m = Mutator::new(seed, TOKENS);
    let mut st = Stats::default();
    for i in 0..n {
        let input = m.mutate(&seeds);
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| open(&input)));
        let dt = t.elapsed();
        st.slowest = st.slowest.max(dt);
        st.inputs += 1;
        let show = || format!("input #{i} (seed {seed}, {} bytes)", input.len());
        if dt > SLOW {
            bail!("opening took {dt:?}: {}", show());
        }
        match r {
            Err(_) => bail!("ShmBatch::open panicked on {}", show()),
            Ok(Err(_)) => st.refused += 1,
            Ok(Ok(batch)) => {
                for b in batch.batches() {
                    for (c, col) in b.columns().iter().enumerate() {
                        if let Err(e) = col.to_data().validate_full() {
                            bail!("{}: accepted, but column {c} is invalid: {e}", show());
                        }
                    }
                }
                st.ok += 1;
            }
        }
    }
    Ok(st)
}

/// The bytes in a fresh segment, opened as untrusted input.
fn open(bytes: &[u8]) -> Result<ShmBatch> {
    let mut seg = Segment::anonymous(bytes.len().max(1))?;
    seg.as_mut_slice()?[..bytes.len()].copy_from_slice(bytes);
    // Sealed as every segment a batch is read from must be: the decoder
    // sees exactly these bytes.
    Ok(ShmBatch::open(seg.freeze()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_open_and_a_short_fuzz_finds_nothing() {
        for s in corpus().unwrap() {
            assert!(open(&s).is_ok());
        }
        let st = fuzz(300, 11).unwrap();
        assert_eq!(st.inputs, 300);
        assert!(st.refused > 0, "{st:?}");
    }
}
