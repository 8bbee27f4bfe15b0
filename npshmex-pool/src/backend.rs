//! The pieces an executor on another transport is built from (npshmex-mpi
//! is one): naming a function for a worker of the same executable,
//! encoding and decoding values with their out-of-band segments, running a
//! task in a worker, and futures the executor completes.
//!
//! The local pool is made of the same pieces, so an executor built on them
//! has the same semantics: the same trampolines, the same errors, the same
//! [`Future`], [`as_completed`](crate::as_completed) and
//! [`wait`](crate::wait).
//!
//! ```
//! use npshmex_pool::backend::{self, TaskFn};
//!
//! fn double(x: u64) -> u64 {
//!     x * 2
//! }
//!
//! // The caller's side: name the function, encode the argument.
//! let f = TaskFn::of(double)?;
//! let arg = backend::encode(21u64)?;
//! // (a transport carries `f.to_raw()` and the bytes to a worker...)
//! let (bytes, items) = arg.into_parts();
//! let items = items.finish_local()?.into_iter().map(backend::inbound).collect::<Result<_, _>>()?;
//! // The worker's side: run it.
//! let result = backend::run_task(f, &bytes, items)?;
//! // (...and the result back to the caller, who completes the future.)
//! let (future, completer) = backend::pending::<u64>();
//! assert!(completer.start());
//! let (bytes, items) = result.into_parts();
//! let items = items.finish_local()?.into_iter().map(backend::inbound).collect::<Result<_, _>>()?;
//! completer.finish(&bytes, items);
//! assert_eq!(future.result()?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use npshmex_shm::cache;
use npshmex_shm::oob::{Inbound, Outbound};
use npshmex_shm::{Access, Segment, ShmError};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{PoolError, TaskError};
use crate::future::{Completion, Future};
use crate::remote_fn;
use crate::wire::{self, Incoming, PackError};

pub use crate::build_id::{BuildId, BuildIdKind};
pub use crate::wire::Encoded;

/// A function named for a worker running this same executable: the
/// offsets, from a fixed anchor of this crate, of the monomorphised
/// trampoline that decodes `A`, calls `f` and encodes `R`, and of `f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskFn {
    tramp: i64,
    func: i64,
}

impl TaskFn {
    /// Names `f` (a `fn` item, or a closure that captures nothing).
    ///
    /// # Errors
    /// [`PoolError::ForeignFunction`] when `f` is not code of this
    /// executable (a shared library's, a plugin's).
    pub fn of<A, R>(f: fn(A) -> R) -> Result<TaskFn, PoolError>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        Ok(TaskFn {
            tramp: remote_fn::call_offset::<A, R>()?,
            func: remote_fn::fn_offset(f)?,
        })
    }

    /// Names `f` applied to a chunk of arguments, as `map` sends them: the
    /// argument is a `Vec<A>`, the result a `Vec<Result<R, PanicInfo>>`
    /// (a panic fails only its element).
    ///
    /// # Errors
    /// As [`TaskFn::of`].
    pub fn chunk_of<A, R>(f: fn(A) -> R) -> Result<TaskFn, PoolError>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        Ok(TaskFn {
            tramp: remote_fn::call_chunk_offset::<A, R>()?,
            func: remote_fn::fn_offset(f)?,
        })
    }

    /// The two offsets, to send to a worker.
    pub fn to_raw(self) -> (i64, i64) {
        (self.tramp, self.func)
    }

    /// A function named by offsets that [`TaskFn::to_raw`] produced.
    ///
    /// # Safety
    /// `(tramp, func)` must come from [`TaskFn::to_raw`] in a process
    /// running this very executable (a peer whose build was checked
    /// against ours), unaltered: [`run_task`] calls the trampoline at
    /// `tramp` with the function at `func` as the pair of types they were
    /// named for. Offsets that do not land in this executable's code are
    /// refused, but no check can tell a wrong function inside it.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(tramp: i64, func: i64) -> TaskFn {
        TaskFn { tramp, func }
    }
}

fn pack_error(e: PackError) -> PoolError {
    match e {
        PackError::Encode(source) => PoolError::Encode { source },
        PackError::Shm(op, source) => PoolError::Transport { op, source },
    }
}

/// Encodes `value` (postcard, with its segments collected out of band) and
/// drops it, so that the segments it held can move.
///
/// # Errors
/// [`PoolError::Encode`] with the typed cause.
pub fn encode<T: Serialize>(value: T) -> Result<Encoded, PoolError> {
    wire::encode(value).map_err(pack_error)
}

