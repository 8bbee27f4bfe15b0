//! What travels over a worker's socket: postcard-encoded frame headers
//! followed by the inline payload bytes they describe, and the packing of
//! one serde value into inline bytes or a sealed memfd plus its
//! out-of-band fds.
//!
//! One frame carries several tasks (or results) so that a backlog costs one
//! syscall per batch, not per task. Payloads are appended raw after the
//! header instead of being fields of it, so decoding a header never copies
//! a payload. A payload past the inline limit goes in a sealed memfd whose
//! fd is the first of its task's fds: the receiver maps it read-only and
//! decodes from the mapping, so a large `Vec<f64>` is never pushed through
//! the socket's copy loop.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use npshmex_shm::{oob, Access, Segment, ShmError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{PanicInfo, SharedCause, TaskError};
use crate::remote_error::RemoteCause;

/// Identity of an executable file: equal identities mean the same code at
/// the same offsets, so function addresses relative to an anchor agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExeId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl ExeId {
    /// The identity of `/proc/self/exe` (followed even when the file was
    /// replaced or deleted since start, since the link names the inode).
    pub(crate) fn current() -> std::io::Result<ExeId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/exe")?;
        Ok(ExeId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

impl std::fmt::Display for ExeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dev {} inode {} size {} mtime {}.{:09}",
            self.dev, self.ino, self.size, self.mtime, self.mtime_nsec
        )
    }
}

/// Where a payload's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// This many bytes follow in the frame's payload area.
    Inline(u32),
    /// In a memfd (the task's first fd) of at least this many bytes.
    Memfd(u64),
}

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Sent once after the handshake.
    Setup(Setup),
    /// Tasks to run in order; their inline payloads follow the header.
    Tasks(Vec<TaskHead>),
}

/// Worker settings.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// Offset of the initializer `fn()` from the anchor.
    pub(crate) initializer: Option<i64>,
    /// Exit after this many tasks.
    pub(crate) max_tasks: Option<u64>,
    /// Bounded spin before blocking, in nanoseconds.
    pub(crate) spin_ns: u64,
    /// Results larger than this go in a memfd.
    pub(crate) inline_max: u64,
}

/// One task of a `Tasks` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskHead {
    pub(crate) id: u64,
    /// Offset of the trampoline from the anchor.
    pub(crate) tramp: i64,
    /// Offset of the user function from the anchor.
    pub(crate) func: i64,
    pub(crate) body: Body,
    /// Fds of this task (memfd first if `body` is `Memfd`, then oob fds).
    pub(crate) fds: u32,
    /// Which oob fds (indices among them) are moves the sender proved.
    pub(crate) moved: Vec<u32>,
}

/// Worker to parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToParent {
    /// First frame of a worker.
    Hello(Hello),
    /// The initializer ran: `None`, or it panicked with this message.
    Ready(Option<String>),
    /// Results in task order; their inline payloads follow the header.
    Results(Vec<ResultHead>),
    /// The worker cannot go on (it could not receive a frame): why, for the
    /// task it was about to run; it exits after sending this.
    Fatal(RemoteCause),
}

/// The worker's handshake.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) token: u64,
    pub(crate) pid: u32,
    pub(crate) exe: ExeId,
    /// Offset of a probe function from the anchor, as the worker sees it.
    pub(crate) probe: i64,
}

/// One result of a `Results` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResultHead {
    pub(crate) id: u64,
    pub(crate) outcome: Result<Payload, Failure>,
}

/// Where a result's bytes and fds are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) body: Body,
    pub(crate) fds: u32,
    pub(crate) moved: Vec<u32>,
}

/// A task that produced no value, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panicked(PanicInfo),
    ArgumentDecode(RemoteCause),
    ResultEncode(RemoteCause),
}

impl From<Failure> for TaskError {
    fn from(f: Failure) -> TaskError {
        match f {
            Failure::Panicked(p) => TaskError::Panicked(p),
            Failure::ArgumentDecode(c) => TaskError::ArgumentDecode(c),
            Failure::ResultEncode(c) => TaskError::ResultEncode(c),
        }
    }
}

