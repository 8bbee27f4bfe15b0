//! The worker side: start-up (name, parent-death signal, handshake,
//! initializer) and the loop that runs tasks in order and answers them.
//!
//! Tasks arrive in batches (one frame may carry many), but every result is
//! sent as soon as it exists, so results come in order. Before a task runs,
//! its id is announced in the control region, so a death is blamed on the
//! task that was really running. Frames come through the channel's request
//! ring: after each one the worker polls it for the pool's `spin` time,
//! then parks on its futex, so a parent that submits the next task right
//! away costs no wake-up, and an idle worker burns nothing.

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use npshmex_shm::{FdSocket, Message, ShmError};

use crate::channel::Channel;
use crate::remote_error::RemoteCause;
use crate::remote_fn::{invoke, probe_offset, run_initializer};
use crate::wire::{self, ExeId, Failure, Hello, Packet, ResultHead, ToParent, ToWorker};

/// Environment variable that makes a process a worker:
/// `fd:token:ppid:owner` (owner: the process whose life named segments
/// made by tasks are tied to, see `npshmex_shm::set_owner`).
pub(crate) const WORKER_ENV: &str = "NPSHMEX_WORKER";

/// The comm name of workers (at most 15 bytes; leak checks look for the
/// `npshmex-w` prefix).
const WORKER_NAME: &std::ffi::CStr = c"npshmex-worker";

/// Entry of a worker started by exec: never returns.
pub(crate) fn main_spawned(value: OsString) -> ! {
    let parsed = value.to_str().and_then(|s| {
        let mut it = s.split(':');
        let fd = it.next()?.parse::<RawFd>().ok()?;
        let token = it.next()?.parse::<u64>().ok()?;
        let ppid = it.next()?.parse::<i32>().ok()?;
        let owner = it.next()?.parse::<u32>().ok()?;
        Some((fd, token, ppid, owner))
    });
    let Some((fd, token, ppid, owner)) = parsed else {
        eprintln!("npshmex worker: malformed {WORKER_ENV} value {value:?}");
        std::process::exit(101);
    };
    become_worker(ppid, owner);
    let sock = match crate::sys::adopt_inherited_socket(fd) {
        Ok(fd) => FdSocket::from_fd(fd),
        Err(e) => {
            eprintln!("npshmex worker: cannot use the inherited socket: {e}");
            std::process::exit(101);
        }
    };
    if other_threads_run() {
        // `init` was called late: an async runtime (`#[tokio::main]`) or
        // other code already started threads, and this thread may be one
        // of the runtime's, with its context in thread-locals. Tasks run on
        // a fresh thread instead, outside any runtime, so a task that
        // builds a runtime of its own works. The idle runtime stays.
        let stack = rustix::process::getrlimit(rustix::process::Resource::Stack)
            .current
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(MAIN_STACK)
            .clamp(MAIN_STACK, 1 << 30);
        let served = std::thread::Builder::new()
            .name(WORKER_NAME.to_string_lossy().into_owned())
            .stack_size(stack)
            .spawn(move || serve(sock, token));
        std::process::exit(match served {
            Ok(handle) => handle.join().unwrap_or(101),
            Err(e) => {
                eprintln!("npshmex worker: cannot start the task thread: {e}");
                101
            }
        })
    }
    std::process::exit(serve(sock, token))
}

/// The stack of a task thread when the main thread's limit is unknown:
/// the usual `ulimit -s`.
const MAIN_STACK: usize = 8 << 20;

/// Whether this process runs threads besides the calling one.
fn other_threads_run() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() > 1)
}

/// Entry of a forked worker (in the child); returns the exit code.
pub(crate) fn main_forked(sock: OwnedFd, token: u64, ppid: i32, owner: u32) -> i32 {
    become_worker(ppid, owner);
    serve(FdSocket::from_fd(sock), token)
}

/// Process-level set-up: comm name, die with the parent, panic reports,
/// and the owner of the named segments tasks create.
fn become_worker(ppid: i32, owner: u32) {
    // Best effort: a worker without its name still works.
    let _ = rustix::thread::set_name(WORKER_NAME);
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_err()
    {
        std::process::exit(102);
    }
    // The parent may have died before PR_SET_PDEATHSIG took effect.
    if rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()) != ppid {
        std::process::exit(103);
    }
    crate::remote_fn::panic_hook::install();
    crate::sys::ignore_sigpipe();
    // Keys a task puts belong to the program the pool serves, not to this
    // worker, which may be recycled at any moment. If the owner is already
    // gone, so is our parent, and PR_SET_PDEATHSIG ends us.
    let _ = npshmex_shm::set_owner(owner);
}

