//! Reading the process table for the chaos checks: children of a pid by
//! comm name and state, fd counts, resident memory; and the subreaper flag
//! that makes orphaned grandchildren (workers of a killed child program)
//! our children, so that a survivor can be seen and reaped.

use anyhow::{Context, Result};
use rustix::process::{
    getpid, kill_process, set_child_subreaper, waitpid, Pid, Signal, WaitOptions,
};

pub use npshmex_testkit::{all_processes as all, proc_stat as stat, Proc, ProcExt};

/// Live (not zombie) pool workers whose parent is `ppid`.
pub fn live_workers_of(ppid: u32) -> Vec<Proc> {
    all()
        .into_iter()
        .filter(|p| p.ppid == ppid && p.is_worker() && !p.is_zombie())
        .collect()
}

/// Whether `pid` is alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|p| !p.is_zombie())
}

/// Open file descriptors of this process.
pub fn fd_count() -> Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")
        .context("reading /proc/self/fd")?
        .count())
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

/// Whether this process reaps its orphaned descendants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaper {
    /// Orphans of our children become our children.
    Subreaper,
    /// The default: orphans go to init (or an outer subreaper).
    Plain,
}

/// Makes this process the reaper of its orphaned descendants, or not.
pub fn set_reaper(mode: Reaper) -> Result<()> {
    // The flag is "any non-zero value"; rustix passes our own pid as it.
    let flag = match mode {
        Reaper::Subreaper => Some(getpid()),
        Reaper::Plain => None,
    };
    set_child_subreaper(flag).context("prctl(PR_SET_CHILD_SUBREAPER)")
}

fn pid_of(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// SIGKILLs `pid` (ignoring a vanished process).
pub fn kill9(pid: u32) {
    if let Some(p) = pid_of(pid) {
        // A stale pid is at worst ESRCH: nothing to do then.
        let _ = kill_process(p, Signal::KILL);
    }
}

/// Reaps `pid` if it is a child of ours that has exited (never blocks).
pub fn reap(pid: u32) {
    if let Some(p) = pid_of(pid) {
        // ECHILD (not our child, or already reaped) leaves nothing to do.
        let _ = waitpid(Some(p), WaitOptions::NOHANG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = stat(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(alive(me.pid));
        assert!(fd_count().unwrap() >= 3);
        assert!(rss_bytes().unwrap() > 0);
        assert!(all().iter().any(|p| p.pid == me.ppid));
        assert!(stat(u32::MAX).is_none());
    }
}
