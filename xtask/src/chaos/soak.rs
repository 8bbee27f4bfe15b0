//! Soak: the acceptance run of issue 11. Two submitting threads feed a pool
//! of two workers with mixed tasks (see `soak_tasks`), each keeping a bounded
//! window in flight and checking every result value for value, while a
//! killer thread `kill -9`s a worker about every 100 completions: a random
//! live one, and now and then the replacement as soon as it shows up (in
//! the pool's `worker_pids()`, or still starting, among this process's
//! worker children).
//!
//! A task may fail only with `WorkerDied { exit: Signal(9) }` naming a
//! worker that was killed, at most one task per killed worker (the one it
//! was running), or with `Panicked` when it panics on purpose; anything else
//! (a broken pool, a transport or decode error, a hang, a wrong value, a
//! task that started twice) fails the run. Around each run, with the pool
//! dropped and the segment cache emptied, fds, held segments and this
//! process's `/dev/shm` names must be as before, and no worker left.
//!
//! Completions, not time, pace the killer: on a loaded machine a timer
//! would kill faster than the pool gets work done and measure restarts
//! instead of task attribution. Runs are independent (a new pool and
//! baseline each), so one leak or failure names its run and run seed.

use super::soak_killer::{killer, Kills};
use super::soak_tasks::{Kind, Pending, StartLog, Task};
use super::{Scale, Verdict};
use anyhow::{anyhow, bail, ensure, Context, Result};
use npshmex_pool::{ProcessPoolExecutor, TaskError, WorkerExit};
use npshmex_testkit as kit;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rustix::process::Signal;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKERS: usize = 2;
const SUBMITTERS: u64 = 2;
/// Futures each submitter keeps in flight.
const WINDOW: usize = 16;
/// Tasks the pool must serve flawlessly once the killer has stopped.
const AFTER: usize = 100;
/// Longest a single future may take before it counts as a hang (generous:
/// the machine may be busy building).
const HANG: Duration = Duration::from_secs(120);
/// Longest no task may settle before the run counts as hung (a thread
/// stuck inside the pool, where `HANG` cannot reach it).
const STALL: Duration = Duration::from_secs(150);
/// Longest the pool may take to be back at full strength after the load.
const RECOVERY: Duration = Duration::from_secs(30);
/// Longest the workers of a dropped pool may take to be gone.
const WORKER_EXIT: Duration = Duration::from_secs(10);

/// Runs the scenario: `scale.soak_runs` runs of `scale.soak_tasks` tasks.
pub fn run(scale: &Scale) -> Result<Verdict> {
    let mut total = Counts::default();
    let mut slowest = Duration::ZERO;
    for r in 0..scale.soak_runs {
        let seed = scale.seed ^ (r as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let t = Instant::now();
        let c = one_run(scale.soak_tasks, seed).with_context(|| {
            format!(
                "run {}/{} of seed {} (run seed {seed:#x})",
                r + 1,
                scale.soak_runs,
                scale.seed
            )
        })?;
        let took = t.elapsed();
        slowest = slowest.max(took);
        eprintln!(
            "soak run {}/{}: {} ({:.1} s)",
            r + 1,
            scale.soak_runs,
            c.summary(),
            took.as_secs_f64()
        );
        total.add(&c);
    }
    Ok(Verdict::Pass(format!(
        "{} run(s) x {} tasks, {SUBMITTERS} submitters, {WORKERS} workers: {}; \
         0 wrong, lost or hung; fds, held segments, /dev/shm and workers flat; \
         slowest run {:.1} s",
        scale.soak_runs,
        scale.soak_tasks,
        total.summary(),
        slowest.as_secs_f64()
    )))
}

/// What one run (or all of them) counted.
#[derive(Default)]
struct Counts {
    ok: usize,
    panicked: usize,
    died: usize,
    /// `WorkerDied` tasks whose function body had started...
    died_started: usize,
    /// ...and those whose body had not, by kind (killed while the
    /// argument was decoded, or between the announcement and the call).
    died_before: BTreeMap<Kind, usize>,
    kills: usize,
    /// Kills of a replacement as soon as it showed in `worker_pids()`...
    just_up: usize,
    /// ...or of one still starting (not yet in `worker_pids()`).
    starting: usize,
    /// Distinct worker pids seen or killed.
    workers: usize,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.ok += o.ok;
        self.panicked += o.panicked;
        self.died += o.died;
        self.died_started += o.died_started;
        for (k, n) in &o.died_before {
            *self.died_before.entry(*k).or_default() += n;
        }
        self.kills += o.kills;
        self.just_up += o.just_up;
        self.starting += o.starting;
        self.workers += o.workers;
    }

    fn summary(&self) -> String {
        let before: Vec<String> = self
            .died_before
            .iter()
            .map(|(k, n)| format!("{k:?} {n}"))
            .collect();
        format!(
            "{} correct, {} panicked on purpose, {} WorkerDied ({} in the function body, \
             before it: {}) <= {} kills ({} of a replacement just up, {} of one starting), \
             {} worker pids",
            self.ok,
            self.panicked,
            self.died,
            self.died_started,
            if before.is_empty() {
                "none".to_string()
            } else {
                before.join(", ")
            },
            self.kills,
            self.just_up,
            self.starting,
            self.workers
        )
    }
}

