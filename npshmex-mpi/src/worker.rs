//! A worker rank: the loop that receives a task from rank 0 into fresh
//! segments, runs it with `backend::run_task` and sends the result back,
//! and the watchdog thread that keeps it honest.
//!
//! Tasks run on the main thread, which makes its MPI calls under a lock
//! and releases it while the task runs. The watchdog thread takes the same
//! lock to send heartbeats, to hear rank 0's, and (while a task runs) to
//! read a `Shutdown`: a rank whose task outlived its timeout is abandoned
//! by rank 0, and this is how it still leaves MPI with the others (a stuck
//! thread cannot be stopped; `_exit` after `MPI_Finalize` ends it). The
//! watchdog ends the process when rank 0 has been silent too long or the
//! launcher's daemon (its parent) is gone, so no rank outlives its job.
//!
//! A worker never returns to `main`.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use npshmex_pool::backend::{self, BuildId, TaskFn};
use npshmex_pool::RemoteCause;

use crate::engine::parent_pid;
use crate::error::MpiError;
use crate::frame::{self, Failure, Task, ToCaller, ToWorker};
use crate::inflight::{Buf, InFlight, Incoming, Outgoing};
use crate::raw::{self, Comm, Matched, Tag};
use crate::session::{self, InitOptions};

/// What the main thread and the watchdog share.
struct Shared {
    mpi: Mutex<Link>,
    /// The main thread is running a task (so the only frame rank 0 may
    /// send is `Shutdown`, and the watchdog reads it).
    busy: AtomicBool,
    /// The worker is leaving MPI: the watchdog only watches the launcher.
    leaving: AtomicBool,
    /// The watchdog waits for the lock: the main thread, which takes it
    /// again right after each poll, lets it in first (a mutex is not fair,
    /// and a watchdog kept out cannot hear rank 0's heartbeats).
    watchdog_waits: AtomicBool,
    /// When rank 0 was last heard, in ms since `epoch`.
    heard_ms: AtomicU64,
    epoch: Instant,
    beat: Duration,
    silence: Duration,
    ppid: u32,
}

/// The MPI side of a worker, used under the lock.
struct Link {
    comm: Comm,
    universe: Option<mpi::environment::Universe>,
    beats: Vec<InFlight>,
    last_beat: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Link> {
        // The main thread gives way to a waiting watchdog.
        while self.watchdog_waits.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        // A panic never happens under this lock (tasks run outside it).
        self.mpi.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watchdog's way to the lock.
    fn lock_watchdog(&self) -> MutexGuard<'_, Link> {
        self.watchdog_waits.store(true, Ordering::Release);
        let g = self.mpi.lock().unwrap_or_else(|p| p.into_inner());
        self.watchdog_waits.store(false, Ordering::Release);
        g
    }

    fn heard(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.heard_ms.load(Ordering::Relaxed)))
    }

    /// Leaves MPI (with `finalize`, `MPI_Finalize`, where every rank meets)
    /// and ends the process with status 0. Called with the lock held, so
    /// no other thread of this process makes an MPI call afterwards.
    fn leave(&self, link: &mut Link, finalize: bool) -> ! {
        self.leaving.store(true, Ordering::SeqCst);
        if finalize {
            // rsmpi's Universe drop is MPI_Finalize.
            drop(link.universe.take());
            crate::inflight::bury();
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        raw::exit_now(0)
    }
}

/// The worker's start: the handshake from this side, then the loop.
pub(crate) fn start(
    universe: mpi::environment::Universe,
    comm: Comm,
    build: BuildId,
    opts: InitOptions,
) -> ! {
    let rank = comm.rank().unwrap_or(-1);
    match hello(&comm, build, &opts) {
        Ok(Some(settings)) => serve(universe, comm, settings),
        Ok(None) => {
            // Refused (another rank runs another build): leave with the
            // others. Exit 0: rank 0 reports the typed error, and a
            // non-zero status would make the launcher kill it first.
            warn!("npshmex-mpi: rank {rank} leaves: the ranks do not all run the same build");
            drop(universe);
            std::process::exit(0)
        }
        Err(e) => {
            warn!("npshmex-mpi: rank {rank} could not start as a worker: {e}");
            drop(universe);
            std::process::exit(0)
        }
    }
}

struct Settings {
    beat: Duration,
    silence: Duration,
    inline_max: usize,
    spin: Duration,
}

