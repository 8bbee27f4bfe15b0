//! Starting one worker process (re-exec of `/proc/self/exe`, or `fork`),
//! the handshake that proves it runs our executable, and reaping it.
//!
//! The worker's end of a socket pair is inherited under its own number
//! (close-on-exec is cleared in the child only, between fork and exec), and
//! the number travels in the `NPSHMEX_WORKER` variable with a random token.
//! Before any function address is trusted the worker sends the identity of
//! its executable (device, inode, size, mtime of `/proc/self/exe`) and the
//! offset of a probe function; both must equal the parent's.

use std::hash::{BuildHasher, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use npshmex_shm::{FdSocket, ShmError};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};

use crate::channel::Channel;
use crate::error::{PoolError, WorkerExit};
use crate::remote_fn::{initializer_offset, probe_offset};
use crate::state::Config;
use crate::wire::{self, ExeId, Setup, ToParent, ToWorker};
use crate::worker::{self, WORKER_ENV};
use crate::StartMethod;

/// How long a new worker may take to say hello (a debug test binary on a
/// loaded machine can take a while to start).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// A started worker process; reaped on `wait` or, at the latest, on drop.
pub(crate) struct WorkerProc {
    pid: i32,
    reaped: bool,
    /// How it ended, when it ended on its own before we killed it.
    exit_before_kill: Option<WorkerExit>,
}

impl WorkerProc {
    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    fn rustix_pid(&self) -> Option<Pid> {
        Pid::from_raw(self.pid)
    }

    /// SIGKILL (no-op if it is gone).
    pub(crate) fn kill(&self) {
        if let (false, Some(pid)) = (self.reaped, self.rustix_pid()) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }

    /// Whether it has ended (without reaping it). Catches a dead worker
    /// whose socket stays open because a process it forked inherited it.
    pub(crate) fn has_exited(&self) -> bool {
        if self.reaped {
            return true;
        }
        let Some(pid) = self.rustix_pid() else {
            return true;
        };
        let flags = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match rustix::process::waitid(WaitId::Pid(pid), flags) {
            Ok(None) => false,
            Ok(Some(_)) => true,
            Err(Errno::INTR) => false,
            // ECHILD: not our child any more (reaped elsewhere).
            Err(_) => true,
        }
    }

