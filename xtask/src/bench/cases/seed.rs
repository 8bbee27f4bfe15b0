//! The seed workload, `x + 1` over 2·10^7 f64 (160 MB): the bare baselines in
//! the parent process, against which every pool path is judged.

use super::{ms_since, repeat, Scale};
use anyhow::{ensure, Result};
use ndarray::Array1;
use std::time::Instant;

/// The seed input: every element 1.5, so every result element is 2.5.
pub fn input(scale: &Scale) -> Array1<f64> {
    Array1::from_elem(scale.seed_len, 1.5)
}

/// Checks a few elements of a result of `x + 1` over `input`, outside the timing.
pub fn check(y: &[f64], expected: f64, len: usize) -> Result<()> {
    ensure!(y.len() == len, "result has {} elements, not {len}", y.len());
    for i in [0, len / 2, len.saturating_sub(1)] {
        ensure!(
            y.get(i) == Some(&expected),
            "result[{i}] = {:?}, not {expected}",
            y.get(i)
        );
    }
    Ok(())
}

/// `seed.bare`: a new array `x + 1.0` from an existing one, in this process, ms.
pub fn bare(scale: &Scale) -> Result<Vec<f64>> {
    let x = input(scale);
    repeat(scale, || {
        let t = Instant::now();
        let y = std::hint::black_box(&x) + 1.0;
        let dt = ms_since(t);
        check(y.as_slice().unwrap_or(&[]), 2.5, scale.seed_len)?;
        Ok(dt)
    })
}

/// `seed.bare_in_place`: `x += 1.0` in this process, ms.
pub fn bare_in_place(scale: &Scale) -> Result<Vec<f64>> {
    let mut x = input(scale);
    let mut expected = 1.5;
    repeat(scale, || {
        let t = Instant::now();
        x += 1.0;
        let dt = ms_since(t);
        expected += 1.0;
        check(x.as_slice().unwrap_or(&[]), expected, scale.seed_len)?;
        Ok(dt)
    })
}
