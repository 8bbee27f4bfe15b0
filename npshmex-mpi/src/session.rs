//! [`init`]: the one call that makes rank 0 the caller and every other rank
//! a worker, after proving that every rank runs the same build; [`Mpi`],
//! rank 0's handle on the job, which ends it when dropped.
//!
//! As `mpi4py.futures` under `mpiexec -n N python -m mpi4py.futures`, the
//! program itself is started on every rank and the ranks are told apart
//! at the first line of `main`: rank 0 returns and runs the program, the
//! others never return from [`init`]. The handshake is point to point
//! with deadlines (not a collective), so a rank that does not answer is a
//! typed [`MpiError::HandshakeTimeout`], not a hang; a rank whose build
//! differs gets no task at all (every rank leaves, and rank 0's `init`
//! returns [`MpiError::BuildMismatch`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use npshmex_pool::backend::BuildId;

use crate::engine::{self, Engine, WorkerInfo};
use crate::error::MpiError;
use crate::frame::{self, ToCaller, ToWorker};
use crate::inflight::{self, InFlight};
use crate::raw::{self, Comm, Tag};

/// Settings of [`init_with`]; rank 0's are the ones used (sent to the
/// workers at start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Longest wait for every rank to answer at start (default 60 s).
    pub handshake_timeout: Duration,
    /// How often rank 0 and the workers tell each other they are alive
    /// (default 1 s).
    pub heartbeat: Duration,
    /// A worker silent this long is taken for dead (its task fails with
    /// [`TaskError::WorkerDied`](npshmex_pool::TaskError::WorkerDied)); a
    /// worker that hears nothing from rank 0 this long leaves (default
    /// 20 s).
    pub silence: Duration,
    /// Serialized values up to this many bytes travel inside the task's
    /// frame, larger ones as raw messages of their own (default 64 KiB).
    pub inline_max: usize,
    /// How long the engine, the workers and waiting callers poll before
    /// they sleep after a message (default 200 µs): back-to-back tasks
    /// never wait for a thread wake-up.
    pub spin: Duration,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            handshake_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(1),
            silence: Duration::from_secs(20),
            inline_max: 64 << 10,
            spin: Duration::from_micros(200),
        }
    }
}

/// Rank 0's handle on the MPI job, from [`init`]. Dropping it ends the
/// workers (if an executor has not already) and finalizes MPI; keep it
/// alive in `main` for as long as executors are used.
///
/// Not `Send`: MPI is finalized by the thread that initialized it.
pub struct Mpi {
    engine: Arc<Engine>,
    universe: Option<mpi::environment::Universe>,
    _main_thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("workers", &self.engine.workers().len())
            .finish_non_exhaustive()
    }
}

impl Mpi {
    /// The worker ranks (rank, host, pid), in rank order.
    pub fn workers(&self) -> &[WorkerInfo] {
        self.engine.workers()
    }

    /// Number of ranks in the job, rank 0 included.
    pub fn size(&self) -> usize {
        self.engine.workers().len() + 1
    }

    /// The build every rank runs.
    pub fn build_id(&self) -> &BuildId {
        self.engine.build_id()
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        let finalize = self.engine.stop();
        match self.universe.take() {
            // MPI_Finalize (rsmpi's Universe drop): waits for every worker
            // to leave too.
            Some(u) if finalize => drop(u),
            // The launcher is gone, or a rank died: finalize would wait
            // for ranks that can never answer. The process ends without
            // it (the workers were told to exit without it too).
            Some(u) => std::mem::forget(u),
            None => {}
        }
        if finalize {
            inflight::bury();
        }
    }
}

/// [`init_with`] the default [`InitOptions`].
///
/// # Errors
/// As [`init_with`].
pub fn init() -> Result<Mpi, MpiError> {
    init_with(InitOptions::default())
}

/// Call first thing in `main`, on every rank (`mpiexec -n N prog`): starts
/// MPI (`MPI_THREAD_SERIALIZED`), checks that every rank runs this very
/// build, then rank 0 returns its [`Mpi`] and every other rank becomes a
/// worker and never returns (it exits when an executor's shutdown, or the
/// `Mpi`'s drop, ends it, or when rank 0 is gone).
///
/// Run alone (no `mpiexec`, or `-n 1`) it returns an `Mpi` with no
/// workers; building an executor on it fails with [`MpiError::NoWorkers`].
///
/// # Errors
/// [`MpiError::AlreadyInitialized`], [`MpiError::ThreadSupport`],
/// [`MpiError::BuildMismatch`] (then every rank has left MPI),
/// [`MpiError::HandshakeTimeout`], [`MpiError::BadFrame`], MPI errors.
/// A worker rank that fails to start prints why and exits.
pub fn init_with(opts: InitOptions) -> Result<Mpi, MpiError> {
    let universe = raw::initialize()?;
    let comm = Comm::world()?.duplicate()?;
    let rank = comm.rank()?;
    let size = comm.size()?;
    let build = BuildId::current().map_err(MpiError::BuildId)?;
    if rank != 0 {
        crate::worker::start(universe, comm, build, opts)
    }
    match handshake(&comm, size, &build, &opts) {
        Ok(workers) => {
            let engine = engine::start(comm, workers, build, opts)?;
            Ok(Mpi {
                engine,
                universe: Some(universe),
                _main_thread: PhantomData,
            })
        }
        Err(e) => {
            // Every rank was told to leave: finalize with them.
            drop(universe);
            inflight::bury();
            Err(e)
        }
    }
}

