//! `cargo xtask bench`: the side-by-side benchmark of BENCHMARKS.md.
//!
//! The xtask (usually a debug build behind the cargo alias) only
//! orchestrates: it builds itself in release mode, runs every case as its own
//! process (`xtask bench-case NAME`, see [`cases`]) or through the Python peer
//! script, reduces the samples to median/min/max, and writes
//! `target/bench/results.json`, `results.md` and `sweep.svg`.
//!
//! Measuring inside a debug parent, or all cases in one process, was
//! rejected: the first measures the wrong code, the second lets one case's
//! caches and freed memory flatter or penalise the next.

mod cases;
mod catalog;
mod cgroup;
mod driver;
mod machine;
mod report;
mod stats;
mod svg;
mod targets;

use crate::flags;
use anyhow::Result;

/// Runs `cargo xtask bench`.
pub fn run(opts: &flags::Bench) -> Result<()> {
    driver::run(opts)
}

/// Runs one case inside this (release) process: `xtask bench-case NAME`.
pub fn run_case(c: &flags::BenchCase) -> Result<()> {
    cases::run(c)
}
