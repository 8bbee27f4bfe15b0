//! `sweep.<bytes>.<path>`: the round trip of one f64 array of a given size
//! through a worker that returns it unchanged, by each transfer path, µs.
//! The worker does no work, so the figure is the transfer alone.

use super::pooled::{pool, socket_pool};
use super::{repeat, Scale};
use anyhow::{bail, ensure, Context, Result};
use ndarray::{Array1, Ix1};
use npshmex_ndarray::{Shm, ShmArg, ShmArray1};
use std::time::Instant;

fn echo<T>(x: T) -> T {
    x
}

/// The drop-in echo: the caller lends its plain array, gets a plain one back.
fn echo_lent(x: ShmArg<'_, f64, Ix1>) -> Shm<Array1<f64>> {
    Shm(x.into_owned())
}

/// Parses `sweep.<bytes>.<path>`.
pub fn parse(name: &str) -> Option<(usize, &str)> {
    let mut it = name.strip_prefix("sweep.")?.splitn(2, '.');
    let bytes = it.next()?.parse().ok()?;
    Some((bytes, it.next()?))
}

fn us_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// Runs one sweep case.
pub fn run(name: &str, scale: &Scale) -> Result<Vec<f64>> {
    let Some((bytes, path)) = parse(name) else {
        bail!("not a sweep case: {name}");
    };
    let n = (bytes / 8).max(1);
    // Small payloads: average many round trips per sample, or one sample
    // would be a single noisy wake-up. 100 were too few: right after a
    // pool starts the scheduler is still placing the caller's and the
    // worker's threads, and the first few hundred tiny round trips can take
    // ~3x the steady state (seen in a small program, 100-call batches of a
    // one-element Vec: 12.6, 8.9, 9.2, 11.4, then 2.9-4.7 µs). Every path
    // gets the same k.
    let k = ((16 << 20) / bytes.max(1)).clamp(1, 1000);
    let last = (n - 1) as f64;
    let ok = |first: Option<&f64>, end: Option<&f64>, len: usize| {
        ensure!(
            len == n && first == Some(&0.0) && end == Some(&last),
            "the array came back changed"
        );
        Ok(())
    };
    match path {
        "zero_copy" => {
            // A writable array moves to the worker and back: no copy either way.
            let pool = pool(1)?;
            let mut x = Some(ShmArray1::from_shape_fn(n, |i| i as f64)?);
            repeat(scale, || {
                let mut total = 0.0;
                for _ in 0..k {
                    let arg = x.take().context("the array was lost in a failed run")?;
                    let t = Instant::now();
                    let y = pool.submit(echo::<ShmArray1<f64>>, arg)?.result()?;
                    total += us_since(t);
                    let v = y.view();
                    ok(v.first(), v.last(), v.len())?;
                    x = Some(y);
                }
                Ok(total / k as f64)
            })
        }
        "pool_copy" => {
            let pool = pool(1)?;
            let x = Array1::from_shape_fn(n, |i| i as f64);
            repeat(scale, || {
                let mut total = 0.0;
                for _ in 0..k {
                    let t = Instant::now();
                    let y = pool.submit(echo_lent, ShmArg::from(&x))?.result()?;
                    total += us_since(t);
                    ok(y.first(), y.last(), y.len())?;
                }
                Ok(total / k as f64)
            })
        }
        "serde_pipe" => {
            let pool = socket_pool()?;
            let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
            repeat(scale, || {
                let mut total = 0.0;
                for _ in 0..k {
                    let arg = x.clone();
                    let t = Instant::now();
                    let y = pool.submit(echo::<Vec<f64>>, arg)?.result()?;
                    total += us_since(t);
                    ok(y.first(), y.last(), y.len())?;
                }
                Ok(total / k as f64)
            })
        }
        other => bail!("unknown sweep path {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_names() {
        assert_eq!(
            parse("sweep.1073741824.zero_copy"),
            Some((1 << 30, "zero_copy"))
        );
        assert_eq!(parse("sweep.8.serde_pipe"), Some((8, "serde_pipe")));
        assert_eq!(parse("sweep.x.zero_copy"), None);
        assert_eq!(parse("seed.bare"), None);
    }
}
