//! Killing the parent with `kill -9` leaves no worker alive: this test
//! binary runs itself again as a plain parent process (its own constructor
//! takes over before the test harness), which starts a pool with busy
//! workers and reports their pids; the test kills it and checks the
//! workers are gone within a second.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use npshmex_pool::ProcessPoolExecutor;

const ROLE: &str = "NPSHMEX_POOL_TEST_ROLE";

fn sleep_s(s: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(s));
    s
}

#[ctor::ctor]
fn role() {
    // Workers of the parent role become workers here.
    npshmex_pool::init();
    if std::env::var_os(ROLE).is_some_and(|r| r == "parent") {
        std::process::exit(parent());
    }
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
    let leaks = common::start();
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
    assert!(pids.iter().all(|&p| common::is_live_worker(p)));

    child.kill().expect("kill -9 the parent");
    child.wait().expect("reap the parent");
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| common::is_live_worker(p))
        .collect();
    assert!(
        alive.is_empty(),
        "workers {alive:?} outlived their parent by {:?}",
        killed.elapsed()
    );
    leaks.check();
}
