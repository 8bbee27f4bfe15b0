//! The tasks of the soak scenario: their mix, the worker functions, the
//! exact value each must return, and the start log that tells which tasks
//! reached their function body.
//!
//! Every argument carries its task's id (the tiny argument is the id; an
//! array's first element is `id << 18`; a byte payload starts with the id),
//! so a worker function knows which task it runs without a side channel,
//! and every expected value is recomputed from `(id, len)` instead of
//! keeping a copy of each argument while it is in flight. Array elements
//! are integers below 2^38, so doubling them or adding one is exact in
//! `f64` and results are compared value for value.
//!
//! The start log is a file of one counter byte per task that worker
//! functions bump before anything else: a task that fails with
//! `WorkerDied` without a count was killed before its body ran (while its
//! argument was decoded, or it never ran at all), and a count of two is a
//! task that ran twice. A file, rather than shared memory, keeps the
//! scenario's own bookkeeping out of the `/dev/shm` and held-segment
//! checks it makes; workers find it by their parent's pid.

use anyhow::{bail, ensure, Context, Result};
use ndarray::Array1;
use npshmex_ndarray::{Shm, ShmArray1};
use npshmex_pool::{Future, PoolError, ProcessPoolExecutor};
use rand::rngs::StdRng;
use rand::Rng;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Every this many tasks, one panics on purpose (so even the quick run has some).
const PANIC_EVERY: u64 = 1000;
/// Arrays have 1 to 2^17 elements: a few bytes to 1 MiB of `f64`.
const ARRAY_MAX_LOG2: u32 = 17;
/// Byte payloads: always above the pool's 64 KiB inline limit, so each
/// travels in a memfd, both ways; not much above it, because serde walks a
/// `Vec<u8>` byte by byte, four times per task, in this unoptimised binary.
const BYTES: std::ops::RangeInclusive<usize> = (64 << 10) + 1..=96 << 10;
/// The bits of an array element below its task's id.
const ID_SHIFT: u32 = 18;

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `fn(u64) -> u64`.
    Tiny,
    /// A writable `ShmArray1<f64>` moved in, doubled in place, moved back.
    Moved,
    /// A frozen (sealed, read-only) `ShmArray1<f64>`; a new array of `x + 1` back.
    Frozen,
    /// The drop-in `Shm(Array1<f64>)`; `Shm(2 x + 1)` back.
    Plain,
    /// A `Vec<u8>` above the inline limit; reversed and XORed back.
    Bytes,
    /// Panics on purpose.
    Panic,
}

/// One task of the soak.
#[derive(Clone, Copy, Debug)]
pub struct Task {
    pub id: u64,
    pub kind: Kind,
    /// Elements of an array, bytes of a payload.
    pub len: usize,
}

impl Task {
    /// Task `id`, its kind and size drawn from `rng`.
    pub fn draw(id: u64, rng: &mut StdRng) -> Task {
        if id % PANIC_EVERY == PANIC_EVERY - 1 {
            return Task {
                id,
                kind: Kind::Panic,
                len: 0,
            };
        }
        let kind = match rng.gen_range(0..100) {
            0..44 => Kind::Tiny,
            44..64 => Kind::Moved,
            64..79 => Kind::Frozen,
            79..94 => Kind::Plain,
            _ => Kind::Bytes,
        };
        let len = match kind {
            Kind::Moved | Kind::Frozen | Kind::Plain => {
                // Log-uniform: as many tiny arrays as 1 MiB ones.
                let hi = 1usize << rng.gen_range(0..=ARRAY_MAX_LOG2);
                rng.gen_range(hi / 2 + 1..=hi)
            }
            Kind::Bytes => rng.gen_range(BYTES),
            Kind::Tiny | Kind::Panic => 0,
        };
        Task { id, kind, len }
    }

