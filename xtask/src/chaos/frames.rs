//! Random frames written into a worker's socket. The pool offers no hook
//! for this, so the chaos run finds the parent's end of a worker's socket
//! itself: the worker's socket inode from `/proc/<pid>/fd`, its peer inode
//! from `ss -x` (the kernel's unix-socket diagnostics), and the fd with that
//! inode in `/proc/self/fd`. Garbage written there reaches the worker as if
//! the pool had sent it. The xtask writes through its own duplicate of that
//! fd (`pidfd_getfd` on itself), checked to still be that socket: the pool
//! may close and reuse the number meanwhile, and borrowing a bare fd number
//! it owns could then write into an unrelated file. Control messages travel
//! through the worker's shared ring; the socket carries only fds, so the
//! worker reads it when a task announces one: the tasks after each
//! injection carry a payload past `inline_max`, which travels in a memfd.
//! The worker must refuse the garbage (exit, be replaced), every task must
//! still resolve (right value or a typed error), and the pool must keep
//! serving.

use super::mutate::Mutator;
use super::procs;
use anyhow::{bail, ensure, Context, Result};
use npshmex_pool::{ProcessPoolExecutor, TaskError, WorkerExit};
use rustix::fs::{fstat, FileType};
use rustix::net::{send, SendFlags};
use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags, Signal};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{OwnedFd, RawFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the frame injection saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// Garbage writes.
    pub injected: usize,
    /// Workers that exited after garbage and were replaced.
    pub replaced: usize,
    /// Tasks that failed with a typed error around an injection.
    pub failed_typed: usize,
    /// Tasks that succeeded around an injection.
    pub ok: usize,
}

fn square(n: u64) -> u64 {
    n * n
}

/// A task whose argument travels in a memfd (past the default `inline_max`
/// of 64 KiB), so the worker reads its socket for the fd. It lasts a few
/// milliseconds: the pool then keeps one task per worker instead of
/// batching a burst to the first idle one, so every worker, the victim
/// included, gets some of the tasks after an injection.
fn sum_bytes((n, bytes): (u64, Vec<u8>)) -> u64 {
    std::thread::sleep(Duration::from_millis(2));
    n * n + bytes.iter().map(|&b| u64::from(b)).sum::<u64>()
}

/// An argument of `sum_bytes` that comes back as `n * n`.
fn with_fd(n: u64) -> (u64, Vec<u8>) {
    (n, vec![0; 80 << 10])
}

/// Socket inodes among the fds of `pid` (`None` for `self`).
fn socket_fds(pid: Option<u32>) -> BTreeMap<u64, RawFd> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/fd"),
        None => "/proc/self/fd".to_string(),
    };
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(ino) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.insert(ino, fd);
        }
    }
    out
}

/// Peer inode of every connected unix socket, from `ss -xH`.
fn unix_peers() -> Result<BTreeMap<u64, u64>> {
    let out = Command::new("ss")
        .arg("-xH")
        .output()
        .context("running ss -xH")?;
    ensure!(out.status.success(), "ss -xH failed: {}", out.status);
    let mut peers = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // netid state recv-q send-q local-addr local-inode peer-addr peer-inode
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() >= 8 {
            if let (Ok(a), Ok(b)) = (t[5].parse::<u64>(), t[7].parse::<u64>()) {
                peers.insert(a, b);
            }
        }
    }
    Ok(peers)
}

/// Our fd of the socket whose other end worker `pid` holds, and its inode.
fn parent_end(pid: u32) -> Result<(RawFd, u64)> {
    let theirs: BTreeSet<u64> = socket_fds(Some(pid)).into_keys().collect();
    let ours = socket_fds(None);
    let peers = unix_peers()?;
    let found: Vec<(RawFd, u64)> = theirs
        .iter()
        .filter_map(|ino| {
            let peer = peers.get(ino)?;
            Some((*ours.get(peer)?, *peer))
        })
        .collect();
    match found.as_slice() {
        [end] => Ok(*end),
        [] => bail!("no socket of worker {pid} leads to this process"),
        many => bail!("worker {pid} has several sockets to this process: {many:?}"),
    }
}

