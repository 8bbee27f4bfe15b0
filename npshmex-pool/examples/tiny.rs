//! Task overhead, printed as the bench's case names:
//! - `tiny.roundtrip`: one tiny task submitted and awaited at a time, one
//!   worker, µs per task (default settings: bounded spin before blocking);
//! - `tiny.roundtrip_blocking`: the same with spinning off (`spin(0)`), the
//!   plain socket path, for comparison;
//! - `tiny.throughput`: 100,000 tiny tasks submitted at once, one worker
//!   per core, tasks per second;
//! - `tiny.map_chunked`: the same through `map` with chunksize 256.
//!
//! `cargo run --release -p npshmex-pool --example tiny [-- --quick]`

use std::time::{Duration, Instant};

use npshmex_pool::{MapOptions, ProcessPoolExecutor};

fn tiny(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(1)
}

/// µs per sequential submit + result.
fn roundtrip(spin: Option<Duration>, rounds: u64) -> anyhow::Result<f64> {
    let mut b = ProcessPoolExecutor::builder().max_workers(1);
    if let Some(s) = spin {
        b = b.spin(s);
    }
    let pool = b.build()?;
    for i in 0..1_000 {
        pool.submit(tiny, i)?.result()?;
    }
    let t = Instant::now();
    for i in 0..rounds {
        let r = pool.submit(tiny, i)?.result()?;
        anyhow::ensure!(r == tiny(i), "wrong result");
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / rounds as f64)
}

fn main() -> anyhow::Result<()> {
    npshmex_pool::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, total) = if quick {
        (2_000, 10_000)
    } else {
        (20_000, 100_000)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!("tiny.roundtrip: {:.2} µs/task", roundtrip(None, rounds)?);
    println!(
        "tiny.roundtrip_blocking: {:.2} µs/task",
        roundtrip(Some(Duration::ZERO), rounds)?
    );

    let pool = ProcessPoolExecutor::builder().max_workers(cores).build()?;
    for i in 0..1_000 {
        pool.submit(tiny, i)?.result()?;
    }
    let t = Instant::now();
    let futs = (0..total)
        .map(|i| pool.submit(tiny, i))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, f) in futs.into_iter().enumerate() {
        anyhow::ensure!(f.result()? == tiny(i as u64), "wrong result");
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    println!("tiny.throughput: {rate:.0} tasks/s");

    let t = Instant::now();
    let opts = MapOptions {
        chunksize: 256,
        ..MapOptions::default()
    };
    let mut n = 0u64;
    for (i, r) in pool.map(tiny, 0..total, opts)?.enumerate() {
        anyhow::ensure!(r? == tiny(i as u64), "wrong result");
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!("tiny.map_chunked: {rate:.0} tasks/s");
    Ok(())
}