    /// Builds the argument and submits the task.
    pub fn submit(&self, pool: &ProcessPoolExecutor) -> Result<Pending> {
        let id = self.id;
        let submitted = match self.kind {
            Kind::Tiny => pool.submit(tiny, id).map(Pending::Number),
            Kind::Panic => pool.submit(panic_on_purpose, id).map(Pending::Number),
            Kind::Moved => pool
                .submit(
                    double_moved,
                    ShmArray1::from_shape_fn(self.len, |j| element(id, j))?,
                )
                .map(Pending::Array),
            Kind::Frozen => {
                let x = ShmArray1::from_shape_fn(self.len, |j| element(id, j))?.into_read_only()?;
                pool.submit(plus_one_frozen, x).map(Pending::Array)
            }
            Kind::Plain => pool
                .submit(
                    affine_plain,
                    Shm(Array1::from_shape_fn(self.len, |j| element(id, j))),
                )
                .map(Pending::Plain),
            Kind::Bytes => pool
                .submit(flip_bytes, payload(id, self.len))
                .map(Pending::Bytes),
        };
        submitted
            .map_err(|e: PoolError| anyhow::Error::new(e).context(format!("submitting {self}")))
    }

    /// Checks a number returned by a tiny task.
    pub fn check_number(&self, got: u64) -> Result<()> {
        ensure!(self.kind == Kind::Tiny, "{self} returned {got}");
        let want = mix(self.id);
        ensure!(got == want, "{self} returned {got}, want {want}");
        Ok(())
    }

    /// Checks an array result of a moved or frozen array.
    pub fn check_array(&self, got: ArrayOut) -> Result<()> {
        let got = match got {
            Ok(a) => a,
            Err(e) => bail!("{self}: the worker function failed: {e}"),
        };
        let op: fn(f64) -> f64 = match self.kind {
            Kind::Moved => |v| v * 2.0,
            Kind::Frozen => |v| v + 1.0,
            _ => bail!("{self} returned an array"),
        };
        self.check_values(got.view().iter().copied(), got.len(), op)
    }

    /// Checks the drop-in array result.
    pub fn check_plain(&self, got: Shm<Array1<f64>>) -> Result<()> {
        ensure!(self.kind == Kind::Plain, "{self} returned a plain array");
        self.check_values(got.iter().copied(), got.len(), |v| 2.0 * v + 1.0)
    }

    fn check_values(
        &self,
        got: impl Iterator<Item = f64>,
        len: usize,
        op: fn(f64) -> f64,
    ) -> Result<()> {
        ensure!(len == self.len, "{self}: {len} elements back");
        for (j, v) in got.enumerate() {
            let want = op(element(self.id, j));
            ensure!(v == want, "{self}: element {j} is {v}, want {want}");
        }
        Ok(())
    }

    /// Checks a byte payload result.
    pub fn check_bytes(&self, got: Vec<u8>) -> Result<()> {
        ensure!(self.kind == Kind::Bytes, "{self} returned bytes");
        ensure!(got.len() == self.len, "{self}: {} bytes back", got.len());
        let want = flip(payload(self.id, self.len));
        if got != want {
            let k = want.iter().zip(&got).position(|(w, g)| w != g).unwrap_or(0);
            bail!("{self}: byte {k} is {:#04x}, want {:#04x}", got[k], want[k]);
        }
        Ok(())
    }

    /// The message of a deliberate panic.
    pub fn panic_message(&self) -> Option<String> {
        (self.kind == Kind::Panic).then(|| panic_text(self.id))
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} ({:?}", self.id, self.kind)?;
        if self.len > 0 {
            write!(f, ", {}", self.len)?;
        }
        f.write_str(")")
    }
}

/// What the moved and frozen array tasks return.
pub type ArrayOut = Result<ShmArray1<f64>, String>;

/// A submitted task's future, by result type.
pub enum Pending {
    Number(Future<u64>),
    Array(Future<ArrayOut>),
    Plain(Future<Shm<Array1<f64>>>),
    Bytes(Future<Vec<u8>>),
}

