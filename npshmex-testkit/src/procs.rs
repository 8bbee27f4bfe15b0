//! Reading the process table (`/proc/<pid>/stat`): children of this process,
//! pool workers by their comm name, zombies.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How a pool worker's comm name starts (the pool sets it with
/// `prctl(PR_SET_NAME)`).
pub const WORKER_COMM_PREFIX: &str = "npshmex-w";

/// A process seen in `/proc`: `npshmex_shm`'s one parser of
/// `/proc/<pid>/stat`.
pub use npshmex_shm::procfs::ProcStat as Proc;

/// What the leak checks ask of a [`Proc`].
pub trait ProcExt {
    /// Whether its comm name marks it as a pool worker.
    fn is_worker(&self) -> bool;
    /// Whether it is a zombie (exited, not yet reaped).
    fn is_zombie(&self) -> bool;
}

impl ProcExt for Proc {
    fn is_worker(&self) -> bool {
        self.comm.starts_with(WORKER_COMM_PREFIX)
    }

    fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Sends SIGKILL to `pid`; whether it was delivered (false when the
/// process is gone).
pub fn kill9(pid: u32) -> bool {
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|p| rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok())
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub fn proc_stat(pid: u32) -> Option<Proc> {
    Proc::read(pid).ok()
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
        .filter(ProcExt::is_worker)
        .map(|p| p.pid)
        .collect()
}

/// Pids of every pool worker on the machine, whoever its parent (zombies
/// included).
pub fn worker_pids() -> BTreeSet<u32> {
    all_processes()
        .into_iter()
        .filter(ProcExt::is_worker)
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
