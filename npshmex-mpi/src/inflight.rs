//! The owner of every buffer MPI is reading or writing: a group of
//! non-blocking requests and the buffers they use, polled until done.
//!
//! MPI holds raw pointers into these buffers until each request completes,
//! so Rust must not free, move out of, read (receives) or write (sends)
//! them meanwhile. [`InFlight`] keeps them out of reach and hands them
//! back only once every request has completed. If it is dropped earlier (a
//! peer died, the executor gave up on a task), the buffers go to a
//! graveyard that is emptied only after `MPI_Finalize`, when MPI no longer
//! touches any buffer. The alternative, `MPI_Cancel`, is not reliably
//! supported for sends, and a request to a dead peer may never complete.
//!
//! Sends read segments straight from their pages: a moved segment's
//! [`Slot`] (nobody else has it), or a write-sealed segment mapped
//! read-only (nobody can write it). Receives write straight into a segment
//! this process just allocated ([`cache::alloc`], reusing faulted pages).
#![allow(unsafe_code)]

use std::sync::Mutex;

use npshmex_shm::cache::{self, Slot};
use npshmex_shm::oob::{Inbound, Outbound};
use npshmex_shm::{Access, Segment};

use crate::error::MpiError;
use crate::frame::{self, Body, Payload};
use crate::raw::{Comm, Matched, Request, Tag};

/// A buffer handed to MPI.
#[derive(Debug)]
pub(crate) enum Buf {
    /// Heap bytes (frames, plain serde payloads).
    Bytes(Vec<u8>),
    /// A segment owned by this process (moved out of a value, or
    /// allocated to receive into).
    Slot(Slot),
    /// A write-sealed segment, mapped read-only (sent only).
    Sealed(Segment),
}

impl Buf {
    fn bytes_len(&self) -> usize {
        match self {
            Buf::Bytes(v) => v.len(),
            Buf::Slot(s) => s.segment().len(),
            Buf::Sealed(s) => s.len(),
        }
    }

    fn read_ptr(&self) -> *const u8 {
        match self {
            Buf::Bytes(v) => v.as_ptr(),
            Buf::Slot(s) => s.segment().as_slice().as_ptr(),
            Buf::Sealed(s) => s.as_slice().as_ptr(),
        }
    }

    fn write_ptr(&mut self) -> Result<*mut u8, MpiError> {
        match self {
            Buf::Bytes(v) => Ok(v.as_mut_ptr()),
            Buf::Slot(s) => s
                .segment_mut()
                .as_mut_slice()
                .map(|b| b.as_mut_ptr())
                .map_err(|source| MpiError::Shm {
                    op: "writing into a received segment",
                    source,
                }),
            Buf::Sealed(_) => Err(MpiError::Size {
                rank: -1,
                len: 0,
                reason: "a sealed segment cannot be received into",
            }),
        }
    }
}

/// Buffers of requests that never completed; freed after `MPI_Finalize`.
static GRAVEYARD: Mutex<Vec<Buf>> = Mutex::new(Vec::new());

/// Frees the buffers of abandoned requests. Call only after
/// `MPI_Finalize` (or when the process ends anyway).
pub(crate) fn bury() {
    let dead = std::mem::take(&mut *GRAVEYARD.lock().unwrap_or_else(|p| p.into_inner()));
    drop(dead);
}

/// Requests in progress with one peer and the buffers they use.
#[derive(Debug)]
pub(crate) struct InFlight {
    peer: i32,
    reqs: Vec<Request>,
    bufs: Vec<Buf>,
}

impl InFlight {
    /// Nothing in flight yet, with `peer`.
    pub(crate) fn new(peer: i32) -> InFlight {
        InFlight {
            peer,
            reqs: Vec::new(),
            bufs: Vec::new(),
        }
    }

    /// The peer.
    pub(crate) fn peer(&self) -> i32 {
        self.peer
    }

    /// Sends the whole of `buf` to the peer on `tag` (in pieces if long).
    ///
    /// # Errors
    /// The MPI error; requests already started stay owned here.
    pub(crate) fn send(&mut self, comm: &Comm, tag: Tag, buf: Buf) -> Result<(), MpiError> {
        let len = buf.bytes_len();
        let ptr = buf.read_ptr();
        // Owned before any request reads it, so an error below leaves every
        // started request with its buffer.
        self.bufs.push(buf);
        for piece in frame::mpi_pieces(len) {
            // SAFETY: `ptr..ptr+len` is the buffer just moved into
            // `self.bufs` (moving a Vec, Slot or Segment does not move the
            // bytes), which is neither written nor freed until every request
            // of this InFlight completed (`into_bufs`) or MPI is finalized
            // (`Drop` buries it); `piece` lies inside it and is at most CHUNK.
            let req = unsafe { comm.isend(ptr.add(piece.start), piece.len(), self.peer, tag)? };
            self.reqs.push(req);
        }
        Ok(())
    }