/// A duplicate of our own fd `fd`, if it still is the socket with inode
/// `ino` (`None` once the pool has closed it, or reused its number).
fn own_socket(fd: RawFd, ino: u64) -> Result<Option<OwnedFd>> {
    let me = pidfd_open(getpid(), PidfdFlags::empty()).context("pidfd_open(self)")?;
    let Ok(dup) = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) else {
        return Ok(None);
    };
    let st = fstat(&dup).context("fstat of the duplicated fd")?;
    Ok(
        (st.st_ino == ino && FileType::from_raw_mode(st.st_mode) == FileType::Socket)
            .then_some(dup),
    )
}

/// Writes `bytes` into the socket; a worker that already exited (or a full
/// socket buffer) only means less garbage arrives, which is fine.
/// MSG_NOSIGNAL: a worker that already exited must not SIGPIPE us.
fn inject(sock: &OwnedFd, bytes: &[u8]) {
    let _ = send(sock, bytes, SendFlags::NOSIGNAL | SendFlags::DONTWAIT);
}

/// Runs `rounds` injections; `Ok(None)` when `ss` is not available.
pub fn run(rounds: usize, seed: u64) -> Result<Option<Stats>> {
    if !crate::util::on_path("ss") {
        return Ok(None);
    }
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .context("starting the pool")?;
    let mut m = Mutator::new(seed ^ 0xf4a3, &["\u{0}\u{0}\u{0}\u{0}", "\u{7f}\u{ff}"]);
    let mut st = Stats::default();
    for round in 0..rounds {
        let pids = pool.worker_pids();
        let victim = pids[m.below(pids.len())];
        let (fd, ino) = parent_end(victim).with_context(|| format!("round {round}"))?;
        let Some(sock) = own_socket(fd, ino)? else {
            bail!("round {round}: the socket to worker {victim} closed before the injection");
        };
        let len = 1 + m.below(4096);
        let mut garbage = m.bytes(len);
        if m.below(2) == 0 && garbage.len() >= 8 {
            // A plausible little-endian length prefix, small or huge.
            let n: u64 = if m.below(2) == 0 {
                m.below(1 << 12) as u64
            } else {
                u64::MAX - m.below(1000) as u64
            };
            garbage[..8].copy_from_slice(&n.to_le_bytes());
        }
        inject(&sock, &garbage);
        drop(sock);
        st.injected += 1;
        // Tasks after the garbage make the worker read on; each resolves.
        let futures = (0..8u64)
            .map(|i| pool.submit(sum_bytes, with_fd(i)))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, mut f) in futures.into_iter().enumerate() {
            match f.result_timeout(Duration::from_secs(60)) {
                Ok(r) => {
                    ensure!(r == (i * i) as u64, "round {round}: task {i} returned {r}");
                    st.ok += 1;
                }
                Err(TaskError::WaitTimedOut { .. }) => bail!("round {round}: task {i} hangs"),
                // SIGKILL is the pool ending a worker that broke the
                // protocol; any other signal is a crash.
                Err(TaskError::WorkerDied {
                    exit: WorkerExit::Signal(sig),
                    pid,
                }) if sig != Signal::KILL.as_raw() => bail!("round {round}: worker {pid} crashed on garbage (signal {sig}), not a clean exit"),
                Err(_) => st.failed_typed += 1,
            }
        }
        // The worker that got garbage leaves and is replaced.
        let deadline = Instant::now() + Duration::from_secs(20);
        while procs::alive(victim) || pool.worker_pids().len() < 2 {
            ensure!(
                Instant::now() < deadline,
                "round {round}: worker {victim} still runs 20 s after receiving garbage"
            );
            // Two at once: one for each worker.
            let futures = (0..2u64)
                .map(|i| pool.submit(sum_bytes, with_fd(i)))
                .collect::<Result<Vec<_>, _>>()?;
            for mut f in futures {
                let _ = f.result_timeout(Duration::from_secs(60));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        st.replaced += 1;
    }
    for i in 0..50u64 {
        ensure!(
            pool.submit(square, i)?.result()? == i * i,
            "the pool after the garbage"
        );
    }
    Ok(Some(st))
}
