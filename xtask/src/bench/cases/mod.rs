//! The measuring side of `cargo xtask bench`: each case runs in its own
//! process, the release build of this xtask invoked as
//! `xtask bench-case NAME [--quick]`, and prints one JSON line,
//! `{"case": NAME, "unit": U, "samples": [...]}` (the Python peer script may
//! also answer `{"case": NAME, "absent": REASON}`).
//!
//! A process per case (rather than one long process) keeps cases from
//! disturbing each other (segment caches, allocator state, page cache of
//! freed memory) and makes the memory cases' baseline honest. It also lets
//! pool workers re-execute a binary whose `main` starts with the pools' inits.

mod arrow;
mod limit;
mod memory;
pub mod mpi;
mod peer_procspawn;
mod pooled;
mod records;
mod scaling;
mod seed;
mod sweep;
mod tiny;

use crate::flags;
use anyhow::{bail, Result};
use std::time::Instant;

/// Sizes and repetition counts of one run.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Elements of the seed array (2·10^7 f64 = 160 MB).
    pub seed_len: usize,
    /// Timed runs per case.
    pub runs: usize,
    /// Untimed runs before them.
    pub warmup: usize,
    /// Tasks of the throughput cases.
    pub tiny_tasks: usize,
    /// Tasks of the throughput cases of the slow peers (procspawn), whose
    /// rate does not change with the count but whose run time would.
    pub peer_tasks: usize,
    /// Round trips of one latency sample.
    pub roundtrips: usize,
}

impl Scale {
    /// The scale of a full or a `--quick` run.
    pub fn new(quick: bool) -> Scale {
        if quick {
            Scale {
                seed_len: 2_000_000,
                runs: 1,
                warmup: 0,
                tiny_tasks: 2_000,
                peer_tasks: 500,
                roundtrips: 200,
            }
        } else {
            Scale {
                seed_len: 20_000_000,
                runs: 5,
                warmup: 1,
                tiny_tasks: 100_000,
                peer_tasks: 10_000,
                roundtrips: 2_000,
            }
        }
    }

    /// Bytes of the seed array.
    pub fn seed_bytes(&self) -> usize {
        self.seed_len * std::mem::size_of::<f64>()
    }
}

/// What a case produced: samples in a unit.
pub struct Outcome {
    /// `ms`, `µs`, `tasks/s` or `x` (multiples of the seed size).
    unit: &'static str,
    /// One value per timed run.
    samples: Vec<f64>,
}

impl Outcome {
    fn ms(samples: Vec<f64>) -> Outcome {
        Outcome {
            unit: "ms",
            samples,
        }
    }
    fn us(samples: Vec<f64>) -> Outcome {
        Outcome {
            unit: "µs",
            samples,
        }
    }
    fn per_s(samples: Vec<f64>) -> Outcome {
        Outcome {
            unit: "tasks/s",
            samples,
        }
    }
    fn times_seed(samples: Vec<f64>) -> Outcome {
        Outcome { unit: "x", samples }
    }
}

/// Runs `one` `scale.warmup` times untimed, then `scale.runs` times, and
/// returns the values it reported (each run measures its own interval, so
/// setup and teardown stay outside the figure).
pub fn repeat(scale: &Scale, mut one: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    for _ in 0..scale.warmup {
        one()?;
    }
    (0..scale.runs).map(|_| one()).collect()
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The entry point of `xtask bench-case`.
pub fn run(c: &flags::BenchCase) -> Result<()> {
    let scale = Scale::new(c.quick);
    if !super::catalog::all().iter().any(|k| k.name == c.name) {
        bail!("unknown case {:?}", c.name);
    }
    let out = match &c.cgroup {
        Some(dir) => Outcome::times_seed(vec![memory_case(&c.name, &scale, dir)?]),
        None => dispatch(&c.name, &scale)?,
    };
    let line = serde_json::json!({ "case": c.name, "unit": out.unit, "samples": out.samples });
    println!("{line}");
    Ok(())
}

fn dispatch(name: &str, scale: &Scale) -> Result<Outcome> {
    Ok(match name {
        "limit.memcpy" => Outcome::ms(limit::memcpy(scale)?),
        "limit.first_touch" => Outcome::ms(limit::first_touch(scale)?),
        "limit.socket_rtt" => Outcome::us(limit::socket_rtt(scale)?),
        "limit.spin_rtt" => Outcome::us(limit::spin_rtt(scale)?),
        "seed.bare" => Outcome::ms(seed::bare(scale)?),
        "seed.bare_in_place" => Outcome::ms(seed::bare_in_place(scale)?),
        "seed.pool_copy" => Outcome::ms(pooled::copy(scale)?),
        "seed.pool_zero_copy" => Outcome::ms(pooled::zero_copy(scale)?),
        "seed.pool_in_place" => Outcome::ms(pooled::in_place(scale)?),
        "seed.serde_pipe" => Outcome::ms(pooled::serde_pipe(scale)?),
        "seed.rs_procspawn" => Outcome::ms(peer_procspawn::seed(scale)?),
        "tiny.roundtrip" => Outcome::us(tiny::roundtrip(scale)?),
        "tiny.throughput" => Outcome::per_s(tiny::throughput(scale)?),
        "tiny.map_chunked" => Outcome::per_s(tiny::map_chunked(scale)?),
        "rs_procspawn.tiny_roundtrip" => Outcome::us(peer_procspawn::tiny_roundtrip(scale)?),
        "rs_procspawn.tiny_throughput" => Outcome::per_s(peer_procspawn::tiny_throughput(scale)?),
        n if n.starts_with("sweep.") => Outcome::us(sweep::run(n, scale)?),
        "workers.1" => Outcome::ms(scaling::workers(1, scale)?),
        "workers.2" => Outcome::ms(scaling::workers(2, scale)?),
        "big.4gib" => Outcome::ms(scaling::big(scale)?),
        "arrow.zero_copy" => Outcome::ms(arrow::zero_copy(scale)?),
        "arrow.ipc_pipe" => Outcome::ms(arrow::ipc_pipe(scale)?),
        "records.zero_copy" => Outcome::ms(records::zero_copy(scale)?),
        "records.serde_pipe" => Outcome::ms(records::serde_pipe(scale)?),
        "mpi.seed" => Outcome::ms(mpi::seed(scale)?),
        "mpi.tiny_roundtrip" => Outcome::us(mpi::tiny(scale)?),
        "mpi.py_mpi4py_seed" => Outcome::ms(mpi::py_seed(scale)?),
        "mpi.py_mpi4py_tiny" => Outcome::us(mpi::py_tiny(scale)?),
        n if n.starts_with("mem.") => {
            bail!("{n} runs only with --cgroup DIR, in the memory cgroup the bench parent makes")
        }
        other => bail!("no measurement for case {other:?} in this build"),
    })
}

/// One call of a `mem.*` case inside the cgroup `dir` (one sample).
fn memory_case(name: &str, scale: &Scale, dir: &std::path::Path) -> Result<f64> {
    match name {
        "mem.copy_peak" => memory::copy_peak(scale, dir),
        "mem.zero_copy_peak" => memory::zero_copy_peak(scale, dir),
        other => bail!("{other} is no memory case of this build"),
    }
}