    /// Receives the next `len` bytes of data messages from the peer into
    /// the start of `buf` (which must be at least that long).
    ///
    /// # Errors
    /// The MPI error, or `buf` too short / not writable.
    pub(crate) fn receive(
        &mut self,
        comm: &Comm,
        mut buf: Buf,
        len: usize,
    ) -> Result<(), MpiError> {
        if buf.bytes_len() < len {
            return Err(MpiError::Size {
                rank: self.peer,
                len: len as u64,
                reason: "the receive buffer is shorter than the message",
            });
        }
        let ptr = buf.write_ptr()?;
        self.bufs.push(buf);
        for piece in frame::mpi_pieces(len) {
            let (at, n) = (piece.start, piece.len());
            // SAFETY: as in `send`: the buffer is owned by `self.bufs`, not
            // touched until completion or finalize; `at..at + n` lies inside
            // its first `len` bytes and is at most CHUNK long.
            let req = unsafe { comm.irecv(ptr.add(at), n, self.peer, Tag::Data)? };
            self.reqs.push(req);
        }
        Ok(())
    }

    /// Receives a matched message (all of it) into `buf`.
    ///
    /// # Errors
    /// The MPI error, or `buf` too short.
    pub(crate) fn receive_matched(&mut self, m: Matched, mut buf: Vec<u8>) -> Result<(), MpiError> {
        if buf.len() < m.len {
            buf.resize(m.len, 0);
        }
        let ptr = buf.as_mut_ptr();
        self.bufs.push(Buf::Bytes(buf));
        // SAFETY: as in `send`: the Vec's heap bytes are owned by
        // `self.bufs` and untouched until completion or finalize; it holds
        // at least `m.len` bytes.
        let req = unsafe { m.receive(ptr)? };
        self.reqs.push(req);
        Ok(())
    }

    /// Tests every request; `true` once all have completed.
    ///
    /// # Errors
    /// The first failed request's error (the others stay owned here).
    pub(crate) fn poll(&mut self) -> Result<bool, MpiError> {
        let mut all = true;
        for r in &mut self.reqs {
            if !r.test(self.peer)? {
                all = false;
            }
        }
        Ok(all)
    }

    /// The buffers back, once every request has completed; `Err(self)`
    /// while one has not.
    pub(crate) fn into_bufs(mut self) -> Result<Vec<Buf>, InFlight> {
        if self.reqs.iter().all(Request::is_done) {
            self.reqs.clear();
            Ok(std::mem::take(&mut self.bufs))
        } else {
            Err(self)
        }
    }
}

impl InFlight {
    /// The bytes a completed [`InFlight::receive_matched`] received;
    /// `None` while its request is under way.
    pub(crate) fn into_frame(self) -> Option<Vec<u8>> {
        match self.into_bufs().ok()?.pop() {
            Some(Buf::Bytes(v)) => Some(v),
            _ => Some(Vec::new()),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.bufs.is_empty() || self.reqs.iter().all(Request::is_done) {
            return;
        }
        // MPI may still read or write these: keep them until finalize.
        let bufs = std::mem::take(&mut self.bufs);
        GRAVEYARD
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(bufs);
    }
}

/// A value to send: its header and the raw buffers that follow it.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) payload: Payload,
    /// The encoding when it goes inline.
    pub(crate) inline: Vec<u8>,
    raw: Vec<Buf>,
}

impl Outgoing {
    /// Splits an encoded value: bytes inline up to `inline_max`, else raw;
    /// its segments as they are (moved ones as this process's slots,
    /// shared ones as sealed read-only mappings).
    ///
    /// # Errors
    /// [`MpiError::Shm`] when a segment cannot be handed out or a pushed fd
    /// is not a write-sealed segment.
    pub(crate) fn new(
        enc: npshmex_pool::backend::Encoded,
        inline_max: usize,
    ) -> Result<Outgoing, MpiError> {
        let (bytes, collected) = enc.into_parts();
        let items = collected.finish_local().map_err(|source| MpiError::Shm {
            op: "handing out the value's segments",
            source,
        })?;
        let mut raw = Vec::with_capacity(items.len() + 1);
        let (body, inline) = if bytes.len() <= inline_max {
            // inline_max is at most u32::MAX (the builder checks it).
            let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            (Body::Inline(n), bytes)
        } else {
            let n = bytes.len() as u64;
            raw.push(Buf::Bytes(bytes));
            (Body::Raw(n), Vec::new())
        };
        let mut lens = Vec::with_capacity(items.len());
        for item in items {
            let buf = match item {
                Outbound::Slot(slot) => Buf::Slot(slot),
                Outbound::Fd(fd) => {
                    Buf::Sealed(Segment::from_fd_sealed(fd, Access::ReadOnly, 0).map_err(
                        |source| MpiError::Shm {
                            op: "mapping a shared segment to send it",
                            source,
                        },
                    )?)
                }
            };
            lens.push(buf.bytes_len() as u64);
            raw.push(buf);
        }
        Ok(Outgoing {
            payload: Payload { body, items: lens },
            inline,
            raw,
        })
    }