/// Encodes a frame: the header, then the payloads.
pub(crate) fn encode_frame<H: Serialize>(
    head: &H,
    payload_len: usize,
) -> Result<Vec<u8>, postcard::Error> {
    let mut out = Vec::with_capacity(64 + payload_len);
    postcard::to_io(head, &mut out)?;
    Ok(out)
}

/// Splits a frame into its header and payload area.
pub(crate) fn decode_frame<H: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(H, &[u8]), postcard::Error> {
    postcard::take_from_bytes(bytes)
}

/// A value packed for sending.
pub(crate) struct Packet {
    body: PacketBody,
    /// Fds the value's `Serialize` impls handed out of band.
    fds: Vec<OwnedFd>,
    /// Which of them are proven moves.
    moved: Vec<u32>,
}

enum PacketBody {
    /// A few bytes (a number, a short tuple), kept in place: no heap
    /// buffer travels with the task to the thread that drops it.
    Small(SmallBytes),
    Inline(Vec<u8>),
    Memfd {
        fd: OwnedFd,
        len: usize,
    },
}

/// Most bytes a [`PacketBody::Small`] holds.
const SMALL_MAX: usize = 38;

/// Longest frame either side accepts on a worker's socket. It carries the
/// handshake (a hello or the settings: an executable's identity and a few
/// numbers) and the fds of ring entries (with no bytes); everything else
/// goes through the ring. A peer's header cannot make the other side
/// buffer more.
pub(crate) const MAX_SOCKET_FRAME: u64 = 64 << 10;

/// Up to [`SMALL_MAX`] bytes without a heap buffer.
///
/// A task's packet is made on the submitting thread and dropped on the
/// slot thread that receives its result; a heap buffer freed there goes
/// back to the submitter's malloc arena under that arena's lock, which the
/// submitter takes for its next task's buffer: with tiny tasks the two
/// threads contended for it on every task (four futex calls in five were
/// malloc's). The encoding buffer is now freed where it was made.
#[derive(Clone, Copy)]
struct SmallBytes {
    len: u8,
    buf: [u8; SMALL_MAX],
}

impl SmallBytes {
    /// `None` if `bytes` does not fit.
    fn new(bytes: &[u8]) -> Option<SmallBytes> {
        let mut buf = [0u8; SMALL_MAX];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(SmallBytes {
            len: u8::try_from(bytes.len()).ok()?,
            buf,
        })
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// Why a value could not be packed.
#[derive(Debug)]
pub(crate) enum PackError {
    /// The value's serialization failed: the typed cause, or the
    /// serializer's own message.
    Encode(SharedCause),
    /// The shared-memory layer failed (a payload memfd, a segment copy).
    Shm(&'static str, ShmError),
}

impl PackError {
    /// The same failure as a chain of messages, for a worker's report.
    pub(crate) fn to_cause(&self) -> RemoteCause {
        match self {
            PackError::Encode(e) => RemoteCause::from_error(e.as_ref()),
            PackError::Shm(op, e) => {
                let inner = RemoteCause::from_error(e);
                RemoteCause::with_source(format!("{op} failed"), inner)
            }
        }
    }
}

/// A value encoded for any transport: its bytes, and the out-of-band items
/// its `Serialize` impls handed over, not yet resolved (the value itself is
/// gone, so moved segments can move). The local pool resolves them into
/// fds (`Packet::from_encoded`); a transport that carries contents uses
/// [`oob::Collected::finish_local`].
pub struct Encoded {
    bytes: Vec<u8>,
    collected: oob::Collected,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("bytes", &self.bytes.len())
            .field("out_of_band", &self.collected.len())
            .finish()
    }
}

impl Encoded {
    /// The serialized bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes and the out-of-band items.
    pub fn into_parts(self) -> (Vec<u8>, oob::Collected) {
        (self.bytes, self.collected)
    }
}

/// The initial capacity of an encoding buffer.
const ENCODE_ROOM: usize = 256;

/// Serializes `value` inside an fd collector (postcard) and drops it, so
/// that segments it held can move.
pub(crate) fn encode<T: Serialize>(value: T) -> Result<Encoded, PackError> {
    // Room for a small value's bytes (an inline array's `.npy` header and
    // data), so that encoding it does not grow the buffer five times over.
    let (bytes, mut collected) =
        oob::collect(|| postcard::to_io(&value, Vec::with_capacity(ENCODE_ROOM)));
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            let cause = match collected.take_cause() {
                Some(c) => SharedCause::from(c),
                None => explain_encode(&value, e),
            };
            return Err(PackError::Encode(cause));
        }
    };
    drop(value);
    Ok(Encoded { bytes, collected })
}

