//! The seed workload across MPI ranks: `x + 1` over 2·10^7 f64 (160 MB) in
//! shared memory, moved to a worker rank (a raw MPI message from the
//! segment's pages), the result allocated there in shared memory and sent
//! back, every element checked; then tiny `fn(u64) -> u64` round trips.
//!
//! ```text
//! mpiexec -n 2 target/release/examples/seed_mpi [LEN] [ROUNDS] [TINY]
//! cargo xtask mpi -n 2
//! ```
//! LEN f64 (default 2·10^7), ROUNDS timed rounds after a warm-up (default
//! 5), TINY round trips per `tiny_us` figure (default 2000). Prints one
//! `seed_ms` and `tiny_us` line per round (what `cargo xtask bench` reads),
//! where each result was computed, and `all results checked` last.

use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use npshmex_mpi::MpiPoolExecutor;
use npshmex_ndarray::ShmArray1;
use serde::{Deserialize, Serialize};

/// Where a task ran.
#[derive(Debug, Serialize, Deserialize)]
struct Place {
    pid: u32,
    host: String,
    /// The network namespace (tells two "hosts" of one machine apart).
    netns: String,
}

impl Place {
    fn here() -> Place {
        Place {
            pid: std::process::id(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            netns: std::fs::read_link("/proc/self/ns/net")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }
}

fn add_one(x: ShmArray1<f64>) -> Result<(Place, ShmArray1<f64>), String> {
    let y = x.map(|v| v + 1.0).map_err(|e| e.to_string())?;
    Ok((Place::here(), y))
}

fn plus_one(n: u64) -> u64 {
    n + 1
}

fn main() -> Result<()> {
    let mpi = npshmex_mpi::init()?;
    let mut args = std::env::args().skip(1);
    let len: usize = match args.next() {
        Some(a) => a
            .parse()
            .with_context(|| format!("LEN: not a number: {a}"))?,
        None => 20_000_000,
    };
    let rounds: usize = match args.next() {
        Some(a) => a
            .parse()
            .with_context(|| format!("ROUNDS: not a number: {a}"))?,
        None => 5,
    };
    let tiny: u64 = match args.next() {
        Some(a) => a
            .parse()
            .with_context(|| format!("TINY: not a number: {a}"))?,
        None => 2_000,
    };
    let pool = MpiPoolExecutor::new(&mpi)?;
    let me = Place::here();
    println!("rank 0: pid {} on {} ({})", me.pid, me.host, me.netns);
    for w in pool.workers() {
        println!("worker rank {}: pid {} on {}", w.rank, w.pid, w.host);
    }
    println!("build: {}", mpi.build_id());

    for round in 0..=rounds {
        // A writable array in shared memory, moved to the worker: sent
        // from its pages, received into a segment there (reused from the
        // worker's cache after the first round), the result allocated by
        // the worker in shared memory and moved back. Made before the
        // clock starts, as a caller's data already lives in shm.
        let arg = ShmArray1::from_elem(len, 1.5)?;
        let t = Instant::now();
        let (place, y) = pool
            .submit(add_one, arg)?
            .result()?
            .map_err(|e| anyhow!("worker: {e}"))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let view = y.view();
        ensure!(
            view.len() == len,
            "result has {} elements, not {len}",
            view.len()
        );
        if let Some(bad) = view.iter().position(|&v| v != 2.5) {
            return Err(anyhow!("result[{bad}] = {}, not 2.5", view[bad]));
        }
        // Round 0 warms the segment caches on both sides.
        if round > 0 {
            println!("seed_ms {ms:.3}");
        }
        if round == rounds {
            println!(
                "x + 1 over {} MB ran on pid {} on {} ({}){}",
                len * 8 / 1_000_000,
                place.pid,
                place.host,
                place.netns,
                if place.netns != me.netns {
                    ", another network namespace"
                } else {
                    ""
                }
            );
        }
    }

    for round in 0..=rounds {
        let n = tiny.max(1);
        let t = Instant::now();
        for i in 0..n {
            let r = pool.submit(plus_one, i)?.result()?;
            ensure!(r == i + 1, "plus_one({i}) = {r}");
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        if round > 0 {
            println!("tiny_us {us:.2}");
        }
    }
    let mapped: Result<Vec<u64>, _> = pool
        .map(plus_one, 0..1000u64, Default::default())?
        .collect();
    ensure!(
        mapped?.iter().enumerate().all(|(i, &r)| r == i as u64 + 1),
        "map returned wrong values"
    );
    drop(pool);
    println!("all results checked");
    Ok(())
}
