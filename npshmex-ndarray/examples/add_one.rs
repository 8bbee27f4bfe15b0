//! The seed workload: `x + 1` over 2·10^7 f64 (160 MB) with one worker,
//! five ways, each the median of 5 runs after a warm-up, with its ratio to
//! the matching bare figure; every result is checked.
//!
//! ```text
//! cargo run --release -p npshmex-ndarray --example add_one [-- N]
//! ```
//!
//! - `bare`: in this process, a new array `&x + 1.0`;
//! - `bare_in_place`: in this process, `x += 1.0`;
//! - `pool_copy`: the drop-in path, a plain `Array1` lent to a worker that
//!   returns `x + 1` as a plain `Array1` (one copy in, one copy out, as the
//!   Python npshmex does);
//! - `pool_zero_copy`: `x` already lives in shared memory (read-only), the
//!   worker allocates its result in shared memory, nothing is copied;
//! - `pool_in_place`: the worker adds one in place to the shared array it
//!   is given (moved to it) and hands it back.

use anyhow::{bail, Context, Result};
use ndarray::{Array1, Ix1};
use npshmex_ndarray::{Shm, ShmArg, ShmArray1};
use npshmex_pool::ProcessPoolExecutor;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn add_one_copy(x: ShmArg<'_, f64, Ix1>) -> Shm<Array1<f64>> {
    Shm(x.into_owned() + 1.0)
}

fn add_one_zero_copy(x: ShmArray1<f64>) -> Result<ShmArray1<f64>, String> {
    x.map(|v| v + 1.0).map_err(|e| e.to_string())
}

fn add_one_in_place(mut x: ShmArray1<f64>) -> Result<ShmArray1<f64>, String> {
    let mut v = x.view_mut().map_err(|e| e.to_string())?;
    v += 1.0;
    Ok(x)
}

/// Runs `f` once to warm up and `RUNS` times more; `f` returns the time of
/// the part it measures. Returns the median, min and max in ms.
fn measure(mut f: impl FnMut() -> Result<Duration>) -> Result<[f64; 3]> {
    f()?;
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| f().map(|d| d.as_secs_f64() * 1e3))
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok([t[RUNS / 2], t[0], t[RUNS - 1]])
}

fn check_plus(y: ndarray::ArrayView1<'_, f64>, k: f64) -> Result<()> {
    if let Some((i, &v)) = y.iter().enumerate().find(|&(i, &v)| v != i as f64 + k) {
        bail!("element {i} is {v}, expected {}", i as f64 + k);
    }
    Ok(())
}

fn main() -> Result<()> {
    npshmex_pool::init();
    let n: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().context("N must be a number of elements")?,
        None => 20_000_000,
    };
    let pool = ProcessPoolExecutor::builder().max_workers(1).build()?;
    println!(
        "x + 1 over {n} f64 ({} MB), 1 worker, median of {RUNS} after a warm-up",
        n * 8 / 1_000_000
    );
    let x = Array1::from_shape_fn(n, |i| i as f64);

    let bare = measure(|| {
        let t = Instant::now();
        let y = &x + 1.0;
        let d = t.elapsed();
        check_plus(y.view(), 1.0)?;
        Ok(d)
    })?;

    let mut xm = x.clone();
    let mut added = 0.0;
    let bare_in_place = measure(|| {
        let t = Instant::now();
        xm += 1.0;
        let d = t.elapsed();
        added += 1.0;
        Ok(d)
    })?;
    check_plus(xm.view(), added)?;
    drop(xm);

    let pool_copy = measure(|| {
        let t = Instant::now();
        let y = pool.submit(add_one_copy, ShmArg::from(&x))?.result()?.0;
        let d = t.elapsed();
        check_plus(y.view(), 1.0)?;
        Ok(d)
    })?;

    let xs = ShmArray1::from_array(&x)?.into_read_only()?;
    let pool_zero_copy = measure(|| {
        let arg = xs.try_clone()?;
        let t = Instant::now();
        let y = pool
            .submit(add_one_zero_copy, arg)?
            .result()?
            .map_err(anyhow::Error::msg)?;
        let d = t.elapsed();
        check_plus(y.view(), 1.0)?;
        Ok(d)
    })?;
    drop(xs);

    let mut slot = Some(ShmArray1::from_array(&x)?);
    let mut added = 0.0;
    let pool_in_place = measure(|| {
        let arg = slot.take().context("array lost by a failed run")?;
        let t = Instant::now();
        let y = pool
            .submit(add_one_in_place, arg)?
            .result()?
            .map_err(anyhow::Error::msg)?;
        let d = t.elapsed();
        added += 1.0;
        slot = Some(y);
        Ok(d)
    })?;
    let xm = slot.context("array lost")?;
    check_plus(xm.view(), added)?;

    let rows = [
        ("bare", bare, None),
        ("bare_in_place", bare_in_place, None),
        ("pool_copy", pool_copy, Some(("bare", bare[0]))),
        ("pool_zero_copy", pool_zero_copy, Some(("bare", bare[0]))),
        (
            "pool_in_place",
            pool_in_place,
            Some(("bare_in_place", bare_in_place[0])),
        ),
    ];
    println!(
        "{:<16} {:>10} {:>10} {:>10}   ratio",
        "case", "median ms", "min", "max"
    );
    for (name, [med, min, max], base) in rows {
        let ratio = match base {
            Some((b, v)) => format!("{:.2} x {b}", med / v),
            None => String::new(),
        };
        println!("seed.{name:<11} {med:>10.1} {min:>10.1} {max:>10.1}   {ratio}");
    }
    println!("all results checked");
    Ok(())
}
