//! Workers killed under load: thousands of tasks carrying arrays (a moved
//! `ShmArray` in, a new one out) while a killer thread `kill -9`s a random
//! worker about once every 20 completed tasks (5%), at a random moment.
//! Every future must resolve, to the right value or `WorkerDied`; the pool
//! must serve afterwards; fds and memory must stay flat.

use super::procs;
use super::{Scale, Verdict};
use anyhow::{anyhow, bail, ensure, Context, Result};
use npshmex_ndarray::ShmArray1;
use npshmex_pool::{Future, ProcessPoolExecutor, TaskError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Tasks in flight at once (bounds the shared memory in use).
const WINDOW: usize = 48;
/// Longest any single future may take to resolve before it counts as a hang.
const HANG: Duration = Duration::from_secs(60);

type Out = Result<ShmArray1<f64>, String>;

fn scaled(x: ShmArray1<f64>) -> Out {
    let first = *x.view().first().ok_or("empty array")?;
    x.map(|v| v * 3.0 + first).map_err(|e| e.to_string())
}

/// What a task must return: every element `3 i + i` for the argument filled with `i`.
fn check(i: usize, n: usize, y: &ShmArray1<f64>) -> Result<()> {
    let want = 4.0 * i as f64;
    let v = y.view();
    ensure!(
        v.len() == n && v.first() == Some(&want) && v.last() == Some(&want),
        "task {i}: wrong result (len {}, first {:?}, want {want})",
        v.len(),
        v.first()
    );
    Ok(())
}

/// Runs the scenario.
pub fn run(scale: &Scale) -> Result<Verdict> {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .context("starting the pool")?;
    // Warm up (segment caches, lazily opened fds), then take the baseline.
    serve_check(&pool, 50).context("warm-up")?;
    // The segment cache keeps fds on purpose (bounded by its limits): it
    // is emptied before each count so that only leaks remain.
    npshmex_shm::cache::clear();
    let fds_before = procs::fd_count()?;
    let rss_before = procs::rss_bytes()?;

    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    let mut rng = StdRng::seed_from_u64(scale.seed ^ 0x5eed);
    let killer_seed: u64 = rng.gen();
    let (ok, died) = std::thread::scope(|s| {
        s.spawn(|| killer(&pool, &done, &stop, &kills, killer_seed));
        let r = load(&pool, scale.load_tasks, &mut rng, &done);
        stop.store(true, Ordering::SeqCst);
        r
    })?;
    let kills = kills.load(Ordering::SeqCst);

    // The last kill may have landed as the load ended: let the pool notice
    // and replace that worker before asking it to serve flawlessly.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pool.worker_pids().iter().any(|p| !procs::alive(*p)) || pool.worker_pids().len() < 2 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the pool did not replace its killed workers within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    serve_check(&pool, 200).context("the pool after the kills")?;
    npshmex_shm::cache::clear();
    let fds_after = procs::fd_count()?;
    let rss_after = procs::rss_bytes()?;
    ensure!(
        fds_after <= fds_before + 4,
        "fd count grew from {fds_before} to {fds_after}"
    );
    let grown = rss_after.saturating_sub(rss_before);
    ensure!(
        grown < 128 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    ensure!(kills > 0, "the killer never found a worker to kill");
    Ok(Verdict::Pass(format!(
        "{} tasks, {kills} workers killed: {ok} correct results, {died} WorkerDied, 0 wrong or lost; \
         fds {fds_before}->{fds_after}, RSS +{} MiB; the pool served 200 more",
        scale.load_tasks,
        grown >> 20
    )))
}

/// Submits `tasks` tasks with a bounded window; returns (correct, died).
fn load(
    pool: &ProcessPoolExecutor,
    tasks: usize,
    rng: &mut StdRng,
    done: &AtomicUsize,
) -> Result<(usize, usize)> {
    let mut inflight: VecDeque<(usize, usize, Future<Out>)> = VecDeque::new();
    let (mut ok, mut died) = (0, 0);
    let mut next = 0;
    while next < tasks || !inflight.is_empty() {
        while next < tasks && inflight.len() < WINDOW {
            let n = rng.gen_range(1..100_000);
            let x = ShmArray1::from_elem(n, next as f64)?;
            inflight.push_back((next, n, pool.submit(scaled, x)?));
            next += 1;
        }
        let Some((i, n, mut f)) = inflight.pop_front() else {
            break;
        };
        match f.result_timeout(HANG) {
            Ok(Ok(y)) => {
                check(i, n, &y)?;
                ok += 1;
            }
            Ok(Err(e)) => bail!("task {i}: the worker function failed: {e}"),
            Err(TaskError::WorkerDied { .. }) => died += 1,
            Err(TaskError::WaitTimedOut { .. }) => {
                bail!("task {i}: no result within {HANG:?} (hang)")
            }
            Err(e) => bail!("task {i}: unexpected error {e}"),
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    Ok((ok, died))
}

/// Kills a random worker about every 20 completed tasks, after a random delay.
fn killer(
    pool: &ProcessPoolExecutor,
    done: &AtomicUsize,
    stop: &AtomicBool,
    kills: &AtomicUsize,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_at = rng.gen_range(10..30);
    while !stop.load(Ordering::SeqCst) {
        if done.load(Ordering::SeqCst) >= next_at {
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let pids = pool.worker_pids();
            if !pids.is_empty() {
                procs::kill9(pids[rng.gen_range(0..pids.len())]);
                kills.fetch_add(1, Ordering::SeqCst);
            }
            next_at += rng.gen_range(10..30);
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// `n` tasks, all of which must succeed.
fn serve_check(pool: &ProcessPoolExecutor, n: usize) -> Result<()> {
    let futures = (0..n)
        .map(|i| {
            Ok((
                i,
                pool.submit(scaled, ShmArray1::from_elem(1000, i as f64)?)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    for (i, f) in futures {
        let y = f.result()?.map_err(|e| anyhow!("task {i}: {e}"))?;
        check(i, 1000, &y)?;
    }
    Ok(())
}
