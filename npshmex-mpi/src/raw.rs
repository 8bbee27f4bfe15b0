//! The MPI calls this crate makes, as small wrappers over `mpi::ffi` that
//! check every return code (the communicators use `MPI_ERRORS_RETURN`).
//!
//! rsmpi's safe layer initializes and finalizes MPI here, but its
//! point-to-point calls ignore return codes and tie non-blocking buffers to
//! scopes; the engine keeps requests across loop iterations and must see
//! every failure, so it drives the handful of non-blocking byte calls
//! itself. Everything that hands MPI a pointer is `unsafe` with the
//! buffer's obligations spelled out; [`crate::inflight`] is the one owner
//! that keeps them.
//!
//! Messages longer than [`CHUNK`] go as several messages: MPI counts are C
//! `int`s.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;

use mpi::ffi;

use crate::error::MpiError;

/// The longest single MPI message (bytes): 1 GiB, well inside `int`.
pub(crate) const CHUNK: usize = 1 << 30;

/// Tags on the private communicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// Frames: a postcard header, then an inline payload.
    Frame = 1,
    /// Raw payload bytes announced by a frame, in order.
    Data = 2,
    /// Liveness: empty messages both ways.
    Beat = 3,
}

fn check(call: &'static str, code: c_int) -> Result<(), MpiError> {
    if code == ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    Err(MpiError::Call {
        call,
        code,
        message: error_string(code),
    })
}