fn hello(comm: &Comm, build: BuildId, opts: &InitOptions) -> Result<Option<Settings>, MpiError> {
    let waited = opts.handshake_timeout;
    let deadline = crate::after(Instant::now(), waited);
    let head = ToCaller::Hello {
        build,
        pid: std::process::id(),
        host: raw::host_name(),
    };
    let me = comm.rank()?;
    session::send_frame(comm, 0, frame::encode(me, &head, &[])?, deadline, waited)?;
    let (_, bytes) = session::receive_frame(comm, 0, deadline, waited)?;
    match frame::decode::<ToWorker>(0, &bytes)?.0 {
        ToWorker::Welcome {
            beat_ms,
            silence_ms,
            inline_max,
            spin_us,
        } => Ok(Some(Settings {
            beat: Duration::from_millis(beat_ms),
            silence: Duration::from_millis(silence_ms),
            inline_max: usize::try_from(inline_max).unwrap_or(usize::MAX),
            spin: Duration::from_micros(spin_us),
        })),
        _ => Ok(None),
    }
}

fn serve(universe: mpi::environment::Universe, comm: Comm, s: Settings) -> ! {
    backend::become_worker();
    // Before the watchdog starts: from then on MPI is called under the lock.
    let me = comm.rank().unwrap_or(-1);
    let shared = Arc::new(Shared {
        mpi: Mutex::new(Link {
            comm,
            universe: Some(universe),
            beats: Vec::new(),
            last_beat: Instant::now(),
        }),
        busy: AtomicBool::new(false),
        leaving: AtomicBool::new(false),
        watchdog_waits: AtomicBool::new(false),
        heard_ms: AtomicU64::new(0),
        epoch: Instant::now(),
        beat: s.beat,
        silence: s.silence,
        ppid: parent_pid(),
    });
    {
        let watched = shared.clone();
        let started = std::thread::Builder::new()
            .name("npshmex-mpi-watchdog".into())
            .spawn(move || watchdog(&watched));
        if let Err(e) = started {
            warn!("npshmex-mpi: worker cannot start its watchdog ({e}); leaving");
            let mut link = shared.lock();
            shared.leave(&mut link, true);
        }
    }
    let mut last_task = Instant::now();
    let mut backoff = Duration::from_micros(20);
    loop {
        let probed = {
            let link = shared.lock();
            link.comm.probe(0, Tag::Frame)
        };
        let m = match probed {
            Ok(Some(m)) => m,
            Ok(None) => {
                if last_task.elapsed() < s.spin {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(1));
                }
                continue;
            }
            Err(e) => {
                warn!("npshmex-mpi: worker rank {me}: MPI failed ({e}); leaving");
                let mut link = shared.lock();
                shared.leave(&mut link, false);
            }
        };
        shared.heard();
        let frame = match receive_frame(&shared, m) {
            Ok(v) => v,
            Err(e) => {
                out_of_step(&shared, me, &e.to_string());
                continue;
            }
        };
        match frame::decode::<ToWorker>(0, &frame) {
            Ok((ToWorker::Task(task), inline)) => {
                run(&shared, me, &task, inline, s.inline_max);
                last_task = Instant::now();
                backoff = Duration::from_micros(20);
            }
            Ok((ToWorker::Shutdown { finalize }, _)) => {
                let mut link = shared.lock();
                link.beats.clear();
                // Exit status 0: the job ends normally.
                shared.leave(&mut link, finalize);
            }
            Ok(_) => {}
            Err(e) => out_of_step(&shared, me, &e.to_string()),
        }
    }
}

/// Receives a matched frame, polling it to the end and releasing the
/// lock between polls (the watchdog's heartbeats go on).
fn receive_frame(shared: &Shared, m: Matched) -> Result<Vec<u8>, MpiError> {
    let mut flight = InFlight::new(0);
    {
        let _link = shared.lock();
        flight.receive_matched(m, Vec::new())?;
    }
    drive(shared, &mut flight)?;
    flight.into_frame().ok_or(MpiError::Size {
        rank: 0,
        len: 0,
        reason: "a transfer did not complete",
    })
}

