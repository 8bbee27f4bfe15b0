//! `cargo xtask chaos`: faults injected on purpose, each scenario with its
//! counts and a PASS/FAIL/SKIP line, ending in `chaos: N/M scenarios passed`
//! and a non-zero exit on any failure.
//!
//! The scenarios run in this process (pool workers and child programs
//! re-execute this binary, whose `main` starts with the pools' inits), one
//! after the other, and the whole run checks that it leaves no `npshmex-*`
//! entry in `/dev/shm` and no worker process behind.

mod child;
mod frames;
mod full_shm;
mod hostile;
mod hostile_arrow;
mod hostile_npy;
mod hung;
mod mutate;
mod parent_kill;
mod procs;
mod soak;
mod soak_killer;
mod soak_tasks;
mod worker_kill;

use crate::{flags, util};
use anyhow::{bail, Result};
use std::time::Instant;

/// How a scenario ended.
pub enum Verdict {
    /// Passed, with its counts.
    Pass(String),
    /// Could not run here, and why (said loudly; not a pass).
    Skip(String),
}

/// Counts of one run.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Child programs killed mid-transfer.
    pub parent_kills: usize,
    /// Tasks run while workers are killed.
    pub load_tasks: usize,
    /// Hung tasks timed out.
    pub hung_rounds: usize,
    /// Mutated `.npy` headers.
    pub npy_headers: usize,
    /// Mutated Arrow IPC files.
    pub arrow_files: usize,
    /// Garbage writes into worker sockets.
    pub frame_rounds: usize,
    /// Tasks of one soak run (mixed, two submitters, a kill about every
    /// 100 completions)...
    pub soak_tasks: usize,
    /// ...and how many runs must all pass.
    pub soak_runs: usize,
    /// Seed of the random choices (printed, so a failure reproduces).
    pub seed: u64,
}

impl Scale {
    fn new(quick: bool) -> Scale {
        let seed = std::env::var("NPSHMEX_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs())
            });
        if quick {
            Scale {
                parent_kills: 20,
                load_tasks: 1_000,
                hung_rounds: 1,
                npy_headers: 50_000,
                arrow_files: 5_000,
                frame_rounds: 10,
                soak_tasks: 2_000,
                soak_runs: 1,
                seed,
            }
        } else {
            Scale {
                parent_kills: 200,
                load_tasks: 10_000,
                hung_rounds: 3,
                npy_headers: 1_000_000,
                arrow_files: 100_000,
                frame_rounds: 100,
                soak_tasks: 20_000,
                soak_runs: 5,
                seed,
            }
        }
    }
}

type Scenario = fn(&Scale) -> Result<Verdict>;

/// Runs a child program of the scenarios (`xtask chaos-child ROLE`).
pub fn run_child(role: &str) -> Result<()> {
    child::run(role)
}

/// Runs `cargo xtask chaos`.
pub fn run(opts: &flags::Chaos) -> Result<()> {
    let scale = Scale::new(opts.quick);
    eprintln!(
        "chaos: seed {} (set NPSHMEX_CHAOS_SEED to reproduce){}",
        scale.seed,
        if opts.quick { ", quick counts" } else { "" }
    );
    let shm_before = util::shm_entries();
    let scenarios: [(&str, &str, Scenario); 6] = [
        (
            "parent-kill",
            "parent killed mid-transfer",
            parent_kill::run,
        ),
        ("worker-kill", "workers killed under load", worker_kill::run),
        ("soak", "soak under kills", soak::run),
        ("full-shm", "full shared memory", |_| full_shm::run()),
        ("hostile", "hostile input", hostile::run),
        ("hung", "hung task", hung::run),
    ];
    if let Some(only) = &opts.only {
        if !scenarios.iter().any(|(key, ..)| key == only) {
            let keys: Vec<&str> = scenarios.iter().map(|(key, ..)| *key).collect();
            bail!(
                "no chaos scenario {only:?} (there are: {})",
                keys.join(", ")
            );
        }
    }
    let chosen = scenarios
        .into_iter()
        .filter(|(key, ..)| opts.only.as_ref().is_none_or(|o| o == key));
    let (mut passed, mut failed, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (_, name, f) in chosen {
        eprintln!("==== chaos: {name}");
        let t = Instant::now();
        let outcome = f(&scale);
        let secs = t.elapsed().as_secs_f64();
        match outcome {
            Ok(Verdict::Pass(detail)) => {
                println!("PASS  {name}: {detail} ({secs:.1} s)");
                passed.push(name);
            }
            Ok(Verdict::Skip(why)) => {
                println!("SKIP  {name}: {why}");
                skipped.push(name);
            }
            Err(e) => {
                println!("FAIL  {name}: {e:#} ({secs:.1} s)");
                failed.push(name);
            }
        }
    }
    // Only what this process (and its children's pids, checked per run by
    // the scenarios) could have left: other programs on the machine may be
    // creating segments and workers of their own meanwhile.
    let me = std::process::id();
    let mine = format!("npshmex-{me}-");
    let leaked: Vec<String> = util::shm_entries()
        .difference(&shm_before)
        .filter(|n| n.starts_with(&mine))
        .cloned()
        .collect();
    // Dropped pools stop their workers; give the last ones a moment to exit.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let survivors: Vec<u32> = loop {
        let live: Vec<u32> = procs::live_workers_of(me).iter().map(|p| p.pid).collect();
        if live.is_empty() || Instant::now() > deadline {
            break live;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let total = passed.len() + failed.len() + skipped.len();
    let mut line = format!("chaos: {}/{total} scenarios passed", passed.len());
    if !skipped.is_empty() {
        line.push_str(&format!(
            " ({} skipped: {})",
            skipped.len(),
            skipped.join(", ")
        ));
    }
    if !failed.is_empty() {
        line.push_str(&format!(" (failed: {})", failed.join(", ")));
    }
    println!("{line}");
    if !leaked.is_empty() || !survivors.is_empty() {
        bail!("chaos left behind /dev/shm entries {leaked:?} and worker processes {survivors:?}");
    }
    if !failed.is_empty() {
        bail!("{} chaos scenario(s) failed", failed.len());
    }
    Ok(())
}
