//! Hung task: a task that never returns is timed out by the pool's
//! `task_timeout`, its worker killed and replaced, while the other tasks
//! (submitted around it) all succeed and the pool keeps serving.

use super::{procs, Scale, Verdict};
use anyhow::{bail, ensure, Context, Result};
use npshmex_pool::{ProcessPoolExecutor, TaskError};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);

fn hang(_: ()) -> u64 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn square(n: u64) -> u64 {
    n * n
}

/// Runs the scenario.
pub fn run(scale: &Scale) -> Result<Verdict> {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .task_timeout(TIMEOUT)
        .build()
        .context("starting the pool")?;
    let mut replaced = 0;
    for round in 0..scale.hung_rounds {
        let before = pool.worker_pids();
        let mut others = Vec::new();
        for i in 0..10u64 {
            others.push((i, pool.submit(square, i)?));
        }
        let t = Instant::now();
        let hung = pool.submit(hang, ())?;
        for i in 10..30u64 {
            others.push((i, pool.submit(square, i)?));
        }
        match hung.result() {
            Err(TaskError::TimedOut { .. }) => {}
            Err(e) => bail!("round {round}: the hung task ended with {e}, not TimedOut"),
            Ok(v) => bail!("round {round}: the hung task returned {v}"),
        }
        let waited = t.elapsed();
        ensure!(
            waited < TIMEOUT * 15,
            "round {round}: the timeout fired after {waited:?} (limit {TIMEOUT:?})"
        );
        for (i, f) in others {
            let r = f
                .result()
                .with_context(|| format!("round {round}: task {i}"))?;
            ensure!(r == i * i, "round {round}: task {i} returned {r}");
        }
        // The hung worker is gone and the pool is back to full strength.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let gone = before.iter().filter(|p| !procs::alive(**p)).count();
            if gone >= 1 && pool.worker_pids().len() == 2 {
                replaced += gone;
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "round {round}: the hung worker was not replaced"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 0..20u64 {
            ensure!(
                pool.submit(square, i)?.result()? == i * i,
                "after round {round}"
            );
        }
    }
    Ok(Verdict::Pass(format!(
        "{} hung tasks timed out after {TIMEOUT:?}, {replaced} workers replaced, \
         {} other tasks all correct",
        scale.hung_rounds,
        scale.hung_rounds * 50
    )))
}