fn error_string(code: c_int) -> String {
    // OpenMPI's MPI_MAX_ERROR_STRING is 256, MPICH's 1024.
    let mut buf = vec![0u8; 1024];
    let mut len: c_int = 0;
    // SAFETY: `buf` has room for MPI_MAX_ERROR_STRING characters of any
    // common implementation; MPI writes at most that and its length.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast(), &mut len) };
    if rc != ffi::MPI_SUCCESS as c_int {
        return format!("unknown MPI error {code}");
    }
    let len = usize::try_from(len).unwrap_or(0).min(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

fn status() -> ffi::MPI_Status {
    // SAFETY: MPI_Status is a plain C struct of integers, for which all
    // zeroes is a valid value.
    unsafe { MaybeUninit::<ffi::MPI_Status>::zeroed().assume_init() }
}

/// The element count of one message of `len` bytes to or from `peer`.
fn message_count(len: usize, peer: i32) -> Result<c_int, MpiError> {
    debug_assert!(len <= CHUNK);
    c_int::try_from(len).map_err(|_| MpiError::Size {
        rank: peer,
        len: len as u64,
        reason: "longer than one MPI message",
    })
}

fn byte() -> ffi::MPI_Datatype {
    // SAFETY: reading an extern constant the C shim defines.
    unsafe { ffi::RSMPI_UINT8_T }
}

/// `ANY_SOURCE`.
pub(crate) fn any_source() -> i32 {
    // SAFETY: reading an extern constant the C shim defines.
    unsafe { ffi::RSMPI_ANY_SOURCE }
}

/// A communicator handle (this crate's duplicate of the world).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Comm(ffi::MPI_Comm);

// SAFETY: an MPI handle is a process-wide name, not tied to the thread that
// made it; the library was initialized with MPI_THREAD_SERIALIZED and this
// crate never makes two MPI calls at once (rank 0: only its engine thread;
// a worker: under one lock).
unsafe impl Send for Comm {}
// SAFETY: as for Send; `&Comm` only gives the handle's value.
unsafe impl Sync for Comm {}

/// A matched message, waiting to be received ([`Comm::probe`]).
#[derive(Debug)]
pub(crate) struct Matched {
    msg: ffi::MPI_Message,
    /// The sender.
    pub(crate) source: i32,
    /// Its length in bytes.
    pub(crate) len: usize,
}

// SAFETY: as for Comm.
unsafe impl Send for Matched {}

/// A non-blocking operation in progress.
#[derive(Debug)]
pub(crate) struct Request {
    req: ffi::MPI_Request,
    /// Bytes it must move (a receive checks the count it got).
    len: usize,
    recv: bool,
    done: bool,
}

// SAFETY: as for Comm.
unsafe impl Send for Request {}

impl Comm {
    /// `MPI_COMM_WORLD`, with errors returned instead of aborting.
    pub(crate) fn world() -> Result<Comm, MpiError> {
        // SAFETY: reading extern constants the C shim defines.
        let (world, ret) = unsafe { (ffi::RSMPI_COMM_WORLD, ffi::RSMPI_ERRORS_RETURN) };
        // SAFETY: MPI is initialized (callers run after init); both handles
        // are the library's own.
        check("MPI_Comm_set_errhandler", unsafe {
            ffi::MPI_Comm_set_errhandler(world, ret)
        })?;
        Ok(Comm(world))
    }

    /// A private duplicate (collective over the communicator), with errors
    /// returned: this crate's messages never meet the program's own.
    pub(crate) fn duplicate(&self) -> Result<Comm, MpiError> {
        // SAFETY: null is a valid placeholder for the handle MPI fills in.
        let mut dup: ffi::MPI_Comm = unsafe { std::mem::zeroed() };
        // SAFETY: `self.0` is a valid communicator; `dup` is written by MPI.
        check("MPI_Comm_dup", unsafe {
            ffi::MPI_Comm_dup(self.0, &mut dup)
        })?;
        // SAFETY: reading an extern constant the C shim defines.
        let ret = unsafe { ffi::RSMPI_ERRORS_RETURN };
        // SAFETY: `dup` is the valid communicator just made.
        check("MPI_Comm_set_errhandler", unsafe {
            ffi::MPI_Comm_set_errhandler(dup, ret)
        })?;
        Ok(Comm(dup))
    }

    /// This process's rank.
    pub(crate) fn rank(&self) -> Result<i32, MpiError> {
        let mut r: c_int = 0;
        // SAFETY: valid communicator, `r` written by MPI.
        check("MPI_Comm_rank", unsafe {
            ffi::MPI_Comm_rank(self.0, &mut r)
        })?;
        Ok(r)
    }

    /// Number of ranks.
    pub(crate) fn size(&self) -> Result<i32, MpiError> {
        let mut n: c_int = 0;
        // SAFETY: valid communicator, `n` written by MPI.
        check("MPI_Comm_size", unsafe {
            ffi::MPI_Comm_size(self.0, &mut n)
        })?;
        Ok(n)
    }

    /// A message from `source` (or any) with `tag`, matched so that no other
    /// receive can take it, if one has arrived.
    pub(crate) fn probe(&self, source: i32, tag: Tag) -> Result<Option<Matched>, MpiError> {
        let mut flag: c_int = 0;
        // SAFETY: zeroes are a valid placeholder for the handle MPI fills in.
        let mut msg: ffi::MPI_Message = unsafe { std::mem::zeroed() };
        let mut st = status();
        // SAFETY: valid communicator; flag, msg and status written by MPI.
        check("MPI_Improbe", unsafe {
            ffi::MPI_Improbe(source, tag as c_int, self.0, &mut flag, &mut msg, &mut st)
        })?;
        if flag == 0 {
            return Ok(None);
        }
        let mut count: c_int = 0;
        // SAFETY: `st` is the status MPI just filled in.
        check("MPI_Get_count", unsafe {
            ffi::MPI_Get_count(&st, byte(), &mut count)
        })?;
        let len = usize::try_from(count).map_err(|_| MpiError::Size {
            rank: st.MPI_SOURCE,
            len: 0,
            reason: "MPI reported a negative or undefined byte count",
        })?;
        Ok(Some(Matched {
            msg,
            source: st.MPI_SOURCE,
            len,
        }))
    }

    /// Starts sending `len` bytes at `buf` to `dest`.
    ///
    /// # Safety
    /// - `buf` must be valid for reads of `len` bytes, and nothing may
    ///   write those bytes or free them until the request completes
    ///   ([`Request::test`] returned `true`) or MPI is finalized.
    /// - `len <= CHUNK`.
    pub(crate) unsafe fn isend(
        &self,
        buf: *const u8,
        len: usize,
        dest: i32,
        tag: Tag,
    ) -> Result<Request, MpiError> {
        let count = message_count(len, dest)?;
        // SAFETY: zeroes are a valid placeholder for the handle MPI fills in.
        let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
        // SAFETY: per the contract, `buf` stays valid and unchanged until the
        // request completes; MPI only reads it.
        check("MPI_Isend", unsafe {
            ffi::MPI_Isend(
                buf.cast::<c_void>(),
                count,
                byte(),
                dest,
                tag as c_int,
                self.0,
                &mut req,
            )
        })?;
        Ok(Request {
            req,
            len,
            recv: false,
            done: false,
        })
    }

    /// Starts receiving exactly `len` bytes from `source` into `buf`.
    ///
    /// # Safety
    /// - `buf` must be valid for writes of `len` bytes, and nothing may read,
    ///   write or free them until the request completes ([`Request::test`]
    ///   returned `true` or an error) or MPI is finalized.
    /// - `len <= CHUNK`.
    pub(crate) unsafe fn irecv(
        &self,
        buf: *mut u8,
        len: usize,
        source: i32,
        tag: Tag,
    ) -> Result<Request, MpiError> {
        let count = message_count(len, source)?;
        // SAFETY: zeroes are a valid placeholder for the handle MPI fills in.
        let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
        // SAFETY: per the contract, `buf` is ours alone until completion.
        check("MPI_Irecv", unsafe {
            ffi::MPI_Irecv(
                buf.cast::<c_void>(),
                count,
                byte(),
                source,
                tag as c_int,
                self.0,
                &mut req,
            )
        })?;
        Ok(Request {
            req,
            len,
            recv: true,
            done: false,
        })
    }
}

impl Matched {
    /// Starts receiving the matched message into `buf` (`self.len` bytes).
    ///
    /// # Safety
    /// As [`Comm::irecv`], for `self.len` bytes.
    pub(crate) unsafe fn receive(mut self, buf: *mut u8) -> Result<Request, MpiError> {
        let count = c_int::try_from(self.len).map_err(|_| MpiError::Size {
            rank: self.source,
            len: self.len as u64,
            reason: "longer than one MPI message",
        })?;
        // SAFETY: zeroes are a valid placeholder for the handle MPI fills in.
        let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
        // SAFETY: `self.msg` was matched by MPI_Improbe and is received once
        // (this consumes it); the buffer obligations are the caller's.
        check("MPI_Imrecv", unsafe {
            ffi::MPI_Imrecv(buf.cast::<c_void>(), count, byte(), &mut self.msg, &mut req)
        })?;
        Ok(Request {
            req,
            len: self.len,
            recv: true,
            done: false,
        })
    }
}

impl Request {
    /// Whether the operation has completed; an error if it failed or a
    /// receive got another length than announced.
    pub(crate) fn test(&mut self, peer: i32) -> Result<bool, MpiError> {
        if self.done {
            return Ok(true);
        }
        let mut flag: c_int = 0;
        let mut st = status();
        // SAFETY: `self.req` is an active request of this process (MPI sets
        // it to MPI_REQUEST_NULL when it completes, and then `done` is set).
        let rc = unsafe { ffi::MPI_Test(&mut self.req, &mut flag, &mut st) };
        if let Err(e) = check("MPI_Test", rc) {
            // A failed request is complete: MPI no longer touches its buffer.
            self.done = true;
            return Err(e);
        }
        if flag == 0 {
            return Ok(false);
        }
        self.done = true;
        if !self.recv {
            return Ok(true);
        }
        let mut count: c_int = 0;
        // SAFETY: `st` is the status MPI just filled in.
        check("MPI_Get_count", unsafe {
            ffi::MPI_Get_count(&st, byte(), &mut count)
        })?;
        // A receive must get the length its frame announced.
        if usize::try_from(count).ok() != Some(self.len) {
            return Err(MpiError::Size {
                rank: peer,
                len: count.max(0) as u64,
                reason: "the message is shorter than its frame announced",
            });
        }
        Ok(true)
    }

    /// Whether it has completed (as last tested).
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }
}

/// Initializes MPI for this crate (`MPI_THREAD_SERIALIZED`).
pub(crate) fn initialize() -> Result<mpi::environment::Universe, MpiError> {
    use mpi::Threading;
    let Some((universe, provided)) = mpi::initialize_with_threading(Threading::Serialized) else {
        return Err(MpiError::AlreadyInitialized);
    };
    if provided < Threading::Serialized {
        let level = match provided {
            // SAFETY: reading an extern constant the C shim defines.
            Threading::Single => unsafe { ffi::RSMPI_THREAD_SINGLE },
            // SAFETY: as above.
            _ => unsafe { ffi::RSMPI_THREAD_FUNNELED },
        };
        return Err(MpiError::ThreadSupport { provided: level });
    }
    Ok(universe)
}

/// The name of this host as MPI knows it.
pub(crate) fn host_name() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "?".to_string())
}

/// Ends this process at once, without exit handlers (a rank whose job is
/// gone must not run MPI's, which may wait for the dead).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process; it has no preconditions.
    unsafe { libc::_exit(code) }
}
