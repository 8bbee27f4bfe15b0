//! The child programs of the chaos scenarios, run as
//! `xtask chaos-child ROLE`: this same binary, so that its pool workers
//! re-execute a program whose `main` starts with `npshmex_pool::init()`.
//!
//! - `submitter`: starts a pool of two workers, prints `ready`, then submits
//!   large arrays (moved `ShmArray`s and plain arrays through the copy path)
//!   and puts and removes named keys, forever, until it is killed.
//! - `holder`: puts one named key, prints its name, and keeps it until its
//!   standard input closes (a live program whose key nobody may clear).

use anyhow::{bail, Context, Result};
use ndarray::Array1;
use npshmex_ndarray::{Shm, ShmArray1};
use npshmex_pool::ProcessPoolExecutor;
use std::io::{Read, Write};

/// Runs a child role.
pub fn run(role: &str) -> Result<()> {
    match role {
        "submitter" => submitter(),
        "holder" => holder(),
        other => bail!("chaos-child: unknown role {other:?}"),
    }
}

fn doubled(x: ShmArray1<f64>) -> Result<ShmArray1<f64>, String> {
    x.map(|v| v * 2.0).map_err(|e| e.to_string())
}

fn plus_one(x: Shm<Array1<f64>>) -> Shm<Array1<f64>> {
    Shm(&x.0 + 1.0)
}

fn submitter() -> Result<()> {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .context("starting the pool")?;
    println!("ready {:?}", pool.worker_pids());
    std::io::stdout().flush()?;
    let mut keys = Vec::new();
    for i in 0u64.. {
        let n = 1_000_000 + (i as usize % 7) * 1_000_000; // 8 to 56 MB
        let a = ShmArray1::from_elem(n, i as f64)?;
        let b = Array1::from_elem(n / 4, i as f64);
        let fa = pool.submit(doubled, a)?;
        let fb = pool.submit(plus_one, Shm(b))?;
        let key = npshmex_shm::NamedSegment::create_unique(1 << 20)?;
        keys.push(key.name().to_owned());
        drop(key);
        let ra = fa.result()?.map_err(|e| anyhow::anyhow!("worker: {e}"))?;
        let rb = fb.result()?;
        if ra.view()[n - 1] != 2.0 * i as f64 || rb[0] != i as f64 + 1.0 {
            bail!("wrong result in round {i}");
        }
        if keys.len() > 4 {
            let name = keys.remove(0);
            npshmex_shm::remove(&name)?;
        }
    }
    Ok(())
}

fn holder() -> Result<()> {
    let seg = npshmex_shm::NamedSegment::create_unique(4096)?;
    let name = seg.name().to_owned();
    println!("{name}");
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(seg);
    npshmex_shm::remove(&name)?;
    Ok(())
}
