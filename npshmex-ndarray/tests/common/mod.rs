//! Helpers shared by the integration tests: one pool per test, and leak
//! checks of `/dev/shm`, of this process's segments and of worker processes.
#![allow(dead_code)]

use npshmex_pool::ProcessPoolExecutor;
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Leak checks count process-wide resources: tests that check serialize.
static LEAK_LOCK: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    LEAK_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn pool() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .task_timeout(Duration::from_secs(120))
        .build()
        .expect("pool starts")
}

/// Entries of `/dev/shm` named `npshmex-<pid>-*` made by this process or
/// by one of its live children (its workers). Other programs on the machine
/// (other test binaries running at the same time) make and remove entries of
/// their own, which are none of this test's business.
pub fn shm_entries() -> BTreeSet<String> {
    let me = std::process::id();
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    let pid = n
                        .strip_prefix("npshmex-")
                        .and_then(|r| r.split('-').next())
                        .and_then(|p| p.parse::<u32>().ok());
                    matches!(pid, Some(p) if p == me || parent_of(p) == Some(me))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    stat[close + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// Shared-memory files this process holds open or mapped: (dev, inode) of
/// every memfd or `/dev/shm` file in `/proc/self/fd` and `/proc/self/maps`.
pub fn held_segments() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        for e in rd.filter_map(|e| e.ok()) {
            if let Ok(target) = std::fs::read_link(e.path()) {
                let t = target.to_string_lossy().into_owned();
                if t.starts_with("/memfd:npshmex") || t.starts_with("/dev/shm/npshmex-") {
                    if let Ok(m) = std::fs::metadata(e.path()) {
                        use std::os::unix::fs::MetadataExt;
                        out.insert(format!("{}:{}", m.dev(), m.ino()));
                    }
                }
            }
        }
    }
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        for line in maps.lines() {
            if line.contains("/memfd:npshmex") || line.contains("/dev/shm/npshmex-") {
                // inode is the 5th field
                if let Some(ino) = line.split_whitespace().nth(4) {
                    out.insert(format!("map:{ino}"));
                }
            }
        }
    }
    out
}

/// Number of shared-memory mappings and fds of this process (worker side).
pub fn held_segment_count(_: ()) -> usize {
    npshmex_ndarray::cache::clear();
    held_segments().len()
}

/// Live worker processes (comm `npshmex-w*`) that are children of this process.
pub fn worker_children() -> BTreeSet<u32> {
    let me = std::process::id();
    let mut out = BTreeSet::new();
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
        // comm is in parentheses; ppid is the second field after it.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[..close].split_once('(').map(|x| x.1).unwrap_or("");
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if comm.starts_with("npshmex-w") && ppid == Some(me) {
            out.insert(pid);
        }
    }
    out
}

/// Waits until no worker child is left (after the pool was dropped).
pub fn assert_no_workers_left() {
    for _ in 0..200 {
        if worker_children().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("worker processes left behind: {:?}", worker_children());
}

/// A baseline of what a test must leave as it found it.
pub struct LeakCheck {
    shm: BTreeSet<String>,
    held: BTreeSet<String>,
}

impl LeakCheck {
    pub fn start() -> LeakCheck {
        npshmex_ndarray::cache::clear();
        LeakCheck {
            shm: shm_entries(),
            held: held_segments(),
        }
    }

    /// Checks (after the caller dropped its arrays and its pool).
    pub fn finish(self) {
        npshmex_ndarray::cache::clear();
        let shm = shm_entries();
        let new_shm: Vec<_> = shm.difference(&self.shm).collect();
        assert!(new_shm.is_empty(), "/dev/shm entries left: {new_shm:?}");
        let held = held_segments();
        let new_held: Vec<_> = held.difference(&self.held).collect();
        assert!(new_held.is_empty(), "segments still held: {new_held:?}");
        assert_no_workers_left();
    }
}