/// Waits for the given flight (bounded by `deadline`).
pub(crate) fn complete(
    comm_rank: i32,
    flight: &mut InFlight,
    deadline: Instant,
    waited: Duration,
) -> Result<(), MpiError> {
    loop {
        if flight.poll()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MpiError::HandshakeTimeout {
                rank: comm_rank,
                waited,
            });
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Receives one frame from `source` (any if [`raw::any_source`]) before
/// `deadline`: its sender and bytes.
pub(crate) fn receive_frame(
    comm: &Comm,
    source: i32,
    deadline: Instant,
    waited: Duration,
) -> Result<(i32, Vec<u8>), MpiError> {
    loop {
        if let Some(m) = comm.probe(source, Tag::Frame)? {
            let from = m.source;
            let mut flight = InFlight::new(from);
            flight.receive_matched(m, Vec::new())?;
            complete(from, &mut flight, deadline, waited)?;
            return Ok((from, flight.into_frame().unwrap_or_default()));
        }
        if Instant::now() >= deadline {
            return Err(MpiError::HandshakeTimeout {
                rank: source,
                waited,
            });
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Sends one frame to `dest`, completed before `deadline`.
pub(crate) fn send_frame(
    comm: &Comm,
    dest: i32,
    bytes: Vec<u8>,
    deadline: Instant,
    waited: Duration,
) -> Result<(), MpiError> {
    let mut flight = InFlight::new(dest);
    flight.send(comm, Tag::Frame, inflight::Buf::Bytes(bytes))?;
    complete(dest, &mut flight, deadline, waited)
}

/// Rank 0's side: a Hello from every rank, the builds compared, then the
/// verdict to every rank.
fn handshake(
    comm: &Comm,
    size: i32,
    build: &BuildId,
    opts: &InitOptions,
) -> Result<Vec<WorkerInfo>, MpiError> {
    let waited = opts.handshake_timeout;
    let deadline = crate::after(Instant::now(), waited);
    let mut hellos: Vec<Option<WorkerInfo>> = vec![None; usize::try_from(size).unwrap_or(0)];
    let mut problem = None;
    let mut heard = 0;
    while heard + 1 < size {
        let (from, bytes) = match receive_frame(comm, raw::any_source(), deadline, waited) {
            Ok(x) => x,
            Err(MpiError::HandshakeTimeout { waited, .. }) => {
                let rank = (1..size)
                    .find(|r| hellos.get(*r as usize).is_some_and(Option::is_none))
                    .unwrap_or(1);
                problem.get_or_insert(MpiError::HandshakeTimeout { rank, waited });
                break;
            }
            Err(e) => {
                problem.get_or_insert(e);
                break;
            }
        };
        match frame::decode::<ToCaller>(from, &bytes) {
            Ok((
                ToCaller::Hello {
                    build: theirs,
                    pid,
                    host,
                },
                _,
            )) => {
                if theirs != *build {
                    problem.get_or_insert(MpiError::BuildMismatch {
                        rank: from,
                        ours: build.clone(),
                        theirs,
                    });
                }
                if let Some(slot) = hellos.get_mut(from as usize) {
                    if slot.is_none() {
                        heard += 1;
                    }
                    *slot = Some(WorkerInfo {
                        rank: from,
                        host,
                        pid,
                    });
                }
            }
            Ok(_) => {
                problem.get_or_insert(MpiError::BadFrame {
                    rank: from,
                    reason: "expected the start-up Hello",
                    source: None,
                });
            }
            Err(e) => {
                problem.get_or_insert(e);
            }
        }
    }
    let verdict = match &problem {
        None => ToWorker::Welcome {
            beat_ms: millis(opts.heartbeat),
            silence_ms: millis(opts.silence),
            inline_max: u32::try_from(opts.inline_max).unwrap_or(u32::MAX),
            spin_us: u64::try_from(opts.spin.as_micros()).unwrap_or(u64::MAX),
        },
        Some(_) => ToWorker::Refused,
    };
    let bytes = frame::encode(0, &verdict, &[])?;
    let send_deadline = Instant::now() + Duration::from_secs(10);
    for r in 1..size {
        // A rank that never said hello may not be listening; the verdict
        // is sent anyway (eager: it completes without the receiver).
        let sent = send_frame(
            comm,
            r,
            bytes.clone(),
            send_deadline,
            Duration::from_secs(10),
        );
        if let Err(e) = sent {
            problem.get_or_insert(e);
        }
    }
    match problem {
        Some(e) => Err(e),
        None => Ok(hellos.into_iter().flatten().collect()),
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