/// Polls `poll` (under the lock) until it says done.
fn drive_with(
    shared: &Shared,
    mut poll: impl FnMut(&mut Link) -> Result<bool, MpiError>,
) -> Result<(), MpiError> {
    loop {
        let done = {
            let mut link = shared.lock();
            poll(&mut link)?
        };
        if done {
            return Ok(());
        }
        // MPI moves bytes only inside its calls: poll without sleeping
        // (yielding lets the watchdog take the lock).
        std::thread::yield_now();
    }
}

fn drive(shared: &Shared, flight: &mut InFlight) -> Result<(), MpiError> {
    drive_with(shared, |_| flight.poll())
}

/// Drives the sends of a task's outcome to the end.
///
/// Rank 0 sends this worker nothing while they are under way (the next
/// task comes only once the whole result is in), except a `Shutdown` after
/// it refused the result (too large, say) and will never receive its
/// bytes: this worker would spin here for good and never read it (its
/// watchdog reads frames only while a task runs). So a frame that comes
/// now is read here: `Shutdown` is obeyed, anything else is out of step.
fn drive_reply(shared: &Shared, flight: &mut InFlight) -> Result<(), MpiError> {
    drive_with(shared, |link| {
        if flight.poll()? {
            return Ok(true);
        }
        let Some(m) = link.comm.probe(0, Tag::Frame)? else {
            return Ok(false);
        };
        shared.heard();
        let mut f = InFlight::new(0);
        f.receive_matched(m, Vec::new())?;
        let got = wait_briefly(&mut f)
            .then(|| f.into_frame())
            .flatten()
            .unwrap_or_default();
        if let Ok((ToWorker::Shutdown { finalize }, _)) = frame::decode::<ToWorker>(0, &got) {
            link.beats.clear();
            shared.leave(link, finalize);
        }
        Err(MpiError::BadFrame {
            rank: 0,
            reason: "a frame from rank 0 while this worker sent a result",
            source: None,
        })
    })
}

/// Runs one task: receives its argument, calls it, sends the outcome.
fn run(shared: &Shared, me: i32, task: &Task, inline: &[u8], inline_max: usize) {
    // The argument's raw messages cannot be received as announced: the
    // task fails, and the stream is out of step from here on.
    let lost = |e: MpiError| {
        reply(
            shared,
            me,
            task.id,
            Err(Failure::Transport(RemoteCause::from_error(&e))),
            None,
        );
        out_of_step(shared, me, &e.to_string());
    };
    let posted = {
        let link = shared.lock();
        Incoming::post(&link.comm, 0, &task.arg, inline)
    };
    let mut incoming = match posted {
        Ok(i) => i,
        Err(e) => return lost(e),
    };
    if let Err(e) = drive_with(shared, |_| incoming.poll()) {
        return lost(e);
    }
    let Ok(arg) = incoming.finish() else {
        out_of_step(shared, me, "a receive did not complete");
        return;
    };
    // SAFETY: the offsets come from rank 0's `TaskFn::to_raw`, for one
    // `fn(A) -> R` of this executable: rank 0 compared every rank's build
    // id (the linker's hash of the whole executable, or a hash of the
    // file) with its own before sending any task (session::handshake), so
    // this process runs the very same code. run_task refuses offsets that
    // do not land in this executable's code all the same.
    let f = unsafe { TaskFn::from_raw(task.tramp, task.func) };
    shared.busy.store(true, Ordering::SeqCst);
    let outcome = backend::run_task(f, &arg.bytes, arg.items);
    // Wait for the watchdog to be out of MPI before the main thread is
    // back in it (it reads frames only while `busy`).
    let link = shared.lock();
    shared.busy.store(false, Ordering::SeqCst);
    drop(link);
    match outcome {
        Ok(enc) => match Outgoing::new(enc, inline_max) {
            Ok(out) => reply(shared, me, task.id, Ok(out.payload.clone()), Some(out)),
            Err(e) => reply(
                shared,
                me,
                task.id,
                Err(Failure::Transport(RemoteCause::from_error(&e))),
                None,
            ),
        },
        Err(e) => reply(shared, me, task.id, Err(Failure::from_task_error(e)), None),
    }
}

