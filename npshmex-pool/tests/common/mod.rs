//! Helpers shared by the pool's integration tests: one test at a time per
//! binary (so "children of this process" is exact), and leak checks.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the per-binary test lock; on `check` asserts nothing leaked.
pub struct Leaks {
    _serial: MutexGuard<'static, ()>,
    fds: usize,
    shm: BTreeSet<String>,
}

/// Starts a test: takes the lock and snapshots fds and /dev/shm.
pub fn start() -> Leaks {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    Leaks {
        _serial: serial,
        fds: open_fds(),
        shm: own_shm(),
    }
}

impl Leaks {
    /// Asserts no worker child is left (waiting up to 10 s for ones that
    /// are exiting), no fd of this process is left open and no new
    /// /dev/shm entry of this process exists.
    pub fn check(self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !worker_children().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            worker_children(),
            Vec::<u32>::new(),
            "worker processes left behind"
        );
        assert_eq!(
            all_children(),
            Vec::<u32>::new(),
            "child processes (zombies?) left behind"
        );
        assert_eq!(open_fds(), self.fds, "file descriptors leaked");
        let new: Vec<String> = own_shm().difference(&self.shm).cloned().collect();
        assert!(new.is_empty(), "/dev/shm entries left behind: {new:?}");
    }
}

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// /dev/shm entries that name this process (npshmex-<pid>-...).
fn own_shm() -> BTreeSet<String> {
    let prefix = format!("npshmex-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// (pid, comm, state) of every child of this process.
fn children() -> Vec<(u32, String, char)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(me) {
            out.push((pid, comm, state));
        }
    }
    out
}

/// Children of this process whose comm marks them as pool workers.
pub fn worker_children() -> Vec<u32> {
    children()
        .into_iter()
        .filter(|c| c.1.starts_with("npshmex-w"))
        .map(|c| c.0)
        .collect()
}

/// All children of this process (including zombies).
pub fn all_children() -> Vec<u32> {
    children().into_iter().map(|c| c.0).collect()
}

/// Whether `pid` is alive and a pool worker (not a zombie).
pub fn is_live_worker(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    stat[open + 1..close].starts_with("npshmex-w") && state != "Z"
}