/// [`encode`], then [`Packet::from_encoded`].
#[cfg(test)]
pub(crate) fn pack<T: Serialize>(value: T, inline_max: usize) -> Result<Packet, PackError> {
    Packet::from_encoded(encode(value)?, inline_max)
}

impl Packet {
    /// Resolves an encoded value's out-of-band items into fds; past
    /// `inline_max` bytes the encoding moves to a sealed memfd.
    pub(crate) fn from_encoded(enc: Encoded, inline_max: usize) -> Result<Packet, PackError> {
        let Encoded { bytes, collected } = enc;
        // SAFETY: a packet goes only to this pool's private socket, whose
        // other end runs this very executable (checked at handshake) and
        // receives through `decode` alone: `with_received_moves` maps each
        // moved fd into a slot that keeps the description (and its lock) it
        // was given until the slot is dropped, and a slot never unlocks,
        // re-opens or hands out the fd of a writable segment (`Segment::fd`
        // refuses exclusive ones; passing the array on lends it again under
        // these same rules). User code in the worker cannot reach the fd.
        #[allow(unsafe_code)]
        let out = unsafe { collected.finish_trusted() }
            .map_err(|e| PackError::Shm("handing out the value's segments", e))?;
        let (fds, moved) = out.into_parts();
        let moved: Vec<u32> = moved
            .iter()
            .enumerate()
            .filter(|(_, &m)| m)
            .map(|(i, _)| i as u32)
            .collect();
        // One spare for the payload memfd.
        if fds.len() >= npshmex_shm::MAX_FRAME_FDS as usize {
            return Err(PackError::Shm(
                "collecting out-of-band fds",
                ShmError::Frame {
                    reason: format!(
                        "{} fds in one value; at most {} fit a frame",
                        fds.len(),
                        npshmex_shm::MAX_FRAME_FDS - 1
                    ),
                },
            ));
        }
        if bytes.len() <= inline_max && u32::try_from(bytes.len()).is_ok() {
            if let Some(small) = SmallBytes::new(&bytes) {
                return Ok(Packet {
                    body: PacketBody::Small(small),
                    fds,
                    moved,
                });
            }
            return Ok(Packet {
                body: PacketBody::Inline(bytes),
                fds,
                moved,
            });
        }
        let len = bytes.len();
        let mut seg =
            Segment::anonymous(len).map_err(|e| PackError::Shm("creating a payload memfd", e))?;
        seg.as_mut_slice()
            .map_err(|e| PackError::Shm("writing a payload memfd", e))?[..len]
            .copy_from_slice(&bytes);
        drop(bytes);
        // Sealed against resizing and writes: the receiver maps it read-only
        // and decodes from the mapping, so its bytes must not change (or vanish).
        let fd = seg
            .into_sealed_fd()
            .map_err(|e| PackError::Shm("sealing a payload memfd", e))?;
        Ok(Packet {
            body: PacketBody::Memfd { fd, len },
            fds,
            moved,
        })
    }
}

/// Why `value` could not be encoded, when no adapter recorded a typed
/// cause: postcard drops the messages of `Serialize` impls, so the value is
/// serialized once more into a `serde_value::Value`, whose errors keep
/// them. Only on this (failing) path, never on a hot one.
fn explain_encode<T: Serialize>(value: &T, err: postcard::Error) -> SharedCause {
    match serde_value::to_value(value) {
        Err(serde_value::SerializerError::Custom(message)) => Arc::new(RemoteCause::new(message)),
        _ => Arc::new(err),
    }
}

impl Packet {
    /// How the receiver finds the bytes.
    pub(crate) fn body(&self) -> Body {
        match &self.body {
            // pack() only makes Inline bodies whose length fits in u32.
            PacketBody::Small(b) => Body::Inline(u32::from(b.len)),
            PacketBody::Inline(b) => Body::Inline(b.len() as u32),
            PacketBody::Memfd { len, .. } => Body::Memfd(*len as u64),
        }
    }