/// An outbound item as the receiving side of a transport that carries
/// contents gets it: a segment of this process holding the same bytes.
/// For a moved [`Outbound::Slot`] that is the slot itself; a pushed fd must
/// be a write-sealed segment, whose bytes are copied.
///
/// In a real transport the sender reads the bytes
/// ([`outbound_bytes`]) and the receiver fills a segment of its own; this
/// is the in-process shortcut (tests, the example above).
///
/// # Errors
/// [`ShmError::NotSealed`] for an fd that is not a write-sealed segment;
/// the errors of [`cache::alloc`].
pub fn inbound(item: Outbound) -> Result<Inbound, ShmError> {
    match item {
        Outbound::Slot(slot) => Ok(Inbound::Slot(slot)),
        Outbound::Fd(fd) => {
            let seg = Segment::from_fd_sealed(fd, Access::ReadOnly, 0)?;
            let mut slot = cache::alloc(seg.len())?;
            slot.segment_mut().as_mut_slice()?[..seg.len()].copy_from_slice(seg.as_slice());
            Ok(Inbound::Slot(slot))
        }
    }
}

/// Calls `f` with the bytes of an outbound item: a moved slot's own pages,
/// or a pushed fd's, which must be a write-sealed segment (anything else
/// could change, or be truncated, while it is read).
///
/// # Errors
/// [`ShmError::NotSealed`] for an fd that is not a write-sealed segment.
pub fn outbound_bytes<T>(item: &Outbound, f: impl FnOnce(&[u8]) -> T) -> Result<T, ShmError> {
    match item {
        Outbound::Slot(slot) => Ok(f(slot.segment().as_slice())),
        Outbound::Fd(fd) => {
            let dup = fd.try_clone().map_err(|e| ShmError::Io {
                op: "dup",
                source: e,
            })?;
            let seg = Segment::from_fd_sealed(dup, Access::ReadOnly, 0)?;
            Ok(f(seg.as_slice()))
        }
    }
}

/// Decodes a value of type `T` from `bytes` with its out-of-band items.
///
/// # Errors
/// The typed cause recorded by the value's `Deserialize` impls, or the
/// deserializer's own error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], items: Vec<Inbound>) -> Result<T, TaskError> {
    wire::decode(bytes, Incoming::Local(items)).map_err(|source| TaskError::ResultDecode { source })
}

/// Runs the task `f` on an argument (its bytes and out-of-band items) in
/// this process, as a worker does, and returns the encoded result.
///
/// # Errors
/// The task's failure: [`TaskError::Panicked`] (the panic was caught),
/// [`TaskError::ArgumentDecode`], [`TaskError::ResultEncode`].
pub fn run_task(f: TaskFn, bytes: &[u8], items: Vec<Inbound>) -> Result<Encoded, TaskError> {
    remote_fn::invoke(f.tramp, f.func, bytes, Incoming::Local(items)).map_err(TaskError::from)
}

/// Makes a worker process report panics as a worker's (with the task's
/// location, see [`PanicInfo`](crate::PanicInfo)); call it once where a
/// worker of another transport starts.
pub fn become_worker() {
    remote_fn::panic_hook::install();
}

/// A new pending [`Future`] and the handle that completes it.
pub fn pending<R>() -> (Future<R>, Completer)
where
    R: DeserializeOwned + Send + 'static,
{
    pending_with_spin(std::time::Duration::ZERO)
}

/// [`pending`], with a future whose waiters first spin (yielding the CPU)
/// for up to `spin` before they sleep, as the local pool's futures do: a
/// result that arrives within microseconds is then seen without a thread
/// wake-up.
pub fn pending_with_spin<R>(spin: std::time::Duration) -> (Future<R>, Completer)
where
    R: DeserializeOwned + Send + 'static,
{
    let fut = Future::new(spin);
    let completion = fut.completion();
    (fut, Completer { completion })
}

/// Completes the [`Future`] it was made with ([`pending`]).
#[derive(Clone)]
pub struct Completer {
    completion: Arc<dyn Completion>,
}

impl std::fmt::Debug for Completer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

impl Completer {
    /// Pending -> running, as the task is handed to a worker; `false` if
    /// the future was cancelled meanwhile (then do not run it).
    pub fn start(&self) -> bool {
        self.completion.start(None)
    }

    /// Pending -> cancelled (for tasks an executor drops unsent); `false`
    /// once the task runs.
    pub fn cancel(&self) -> bool {
        self.completion.cancel()
    }

    /// Completes the future with the result encoded in `bytes` and `items`
    /// (decoded here; a decode failure completes it with
    /// [`TaskError::ResultDecode`]).
    pub fn finish(self, bytes: &[u8], items: Vec<Inbound>) {
        self.completion.stage(bytes, Incoming::Local(items));
        self.completion.publish();
    }

    /// Completes the future with an error.
    pub fn fail(self, err: TaskError) {
        self.completion.fail(err);
    }
}
