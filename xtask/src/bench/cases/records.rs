//! Structured data: 10^6 records `{id: i64, x: f64, flag: u8, name: [u8; 16]}`
//! (a numpy structured dtype) through a worker and back unchanged, as a
//! `ShmArray` (moved both ways, no copy) and as a `Vec` of structs over serde.
//! The struct carries its 7 padding bytes as an explicit field (see `Rec`),
//! so its dtype is numpy's `align=True` layout with the gap named `pad`.

use super::pooled::{pool, socket_pool};
use super::{ms_since, repeat, Scale};
use anyhow::{ensure, Context, Result};
use npshmex_ndarray::ShmArray1;
use serde::{Deserialize, Serialize};
use std::time::Instant;

npshmex_ndarray::record! {
    /// One record of the benchmark.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Rec {
        /// Identifier.
        pub id: i64,
        /// A value.
        pub x: f64,
        /// A flag.
        pub flag: u8,
        /// A fixed-size name.
        pub name: [u8; 16],
        /// Explicit padding to the 8-byte alignment: a `#[repr(C)]` struct
        /// with implicit padding cannot be written through a typed view
        /// (padding bytes are uninitialised), so `from_shape_fn` refuses it.
        pub pad: [u8; 7],
    }
}

fn rec(i: usize) -> Rec {
    Rec {
        id: i as i64,
        x: i as f64 * 0.5,
        flag: (i % 2) as u8,
        name: *b"record-name-0000",
        pad: [0; 7],
    }
}

fn count(scale: &Scale) -> usize {
    // 10^6 records, a tenth in --quick (as the seed array).
    scale.seed_len / 20
}

fn echo<T>(x: T) -> T {
    x
}

/// `records.zero_copy`, ms.
pub fn zero_copy(scale: &Scale) -> Result<Vec<f64>> {
    let pool = pool(1)?;
    let n = count(scale);
    let mut x = Some(ShmArray1::from_shape_fn(n, rec)?);
    repeat(scale, || {
        let arg = x.take().context("the array was lost in a failed run")?;
        let t = Instant::now();
        let y = pool.submit(echo::<ShmArray1<Rec>>, arg)?.result()?;
        let dt = ms_since(t);
        let v = y.view();
        ensure!(
            v.len() == n && v[n - 1] == rec(n - 1),
            "records came back changed"
        );
        x = Some(y);
        Ok(dt)
    })
}

/// `records.serde_pipe`: `Vec<Rec>` as serde bytes through the socket, ms.
pub fn serde_pipe(scale: &Scale) -> Result<Vec<f64>> {
    let pool = socket_pool()?;
    let n = count(scale);
    let x: Vec<Rec> = (0..n).map(rec).collect();
    repeat(scale, || {
        let arg = x.clone();
        let t = Instant::now();
        let y = pool.submit(echo::<Vec<Rec>>, arg)?.result()?;
        let dt = ms_since(t);
        ensure!(
            y.len() == n && y[n - 1] == rec(n - 1),
            "records came back changed"
        );
        Ok(dt)
    })
}