/// One run: baseline, pool, load and killer, checks, leak check.
fn one_run(tasks: usize, seed: u64) -> Result<Counts> {
    let before = Resources::take();
    let log = StartLog::create(tasks + AFTER)?;
    let pool = ProcessPoolExecutor::builder()
        .max_workers(WORKERS)
        .build()
        .context("starting the pool")?;
    let pool = Arc::new(pool);
    let (results, kills) = load(&pool, tasks, seed, &before.workers)?;
    // The load threads are gone: this is the last handle. Check that the
    // pool still serves, then let it go before the leak check (dropping it
    // waits for its workers).
    let served = serve_after(&pool, tasks as u64);
    drop(pool);
    served?;
    let mut c = judge(&results, &kills, &log.counts()?)?;
    drop(log);
    let mut pids: BTreeSet<u32> = kills.seen;
    pids.extend(&kills.killed);
    c.workers = pids.len();
    before.check_flat(&pids)?;
    Ok(c)
}

/// How each task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Correct,
    Panicked,
    Died(u32),
}

/// What the load threads share.
#[derive(Default)]
struct Shared {
    /// Tasks settled, by both submitters.
    done: AtomicU64,
    stop: AtomicBool,
    /// What each submitter is busy with, for the report of a hang.
    busy: [Mutex<Option<(Task, Step)>>; SUBMITTERS as usize],
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Submitting,
    Waiting,
}

