//! Task overhead: `fn(u64) -> u64` one at a time (latency), 100,000 at once
//! (throughput), and through `map` with `chunksize` 256.

use super::{repeat, Scale};
use anyhow::{ensure, Context, Result};
use npshmex_pool::{MapOptions, ProcessPoolExecutor};
use std::time::Instant;

fn plus_one(n: u64) -> u64 {
    n + 1
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `tiny.roundtrip`: µs per task, 1 worker, each awaited before the next.
pub fn roundtrip(scale: &Scale) -> Result<Vec<f64>> {
    let pool = ProcessPoolExecutor::new(1).context("starting the pool")?;
    let n = scale.roundtrips * 10;
    repeat(scale, || {
        let t = Instant::now();
        for i in 0..n as u64 {
            let r = pool.submit(plus_one, i)?.result()?;
            ensure!(r == i + 1, "wrong result {r} for {i}");
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
    })
}

/// `tiny.throughput`: tasks per second, all submitted at once, `cores` workers.
pub fn throughput(scale: &Scale) -> Result<Vec<f64>> {
    let pool = ProcessPoolExecutor::new(cores()).context("starting the pool")?;
    let n = scale.tiny_tasks;
    repeat(scale, || {
        let t = Instant::now();
        let futures = (0..n as u64)
            .map(|i| pool.submit(plus_one, i))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, f) in futures.into_iter().enumerate() {
            let r = f.result()?;
            ensure!(r == i as u64 + 1, "wrong result {r} for {i}");
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    })
}

/// `tiny.map_chunked`: tasks per second through `map` with chunks of 256.
pub fn map_chunked(scale: &Scale) -> Result<Vec<f64>> {
    let pool = ProcessPoolExecutor::new(cores()).context("starting the pool")?;
    let n = scale.tiny_tasks;
    repeat(scale, || {
        let t = Instant::now();
        let opts = MapOptions {
            chunksize: 256,
            ..MapOptions::default()
        };
        let mut count = 0u64;
        for (i, r) in pool.map(plus_one, 0..n as u64, opts)?.enumerate() {
            let r = r?;
            ensure!(r == i as u64 + 1, "wrong result {r} for {i}");
            count += 1;
        }
        ensure!(count == n as u64, "map returned {count} of {n} results");
        Ok(n as f64 / t.elapsed().as_secs_f64())
    })
}
