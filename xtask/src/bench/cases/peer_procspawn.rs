//! The Rust peer: procspawn's `Pool`, with the seed passed as a `Vec<f64>`
//! by value (serialized through its ipc-channel) and the tiny tasks.

use super::seed::check;
use super::{ms_since, repeat, Scale};
use anyhow::{anyhow, Result};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::time::Instant;

fn add_one(v: Vec<f64>) -> Vec<f64> {
    v.iter().map(|a| a + 1.0).collect()
}

fn plus_one(n: u64) -> u64 {
    n + 1
}

fn pool(size: usize) -> Result<procspawn::Pool> {
    procspawn::Pool::new(size).map_err(|e| anyhow!("procspawn pool: {e}"))
}

/// `seed.rs_procspawn`, ms per call (the input clone is made before the clock starts).
pub fn seed(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let x = vec![1.5f64; scale.seed_len];
    let out = repeat(scale, || {
        let arg = x.clone();
        let t = Instant::now();
        let y = pool
            .spawn(arg, add_one)
            .join()
            .map_err(|e| anyhow!("procspawn task: {e}"))?;
        let dt = ms_since(t);
        check(&y, 2.5, scale.seed_len)?;
        Ok(dt)
    });
    pool.shutdown();
    out
}

/// `rs_procspawn.tiny_roundtrip`: one `fn(u64) -> u64` at a time, µs per task.
pub fn tiny_roundtrip(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let n = scale.roundtrips;
    let out = repeat(scale, || {
        let t = Instant::now();
        for i in 0..n as u64 {
            let r = pool
                .spawn(i, plus_one)
                .join()
                .map_err(|e| anyhow!("procspawn task: {e}"))?;
            anyhow::ensure!(r == i + 1, "wrong result {r} for {i}");
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
    });
    pool.shutdown();
    out
}

/// Raises the soft limit of open files to the hard limit and returns it:
/// every pending procspawn task holds two ipc-channels (four fds or more).
fn raise_fd_limit() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    // If raising fails, what is in force is the old soft limit.
    let now = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => raised,
        Err(_) => lim,
    };
    // `None` is "unlimited".
    now.current.unwrap_or(u64::MAX)
}

/// `rs_procspawn.tiny_throughput`: tasks submitted at once to a pool of
/// `cores` processes, tasks per second. As many as the fd limit allows (each
/// pending procspawn task holds its channels' fds), at most `peer_tasks`.
pub fn tiny_throughput(scale: &Scale) -> Result<Vec<f64>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fds = raise_fd_limit();
    let pool = pool(cores)?;
    let by_fds = usize::try_from(fds.saturating_sub(512) / 8).unwrap_or(usize::MAX);
    let n = scale.peer_tasks.min(by_fds).max(1);
    let out = repeat(scale, || {
        let t = Instant::now();
        let handles: Vec<_> = (0..n as u64).map(|i| pool.spawn(i, plus_one)).collect();
        for (i, h) in handles.into_iter().enumerate() {
            let r = h.join().map_err(|e| anyhow!("procspawn task: {e}"))?;
            anyhow::ensure!(r == i as u64 + 1, "wrong result {r} for {i}");
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    });
    pool.shutdown();
    out
}
