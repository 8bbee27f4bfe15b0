//! Scaling: `workers.<n>` (64 tasks of 8 MiB with 1 and 2 workers) and
//! `big.4gib` (one 4.5 GiB array through a worker and back, zero-copy: the
//! sizes past 2 GiB and 4 GiB that 32-bit lengths would break).

use super::pooled::pool;
use super::{ms_since, repeat, Scale};
use anyhow::{anyhow, ensure, Context, Result};
use npshmex_ndarray::ShmArray1;
use std::time::Instant;

/// Elements of one `workers.<n>` task: 8 MiB of f64.
const TASK_LEN: usize = (8 << 20) / 8;
/// Tasks of one `workers.<n>` sample.
const TASKS: usize = 64;
/// Bytes of `big.4gib`: 4.5 GiB.
const BIG: usize = (9 << 30) / 2;

fn add_one(x: ShmArray1<f64>) -> Result<ShmArray1<f64>, String> {
    x.map(|v| v + 1.0).map_err(|e| e.to_string())
}

fn touch_ends(mut x: ShmArray1<u8>) -> Result<ShmArray1<u8>, String> {
    let mut v = x.view_mut().map_err(|e| e.to_string())?;
    let n = v.len();
    if n == 0 {
        return Err("empty array".into());
    }
    v[0] = v[0].wrapping_add(1);
    v[n - 1] = v[n - 1].wrapping_add(2);
    v[n / 2] = 7;
    Ok(x)
}

/// `workers.<n>`: 64 tasks of 8 MiB (`x + 1` into a new shm array) on `n` workers, ms.
pub fn workers(n: usize, scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(n)?;
    let x = ShmArray1::from_elem(TASK_LEN, 1.5)?.into_read_only()?;
    repeat(scale, || {
        let args = (0..TASKS)
            .map(|_| x.try_clone())
            .collect::<Result<Vec<_>, _>>()?;
        let t = Instant::now();
        let futures = args
            .into_iter()
            .map(|a| pool.submit(add_one, a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut results = Vec::with_capacity(TASKS);
        for f in futures {
            results.push(f.result()?.map_err(|e| anyhow!("worker: {e}"))?);
        }
        let dt = ms_since(t);
        for r in &results {
            ensure!(r.view().iter().all(|v| *v == 2.5), "wrong result");
        }
        Ok(dt)
    })
}

/// `big.4gib`: a 4.5 GiB `u8` array moved to a worker that writes both ends
/// and back, ms (the allocation happens before the clock starts).
pub fn big(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let mut x = Some(ShmArray1::<u8>::zeros(BIG).context("allocating 4.5 GiB in shm")?);
    let mut round = 0u8;
    repeat(scale, || {
        let arg = x.take().context("the array was lost in a failed run")?;
        let t = Instant::now();
        let y = pool
            .submit(touch_ends, arg)?
            .result()?
            .map_err(|e| anyhow!("worker: {e}"))?;
        let dt = ms_since(t);
        round = round.wrapping_add(1);
        let v = y.view();
        ensure!(v.len() == BIG, "length {} came back", v.len());
        ensure!(
            v[0] == round && v[BIG - 1] == round.wrapping_mul(2) && v[BIG / 2] == 7,
            "the worker's writes are not visible"
        );
        x = Some(y);
        Ok(dt)
    })
}