    /// Waits at most `grace` for it to exit (as a worker that said it is
    /// closing does at once), then kills it, and collects its status. The
    /// word that says "closing" lives in memory the worker writes, so it
    /// is never trusted to mean that the process will end.
    pub(crate) fn wait_or_kill(&mut self, grace: Duration) -> WorkerExit {
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_micros(100);
        while !self.has_exited() {
            if Instant::now() >= deadline {
                self.kill();
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        self.wait()
    }

    /// Blocks until it has exited and collects its status.
    pub(crate) fn wait(&mut self) -> WorkerExit {
        if self.reaped {
            return WorkerExit::Unknown;
        }
        let Some(pid) = self.rustix_pid() else {
            self.reaped = true;
            return WorkerExit::Unknown;
        };
        loop {
            match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
                Ok(Some((_, status))) => {
                    if let Some(code) = status.exit_status() {
                        self.reaped = true;
                        return WorkerExit::Code(code);
                    }
                    if let Some(sig) = status.terminating_signal() {
                        self.reaped = true;
                        return WorkerExit::Signal(sig);
                    }
                    // Stopped or continued: not an end; wait on.
                }
                Ok(None) | Err(Errno::INTR) => continue,
                Err(_) => {
                    // ECHILD: someone else reaped it (a SIGCHLD=SIG_IGN
                    // parent); nothing is left to wait for.
                    self.reaped = true;
                    return WorkerExit::Unknown;
                }
            }
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.wait();
        }
    }
}

fn random_token() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn transport(op: &'static str) -> impl FnOnce(ShmError) -> PoolError {
    move |source| PoolError::Transport { op, source }
}

/// Why a worker could not be started.
pub(crate) struct StartFailure {
    /// What went wrong.
    pub(crate) error: PoolError,
    /// How the worker ended, when it ended before it was up (then starting
    /// again may work); `None` when it never ran or cannot be trusted
    /// (starting again would fail the same way).
    pub(crate) exit: Option<WorkerExit>,
}

impl From<PoolError> for StartFailure {
    fn from(error: PoolError) -> StartFailure {
        StartFailure { error, exit: None }
    }
}

/// Starts a worker, checks it, and sends its settings and its end of the
/// control region.
pub(crate) fn start(cfg: &Config, exe: &ExeId) -> Result<(WorkerProc, Channel), StartFailure> {
    let (parent, child) = FdSocket::pair().map_err(transport("creating a worker socket"))?;
    let parent = parent.with_max_frame_len(wire::MAX_SOCKET_FRAME);
    let token = random_token();
    let ppid = std::process::id() as i32;
    // Named segments tasks create belong to this program (or whoever it
    // works for), never to a worker.
    let owner = npshmex_shm::owner();
    let mut proc = match cfg.start_method {
        StartMethod::Spawn => {
            let fd = child.as_fd().as_raw_fd();
            let mut cmd = Command::new("/proc/self/exe");
            cmd.env(WORKER_ENV, format!("{fd}:{token}:{ppid}:{owner}"))
                .stdin(Stdio::null());
            if let Some(arg0) = std::env::args_os().next() {
                cmd.arg0(arg0);
            }
            crate::sys::prepare_child(&mut cmd, fd);
            // std forks (then execs): no writable mapping may be half made
            // meanwhile, or the child would hold a copy until its exec.
            let spawned = npshmex_shm::without_mappings_in_flight(|| cmd.spawn());
            let c = spawned.map_err(|source| PoolError::Spawn {
                op: "executing /proc/self/exe",
                source,
            })?;
            drop(child);
            WorkerProc {
                pid: c.id() as i32,
                reaped: false,
                exit_before_kill: None,
            }
        }
        StartMethod::Fork => {
            let keep = child.as_fd().as_raw_fd();
            let forked = crate::sys::fork_worker(keep, move || {
                worker::main_forked(child.into_fd(), token, ppid, owner)
            })
            .map_err(|source| PoolError::Spawn { op: "fork", source })?;
            WorkerProc {
                pid: forked.pid,
                reaped: false,
                exit_before_kill: None,
            }
        }
    };
    if let Err(error) = handshake(&parent, token, exe, &mut proc) {
        proc.kill();
        let exit = proc.wait();
        // A worker that ended before it could say hello (killed from
        // outside, say) may be replaced; one that answered wrong may not.
        let exit = match error {
            PoolError::ExecutableMismatch { .. } => None,
            _ => proc.exit_before_kill.take().or(Some(exit)),
        };
        return Err(StartFailure { error, exit });
    }
    let channel = Channel::parent(parent).map_err(transport("creating the control region"))?;
    let setup = ToWorker::Setup(Setup {
        initializer: cfg.initializer.map(initializer_offset).transpose()?,
        max_tasks: cfg.max_tasks_per_child,
        spin_ns: u64::try_from(cfg.spin.as_nanos()).unwrap_or(u64::MAX),
        inline_max: cfg.inline_max as u64,
    });
    let bytes = wire::encode_frame(&setup, 0).map_err(|e| PoolError::Handshake {
        reason: format!("encoding the worker settings: {e}"),
    })?;
    channel
        .socket()
        .send(&bytes, &[channel.region_fd()])
        .map_err(|e| StartFailure {
            error: PoolError::Transport {
                op: "sending the worker settings",
                source: e,
            },
            // It was up a moment ago: it died (or was killed) since.
            exit: Some({
                proc.kill();
                proc.exit_before_kill.take().unwrap_or_else(|| proc.wait())
            }),
        })?;
    Ok((proc, channel))
}

fn handshake(
    sock: &FdSocket,
    token: u64,
    exe: &ExeId,
    proc: &mut WorkerProc,
) -> Result<(), PoolError> {
    let msg = match sock.recv_timeout(HANDSHAKE_TIMEOUT) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(PoolError::Handshake {
                reason: format!(
                    "no hello from worker {} within {HANDSHAKE_TIMEOUT:?}",
                    proc.pid()
                ),
            })
        }
        Err(ShmError::PeerClosed) => {
            let exit = proc.wait();
            proc.exit_before_kill = Some(exit);
            return Err(PoolError::Handshake {
                reason: format!("worker {} ended before the handshake: {exit}", proc.pid()),
            });
        }
        Err(source) => {
            return Err(PoolError::Transport {
                op: "receiving the worker hello",
                source,
            })
        }
    };
    let hello = match wire::decode_frame::<ToParent>(&msg.bytes) {
        Ok((ToParent::Hello(h), _)) => h,
        _ => {
            return Err(PoolError::Handshake {
                reason: "the first frame of the worker is not a hello".into(),
            })
        }
    };
    if hello.token != token || hello.pid != proc.pid() {
        return Err(PoolError::Handshake {
            reason: "the worker's token or pid does not match".into(),
        });
    }
    if hello.exe != *exe || hello.probe != probe_offset() {
        return Err(PoolError::ExecutableMismatch {
            parent: format!("{exe}, probe {}", probe_offset()),
            worker: format!("{}, probe {}", hello.exe, hello.probe),
        });
    }
    Ok(())
}
