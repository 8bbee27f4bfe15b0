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

use npshmex_shm::{oob, Access, Seals, Segment, ShmError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

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
    pub(crate) outcome: Result<(Body, u32), Failure>,
}

/// A task that produced no value, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panicked(String),
    ArgumentDecode(String),
    ResultEncode(String),
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
}

enum PacketBody {
    Inline(Vec<u8>),
    Memfd { seg: Segment, len: usize },
}

/// Why a value could not be packed.
#[derive(Debug)]
pub(crate) enum PackError {
    Encode(postcard::Error),
    Shm(&'static str, ShmError),
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackError::Encode(e) => write!(f, "{e}"),
            PackError::Shm(op, e) => write!(f, "{op}: {e}"),
        }
    }
}

/// Serializes `value` inside an fd collector; past `inline_max` bytes the
/// encoding moves to a sealed memfd.
pub(crate) fn pack<T: Serialize>(value: &T, inline_max: usize) -> Result<Packet, PackError> {
    let (bytes, fds) = oob::collect(|| postcard::to_allocvec(value));
    let bytes = bytes.map_err(PackError::Encode)?;
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
        return Ok(Packet {
            body: PacketBody::Inline(bytes),
            fds,
        });
    }
    let len = bytes.len();
    let mut seg =
        Segment::anonymous(len).map_err(|e| PackError::Shm("creating a payload memfd", e))?;
    let actual = seg.len();
    let dst = seg
        .as_mut_slice()
        .map_err(|e| PackError::Shm("writing a payload memfd", e))?;
    let Some(dst) = dst.get_mut(..len) else {
        return Err(PackError::Shm(
            "writing a payload memfd",
            ShmError::TooSmall {
                expected: len as u64,
                actual: actual as u64,
            },
        ));
    };
    dst.copy_from_slice(&bytes);
    drop(bytes);
    // The receiver maps it read-only; sealing the size means no one can
    // shrink it under that mapping (SIGBUS).
    seg.seal(Seals::SIZE)
        .map_err(|e| PackError::Shm("sealing a payload memfd", e))?;
    Ok(Packet {
        body: PacketBody::Memfd { seg, len },
        fds,
    })
}

impl Packet {
    /// How the receiver finds the bytes.
    pub(crate) fn body(&self) -> Body {
        match &self.body {
            // pack() only makes Inline bodies whose length fits in u32.
            PacketBody::Inline(b) => Body::Inline(b.len() as u32),
            PacketBody::Memfd { len, .. } => Body::Memfd(*len as u64),
        }
    }

    /// The bytes that go inline in the frame (empty for a memfd body).
    pub(crate) fn inline(&self) -> &[u8] {
        match &self.body {
            PacketBody::Inline(b) => b,
            PacketBody::Memfd { .. } => &[],
        }
    }

    /// Number of fds sent with this packet.
    pub(crate) fn fd_count(&self) -> u32 {
        let memfd = u32::from(matches!(self.body, PacketBody::Memfd { .. }));
        memfd + self.fds.len() as u32
    }

    /// Appends this packet's fds, in wire order.
    pub(crate) fn push_fds<'a>(&'a self, out: &mut Vec<BorrowedFd<'a>>) {
        if let PacketBody::Memfd { seg, .. } = &self.body {
            out.push(seg.fd());
        }
        out.extend(self.fds.iter().map(|f| f.as_fd()));
    }
}

/// Takes one payload off the front of a frame's payload area and its fds
/// off the front of the frame's fds, and runs `f` on the bytes and the
/// remaining (out-of-band) fds.
pub(crate) fn with_payload<T>(
    body: Body,
    nfds: u32,
    inline: &mut &[u8],
    fds: &mut std::vec::IntoIter<OwnedFd>,
    f: impl FnOnce(&[u8], Vec<OwnedFd>) -> T,
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
            Ok(f(now, mine))
        }
        Body::Memfd(len) => {
            if mine.is_empty() {
                return Err(ShmError::Frame {
                    reason: "a memfd payload came without its fd".into(),
                });
            }
            let fd = mine.remove(0);
            // Only a shrink-sealed memfd cannot be truncated under the
            // mapping by whoever else holds it (SIGBUS on the read below).
            let seg = Segment::from_fd_sealed(fd, Access::ReadOnly, len, Seals::NONE)?;
            // from_fd_expect checked the segment holds at least `len` bytes.
            let bytes = seg.as_slice().get(..len as usize).unwrap_or(&[]);
            Ok(f(bytes, mine))
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
        let out = with_payload(p.body(), p.fd_count(), &mut inline, &mut fds, |b, f| {
            assert!(f.is_empty(), "no oob fds in a plain value");
            postcard::from_bytes::<Vec<u8>>(b).expect("decodes")
        })?;
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
                id, tramp, func, body: Body::Inline(len), fds: len % 3,
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
            let p = pack(&v, inline_max).expect("packs");
            let encoded = postcard::to_allocvec(&v).expect("encodes").len();
            prop_assert_eq!(matches!(p.body(), Body::Memfd(_)), encoded > inline_max);
            prop_assert_eq!(unpack(&p, p.inline()).expect("unpacks"), v);
        }

        #[test]
        fn truncated_frames_are_errors(len in 1usize..200, cut in 1usize..200) {
            let v = vec![1u8; len];
            let p = pack(&v, usize::MAX).expect("packs");
            let cut = cut.min(p.inline().len());
            let short = &p.inline()[..p.inline().len() - cut];
            let refused = matches!(unpack(&p, short), Err(ShmError::Frame { .. }));
            prop_assert!(refused);
        }
    }

    #[test]
    fn a_memfd_payload_without_its_fd_is_an_error() {
        let p = pack(&vec![3u8; 100], 10).expect("packs");
        let mut inline: &[u8] = &[];
        let mut fds = Vec::new().into_iter();
        let r = with_payload(p.body(), 0, &mut inline, &mut fds, |_, _| ());
        assert!(matches!(r, Err(ShmError::Frame { .. })));
        let r = with_payload(p.body(), 1, &mut inline, &mut fds, |_, _| ());
        assert!(matches!(r, Err(ShmError::Frame { .. })));
    }

    #[test]
    fn a_memfd_shorter_than_claimed_is_an_error() {
        let p = pack(&vec![3u8; 100], 10).expect("packs");
        let mut inline: &[u8] = &[];
        let mut fds = owned(&p).into_iter();
        let r = with_payload(Body::Memfd(1 << 20), 1, &mut inline, &mut fds, |_, _| ());
        assert!(matches!(r, Err(ShmError::TooSmall { .. })));
    }

    #[test]
    fn an_unsealed_memfd_payload_is_refused() {
        // A peer that keeps a writable, unsealed memfd could truncate it
        // while we read it (SIGBUS): such a payload is refused unmapped.
        let seg = Segment::anonymous(4096).expect("memfd");
        let mut inline: &[u8] = &[];
        let mut fds = vec![seg.try_clone_fd().expect("dup")].into_iter();
        let r = with_payload(Body::Memfd(10), 1, &mut inline, &mut fds, |_, _| ());
        assert!(matches!(r, Err(ShmError::NotSealed { .. })));
    }

    #[test]
    fn the_executable_identity_is_stable() {
        let a = ExeId::current().expect("stat /proc/self/exe");
        let b = ExeId::current().expect("stat /proc/self/exe");
        assert_eq!(a, b);
        assert!(a.to_string().contains("inode"));
    }
}
