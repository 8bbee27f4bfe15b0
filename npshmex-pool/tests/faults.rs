//! Faults from outside that a restart fixes never break the pool, and never
//! fail a task that did not run: workers killed while they start (before or
//! after their handshake) or while idle; done callbacks that submit, cancel
//! and drop pools while tasks are dispatched; an idle pool burns no CPU;
//! workers inherit no stray file descriptor.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use npshmex_pool::{ProcessPoolExecutor, StartMethod, TaskError};
use npshmex_testkit::LeakCheck;

npshmex_pool::test_support!();

/// Long enough for anything here on a loaded machine; a hang fails.
const PATIENCE: Duration = Duration::from_secs(120);

fn plus_one(x: u64) -> u64 {
    x + 1
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Polls `f` until it returns `Some` or `PATIENCE` passes.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn replacements_killed_as_soon_as_they_appear_never_break_the_pool() {
    let leaks = LeakCheck::start();
    {
        let pool = ProcessPoolExecutor::new(1).expect("pool");
        assert_eq!(
            pool.submit(plus_one, 1).expect("submit").result().ok(),
            Some(2)
        );
        let mut killed = BTreeSet::new();
        // Kill the live worker, then each replacement the moment it is a
        // child of ours (before or after its handshake, whichever comes).
        let first = pool.worker_pids()[0];
        assert!(npshmex_testkit::kill9(first));
        killed.insert(first);
        for round in 0..20 {
            let pid = poll(&format!("replacement {round}"), || {
                npshmex_testkit::children()
                    .into_iter()
                    .map(|p| p.pid)
                    .find(|p| !killed.contains(p))
            });
            npshmex_testkit::kill9(pid);
            killed.insert(pid);
        }
        // Tasks submitted meanwhile or now run on the next worker.
        let mut f = pool.submit(plus_one, 41).expect("the pool takes tasks");
        assert_eq!(f.result_timeout(PATIENCE).ok(), Some(42));
        for i in 0..20 {
            assert_eq!(
                pool.submit(plus_one, i).expect("submit").result().ok(),
                Some(i + 1)
            );
        }
    }
    leaks.finish();
}

#[test]
fn killing_an_idle_worker_fails_no_task_that_did_not_run() {
    let leaks = LeakCheck::start();
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .build()
            .expect("pool");
        for round in 0..100u64 {
            let pid = poll("a live worker", || pool.worker_pids().first().copied());
            assert_eq!(
                pool.submit(plus_one, round).expect("submit").result().ok(),
                Some(round + 1)
            );
            // Idle now: kill it and submit at once.
            npshmex_testkit::kill9(pid);
            let mut f = pool.submit(plus_one, round).expect("submit");
            match f.result_timeout(PATIENCE) {
                Ok(v) => assert_eq!(v, round + 1),
                Err(e) => panic!("round {round} ({method:?}): a task that never ran failed: {e:?}"),
            }
        }
        drop(pool);
    }
    leaks.finish();
}

/// CPU time (user + system) of process `pid` and its threads, in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    npshmex_shm::procfs::ProcStat::read(pid).map_or(0, |s| s.cpu_ticks())
}

#[test]
fn an_idle_pool_burns_no_cpu() {
    let leaks = LeakCheck::start();
    {
        let pool = ProcessPoolExecutor::new(2).expect("pool");
        for i in 0..1000 {
            pool.submit(plus_one, i)
                .expect("submit")
                .result()
                .expect("ran");
        }
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), 2);
        // Past the spin: everyone has parked.
        std::thread::sleep(Duration::from_millis(200));
        let me = std::process::id();
        let before: u64 = cpu_ticks(me) + pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
        let window = Duration::from_secs(2);
        let t = Instant::now();
        std::thread::sleep(window);
        let elapsed = t.elapsed();
        let after: u64 = cpu_ticks(me) + pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
        let hz = npshmex_shm::procfs::ticks_per_second() as f64;
        let used = (after - before) as f64 / hz;
        let share = used / elapsed.as_secs_f64();
        // This test process and both workers together: under 1 % of a CPU.
        assert!(
            share < 0.01,
            "an idle pool used {:.2} % of a CPU ({used:.3} s in {elapsed:?})",
            share * 100.0
        );
        assert_eq!(
            pool.submit(plus_one, 1).expect("submit").result().ok(),
            Some(2)
        );
    }
    leaks.finish();
}