/// Element `j` of task `id`'s array.
fn element(id: u64, j: usize) -> f64 {
    ((id << ID_SHIFT) | j as u64) as f64
}

/// The task id an array's first element names.
fn id_of_element(v: Option<&f64>) -> Option<u64> {
    v.map(|v| (*v as u64) >> ID_SHIFT)
}

/// What a tiny task returns for `id`.
fn mix(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ 0xD1B5_4A32_D192_ED03
}

/// What byte payloads are XORed with on their way back.
const FLIP: u8 = 0x5A;

/// The payload of task `id`: its id, then a splitmix64 stream.
fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&id.to_le_bytes());
    let mut s = id;
    while v.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        v.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// What a byte task returns: its payload reversed, each byte XORed.
fn flip(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v.iter_mut().for_each(|b| *b ^= FLIP);
    v
}

fn panic_text(id: u64) -> String {
    format!("soak: deliberate panic in task {id}")
}

// The worker functions: plain `fn` items of this binary, which the workers
// re-execute. Each records its start first.

fn tiny(id: u64) -> u64 {
    mark_started(Some(id));
    mix(id)
}

fn panic_on_purpose(id: u64) -> u64 {
    mark_started(Some(id));
    panic!("{}", panic_text(id))
}

fn double_moved(mut x: ShmArray1<f64>) -> ArrayOut {
    mark_started(id_of_element(x.view().first()));
    x.view_mut()
        .map_err(|e| format!("a moved array arrived without a mutable view: {e}"))?
        .mapv_inplace(|v| v * 2.0);
    Ok(x)
}

fn plus_one_frozen(x: ShmArray1<f64>) -> ArrayOut {
    mark_started(id_of_element(x.view().first()));
    if x.is_writable() {
        return Err("a frozen array arrived writable".into());
    }
    x.map(|v| v + 1.0).map_err(|e| e.to_string())
}

fn affine_plain(x: Shm<Array1<f64>>) -> Shm<Array1<f64>> {
    mark_started(id_of_element(x.first()));
    Shm(x.0.mapv(|v| 2.0 * v + 1.0))
}

fn flip_bytes(v: Vec<u8>) -> Vec<u8> {
    let id = v
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    mark_started(id);
    flip(v)
}

/// The start log of the soak pool of process `owner`.
fn start_log_path(owner: u32) -> PathBuf {
    std::env::temp_dir().join(format!("npshmex-soak-{owner}.starts"))
}

/// In a worker: counts a start of task `id` in its parent's start log.
/// Best effort: a worker that cannot open the log leaves counts at 0,
/// which [`StartLog::counts`] users notice on the tasks that succeeded.
fn mark_started(id: Option<u64>) {
    static LOG: OnceLock<Option<File>> = OnceLock::new();
    let log = LOG.get_or_init(|| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(start_log_path(std::os::unix::process::parent_id()))
            .ok()
    });
    if let (Some(f), Some(id)) = (log, id) {
        // A task runs in one worker at a time: no lost update.
        let mut n = [0u8];
        if f.read_exact_at(&mut n, id).is_ok() {
            let _ = f.write_all_at(&[n[0].saturating_add(1)], id);
        }
    }
}

/// The start log of one run (removed when dropped).
pub struct StartLog {
    path: PathBuf,
}

impl StartLog {
    /// A zeroed log for `tasks` tasks, where this process's workers find it.
    pub fn create(tasks: usize) -> Result<StartLog> {
        let path = start_log_path(std::process::id());
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let log = StartLog { path };
        f.set_len(tasks as u64)
            .with_context(|| format!("sizing {}", log.path.display()))?;
        Ok(log)
    }

    /// How many times each task started.
    pub fn counts(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))
    }
}

impl Drop for StartLog {
    fn drop(&mut self) {
        // Nothing to do about a log already gone.
        let _ = std::fs::remove_file(&self.path);
    }
}