    /// The bytes that go inline in the frame (empty for a memfd body).
    pub(crate) fn inline(&self) -> &[u8] {
        match &self.body {
            PacketBody::Small(b) => b.as_slice(),
            PacketBody::Inline(b) => b,
            PacketBody::Memfd { .. } => &[],
        }
    }

    /// Number of fds sent with this packet.
    pub(crate) fn fd_count(&self) -> u32 {
        let memfd = u32::from(matches!(self.body, PacketBody::Memfd { .. }));
        memfd + self.fds.len() as u32
    }

    /// Indices of the oob fds that are proven moves.
    pub(crate) fn moved(&self) -> &[u32] {
        &self.moved
    }

    /// Where a result's bytes and fds are.
    pub(crate) fn payload(&self) -> Payload {
        Payload {
            body: self.body(),
            fds: self.fd_count(),
            moved: self.moved.clone(),
        }
    }

    /// Appends this packet's fds, in wire order.
    pub(crate) fn push_fds<'a>(&'a self, out: &mut Vec<BorrowedFd<'a>>) {
        if let PacketBody::Memfd { fd, .. } = &self.body {
            out.push(fd.as_fd());
        }
        out.extend(self.fds.iter().map(|f| f.as_fd()));
    }
}

/// The out-of-band items of one received value. Crate-private: the move
/// flags of `Fds` are trusted (see `decode`), so only this crate makes them.
pub(crate) enum Incoming {
    /// Fds from this pool's socket, with the moves its sender proved.
    Fds {
        /// The fds, in index order.
        fds: Vec<OwnedFd>,
        /// Per fd, whether the peer proved it a move.
        moved: Vec<bool>,
    },
    /// Items of a transport that carries segment contents.
    Local(Vec<oob::Inbound>),
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incoming::Fds { fds, .. } => write!(f, "Incoming::Fds({})", fds.len()),
            Incoming::Local(items) => write!(f, "Incoming::Local({})", items.len()),
        }
    }
}

impl Incoming {
    /// `fds` with the move flags `moved` (indices) of a frame header.
    pub(crate) fn new(fds: Vec<OwnedFd>, moved: &[u32]) -> Incoming {
        let mut flags = vec![false; fds.len()];
        for &i in moved {
            if let Some(f) = flags.get_mut(i as usize) {
                *f = true;
            }
        }
        Incoming::Fds { fds, moved: flags }
    }

    /// Number of items.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Incoming::Fds { fds, .. } => fds.len(),
            Incoming::Local(items) => items.len(),
        }
    }
}

/// Decodes a value of type `T` from `bytes` with the fds of `incoming`.
/// A panic in a user `Deserialize` impl is caught and reported.
///
/// # Errors
/// The typed cause recorded by the value's `Deserialize` impls
/// (`oob::de_error`), or the deserializer's own error.
#[allow(unsafe_code)]
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    incoming: Incoming,
) -> Result<T, SharedCause> {
    let run = || catch_unwind(AssertUnwindSafe(|| postcard::from_bytes::<T>(bytes)));
    let (decoded, cause) = match incoming {
        // SAFETY: `Incoming::Fds` is made only by this crate, from the frame
        // header our peer wrote (`Incoming::new`): the other end of this
        // pool's private socket, a process running this very executable
        // (checked at handshake) whose pool code sets a flag only for fds
        // `Collected::finish_trusted` proved to be moves (the sender's last
        // handle was dropped; no writable fd or mapping of the file is left
        // to it outside its segment cache, which hands a lent segment out
        // again only once every description it lent is closed, which this
        // side's slots do only when they let go of the pages).
        // User code in the peer cannot write frame headers.
        Incoming::Fds { fds, moved } => unsafe { oob::with_received_moves(fds, &moved, run) },
        Incoming::Local(items) => oob::with_received_local(items, run),
    };
    match decoded {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(match cause {
            Some(c) => SharedCause::from(c),
            None => match custom_message::<T>(bytes) {
                Some(message) => Arc::new(RemoteCause::new(message)),
                None => Arc::new(e),
            },
        }),
        Err(panic) => Err(Arc::new(RemoteCause::new(format!(
            "decoding panicked: {}",
            crate::remote_fn::panic_message(&*panic)
        )))),
    }
}