    /// Sends `frame` (whose header announces this payload) and then the raw
    /// buffers.
    ///
    /// # Errors
    /// The MPI error; what was started stays owned by `flight`.
    pub(crate) fn post(
        self,
        comm: &Comm,
        frame: Vec<u8>,
        flight: &mut InFlight,
    ) -> Result<(), MpiError> {
        flight.send(comm, Tag::Frame, Buf::Bytes(frame))?;
        for buf in self.raw {
            flight.send(comm, Tag::Data, buf)?;
        }
        Ok(())
    }
}

/// Announced values from this size on are checked against the memory
/// available (reading `/proc/meminfo` costs more than smaller ones could).
const CHECKED_FROM: u64 = 64 << 20;

/// Refuses a value whose announced bytes (its body and segments) exceed
/// the memory this machine has available: a peer's frame of a few bytes
/// must not make this process reserve what it cannot back.
fn check_fits(peer: i32, payload: &Payload) -> Result<(), MpiError> {
    let body = match payload.body {
        Body::Inline(_) => 0,
        Body::Raw(n) => n,
    };
    let total = payload
        .items
        .iter()
        .try_fold(body, |sum, &len| sum.checked_add(len))
        .unwrap_or(u64::MAX);
    if total < CHECKED_FROM {
        return Ok(());
    }
    match npshmex_shm::procfs::MemInfo::read() {
        Some(m) if total > m.allocatable() => Err(MpiError::Size {
            rank: peer,
            len: total,
            reason: "more than the memory available",
        }),
        _ => Ok(()),
    }
}

/// `n` zero bytes, or `None` without the memory. Allocated zeroed
/// (`calloc`): large buffers are fresh pages, left untouched until the
/// bytes arrive, so an announcement alone commits no memory.
fn zeroed(n: usize) -> Option<Vec<u8>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(n).ok()?;
    // SAFETY: `layout` has a non-zero size (n > 0).
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` comes from the global allocator with `layout` (n bytes,
    // alignment 1, as a Vec<u8> of capacity n has), and all n bytes are
    // initialised (zeroed).
    Some(unsafe { Vec::from_raw_parts(p, n, n) })
}

/// A value being received: the buffers its raw messages land in.
#[derive(Debug)]
pub(crate) struct Incoming {
    inline: Option<Vec<u8>>,
    flight: InFlight,
}

/// Where the received bytes of a value are, once complete.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) bytes: Vec<u8>,
    pub(crate) items: Vec<Inbound>,
}

impl Incoming {
    /// Posts the receives for the payload a frame from `peer` announced
    /// (`inline`: the bytes after its header).
    ///
    /// # Errors
    /// [`MpiError::BadFrame`] / [`MpiError::Size`] for announcements that
    /// do not fit, [`MpiError::Shm`] when no segment can be had, MPI errors.
    /// On error the stream from `peer` is out of step.
    pub(crate) fn post(
        comm: &Comm,
        peer: i32,
        payload: &Payload,
        inline: &[u8],
    ) -> Result<Incoming, MpiError> {
        payload.check_inline(peer, inline)?;
        check_fits(peer, payload)?;
        let mut flight = InFlight::new(peer);
        let inline = match payload.body {
            Body::Inline(_) => Some(inline.to_vec()),
            Body::Raw(n) => {
                let n = frame::to_len(peer, n)?;
                let v = zeroed(n).ok_or(MpiError::Size {
                    rank: peer,
                    len: n as u64,
                    reason: "no memory for the value's bytes",
                })?;
                flight.receive(comm, Buf::Bytes(v), n)?;
                None
            }
        };
        for &len in &payload.items {
            let len = frame::to_len(peer, len)?;
            let slot = cache::alloc(len).map_err(|source| MpiError::Shm {
                op: "allocating a segment to receive into",
                source,
            })?;
            flight.receive(comm, Buf::Slot(slot), len)?;
        }
        Ok(Incoming { inline, flight })
    }

    /// Tests the receives; the value once all are complete.
    ///
    /// # Errors
    /// The MPI error of a failed receive.
    pub(crate) fn poll(&mut self) -> Result<bool, MpiError> {
        self.flight.poll()
    }

    /// The received value. Call after [`Incoming::poll`] returned `true`.
    pub(crate) fn finish(self) -> Result<Received, Incoming> {
        let Incoming { inline, flight } = self;
        let bufs = match flight.into_bufs() {
            Ok(b) => b,
            Err(flight) => return Err(Incoming { inline, flight }),
        };
        let mut bufs = bufs.into_iter();
        let bytes = match inline {
            Some(b) => b,
            None => match bufs.next() {
                Some(Buf::Bytes(b)) => b,
                // `post` put the body first when it is raw.
                _ => Vec::new(),
            },
        };
        let items = bufs
            .filter_map(|b| match b {
                Buf::Slot(s) => Some(Inbound::Slot(s)),
                _ => None,
            })
            .collect();
        Ok(Received { bytes, items })
    }
}
