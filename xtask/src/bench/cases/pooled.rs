//! The pool paths of the seed workload (`seed.pool_*`, `seed.serde_pipe`);
//! the memory cases (`mem.*`, in `memory.rs`) measure the same calls.
//!
//! Inputs are prepared before the clock starts (a frozen `ShmArray` whose
//! handles are free to duplicate, a writable one moved back and forth); the
//! drop-in path lends the caller's plain array (`ShmArg::from(&x)`, as a
//! user writes it: no clone). What the clock sees is exactly what a caller
//! waits for: submit, the worker's work, the result in hand. Drop of the
//! result happens after the clock stops.

use super::seed::{check, input};
use super::{ms_since, repeat, Scale};
use anyhow::{anyhow, Context, Result};
use ndarray::{Array1, Ix1};
use npshmex_ndarray::{Shm, ShmArg, ShmArray1};
use npshmex_pool::ProcessPoolExecutor;
use std::time::Instant;

/// A pool of `n` workers with the default settings.
pub fn pool(n: usize) -> Result<ProcessPoolExecutor> {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .build()
        .context("starting the pool")
}

/// The largest `inline_max` the pool accepts (128 KiB): encodings up to it
/// travel inline through the worker's control ring.
const INLINE_CAP: usize = 128 << 10;

/// A pool of one worker for the `serde_pipe` baselines: payloads travel as
/// plain serde bytes, inline through the worker's control ring up to
/// 128 KiB (the pool's cap on inline payloads), past that as the same bytes
/// in a sealed memfd. Either way the array is encoded and decoded element
/// by element, as a plain process pool pickles it; only the pipe copies are
/// missing above 128 KiB, which flatters the baseline a little, never the
/// other way.
pub fn socket_pool() -> Result<ProcessPoolExecutor> {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .inline_max(INLINE_CAP)
        .build()
        .context("starting the pool")
}

// --- worker functions ---

/// The drop-in worker as a user writes it: the received array is owned, so
/// `x + 1.0` reuses its buffer for the result.
fn add_one_copy(x: ShmArg<'_, f64, Ix1>) -> Shm<Array1<f64>> {
    Shm(x.into_owned() + 1.0)
}

fn add_one_zero_copy(x: ShmArray1<f64>) -> Result<ShmArray1<f64>, String> {
    x.map(|v| v + 1.0).map_err(|e| e.to_string())
}

fn add_one_in_place(mut x: ShmArray1<f64>) -> Result<ShmArray1<f64>, String> {
    x.view_mut()
        .map_err(|e| e.to_string())?
        .map_inplace(|v| *v += 1.0);
    Ok(x)
}

fn add_one_vec(x: Vec<f64>) -> Vec<f64> {
    x.iter().map(|v| v + 1.0).collect()
}

fn plus_one(n: u64) -> u64 {
    n + 1
}

/// One tiny task, so the worker is up before anything is measured.
pub fn warm(pool: &ProcessPoolExecutor) -> Result<()> {
    let r = pool.submit(plus_one, 1)?.result()?;
    anyhow::ensure!(r == 2, "warm-up task returned {r}");
    Ok(())
}

// --- one call of each path ---

/// One `seed.pool_copy` call lending `x`.
pub fn copy_call(pool: &ProcessPoolExecutor, x: &Array1<f64>) -> Result<Array1<f64>> {
    Ok(pool
        .submit(add_one_copy, ShmArg::from(x))?
        .result()?
        .into_inner())
}

/// One `seed.pool_zero_copy` call with a free handle of the frozen `x`.
pub fn zero_copy_call(pool: &ProcessPoolExecutor, x: &ShmArray1<f64>) -> Result<ShmArray1<f64>> {
    let arg = x.try_clone()?;
    pool.submit(add_one_zero_copy, arg)?
        .result()?
        .map_err(|e| anyhow!("worker: {e}"))
}

/// The frozen (read-only, sealed) seed input in shared memory.
pub fn frozen_input(scale: &Scale) -> Result<ShmArray1<f64>> {
    Ok(ShmArray1::from_elem(scale.seed_len, 1.5)?.into_read_only()?)
}

/// `seed.pool_copy`, ms.
pub fn copy(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let x = input(scale);
    repeat(scale, || {
        let t = Instant::now();
        let y = copy_call(&pool, &x)?;
        let dt = ms_since(t);
        check(y.as_slice().unwrap_or(&[]), 2.5, x.len())?;
        Ok(dt)
    })
}

/// `seed.pool_zero_copy`, ms.
pub fn zero_copy(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let x = frozen_input(scale)?;
    repeat(scale, || {
        let t = Instant::now();
        let y = zero_copy_call(&pool, &x)?;
        let dt = ms_since(t);
        check(y.view().as_slice().unwrap_or(&[]), 2.5, x.len())?;
        Ok(dt)
    })
}

/// `seed.pool_in_place`: the worker adds one in place and hands the array back, ms.
pub fn in_place(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let mut x = Some(ShmArray1::from_elem(scale.seed_len, 1.5)?);
    let mut expected = 1.5;
    repeat(scale, || {
        let arg = x.take().context("the array was lost in a failed run")?;
        let t = Instant::now();
        let y = pool
            .submit(add_one_in_place, arg)?
            .result()?
            .map_err(|e| anyhow!("worker: {e}"))?;
        let dt = ms_since(t);
        expected += 1.0;
        check(y.view().as_slice().unwrap_or(&[]), expected, scale.seed_len)?;
        x = Some(y);
        Ok(dt)
    })
}

/// `seed.serde_pipe`: `Vec<f64>` as serde bytes through the worker socket, ms.
pub fn serde_pipe(scale: &Scale) -> Result<Vec<f64>> {
    let pool = socket_pool()?;
    let x = vec![1.5f64; scale.seed_len];
    repeat(scale, || {
        let arg = x.clone();
        let t = Instant::now();
        let y = pool.submit(add_one_vec, arg)?.result()?;
        let dt = ms_since(t);
        check(&y, 2.5, scale.seed_len)?;
        Ok(dt)
    })
}
