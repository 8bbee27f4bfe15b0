//! The pool in a plain program (not a test harness): this test binary runs
//! itself again with a role in the environment, and its own constructor
//! takes over before the harness does, calling `init` as a `main` would.
//!
//! - `parent`: starts a pool with busy workers and reports their pids; the
//!   test kills it with `kill -9` and checks the workers are gone within a
//!   second.
//! - `chaos`: panic, abort, SIGSEGV, exit(3) and kill -9 of a worker among
//!   good tasks, each failing exactly one future, reported on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use npshmex_pool::{ProcessPoolExecutor, TaskError, WorkerExit};
use npshmex_testkit::LeakCheck;

const ROLE: &str = "NPSHMEX_POOL_TEST_ROLE";

fn sleep_s(s: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(s));
    s
}

#[ctor::ctor]
fn role() {
    // Workers of the parent role become workers here.
    npshmex_pool::init();
    match std::env::var(ROLE).as_deref() {
        Ok("parent") => std::process::exit(parent()),
        Ok("chaos") => std::process::exit(chaos()),
        _ => {}
    }
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
enum Act {
    Ok(u64),
    Panic,
    Abort,
    Segfault,
    Exit3,
    Kill9,
}

fn act(a: Act) -> u64 {
    match a {
        Act::Ok(x) => x + 1,
        Act::Panic => panic!("asked to panic"),
        Act::Abort => std::process::abort(),
        Act::Segfault => {
            // SAFETY: raise has no memory-safety preconditions; SIGSEGV's
            // default action kills this worker, which is the point.
            unsafe {
                libc::raise(libc::SIGSEGV);
            }
            0
        }
        Act::Exit3 => std::process::exit(3),
        Act::Kill9 => {
            npshmex_testkit::kill9(std::process::id());
            0
        }
    }
}

/// The chaos role: prints `ok NAME` per scenario that failed exactly the
/// one bad future with the right error; exit status 0 if all did.
fn chaos() -> i32 {
    let Ok(pool) = ProcessPoolExecutor::new(2) else {
        return 2;
    };
    let mut failures = 0;
    for bad in [
        Act::Panic,
        Act::Abort,
        Act::Segfault,
        Act::Exit3,
        Act::Kill9,
    ] {
        let good: Vec<_> = (0..200)
            .filter_map(|i| pool.submit(act, Act::Ok(i)).ok())
            .collect();
        let Ok(victim) = pool.submit(act, bad) else {
            return 3;
        };
        let more: Vec<_> = (200..400)
            .filter_map(|i| pool.submit(act, Act::Ok(i)).ok())
            .collect();
        let goods_ok = good.len() == 200
            && more.len() == 200
            && good
                .into_iter()
                .chain(more)
                .enumerate()
                .all(|(i, f)| f.result().ok() == Some(i as u64 + 1));
        let outcome = victim.result();
        let right = match (bad, &outcome) {
            (Act::Panic, Err(TaskError::Panicked(_))) => true,
            (Act::Abort, Err(TaskError::WorkerDied { exit, .. })) => {
                *exit == WorkerExit::Signal(libc::SIGABRT)
            }
            (Act::Segfault, Err(TaskError::WorkerDied { exit, .. })) => {
                *exit == WorkerExit::Signal(libc::SIGSEGV)
            }
            (Act::Exit3, Err(TaskError::WorkerDied { exit, .. })) => *exit == WorkerExit::Code(3),
            (Act::Kill9, Err(TaskError::WorkerDied { exit, .. })) => {
                *exit == WorkerExit::Signal(libc::SIGKILL)
            }
            _ => false,
        };
        if goods_ok && right {
            println!("ok {bad:?}");
        } else {
            println!("FAILED {bad:?}: good tasks ok: {goods_ok}, outcome {outcome:?}");
            failures += 1;
        }
    }
    drop(pool);
    i32::from(failures > 0)
}

/// The parent role: a pool with two busy workers and more work queued.
fn parent() -> i32 {
    let Ok(pool) = ProcessPoolExecutor::new(2) else {
        return 2;
    };
    let futs: Vec<_> = (0..6)
        .filter_map(|_| pool.submit(sleep_s, 300).ok())
        .collect();
    while !futs.iter().take(2).all(|f| f.running()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("workers {}", pids.join(" "));
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn kill_9_of_the_parent_leaves_no_worker() {
    let leaks = LeakCheck::start();
    let mut child = Command::new("/proc/self/exe")
        .env(ROLE, "parent")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the parent role");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the worker pids");
    let pids: Vec<u32> = line
        .trim()
        .strip_prefix("workers ")
        .expect("a workers line")
        .split(' ')
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| npshmex_testkit::is_live_worker(p)));

    child.kill().expect("kill -9 the parent");
    child.wait().expect("reap the parent");
    let killed = Instant::now();
    // PR_SET_PDEATHSIG acts at once; a loaded machine may take a while to
    // schedule the deaths: poll until a generous deadline.
    let alive = loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| npshmex_testkit::is_live_worker(p))
            .collect();
        if alive.is_empty() || killed.elapsed() > Duration::from_secs(60) {
            break alive;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        alive.is_empty(),
        "workers {alive:?} outlived their parent by {:?}",
        killed.elapsed()
    );
    leaks.finish();
}

#[test]
fn crashes_in_a_plain_program_fail_one_future_each() {
    let leaks = LeakCheck::start();
    let out = Command::new("/proc/self/exe")
        .env(ROLE, "chaos")
        .stderr(Stdio::null())
        .output()
        .expect("run the chaos role");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chaos role failed: {text}");
    for name in ["Panic", "Abort", "Segfault", "Exit3", "Kill9"] {
        assert!(
            text.contains(&format!("ok {name}")),
            "{name} missing in: {text}"
        );
    }
    leaks.finish();
}
