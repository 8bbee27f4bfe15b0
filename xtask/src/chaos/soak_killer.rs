//! The killer thread of the soak scenario: `kill -9` of a pool worker about
//! every `KILL_EVERY` completions, at a random moment after the count is
//! reached (mid-task, between tasks, idle), and in one case out of
//! `REPLACEMENT_ODDS` also of the victim's replacement as soon as it shows:
//! in the pool's `worker_pids()` (handshake done) or, still starting,
//! among this process's worker children (named, not yet handshaken).
//!
//! Victims are only ever workers of the soak's pool: `worker_pids()`, or
//! worker children of this process that were not there before the run.

use npshmex_pool::ProcessPoolExecutor;
use npshmex_testkit as kit;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Completions between kills, on average.
const KILL_EVERY: u64 = 100;
/// One kill in this many also kills the victim's replacement as soon as
/// it appears.
const REPLACEMENT_ODDS: u32 = 4;
/// Longest a replacement is waited for before the killer moves on.
const REPLACEMENT_WAIT: Duration = Duration::from_secs(10);

/// What the killer did.
#[derive(Default)]
pub struct Kills {
    /// Every worker killed.
    pub killed: BTreeSet<u32>,
    /// Every worker seen in `worker_pids()`.
    pub seen: BTreeSet<u32>,
    /// Kills of a replacement as soon as it showed in `worker_pids()`...
    pub just_up: usize,
    /// ...or while it was still starting.
    pub starting: usize,
}

/// Kills a worker about every `KILL_EVERY` completions until `stop`.
pub fn killer(
    pool: &ProcessPoolExecutor,
    done: &AtomicU64,
    stop: &AtomicBool,
    seed: u64,
    old_workers: &BTreeSet<u32>,
) -> Kills {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut k = Kills::default();
    let mut next_at = rng.gen_range(KILL_EVERY / 2..KILL_EVERY * 3 / 2);
    while !stop.load(Ordering::SeqCst) {
        if done.load(Ordering::SeqCst) < next_at {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // A random moment: mid-task, between tasks, idle.
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
        let live = pool.worker_pids();
        k.seen.extend(&live);
        let candidates: Vec<u32> = live
            .iter()
            .copied()
            .filter(|p| !k.killed.contains(p))
            .collect();
        let Some(&victim) = candidates.choose(&mut rng) else {
            // Both are being replaced: try again shortly.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        if !kit::kill9(victim) {
            continue;
        }
        k.killed.insert(victim);
        next_at += rng.gen_range(KILL_EVERY / 2..KILL_EVERY * 3 / 2);
        if rng.gen_ratio(1, REPLACEMENT_ODDS) {
            kill_replacement(pool, stop, &mut k, old_workers);
        }
    }
    k.seen.extend(pool.worker_pids());
    k
}

/// Kills the first worker that was not there before, as soon as it shows:
/// in `worker_pids()` (its handshake done) or, still starting, among this
/// process's worker children.
fn kill_replacement(
    pool: &ProcessPoolExecutor,
    stop: &AtomicBool,
    k: &mut Kills,
    old_workers: &BTreeSet<u32>,
) {
    let known = |k: &Kills, p: &u32| k.seen.contains(p) || k.killed.contains(p);
    let deadline = Instant::now() + REPLACEMENT_WAIT;
    let mut polls = 0u32;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        polls += 1;
        let fresh = pool.worker_pids().into_iter().find(|p| !known(k, p));
        // Reading the process table costs ~1 ms: only every few polls.
        let starting = if fresh.is_none() && polls.is_multiple_of(8) {
            kit::worker_children()
                .into_iter()
                .find(|p| !known(k, p) && !old_workers.contains(p))
        } else {
            None
        };
        if let Some(p) = fresh.or(starting) {
            if kit::kill9(p) {
                k.killed.insert(p);
                if fresh.is_some() {
                    k.just_up += 1;
                } else {
                    k.starting += 1;
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}