/// Sends a task's outcome (and its payload's raw messages).
fn reply(
    shared: &Shared,
    me: i32,
    id: u64,
    outcome: Result<frame::Payload, Failure>,
    out: Option<Outgoing>,
) {
    let inline = out.as_ref().map(|o| o.inline.clone()).unwrap_or_default();
    let sent = frame::encode(me, &ToCaller::Done { id, outcome }, &inline).and_then(|bytes| {
        let mut flight = InFlight::new(0);
        {
            let link = shared.lock();
            match out {
                Some(o) => o.post(&link.comm, bytes, &mut flight)?,
                None => flight.send(&link.comm, Tag::Frame, Buf::Bytes(bytes))?,
            }
        }
        drive_reply(shared, &mut flight)
    });
    if let Err(e) = sent {
        out_of_step(shared, me, &e.to_string());
    }
}

/// Tells rank 0 this worker cannot follow its stream any more; from then
/// on only `Shutdown` is honoured (rank 0 sends nothing else to it).
fn out_of_step(shared: &Shared, me: i32, reason: &str) {
    warn!("npshmex-mpi: worker rank {me} is out of step with rank 0: {reason}");
    let head = ToCaller::Confused {
        reason: reason.to_string(),
    };
    if let Ok(bytes) = frame::encode(me, &head, &[]) {
        let mut flight = InFlight::new(0);
        let posted = {
            let link = shared.lock();
            flight.send(&link.comm, Tag::Frame, Buf::Bytes(bytes))
        };
        if posted.is_ok() {
            let _ = drive(shared, &mut flight);
        }
    }
    // Only a Shutdown from now on: the watchdog reads it while `busy`.
    shared.busy.store(true, Ordering::SeqCst);
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The watchdog: heartbeats both ways, `Shutdown` while a task runs, and
/// the end of the process when rank 0 or the launcher is gone.
fn watchdog(shared: &Shared) {
    let tick = (shared.beat / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
    loop {
        std::thread::sleep(tick);
        if parent_pid() != shared.ppid {
            warn!(
                "npshmex-mpi: worker {}: the MPI launcher is gone; exiting",
                std::process::id()
            );
            raw::exit_now(1);
        }
        if shared.leaving.load(Ordering::SeqCst) {
            continue;
        }
        let mut link = shared.lock_watchdog();
        if let Err(e) = beat(shared, &mut link) {
            warn!(
                "npshmex-mpi: worker {}: heartbeat failed: {e}",
                std::process::id()
            );
        }
        if shared.busy.load(Ordering::SeqCst) {
            if let Ok(Some(m)) = link.comm.probe(0, Tag::Frame) {
                shared.heard();
                let mut flight = InFlight::new(0);
                let received =
                    flight.receive_matched(m, Vec::new()).is_ok() && wait_briefly(&mut flight);
                let shutdown = match received.then(|| flight.into_frame()).flatten() {
                    Some(v) => match frame::decode::<ToWorker>(0, &v) {
                        Ok((ToWorker::Shutdown { finalize }, _)) => Some(finalize),
                        _ => None,
                    },
                    None => None,
                };
                if let Some(finalize) = shutdown {
                    link.beats.clear();
                    shared.leave(&mut link, finalize);
                }
            }
        }
        drop(link);
        if shared.silent_for() > shared.silence {
            warn!(
                "npshmex-mpi: worker {}: nothing from rank 0 for {:?}; it is gone, exiting",
                std::process::id(),
                shared.silence
            );
            raw::exit_now(1);
        }
    }
}

/// Completes a small receive (a frame of a few bytes arrives whole).
fn wait_briefly(flight: &mut InFlight) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match flight.poll() {
            Ok(true) => return true,
            Ok(false) if Instant::now() < deadline => std::thread::yield_now(),
            _ => return false,
        }
    }
}

/// Sends this worker's heartbeat when due and hears rank 0's.
fn beat(shared: &Shared, link: &mut Link) -> Result<(), MpiError> {
    while let Some(m) = link.comm.probe(0, Tag::Beat)? {
        let mut f = InFlight::new(0);
        f.receive_matched(m, vec![0; 1])?;
        link.beats.push(f);
        shared.heard();
    }
    if link.last_beat.elapsed() >= shared.beat {
        link.last_beat = Instant::now();
        let mut f = InFlight::new(0);
        f.send(&link.comm, Tag::Beat, Buf::Bytes(vec![0]))?;
        link.beats.push(f);
    }
    let mut kept = Vec::with_capacity(link.beats.len());
    for mut f in link.beats.drain(..) {
        if !f.poll().unwrap_or(true) {
            kept.push(f);
        }
    }
    link.beats = kept;
    Ok(())
}
