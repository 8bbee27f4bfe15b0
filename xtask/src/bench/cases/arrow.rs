//! Columnar data: a 10^6-row `RecordBatch` (int64, float64, utf8,
//! `list<int32>`) through a worker and back, as a sealed `ShmBatch` (the
//! segment travels as a file descriptor both ways, read in place and
//! validated on each side) and as an Arrow IPC stream in serde bytes over the
//! worker socket (encoded, sent, decoded, re-encoded, sent back, decoded).

use super::pooled::{pool, socket_pool};
use super::{ms_since, repeat, Scale};
use anyhow::{anyhow, ensure, Context, Result};
use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use npshmex_arrow::ShmBatch;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;
use std::time::Instant;

/// The benchmark batch: `rows` rows of four columns.
pub fn batch(rows: usize) -> Result<RecordBatch> {
    let mut lists = ListBuilder::new(Int32Builder::new());
    for i in 0..rows {
        for j in 0..(i % 4) as i32 {
            lists.values().append_value(j);
        }
        lists.append(true);
    }
    Ok(RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        ),
        (
            "x",
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| i as f64 * 0.5),
            )),
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("name-{}", i % 1000)),
            )),
        ),
        ("tags", Arc::new(lists.finish())),
    ])?)
}

fn rows(scale: &Scale) -> usize {
    scale.seed_len / 20 // 10^6, a tenth in --quick
}

fn echo(b: ShmBatch) -> ShmBatch {
    b
}

/// Bytes serialized as one serde byte string (not a sequence of u8 values,
/// which would make the baseline slower than a real byte pipe).
pub struct IpcBytes(pub Vec<u8>);

impl Serialize for IpcBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for IpcBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IpcBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<IpcBytes, E> {
                Ok(IpcBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<IpcBytes, E> {
                Ok(IpcBytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

fn encode(batch: &RecordBatch) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Result<RecordBatch, String> {
    let mut r = StreamReader::try_new(bytes, None).map_err(|e| e.to_string())?;
    r.next()
        .ok_or("an empty stream")?
        .map_err(|e| e.to_string())
}

fn ipc_echo(bytes: IpcBytes) -> Result<IpcBytes, String> {
    let b = decode(&bytes.0)?;
    encode(&b).map(IpcBytes).map_err(|e| e.to_string())
}

fn check(b: &RecordBatch, rows: usize) -> Result<()> {
    ensure!(
        b.num_rows() == rows && b.num_columns() == 4,
        "the batch came back changed"
    );
    let ids = b
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .context("id column type")?;
    ensure!(ids.value(rows - 1) == rows as i64 - 1, "wrong last id");
    Ok(())
}

/// `arrow.zero_copy`: a sealed `ShmBatch` to a worker that sends it back, ms.
pub fn zero_copy(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let n = rows(scale);
    let shm = ShmBatch::from_batch(&batch(n)?)?;
    repeat(scale, || {
        let arg = shm.clone();
        let t = Instant::now();
        let back = pool.submit(echo, arg)?.result()?;
        let dt = ms_since(t);
        check(back.batch()?, n)?;
        Ok(dt)
    })
}

/// `arrow.ipc_pipe`: the same batch as an IPC stream in bytes over the socket, ms.
pub fn ipc_pipe(scale: &Scale) -> Result<Vec<f64>> {
    let pool = socket_pool()?;
    let n = rows(scale);
    let b = batch(n)?;
    repeat(scale, || {
        let t = Instant::now();
        let bytes = IpcBytes(encode(&b)?);
        let back = pool
            .submit(ipc_echo, bytes)?
            .result()?
            .map_err(|e| anyhow!("worker: {e}"))?;
        let back = decode(&back.0).map_err(|e| anyhow!("decoding the reply: {e}"))?;
        let dt = ms_since(t);
        check(&back, n)?;
        Ok(dt)
    })
}
