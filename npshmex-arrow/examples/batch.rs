//! A 10^6-row batch (int64, float64, utf8, list<int32>) through a worker of
//! `npshmex-pool` and back, two ways:
//! - zero-copy: the batch lives in a segment (`ShmBatch`); only its fd and a
//!   few bytes cross the socket, both sides read it in place;
//! - IPC pipe: the batch as an Arrow IPC stream in plain serde bytes through
//!   the pool (encoded, sent, decoded, re-encoded, sent back, decoded).
//!
//! Prints the median of 5 runs of each and their ratio (the bar in
//! BENCHMARKS.md: `arrow.ipc_pipe / arrow.zero_copy >= 3`).
//!
//! `cargo run --release -p npshmex-arrow --example batch`

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use npshmex_arrow::{ReadPath, ShmBatch};
use npshmex_pool::ProcessPoolExecutor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROWS: usize = 1_000_000;
const RUNS: usize = 5;

fn make_batch(rows: usize) -> anyhow::Result<RecordBatch> {
    let ids = Int64Array::from_iter_values(0..rows as i64);
    let values = Float64Array::from_iter_values((0..rows).map(|i| i as f64 * 0.5));
    let names = StringArray::from_iter_values((0..rows).map(|i| format!("row-{i}")));
    let mut lists = ListBuilder::new(Int32Builder::new());
    for i in 0..rows {
        for j in 0..(i % 5) {
            lists.values().append_value((i + j) as i32);
        }
        lists.append(true);
    }
    Ok(RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("value", Arc::new(values) as ArrayRef),
        ("name", Arc::new(names) as ArrayRef),
        ("items", Arc::new(lists.finish()) as ArrayRef),
    ])?)
}

/// Bytes serialized as one serde byte string (not a sequence of u8s), so the
/// IPC path pays for the copies and not for per-byte serde calls.
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

fn to_ipc_stream(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
        .map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

fn from_ipc_stream(bytes: &[u8]) -> Result<RecordBatch, String> {
    let mut r = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| e.to_string())?;
    r.next().ok_or("empty stream")?.map_err(|e| e.to_string())
}

/// Worker side of the zero-copy path: the batch arrives mapped and
/// validated; sending it back hands the same segment over again.
fn echo_shm(b: ShmBatch) -> ShmBatch {
    b
}

/// Worker side of the IPC path: decode, re-encode.
fn echo_ipc(bytes: Bytes) -> Result<Bytes, String> {
    let batch = from_ipc_stream(&bytes.0)?;
    Ok(Bytes(to_ipc_stream(&batch)?))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    npshmex_pool::init();
    let batch = make_batch(ROWS)?;
    // The pool's largest inline frame: payloads up to 16 MiB go through the
    // socket, larger ones (this stream) as the same bytes in a sealed memfd,
    // which spares the baseline the socket copies: it flatters it, never the
    // other way.
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .inline_max(16 << 20)
        .build()?;

    // The batch in shared memory (what an application keeps between tasks).
    let t = Instant::now();
    let shm = ShmBatch::from_batch(&batch)?;
    let write_in = t.elapsed();

    // What a receiver pays to read it: map, check and validate the file.
    let mut reads = Vec::new();
    for _ in 0..RUNS {
        let segment = shm.segment().remap(npshmex_shm::Access::ReadOnly)?;
        let t = Instant::now();
        let read = ShmBatch::open(segment)?;
        reads.push(t.elapsed());
        anyhow::ensure!(
            read.read_path() == Some(ReadPath::ZeroCopy),
            "not read in place"
        );
    }

    let mut zero_copy = Vec::new();
    let mut ipc_pipe = Vec::new();
    for run in 0..=RUNS {
        let t = Instant::now();
        let back = pool.submit(echo_shm, shm.clone())?.result()?;
        let d = t.elapsed();
        anyhow::ensure!(
            back.read_path() == Some(ReadPath::ZeroCopy),
            "not read in place"
        );
        anyhow::ensure!(back.batch()? == &batch, "zero-copy round trip differs");

        let t = Instant::now();
        let bytes = Bytes(to_ipc_stream(&batch).map_err(anyhow::Error::msg)?);
        let back = pool
            .submit(echo_ipc, bytes)?
            .result()?
            .map_err(anyhow::Error::msg)?;
        let back = from_ipc_stream(&back.0).map_err(anyhow::Error::msg)?;
        let p = t.elapsed();
        anyhow::ensure!(back == batch, "IPC round trip differs");
        if run > 0 {
            // run 0 warms up the worker and the page cache
            zero_copy.push(d);
            ipc_pipe.push(p);
        }
    }
    let (z, p) = (median(zero_copy), median(ipc_pipe));
    println!(
        "batch: {ROWS} rows (int64, float64, utf8, list<int32>), IPC file of {:.1} MB, written into shm in {:.2} ms",
        shm.file_len() as f64 / 1e6,
        ms(write_in)
    );
    println!(
        "reading it in place (map + full validation): {:.3} ms (median of {RUNS})",
        ms(median(reads))
    );
    println!("arrow.zero_copy: {:8.3} ms (median of {RUNS})", ms(z));
    println!("arrow.ipc_pipe:  {:8.3} ms (median of {RUNS})", ms(p));
    println!(
        "arrow.ipc_pipe / arrow.zero_copy = {:.1} (bar >= 3)",
        p.as_secs_f64() / z.as_secs_f64()
    );
    Ok(())
}