/// Handshake, initializer, task loop. Returns the exit code.
fn serve(sock: FdSocket, token: u64) -> i32 {
    let sock = sock.with_max_frame_len(wire::MAX_SOCKET_FRAME);
    let exe = match ExeId::current() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("npshmex worker: cannot identify /proc/self/exe: {e}");
            return 104;
        }
    };
    let hello = ToParent::Hello(Hello {
        token,
        pid: std::process::id(),
        exe,
        probe: probe_offset(),
    });
    let Ok(hello) = wire::encode_frame(&hello, 0) else {
        return 104;
    };
    if sock.send(&hello, &[]).is_err() {
        return 0;
    }
    let (setup, region) = match sock.recv() {
        Ok(m) => match (
            wire::decode_frame::<ToWorker>(&m.bytes),
            m.fds.into_iter().next(),
        ) {
            (Ok((ToWorker::Setup(s), _)), Some(region)) => (s, region),
            _ => return 105,
        },
        // The parent gave up on us (handshake refused or shutdown).
        Err(_) => return 0,
    };
    let channel = match Channel::worker(sock, region) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("npshmex worker: cannot map the control region: {e}");
            return 105;
        }
    };
    let init_error = setup.initializer.and_then(|off| run_initializer(off).err());
    let failed = init_error.is_some();
    if send_head(&channel, &ToParent::Ready(init_error), &[], &[]).is_err() {
        return 0;
    }
    if failed {
        // The parent marks the pool broken and closes the channel.
        while !channel.is_closed() {
            channel.park(Duration::from_secs(1));
        }
        return 0;
    }
    Worker {
        channel: &channel,
        spin: Duration::from_nanos(setup.spin_ns),
        inline_max: usize::try_from(setup.inline_max).unwrap_or(usize::MAX),
        budget: setup.max_tasks,
    }
    .run()
}

fn send_head(
    channel: &Channel,
    head: &ToParent,
    payloads: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> Result<(), ShmError> {
    let bytes = wire::encode_frame(head, 0).map_err(|e| ShmError::Frame {
        reason: format!("encoding a frame header: {e}"),
    })?;
    let mut parts = Vec::with_capacity(1 + payloads.len());
    parts.push(&bytes[..]);
    parts.extend_from_slice(payloads);
    channel.send(&parts, fds)
}

/// How long an idle worker parks before it looks around (the pool wakes it
/// for every frame and when it closes; its death ends us anyway).
const IDLE_PARK: Duration = Duration::from_secs(1);

struct Worker<'a> {
    channel: &'a Channel,
    spin: Duration,
    inline_max: usize,
    budget: Option<u64>,
}

impl Worker<'_> {
    fn run(mut self) -> i32 {
        loop {
            let msg = match self.channel.recv_timeout(self.spin, IDLE_PARK) {
                Ok(Some(m)) => m,
                // The pool is done with us.
                Ok(None) if self.channel.is_closed() => return 0,
                Ok(None) => continue,
                // Anything else (fds lost because this process ran out of
                // them, a malformed ring entry): tell the parent why, for the
                // task it sent, then end.
                Err(e) => {
                    let why = RemoteCause::with_source(
                        "the worker could not receive its next task",
                        RemoteCause::from_error(&e),
                    );
                    let _ = send_head(self.channel, &ToParent::Fatal(why), &[], &[]);
                    return 107;
                }
            };
            match self.run_frame(msg) {
                Ok(true) => {}
                Ok(false) => return 0,
                Err(code) => return code,
            }
        }
    }

    /// Runs the tasks of one frame in order. `Ok(false)`: stop (task budget
    /// spent or the parent is gone).
    fn run_frame(&mut self, msg: Message) -> Result<bool, i32> {
        let Ok((ToWorker::Tasks(tasks), mut inline)) = wire::decode_frame::<ToWorker>(&msg.bytes)
        else {
            eprintln!("npshmex worker: malformed frame from the parent");
            return Err(106);
        };
        let mut fds = msg.fds.into_iter();
        let inline_max = self.inline_max;
        for task in tasks {
            // Before any code of the task runs (decoding included): if it
            // kills this process, the pool knows it started.
            self.channel.set_running(task.id);
            // Segments the task's argument moved here and let go are reused
            // for its result (the drop-in path's copy out and back in):
            // see `npshmex_shm::cache::recycle_scope`.
            let outcome = npshmex_shm::cache::recycle_scope(|| {
                wire::with_payload(
                    task.body,
                    task.fds,
                    &task.moved,
                    &mut inline,
                    &mut fds,
                    |bytes, fds| {
                        invoke(task.tramp, task.func, bytes, fds).and_then(|enc| {
                            Packet::from_encoded(enc, inline_max)
                                .map_err(|e| Failure::ResultEncode(e.to_cause()))
                        })
                    },
                )
            });
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => Err(Failure::ArgumentDecode(RemoteCause::from_error(&e))),
            };
            // Every result goes out before the next task starts, so results
            // come in task order and a death is blamed on the task that ran.
            if self.answer(task.id, outcome).is_err() {
                return Ok(false);
            }
            if let Some(b) = &mut self.budget {
                *b = b.saturating_sub(1);
                if *b == 0 {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn answer(&mut self, id: u64, outcome: Result<Packet, Failure>) -> Result<(), ShmError> {
        match outcome {
            Ok(p) => {
                let head = ToParent::Results(vec![ResultHead {
                    id,
                    outcome: Ok(p.payload()),
                }]);
                let mut fds = Vec::new();
                p.push_fds(&mut fds);
                send_head(self.channel, &head, &[p.inline()], &fds)
            }
            Err(f) => send_head(
                self.channel,
                &ToParent::Results(vec![ResultHead {
                    id,
                    outcome: Err(f),
                }]),
                &[],
                &[],
            ),
        }
    }
}
