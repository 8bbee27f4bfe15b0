//! The `mpi.*` cases: the seed and tiny round trips across MPI ranks, one
//! worker rank, TCP forced (`--mca btl tcp,self`, over loopback), through npshmex-mpi
//! (its example `seed_mpi`, built by the bench parent) and through Python's
//! `mpi4py.futures` on the same OpenMPI (`xtask/py/bench_mpi4py.py`).
//!
//! Both programs run their own rounds (one warm-up, then the timed ones)
//! inside one `mpiexec` job and print one `seed_ms` / `tiny_us` line per
//! timed round; a job per sample would time MPI's start-up instead.

use super::Scale;
use crate::{mpi, util};
use anyhow::{ensure, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The variable through which the bench parent names the virtualenv's
/// python that has mpi4py.
pub const PYTHON_ENV: &str = "NPSHMEX_BENCH_MPI4PY_PYTHON";

/// `mpiexec` with TCP as the only byte transport, over loopback (one
/// machine; no other address is ever used).
fn tcp_job(ranks: u32) -> Command {
    let mut c = mpi::mpiexec();
    c.args(npshmex_testkit::mpi::TCP_ONLY_ARGS)
        .args(npshmex_testkit::mpi::LOOPBACK_ARGS)
        .args(["-n", &ranks.to_string()]);
    c
}

fn samples(stdout: &str, key: &str, runs: usize) -> Result<Vec<f64>> {
    let v: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .collect();
    ensure!(
        v.len() == runs,
        "expected {runs} `{key}` lines, got {}:\n{stdout}",
        v.len()
    );
    Ok(v)
}

/// Round trips per `tiny_us` sample.
fn tiny_tasks(scale: &Scale) -> usize {
    scale.roundtrips
}

fn example() -> Result<PathBuf> {
    let exe = crate::mpi::seed_example_path();
    ensure!(
        exe.exists(),
        "{} is not built (the bench parent builds it)",
        exe.display()
    );
    Ok(exe)
}

fn run_example(scale: &Scale, key: &str) -> Result<Vec<f64>> {
    let exe = example()?;
    let mut cmd = tcp_job(2);
    cmd.arg(&exe)
        .arg(scale.seed_len.to_string())
        .arg(scale.runs.to_string())
        .arg(tiny_tasks(scale).to_string());
    let out = mpi::run_job(&mut cmd, &exe, Duration::from_secs(500))?;
    ensure!(
        out.stdout.contains("all results checked"),
        "seed_mpi did not check its results:\n{}",
        out.stdout
    );
    samples(&out.stdout, key, scale.runs)
}

/// `mpi.seed`: x + 1 over the seed array on a worker rank, ms.
pub fn seed(scale: &Scale) -> Result<Vec<f64>> {
    run_example(scale, "seed_ms")
}

/// `mpi.tiny_roundtrip`: `fn(u64) -> u64`, one at a time, µs.
pub fn tiny(scale: &Scale) -> Result<Vec<f64>> {
    run_example(scale, "tiny_us")
}

fn run_mpi4py(scale: &Scale, what: &str, size: usize, key: &str) -> Result<Vec<f64>> {
    let python = PathBuf::from(
        std::env::var_os(PYTHON_ENV)
            .with_context(|| format!("{PYTHON_ENV} is not set (the bench parent sets it)"))?,
    );
    let script = util::workspace_root().join("xtask/py/bench_mpi4py.py");
    let mut cmd = tcp_job(2);
    cmd.arg(&python)
        .args(["-m", "mpi4py.futures"])
        .arg(&script)
        .arg(what)
        .arg(size.to_string())
        .arg(scale.runs.to_string())
        .env_remove("PYTHONPATH");
    let out = mpi::run_job(&mut cmd, &script, Duration::from_secs(500))?;
    samples(&out.stdout, key, scale.runs)
}

/// `mpi.py_mpi4py_seed`, ms.
pub fn py_seed(scale: &Scale) -> Result<Vec<f64>> {
    run_mpi4py(scale, "seed", scale.seed_len, "seed_ms")
}

/// `mpi.py_mpi4py_tiny`, µs.
pub fn py_tiny(scale: &Scale) -> Result<Vec<f64>> {
    run_mpi4py(scale, "tiny", tiny_tasks(scale), "tiny_us")
}