fn submit_follow_up(pool: &ProcessPoolExecutor, n: u64, done: Arc<AtomicUsize>) {
    if let Ok(f) = pool.submit(plus_one, n) {
        f.add_done_callback(move |_| {
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
}

#[test]
fn callbacks_that_submit_cancel_and_drop_pools_never_deadlock() {
    let leaks = LeakCheck::start();
    let (tx, rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let done = Arc::new(AtomicUsize::new(0));
        let mut iterations = 0;
        for generation in 0..5 {
            let pool = Arc::new(ProcessPoolExecutor::new(2).expect("pool"));
            // The pool is dropped from a done callback at the end of this
            // generation: the callback holds the last reference.
            let slot: Arc<Mutex<Option<Arc<ProcessPoolExecutor>>>> =
                Arc::new(Mutex::new(Some(pool.clone())));
            let queued: Arc<Mutex<Vec<npshmex_pool::Future<u64>>>> = Arc::default();
            for i in 0..2_000u64 {
                iterations += 1;
                let f = pool.submit(plus_one, i).expect("submit");
                let (pool2, done2, queued2) = (pool.clone(), done.clone(), queued.clone());
                f.add_done_callback(move |r| {
                    assert!(r.is_ok() || r.is_err());
                    // Submit from the callback, racing dispatch...
                    submit_follow_up(&pool2, i, done2.clone());
                    // ...and cancel what may still be queued.
                    if let Some(q) = queued2.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                        q.cancel();
                    }
                    done2.fetch_add(1, Ordering::SeqCst);
                });
                if i % 3 == 0 {
                    if let Ok(q) = pool.submit(sleep_ms, 0) {
                        queued.lock().unwrap_or_else(|p| p.into_inner()).push(q);
                    }
                }
                drop(f);
            }
            let last = pool.submit(plus_one, generation).expect("submit");
            let slot2 = slot.clone();
            last.add_done_callback(move |_| {
                // Drop the pool inside a callback (never waits there).
                slot2.lock().unwrap_or_else(|p| p.into_inner()).take();
            });
            drop(pool);
            // Wait for the callback to have dropped the pool.
            poll("the last callback of a generation", || {
                slot.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none()
                    .then_some(())
            });
        }
        let _ = tx.send((iterations, done.load(Ordering::SeqCst)));
    });
    let (iterations, done) = rx
        .recv_timeout(PATIENCE * 2)
        .expect("the callbacks deadlocked (no answer within the patience)");
    runner.join().expect("runner");
    assert_eq!(iterations, 10_000);
    assert!(done >= 10_000, "{done} callbacks ran");
    // Every pool (dropped inside callbacks, which never wait) has ended.
    assert!(npshmex_testkit::wait_no_worker_children(PATIENCE).is_empty());
    leaks.finish();
}

/// The fds `ls /proc/self/fd` sees, run from a task.
fn ls_fds(_: u64) -> Vec<u32> {
    let out = std::process::Command::new("ls")
        .arg("/proc/self/fd")
        .output()
        .expect("run ls");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The fds of the worker itself.
fn own_fds(_: u64) -> usize {
    npshmex_testkit::open_fds()
}

#[test]
fn workers_inherit_no_stray_fd() {
    let leaks = LeakCheck::start();
    // An fd this program left open by accident: not close-on-exec.
    let stray = std::fs::File::open("/dev/null").expect("open");
    let flags = rustix::io::fcntl_getfd(&stray).expect("getfd");
    rustix::io::fcntl_setfd(&stray, flags - rustix::io::FdFlags::CLOEXEC).expect("setfd");
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .start_method(method)
            .build()
            .expect("pool");
        let fds = pool
            .submit(ls_fds, 0)
            .expect("submit")
            .result()
            .expect("ran");
        // 0, 1, 2, and the one ls opens to read the directory.
        assert!(
            fds.iter().all(|&fd| fd <= 3) && fds.len() <= 4,
            "{method:?}: ls saw fds {fds:?} (stray fd {})",
            stray.as_raw_fd()
        );
        // The worker itself: stdio, its socket, its control region, and
        // the directory being listed.
        let own = pool
            .submit(own_fds, 0)
            .expect("submit")
            .result()
            .expect("ran");
        assert!(own <= 6, "{method:?}: the worker holds {own} fds");
    }
    drop(stray);
    leaks.finish();
}

#[test]
fn a_task_that_kills_itself_fails_alone_and_the_next_ones_run() {
    fn kill_self(_: u64) -> u64 {
        npshmex_testkit::kill9(std::process::id());
        0
    }
    let leaks = LeakCheck::start();
    {
        let pool = ProcessPoolExecutor::new(1).expect("pool");
        let behind: Vec<_> = (0..10)
            .map(|i| pool.submit(plus_one, i).expect("submit"))
            .collect();
        let killer = pool.submit(kill_self, 0).expect("submit");
        let after: Vec<_> = (0..10)
            .map(|i| pool.submit(plus_one, i).expect("submit"))
            .collect();
        assert!(matches!(killer.result(), Err(TaskError::WorkerDied { .. })));
        for (i, f) in behind.into_iter().chain(after).enumerate() {
            assert_eq!(f.result().ok(), Some(i as u64 % 10 + 1));
        }
    }
    leaks.finish();
}

fn nap_with(v: (u64, Vec<u8>)) -> usize {
    std::thread::sleep(Duration::from_millis(v.0));
    v.1.len()
}

/// A regression of the soak run: a queued task whose inline bytes do not
/// fit beside those already in flight on the only worker with room made
/// dispatch pick that worker forever, spinning with the pool's lock held.
#[test]
fn a_queued_task_too_big_to_join_the_pipeline_waits_its_turn() {
    let leaks = LeakCheck::start();
    {
        let pool = Arc::new(
            ProcessPoolExecutor::builder()
                .max_workers(1)
                .build()
                .expect("pool"),
        );
        // Short tasks first, so the worker's pipeline is deep.
        for _ in 0..20 {
            assert_eq!(
                pool.submit(nap_with, (0, vec![0; 8]))
                    .expect("s")
                    .result()
                    .expect("ok"),
                8
            );
        }
        let (tx, rx) = mpsc::channel();
        let p = Arc::clone(&pool);
        std::thread::spawn(move || {
            let a = p.submit(nap_with, (300, vec![1; 40_000])).expect("s");
            let b = p.submit(nap_with, (0, vec![2; 60_000])).expect("s");
            let _ = tx.send((a.result(), b.result()));
        });
        let (a, b) = rx
            .recv_timeout(PATIENCE)
            .expect("both tasks finish (the second one waited for room)");
        assert_eq!((a.expect("a"), b.expect("b")), (40_000, 60_000));
    }
    leaks.finish();
}
