//! The Rust `mem.*` cases: one call, in a process that the bench parent
//! started inside a fresh memory cgroup of its own (see
//! [`crate::bench::cgroup`]), so its workers and the shared memory any of
//! them touch are charged there. The figure is
//! (peak during the call − usage just before it) / array size.
//!
//! The process does its setup (pool, input, a tiny task so the worker is up)
//! before the "before" reading; nothing of a previous call is alive or
//! cached, so what the call allocates is what the figure shows. One call
//! per process: a second call in the same process would find the first
//! one's segments cached and measure only what is not reused.

use super::pooled::{self, pool};
use super::seed::{check, input};
use super::Scale;
use crate::bench::cgroup::{wait_for_go, Meter};
use anyhow::{ensure, Result};
use std::path::Path;

/// Runs `call` between the meter's readings; returns its value and the
/// peak added, in multiples of `bytes`.
fn peak_of<T>(
    meter: &mut Meter,
    bytes: usize,
    call: impl FnOnce() -> Result<T>,
) -> Result<(T, f64)> {
    let before = meter.start()?;
    let out = call()?;
    let peak = meter.peak()?;
    // The call allocates at least its result: a peak at or below the
    // usage before means the charges went to another group.
    ensure!(
        peak > before,
        "the cgroup saw nothing added (peak {peak} B, before {before} B): charges went elsewhere"
    );
    Ok((out, (peak - before) as f64 / bytes as f64))
}

/// `mem.copy_peak`: one `seed.pool_copy` call in the cgroup `dir`.
pub fn copy_peak(scale: &Scale, dir: &Path) -> Result<f64> {
    wait_for_go()?;
    let mut meter = Meter::open(dir)?;
    let pool = pool(1)?;
    pooled::warm(&pool)?;
    let x = input(scale);
    let (y, added) = peak_of(&mut meter, scale.seed_bytes(), || {
        pooled::copy_call(&pool, &x)
    })?;
    check(y.as_slice().unwrap_or(&[]), 2.5, scale.seed_len)?;
    Ok(added)
}

/// `mem.zero_copy_peak`: one `seed.pool_zero_copy` call in the cgroup `dir`,
/// the input already in shm (and charged) before the call.
pub fn zero_copy_peak(scale: &Scale, dir: &Path) -> Result<f64> {
    wait_for_go()?;
    let mut meter = Meter::open(dir)?;
    let pool = pool(1)?;
    pooled::warm(&pool)?;
    let x = pooled::frozen_input(scale)?;
    let (y, added) = peak_of(&mut meter, scale.seed_bytes(), || {
        pooled::zero_copy_call(&pool, &x)
    })?;
    check(y.view().as_slice().unwrap_or(&[]), 2.5, scale.seed_len)?;
    Ok(added)
}