/// The message a failing `Deserialize` impl gave, which postcard drops
/// (its custom error has no text): `bytes` decoded again through an erased
/// deserializer, whose errors keep their text. Only on the error path (the
/// erased form costs a virtual call per item). Fds were consumed by the
/// first attempt, so this one runs with none; if it fails for want of
/// one, it never reached the failure it looks for, and says nothing.
fn custom_message<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let (again, cause) = oob::with_received_local(Vec::new(), || {
        catch_unwind(AssertUnwindSafe(|| {
            let mut de = postcard::Deserializer::from_bytes(bytes);
            let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(&mut de);
            erased_serde::deserialize::<T>(&mut erased).err()
        }))
    });
    match (again, cause) {
        (Ok(Some(e)), None) => Some(e.to_string()),
        _ => None,
    }
}

/// Takes one payload off the front of a frame's payload area and its fds
/// off the front of the frame's fds, and runs `f` on the bytes and the
/// remaining (out-of-band) fds.
pub(crate) fn with_payload<T>(
    body: Body,
    nfds: u32,
    moved: &[u32],
    inline: &mut &[u8],
    fds: &mut std::vec::IntoIter<OwnedFd>,
    f: impl FnOnce(&[u8], Incoming) -> T,
) -> Result<T, ShmError> {
    let mut mine: Vec<OwnedFd> = fds.take(nfds as usize).collect();
    if mine.len() != nfds as usize {
        return Err(ShmError::Frame {
            reason: format!(
                "a payload claims {nfds} fds, the frame has {} left",
                mine.len()
            ),
        });
    }
    match body {
        Body::Inline(n) => {
            let n = n as usize;
            if inline.len() < n {
                return Err(ShmError::Frame {
                    reason: format!(
                        "a payload claims {n} bytes, the frame has {} left",
                        inline.len()
                    ),
                });
            }
            let (now, rest) = inline.split_at(n);
            *inline = rest;
            Ok(f(now, Incoming::new(mine, moved)))
        }
        Body::Memfd(len) => {
            if mine.is_empty() {
                return Err(ShmError::Frame {
                    reason: "a memfd payload came without its fd".into(),
                });
            }
            let fd = mine.remove(0);
            // Only a memfd sealed against shrinking and writes is mapped:
            // whoever else holds it can neither truncate it under the
            // mapping (SIGBUS) nor change the bytes being decoded.
            let seg = Segment::from_fd_sealed(fd, Access::ReadOnly, len)?;
            // from_fd_sealed checked the segment holds at least `len` bytes.
            let bytes = seg.as_slice().get(..len as usize).unwrap_or(&[]);
            Ok(f(bytes, Incoming::new(mine, moved)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(p: &Packet) -> Vec<OwnedFd> {
        let mut b = Vec::new();
        p.push_fds(&mut b);
        b.iter()
            .map(|f| f.try_clone_to_owned().expect("dup"))
            .collect()
    }

    fn unpack(p: &Packet, frame_tail: &[u8]) -> Result<Vec<u8>, ShmError> {
        let mut inline = frame_tail;
        let mut fds = owned(p).into_iter();
        let out = with_payload(
            p.body(),
            p.fd_count(),
            p.moved(),
            &mut inline,
            &mut fds,
            |b, f| {
                assert_eq!(f.len(), 0, "no oob fds in a plain value");
                decode::<Vec<u8>>(b, f).expect("decodes")
            },
        )?;
        assert!(inline.is_empty(), "exactly the payload was consumed");
        Ok(out)
    }

    proptest! {
        #[test]
        fn frames_round_trip(
            ids in proptest::collection::vec(any::<u64>(), 0..20),
            lens in proptest::collection::vec(0u32..300, 20),
            tramp in any::<i64>(),
            func in any::<i64>(),
        ) {
            let heads: Vec<TaskHead> = ids.iter().zip(&lens).map(|(&id, &len)| TaskHead {
                id, tramp, func, body: Body::Inline(len), fds: len % 3, moved: vec![len % 2],
            }).collect();
            let payload: Vec<u8> = (0..lens.iter().take(ids.len()).sum::<u32>()).map(|i| i as u8).collect();
            let mut frame = encode_frame(&ToWorker::Tasks(heads.clone()), payload.len()).expect("encodes");
            frame.extend_from_slice(&payload);
            let (back, rest) = decode_frame::<ToWorker>(&frame).expect("decodes");
            match back {
                ToWorker::Tasks(h) => prop_assert_eq!(h, heads),
                ToWorker::Setup(_) => prop_assert!(false, "wrong variant"),
            }
            prop_assert_eq!(rest, &payload[..]);
        }

        #[test]
        fn packets_round_trip_inline_or_memfd(len in 0usize..4096, inline_max in 0usize..2048) {
            let v: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let encoded = postcard::to_allocvec(&v).expect("encodes").len();
            let p = pack(v.clone(), inline_max).expect("packs");
            prop_assert_eq!(matches!(p.body(), Body::Memfd(_)), encoded > inline_max);
            // A few bytes stay in the packet itself (no heap buffer crosses
            // threads with the task); the frame sees the same body.
            prop_assert_eq!(
                matches!(p.body, PacketBody::Small(_)),
                encoded <= SMALL_MAX.min(inline_max)
            );
            if let Body::Inline(n) = p.body() {
                prop_assert_eq!(n as usize, p.inline().len());
                prop_assert_eq!(p.inline().len(), encoded);
            }
            prop_assert_eq!(unpack(&p, p.inline()).expect("unpacks"), v);
        }

        #[test]
        fn truncated_frames_are_errors(len in 1usize..200, cut in 1usize..200) {
            let v = vec![1u8; len];
            let p = pack(v, usize::MAX).expect("packs");
            let cut = cut.min(p.inline().len());
            let short = &p.inline()[..p.inline().len() - cut];
            let refused = matches!(unpack(&p, short), Err(ShmError::Frame { .. }));
            prop_assert!(refused);
        }
    }

    #[test]
    fn a_memfd_payload_without_its_fd_is_an_error() {
        let p = pack(vec![3u8; 100], 10).expect("packs");
        let mut inline: &[u8] = &[];
        let mut fds = Vec::new().into_iter();
        let r = with_payload(p.body(), 0, &[], &mut inline, &mut fds, |_, _| ());
        assert!(matches!(r, Err(ShmError::Frame { .. })));
        let r = with_payload(p.body(), 1, &[], &mut inline, &mut fds, |_, _| ());
        assert!(matches!(r, Err(ShmError::Frame { .. })));
    }

    #[test]
    fn a_memfd_shorter_than_claimed_is_an_error() {
        let p = pack(vec![3u8; 100], 10).expect("packs");
        let mut inline: &[u8] = &[];
        let mut fds = owned(&p).into_iter();
        let r = with_payload(
            Body::Memfd(1 << 20),
            1,
            &[],
            &mut inline,
            &mut fds,
            |_, _| (),
        );
        assert!(matches!(r, Err(ShmError::TooSmall { .. })));
    }

    #[test]
    fn an_unsealed_memfd_payload_is_refused() {
        // A peer that keeps a writable, unsealed memfd could truncate it or
        // change it while we decode it: such a payload is refused unmapped.
        let seg = Segment::anonymous(4096).expect("memfd");
        let mut inline: &[u8] = &[];
        let mut fds = vec![seg.into_fd().expect("own fd")].into_iter();
        let r = with_payload(Body::Memfd(10), 1, &[], &mut inline, &mut fds, |_, _| ());
        assert!(matches!(r, Err(ShmError::NotSealed { .. })));
    }

    #[test]
    fn serialize_messages_reach_the_error() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("the widget is not ready"))
            }
        }
        match pack(Refuses, 1024) {
            Err(PackError::Encode(cause)) => {
                assert_eq!(cause.to_string(), "the widget is not ready")
            }
            Err(other) => panic!("wrong error {other:?}"),
            Ok(_) => panic!("packed"),
        }
    }

    #[test]
    fn the_executable_identity_is_stable() {
        let a = ExeId::current().expect("stat /proc/self/exe");
        let b = ExeId::current().expect("stat /proc/self/exe");
        assert_eq!(a, b);
        assert!(a.to_string().contains("inode"));
    }
}
