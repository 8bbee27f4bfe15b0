//! Reading the process table (`/proc/<pid>/stat`): children of this process,
//! pool workers by their comm name, zombies.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How a pool worker's comm name starts (the pool sets it with
/// `prctl(PR_SET_NAME)`).
pub const WORKER_COMM_PREFIX: &str = "npshmex-w";

/// A process seen in `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its comm name.
    pub comm: String,
    /// Its state letter (`Z` for a zombie).
    pub state: char,
    /// Its parent pid.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
}

impl Proc {
    /// Whether its comm name marks it as a pool worker.
    pub fn is_worker(&self) -> bool {
        self.comm.starts_with(WORKER_COMM_PREFIX)
    }

    /// Whether it is a zombie (exited, not yet reaped).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn proc_stat(pid: u32) -> Option<Proc> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &s)
}

/// `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses,
/// so it ends at the last `)`.
fn parse_stat(pid: u32, s: &str) -> Option<Proc> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let mut rest = s.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Proc {
        pid,
        comm,
        state,
        ppid,
        pgrp,
    })
}

/// Every process in `/proc`.
pub fn all_processes() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Every child of this process, zombies included.
pub fn children() -> Vec<Proc> {
    let me = std::process::id();
    all_processes()
        .into_iter()
        .filter(|p| p.ppid == me)
        .collect()
}

/// Pids of the children of this process that are pool workers (zombies
/// included).
pub fn worker_children() -> BTreeSet<u32> {
    children()
        .into_iter()
        .filter(Proc::is_worker)
        .map(|p| p.pid)
        .collect()
}

/// Pids of every pool worker on the machine, whoever its parent (zombies
/// included).
pub fn worker_pids() -> BTreeSet<u32> {
    all_processes()
        .into_iter()
        .filter(Proc::is_worker)
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` is alive (not a zombie) and a pool worker.
pub fn is_live_worker(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|p| p.is_worker() && !p.is_zombie())
}

/// Waits up to `timeout` for the worker children of this process to be
/// gone (exiting workers of a dropped pool); returns those still there.
pub fn wait_no_worker_children(timeout: Duration) -> BTreeSet<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = worker_children();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_comm_names() {
        let p = parse_stat(42, "42 (npshmex-w (1) x) S 7 9 9 0 -1 4194560");
        assert_eq!(
            p,
            Some(Proc {
                pid: 42,
                comm: "npshmex-w (1) x".into(),
                state: 'S',
                ppid: 7,
                pgrp: 9,
            })
        );
        assert!(p.is_some_and(|p| p.is_worker() && !p.is_zombie()));
        assert_eq!(parse_stat(1, "1 (init S 0 1"), None);
        assert_eq!(parse_stat(1, "1 (init) S x 1"), None);
    }

    #[test]
    fn a_child_is_seen_until_reaped() -> std::io::Result<()> {
        let _serial = crate::leak::serial();
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        let pid = child.id();
        let seen = children().iter().any(|p| p.pid == pid);
        let me = proc_stat(std::process::id());
        child.kill()?;
        child.wait()?;
        assert!(seen);
        assert!(!children().iter().any(|p| p.pid == pid));
        assert!(worker_children().is_empty());
        assert!(!is_live_worker(pid));
        assert!(me.is_some_and(|p| !p.is_zombie() && !p.is_worker()));
        Ok(())
    }
}