impl Shared {
    fn set_busy(&self, t: u64, now: Option<(Task, Step)>) {
        *self.busy[t as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = now;
    }

    fn describe_busy(&self) -> String {
        let each: Vec<String> = self
            .busy
            .iter()
            .enumerate()
            .map(
                |(t, b)| match *b.lock().unwrap_or_else(|p| p.into_inner()) {
                    Some((task, Step::Submitting)) => {
                        format!("submitter {t} is inside submit() of {task}")
                    }
                    Some((task, Step::Waiting)) => format!("submitter {t} waits for {task}"),
                    None => format!("submitter {t} is done"),
                },
            )
            .collect();
        each.join("; ")
    }
}

/// Runs the submitters and the killer; every task's outcome.
///
/// The threads are detached ones that own handles of the pool, not scoped
/// ones: a thread stuck inside the pool (a `submit` that never returns, a
/// lock never released) cannot be joined, so a watchdog fails the run
/// when no task settles for `STALL`, leaving those threads, and with them
/// the pool and its workers, behind. The end-of-chaos check then reports
/// the workers too; they die with this process.
fn load(
    pool: &Arc<ProcessPoolExecutor>,
    tasks: usize,
    seed: u64,
    old_workers: &BTreeSet<u32>,
) -> Result<(Vec<(Task, Outcome)>, Kills)> {
    let shared = Arc::new(Shared::default());
    let killer = {
        let (pool, shared, old) = (pool.clone(), shared.clone(), old_workers.clone());
        std::thread::spawn(move || killer(&pool, &shared.done, &shared.stop, seed ^ 0x4b11, &old))
    };
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let (pool, shared) = (pool.clone(), shared.clone());
            std::thread::spawn(move || {
                let r = submitter(&pool, t, tasks as u64, seed ^ t, &shared);
                if r.is_err() {
                    // One failure ends the run: no point loading on.
                    shared.stop.store(true, Ordering::SeqCst);
                }
                r
            })
        })
        .collect();
    let mut last = (0, Instant::now());
    while !submitters.iter().all(|h| h.is_finished()) {
        let done = shared.done.load(Ordering::SeqCst);
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALL {
            shared.stop.store(true, Ordering::SeqCst);
            bail!(
                "no task settled for {STALL:?} after {done} did (a hang): {}; \
                 the stuck threads and the pool are left behind",
                shared.describe_busy()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut results = Vec::with_capacity(tasks);
    let mut first_err = None;
    for h in submitters {
        match h.join() {
            Ok(Ok(r)) => results.extend(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow!("a submitter panicked"));
            }
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let kills = killer.join().map_err(|_| anyhow!("the killer panicked"))?;
    match first_err {
        Some(e) => Err(e),
        None => Ok((results, kills)),
    }
}

/// Submits the tasks `t`, `t + SUBMITTERS`, ... below `tasks`, `WINDOW` in
/// flight, and checks each result in submission order.
fn submitter(
    pool: &ProcessPoolExecutor,
    t: u64,
    tasks: u64,
    seed: u64,
    shared: &Shared,
) -> Result<Vec<(Task, Outcome)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids = (t..tasks).step_by(SUBMITTERS as usize);
    let mut inflight: VecDeque<(Task, Pending)> = VecDeque::with_capacity(WINDOW);
    let mut out = Vec::new();
    loop {
        while inflight.len() < WINDOW && !shared.stop.load(Ordering::SeqCst) {
            let Some(id) = ids.next() else { break };
            let task = Task::draw(id, &mut rng);
            shared.set_busy(t, Some((task, Step::Submitting)));
            inflight.push_back((task, task.submit(pool)?));
        }
        let Some((task, pending)) = inflight.pop_front() else {
            shared.set_busy(t, None);
            return Ok(out);
        };
        shared.set_busy(t, Some((task, Step::Waiting)));
        out.push((task, settle(&task, pending)?));
        shared.done.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits for one task and checks how it ended.
fn settle(task: &Task, pending: Pending) -> Result<Outcome> {
    match pending {
        Pending::Number(mut f) => judge_one(task, f.result_timeout(HANG), |v| task.check_number(v)),
        Pending::Array(mut f) => judge_one(task, f.result_timeout(HANG), |v| task.check_array(v)),
        Pending::Plain(mut f) => judge_one(task, f.result_timeout(HANG), |v| task.check_plain(v)),
        Pending::Bytes(mut f) => judge_one(task, f.result_timeout(HANG), |v| task.check_bytes(v)),
    }
}

fn judge_one<R>(
    task: &Task,
    r: Result<R, TaskError>,
    check: impl FnOnce(R) -> Result<()>,
) -> Result<Outcome> {
    match r {
        Ok(v) => check(v).map(|()| Outcome::Correct),
        Err(TaskError::WorkerDied {
            pid,
            exit: WorkerExit::Signal(sig),
        }) if sig == Signal::KILL.as_raw() => Ok(Outcome::Died(pid)),
        Err(TaskError::Panicked(p)) if task.panic_message().as_deref() == Some(p.message()) => {
            Ok(Outcome::Panicked)
        }
        Err(TaskError::WaitTimedOut { waited }) => {
            bail!("{task}: no result within {waited:?} (a hang)")
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("{task} failed"))),
    }
}

/// Once the killer has stopped: the pool is back to full strength and
/// serves `AFTER` more tasks (ids from `first`) without a failure.
fn serve_after(pool: &ProcessPoolExecutor, first: u64) -> Result<()> {
    let deadline = Instant::now() + RECOVERY;
    while pool.worker_pids().len() < WORKERS
        || pool.worker_pids().iter().any(|p| !kit::is_live_worker(*p))
    {
        ensure!(
            Instant::now() < deadline,
            "the pool did not replace its killed workers within {RECOVERY:?} (live: {:?})",
            pool.worker_pids()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut rng = StdRng::seed_from_u64(first);
    let tasks: Vec<Task> = (first..first + AFTER as u64)
        .map(|id| Task::draw(id, &mut rng))
        .filter(|t| t.panic_message().is_none())
        .collect();
    let pending = tasks
        .iter()
        .map(|t| t.submit(pool))
        .collect::<Result<Vec<_>>>()?;
    for (t, p) in tasks.iter().zip(pending) {
        let o = settle(t, p).context("after the kills")?;
        ensure!(
            o == Outcome::Correct,
            "after the kills, {t} ended {o:?} though nobody killed anything"
        );
    }
    Ok(())
}

/// Checks the outcomes against the kills and the start log.
fn judge(results: &[(Task, Outcome)], k: &Kills, starts: &[u8]) -> Result<Counts> {
    let mut c = Counts {
        kills: k.killed.len(),
        just_up: k.just_up,
        starting: k.starting,
        ..Counts::default()
    };
    let mut died_in: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (t, o) in results {
        let n = starts.get(t.id as usize).copied().unwrap_or(0);
        ensure!(n <= 1, "{t} started {n} times");
        match o {
            Outcome::Correct | Outcome::Panicked => {
                // Its function ran, so it must have been counted; if not,
                // the workers cannot write the log and its counts mean nothing.
                ensure!(n == 1, "{t} completed but is not in the start log");
                if *o == Outcome::Correct {
                    c.ok += 1;
                } else {
                    c.panicked += 1;
                }
            }
            Outcome::Died(pid) => {
                c.died += 1;
                if n == 0 {
                    *c.died_before.entry(t.kind).or_default() += 1;
                } else {
                    c.died_started += 1;
                }
                died_in.entry(*pid).or_default().push(t.id);
            }
        }
    }
    for (pid, ids) in &died_in {
        ensure!(
            k.killed.contains(pid),
            "tasks {ids:?} failed with WorkerDied naming worker {pid}, which was never killed"
        );
        ensure!(
            ids.len() == 1,
            "tasks {ids:?} all failed with WorkerDied in worker {pid}: only the one it ran may"
        );
    }
    ensure!(
        c.died <= c.kills,
        "{} WorkerDied failures for {} kills",
        c.died,
        c.kills
    );
    Ok(c)
}

/// What a run must leave as it found it.
struct Resources {
    fds: usize,
    held: BTreeSet<String>,
    shm: BTreeSet<String>,
    workers: BTreeSet<u32>,
}

impl Resources {
    /// Empties this process's segment cache (which keeps segments on
    /// purpose), then takes the snapshot.
    fn take() -> Resources {
        npshmex_shm::cache::clear();
        Resources {
            fds: kit::open_fds(),
            held: kit::held_segments(),
            shm: kit::shm_entries("npshmex-"),
            workers: kit::worker_children(),
        }
    }

    /// Waits for the workers of the dropped pool to be gone, then fails
    /// naming what is there that was not before: `/dev/shm` names count
    /// when they are this process's or its workers' (`pids`), since other
    /// programs on the machine make their own meanwhile.
    fn check_flat(&self, pids: &BTreeSet<u32>) -> Result<()> {
        let deadline = Instant::now() + WORKER_EXIT;
        let workers = loop {
            let left: Vec<u32> = kit::worker_children()
                .difference(&self.workers)
                .copied()
                .collect();
            if left.is_empty() || Instant::now() >= deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let after = Resources::take();
        let me = std::process::id();
        let ours = |name: &&String| {
            let pid = name
                .strip_prefix("npshmex-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|p| p == me || pids.contains(&p))
        };
        let shm: Vec<&String> = after.shm.difference(&self.shm).filter(ours).collect();
        let held: Vec<&String> = after.held.difference(&self.held).collect();
        let mut leaks = Vec::new();
        if !workers.is_empty() {
            leaks.push(format!("worker processes {workers:?}"));
        }
        if after.fds != self.fds {
            leaks.push(format!("open fds {} -> {}", self.fds, after.fds));
        }
        if !held.is_empty() {
            leaks.push(format!("held segments {held:?}"));
        }
        if !shm.is_empty() {
            leaks.push(format!("/dev/shm entries {shm:?}"));
        }
        if !leaks.is_empty() {
            bail!("the run left behind: {}", leaks.join("; "));
        }
        Ok(())
    }
}
