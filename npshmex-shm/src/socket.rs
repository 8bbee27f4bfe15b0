//! [`FdSocket`]: framed messages with any number of fds over a unix stream socket.
//!
//! Wire format: a 16-byte header (magic `NPSX`, fd count `u32`, payload length
//! `u64`, little endian), the payload, then `pad` zero bytes. Fds ride in
//! `SCM_RIGHTS` on `sendmsg` calls, at most 253 per call (`SCM_MAX_FD`); every
//! fd-carrying call carries at least one byte of the frame it belongs to, so by the
//! time a frame's last byte is read all its fds are queued (the kernel attaches
//! fds to the bytes they were sent with). A frame with more fd chunks than bytes
//! gets `pad = chunks - 16 - len` padding bytes; both sides compute it.
//!
//! A stream socket plus framing, rather than `SOCK_SEQPACKET`: no per-message size
//! limit, and the receiver reads many small frames with one syscall.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Result, ShmError};

/// Most fds the kernel accepts in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MSG: usize = 253;

/// Most iovecs one `sendmsg` accepts (`IOV_MAX` on Linux).
const IOV_MAX: usize = 1024;

/// Control-message space for [`MAX_FDS_PER_MSG`] fds: on the stack, so
/// neither direction allocates for its ancillary data.
const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MSG));

/// Largest payload of one frame (1 GiB): bigger data belongs in a segment.
pub const MAX_FRAME_LEN: u64 = 1 << 30;
/// Most fds in one frame.
pub const MAX_FRAME_FDS: u32 = 1 << 16;

const MAGIC: u32 = u32::from_le_bytes(*b"NPSX");
const HEADER_LEN: usize = 16;
/// Free buffer space wanted before a read.
const READ_CHUNK: usize = 64 * 1024;
/// Payloads at least this big are read straight into the message's own buffer.
const DIRECT_THRESHOLD: usize = 256 * 1024;
/// Most padding a frame can need: one byte per fd chunk.
const MAX_PAD: usize = (MAX_FRAME_FDS as usize).div_ceil(MAX_FDS_PER_MSG);
static PAD: [u8; MAX_PAD] = [0; MAX_PAD];

/// One received frame: its bytes and the fds that came with it (owned,
/// close-on-exec, in the order they were sent).
#[derive(Debug, Default)]
pub struct Message {
    /// The payload.
    pub bytes: Vec<u8>,
    /// The fds, in send order.
    pub fds: Vec<OwnedFd>,
}

/// A unix stream socket carrying framed messages, each with any number of fds.
///
/// # Thread safety
/// `FdSocket` is `Send + Sync`. Sending and receiving each hold their own internal
/// lock: one thread may send while another receives, and concurrent senders (or
/// receivers) are serialized, so frames never interleave. A blocked
/// [`recv`](FdSocket::recv) holds the receive lock while it waits.
///
/// # Cost
/// Sending a frame of up to 8 parts allocates nothing; receiving allocates the
/// message's `Vec`s only. Small frames are read many at a time into an internal
/// buffer; payloads of 256 KiB and more are read straight into their own `Vec`.
///
/// # Errors
/// A failed send that already wrote part of a frame leaves the stream unusable
/// for sending (later sends return [`ShmError::Frame`]); a malformed incoming frame
/// does the same for receiving.
pub struct FdSocket {
    fd: OwnedFd,
    send: Mutex<SendState>,
    recv: Mutex<RecvState>,
}

#[derive(Default)]
struct SendState {
    broken: bool,
}

struct RecvState {
    /// Bytes received but not yet consumed live in `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A large frame being read straight into its own buffer.
    pending: Option<Pending>,
    /// Received fds not yet handed out, in arrival order.
    fds: VecDeque<OwnedFd>,
    eof: bool,
    broken: Option<String>,
    /// Longest payload accepted ([`FdSocket::with_max_frame_len`]).
    max_len: u64,
}

struct Pending {
    bytes: Vec<u8>,
    filled: usize,
    nfds: u32,
    pad: usize,
}

/// Whether a read's control data (the fds) arrived whole.
enum Control {
    Complete,
    /// `MSG_CTRUNC`: the kernel dropped fds.
    Truncated,
}

/// How long a receive may wait.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Never,
    Until(Instant),
}

/// Padding bytes of a frame with `len` payload bytes and `nfds` fds.
fn pad_len(len: u64, nfds: u32) -> usize {
    let chunks = (nfds as usize).div_ceil(MAX_FDS_PER_MSG) as u64;
    chunks.saturating_sub(HEADER_LEN as u64 + len) as usize
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written frame unnoticed:
    // partial sends mark the state broken before returning, so the data is usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FdSocket {
    /// A connected pair (`socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`).
    ///
    /// # Errors
    /// [`ShmError::Io`] if `socketpair` fails.
    pub fn pair() -> Result<(FdSocket, FdSocket)> {
        let (a, b) = UnixStream::pair().map_err(|e| ShmError::io("socketpair", e))?;
        Ok((FdSocket::from_fd(a.into()), FdSocket::from_fd(b.into())))
    }

    /// Wraps a connected unix stream socket.
    pub fn from_fd(fd: OwnedFd) -> FdSocket {
        FdSocket {
            fd,
            send: Mutex::new(SendState::default()),
            recv: Mutex::new(RecvState {
                buf: Vec::new(),
                start: 0,
                end: 0,
                pending: None,
                fds: VecDeque::new(),
                eof: false,
                broken: None,
                max_len: MAX_FRAME_LEN,
            }),
        }
    }

    /// Refuses received frames whose payload is longer than `len` bytes
    /// (at most [`MAX_FRAME_LEN`]), before anything is allocated for them:
    /// for a protocol whose frames are known to be small, so that a peer's
    /// header cannot make this side buffer up to 1 GiB.
    #[must_use]
    pub fn with_max_frame_len(self, len: u64) -> FdSocket {
        lock(&self.recv).max_len = len.min(MAX_FRAME_LEN);
        self
    }

    /// The socket's fd; any received but unconsumed data and fds are dropped.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The socket's fd (for `poll` and the like).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sends one frame of `bytes` with `fds` (they are duplicated into the peer;
    /// the caller keeps its own).
    ///
    /// # Errors
    /// [`ShmError::PeerClosed`] when the peer is gone, [`ShmError::Frame`] for
    /// frames past [`MAX_FRAME_LEN`] bytes or [`MAX_FRAME_FDS`] fds (nothing is sent
    /// then), [`ShmError::Io`] otherwise.
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_vectored(&[bytes], fds)
    }

    /// Sends one frame made of the concatenation of `parts`, with `fds`.
    ///
    /// # Errors
    /// As [`FdSocket::send`].
    pub fn send_vectored(&self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_until(parts, fds, None)
    }

    /// As [`FdSocket::send_vectored`], but gives up when the frame is not
    /// fully sent within `timeout` (a peer that stops reading fills the
    /// socket buffer, and a plain send would then block for as long).
    ///
    /// # Errors
    /// As [`FdSocket::send`], and [`ShmError::TimedOut`] past `timeout`. A
    /// frame given up half sent leaves the stream unusable: later sends fail
    /// with [`ShmError::Frame`].
    pub fn send_vectored_timeout(
        &self,
        parts: &[&[u8]],
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<()> {
        // A timeout past the end of time waits forever.
        self.send_until(parts, fds, Instant::now().checked_add(timeout))
    }

    fn send_until(
        &self,
        parts: &[&[u8]],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let len = parts
            .iter()
            .try_fold(0u64, |acc, p| acc.checked_add(p.len() as u64))
            .filter(|&l| l <= MAX_FRAME_LEN)
            .ok_or_else(|| ShmError::frame(format!("payload exceeds {MAX_FRAME_LEN} bytes")))?;
        let nfds = u32::try_from(fds.len())
            .ok()
            .filter(|&n| n <= MAX_FRAME_FDS)
            .ok_or_else(|| {
                ShmError::frame(format!("more than {MAX_FRAME_FDS} fds in one frame"))
            })?;
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&nfds.to_le_bytes());
        header[8..16].copy_from_slice(&len.to_le_bytes());
        let pad = &PAD[..pad_len(len, nfds)];

        // Small frames build their iovec list on the stack.
        const STACK: usize = 8;
        let mut stack = [IoSlice::new(&[]); STACK + 2];
        let mut heap;
        let slices: &mut [IoSlice<'_>] = if parts.len() <= STACK {
            stack[0] = IoSlice::new(&header);
            for (slot, part) in stack[1..].iter_mut().zip(parts) {
                *slot = IoSlice::new(part);
            }
            stack[parts.len() + 1] = IoSlice::new(pad);
            &mut stack[..parts.len() + 2]
        } else {
            heap = Vec::with_capacity(parts.len() + 2);
            heap.push(IoSlice::new(&header));
            heap.extend(parts.iter().map(|p| IoSlice::new(p)));
            heap.push(IoSlice::new(pad));
            &mut heap[..]
        };

        let mut state = lock(&self.send);
        if state.broken {
            return Err(ShmError::frame(
                "an earlier send failed mid-frame; the stream is unusable",
            ));
        }
        let mut sent_any = false;
        let result = self.send_frame(slices, fds, deadline, &mut sent_any);
        if result.is_err() && sent_any {
            state.broken = true;
        }
        result
    }

    fn send_frame(
        &self,
        mut bufs: &mut [IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
        sent_any: &mut bool,
    ) -> Result<()> {
        IoSlice::advance_slices(&mut bufs, 0);
        let mut chunks = fds.chunks(MAX_FDS_PER_MSG).peekable();
        while let Some(chunk) = chunks.next() {
            // Every chunk but the last rides on a single byte, so the frame always has
            // enough bytes for its chunks (padding covers the rest).
            let n = if chunks.peek().is_some() {
                let one = [IoSlice::new(&bufs[0][..1])];
                self.sendmsg(&one, chunk, deadline)?
            } else {
                self.sendmsg(&bufs[..bufs.len().min(IOV_MAX)], chunk, deadline)?
            };
            *sent_any = true;
            IoSlice::advance_slices(&mut bufs, n);
        }
        while !bufs.is_empty() {
            let n = self.sendmsg(&bufs[..bufs.len().min(IOV_MAX)], &[], deadline)?;
            *sent_any = true;
            IoSlice::advance_slices(&mut bufs, n);
        }
        Ok(())
    }

    /// One `sendmsg` that wrote at least one byte, retrying `EINTR` and waiting
    /// for room while the socket buffer is full, until `deadline` (`None`:
    /// for as long as it takes).
    fn sendmsg(
        &self,
        bufs: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<usize> {
        loop {
            match sendmsg(self.fd.as_fd(), bufs, fds) {
                Ok(0) => return Err(ShmError::PeerClosed),
                Ok(n) => return Ok(n),
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => {
                        let left = match deadline {
                            None => None,
                            Some(d) => match d.checked_duration_since(Instant::now()) {
                                Some(left) if !left.is_zero() => Some(left),
                                _ => return Err(ShmError::TimedOut { op: "sendmsg" }),
                            },
                        };
                        poll(self.fd.as_fd(), Interest::Write, left)
                            .map_err(|e| ShmError::io("poll", e))?;
                    }
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                        return Err(ShmError::PeerClosed)
                    }
                    _ => return Err(ShmError::io("sendmsg", e)),
                },
            }
        }
    }

    /// Receives the next frame, blocking until it is complete.
    ///
    /// # Errors
    /// [`ShmError::PeerClosed`] at end of file between frames, [`ShmError::Frame`]
    /// for a malformed frame, end of file inside a frame or lost fds
    /// (`MSG_CTRUNC`), [`ShmError::Io`] otherwise.
    pub fn recv(&self) -> Result<Message> {
        match self.recv_inner(Wait::Forever)? {
            Some(m) => Ok(m),
            // Wait::Forever only returns once a frame is complete.
            None => Err(ShmError::frame("receive returned without a frame")),
        }
    }

    /// Returns a frame if one is complete without blocking: first from what is
    /// already buffered, then from whatever the socket holds right now. Returns
    /// `Ok(None)` while another thread is inside a receive on this socket.
    ///
    /// # Errors
    /// As [`FdSocket::recv`].
    pub fn try_recv(&self) -> Result<Option<Message>> {
        self.recv_inner(Wait::Never)
    }

    /// Waits at most `timeout` for a complete frame.
    ///
    /// # Errors
    /// As [`FdSocket::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_inner(Wait::Until(deadline)),
            None => self.recv_inner(Wait::Forever),
        }
    }

    fn recv_inner(&self, wait: Wait) -> Result<Option<Message>> {
        let mut st = match wait {
            Wait::Never => match self.recv.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                // Another thread is receiving: nothing for us without waiting.
                Err(TryLockError::WouldBlock) => return Ok(None),
            },
            Wait::Forever | Wait::Until(_) => lock(&self.recv),
        };
        loop {
            if let Some(reason) = &st.broken {
                return Err(ShmError::frame(reason.clone()));
            }
            match st.take_frame() {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                Err(e) => {
                    st.broken = Some(e.to_string());
                    return Err(e);
                }
            }
            if st.eof {
                return if st.has_partial_frame() {
                    st.broken = Some("peer closed the socket in the middle of a frame".into());
                    Err(ShmError::frame(
                        "peer closed the socket in the middle of a frame",
                    ))
                } else {
                    Err(ShmError::PeerClosed)
                };
            }
            let nonblocking = !matches!(wait, Wait::Forever);
            match st.fill(self.fd.as_fd(), nonblocking) {
                Ok(Control::Complete) => {}
                Ok(Control::Truncated) => {
                    // MSG_CTRUNC: fds were lost, the stream can no longer be trusted.
                    st.fds.clear();
                    let reason = "control data truncated (MSG_CTRUNC): fds lost";
                    st.broken = Some(reason.into());
                    return Err(ShmError::frame(reason));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let timeout = match wait {
                        Wait::Never => return Ok(None),
                        Wait::Forever => None,
                        Wait::Until(deadline) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Ok(None);
                            }
                            Some(left)
                        }
                    };
                    poll(self.fd.as_fd(), Interest::Read, timeout)
                        .map_err(|e| ShmError::io("poll", e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => st.eof = true,
                Err(e) => return Err(ShmError::io("recvmsg", e)),
            }
        }
    }
}

impl RecvState {
    fn has_partial_frame(&self) -> bool {
        self.pending.is_some() || self.start != self.end
    }

    /// Cuts the next complete frame out of the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<Message>> {
        if let Some(p) = &self.pending {
            if p.filled < p.bytes.len() || self.end - self.start < p.pad {
                return Ok(None);
            }
            self.start += p.pad;
            let Some(p) = self.pending.take() else {
                return Ok(None);
            };
            return self.finish(p.bytes, p.nfds).map(Some);
        }
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + HEADER_LEN];
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let nfds = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let len = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        if magic != MAGIC {
            return Err(ShmError::frame(format!("bad magic {magic:#010x}")));
        }
        if len > self.max_len {
            return Err(ShmError::frame(format!(
                "frame of {len} bytes exceeds {}",
                self.max_len
            )));
        }
        if nfds > MAX_FRAME_FDS {
            return Err(ShmError::frame(format!(
                "frame announces {nfds} fds, more than {MAX_FRAME_FDS}"
            )));
        }
        // Both fit usize: len <= 1 GiB, pad <= MAX_PAD.
        let len = len as usize;
        let pad = pad_len(len as u64, nfds);
        let total = HEADER_LEN + len + pad;
        if avail >= total {
            let body = self.start + HEADER_LEN;
            let bytes = self.buf[body..body + len].to_vec();
            self.start += total;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            return self.finish(bytes, nfds).map(Some);
        }
        let have = avail - HEADER_LEN;
        if len >= DIRECT_THRESHOLD && have < len {
            let mut bytes = vec![0u8; len];
            bytes[..have].copy_from_slice(&self.buf[self.start + HEADER_LEN..self.end]);
            self.start = 0;
            self.end = 0;
            self.pending = Some(Pending {
                bytes,
                filled: have,
                nfds,
                pad,
            });
        } else if self.buf.len() - self.start < total {
            // Make room so the rest of this frame fits in one read.
            self.compact();
            if self.buf.len() < total {
                self.buf.resize(total.max(READ_CHUNK), 0);
            }
        }
        Ok(None)
    }

    /// Pairs `bytes` (the frame just cut out of the stream) with the next
    /// `nfds` queued fds.
    ///
    /// A sender attaches a frame's fds to the frame's own bytes, and the
    /// kernel hands fds out with the first byte they ride on, so fds of a
    /// later frame can be queued only while some of its bytes are
    /// buffered. With nothing buffered past this frame, fds left over were
    /// sent with it beyond what its header announced: they are closed and
    /// the frame is refused, rather than kept open for the life of the
    /// socket or paired with a later frame.
    fn finish(&mut self, bytes: Vec<u8>, nfds: u32) -> Result<Message> {
        let nfds = nfds as usize;
        if self.fds.len() < nfds {
            return Err(ShmError::frame(format!(
                "frame announces {nfds} fds but only {} arrived",
                self.fds.len()
            )));
        }
        let fds = self.fds.drain(..nfds).collect();
        if !self.fds.is_empty() && !self.has_partial_frame() {
            let surplus = self.fds.len();
            self.fds.clear();
            return Err(ShmError::frame(format!(
                "frame announces {nfds} fds but {} came with it",
                nfds + surplus
            )));
        }
        Ok(Message { bytes, fds })
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// One `recvmsg` into the pending frame or the buffer; end of file is recorded
    /// in `eof`.
    fn fill(&mut self, fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<Control> {
        let got = match &mut self.pending {
            Some(p) if p.filled < p.bytes.len() => {
                let got = recvmsg(fd, &mut p.bytes[p.filled..], &mut self.fds, nonblocking)?;
                p.filled += got.bytes;
                got
            }
            _ => {
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                if self.buf.len() - self.end < READ_CHUNK / 4 {
                    self.compact();
                    if self.buf.len() - self.end < READ_CHUNK / 4 {
                        let want = (self.end + READ_CHUNK).max(self.buf.len() * 2);
                        self.buf.resize(want, 0);
                    }
                }
                let got = recvmsg(fd, &mut self.buf[self.end..], &mut self.fds, nonblocking)?;
                self.end += got.bytes;
                got
            }
        };
        if got.bytes == 0 {
            self.eof = true;
        }
        Ok(if got.truncated {
            Control::Truncated
        } else {
            Control::Complete
        })
    }
}

/// `sendmsg(fd, bufs, SCM_RIGHTS(fds), MSG_NOSIGNAL)`; returns bytes written.
///
/// `fds` holds at most [`MAX_FDS_PER_MSG`] fds and `bufs` at most
/// [`IOV_MAX`] slices; with fds, `bufs` holds at least one byte.
fn sendmsg(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        // More fds than the buffer holds: a caller bug, refused before sending.
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a process-killing
    // SIGPIPE. MSG_DONTWAIT: a full buffer is EAGAIN, waited out by the caller
    // with its own deadline.
    Ok(rustix::net::sendmsg(
        fd,
        bufs,
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?)
}

/// Result of one [`recvmsg`].
struct Received {
    /// Bytes read (0 = end of file).
    bytes: usize,
    /// The kernel truncated the control data (`MSG_CTRUNC`): fds were lost.
    truncated: bool,
}

/// `recvmsg(fd, buf, MSG_CMSG_CLOEXEC)`; received fds are appended to `fds`
/// (close-on-exec, owned) even when the control data was truncated.
fn recvmsg(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<Received> {
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let got = rustix::net::recvmsg(fd, &mut iov, &mut control, flags)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(Received {
        bytes: got.bytes,
        truncated: got.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// Readiness a [`poll`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interest {
    /// `POLLIN`.
    Read,
    /// `POLLOUT`.
    Write,
}

/// `poll` on one fd; `None` waits forever. Returns whether it became ready (or
/// hung up / errored, which the following read or write reports). `EINTR`
/// counts as "not ready yet": callers loop with their own deadline.
fn poll(fd: BorrowedFd<'_>, interest: Interest, timeout: Option<Duration>) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => PollFlags::IN,
        Interest::Write => PollFlags::OUT,
    };
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    let timeout = timeout.and_then(|d| Timespec::try_from(d).ok());
    match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl AsFd for FdSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for FdSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdSocket")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    #[test]
    fn small_frames_round_trip() -> Result<()> {
        let (a, b) = FdSocket::pair()?;
        a.send(b"hello", &[])?;
        a.send_vectored(&[b"wor", b"", b"ld"], &[])?;
        a.send(b"", &[])?;
        assert_eq!(b.recv()?.bytes, b"hello");
        assert_eq!(b.recv()?.bytes, b"world");
        assert!(b.recv()?.bytes.is_empty());
        assert!(b.try_recv()?.is_none());
        assert!(b.recv_timeout(Duration::from_millis(10))?.is_none());
        drop(a);
        assert!(matches!(b.recv(), Err(ShmError::PeerClosed)));
        Ok(())
    }

    #[test]
    fn fds_travel() -> Result<()> {
        let (a, b) = FdSocket::pair()?;
        let mut seg = Segment::anonymous(4096)?;
        seg.as_mut_slice()?[0] = 9;
        let seg = seg.freeze()?;
        a.send(b"x", &[seg.fd()?, seg.fd()?])?;
        let m = b.recv()?;
        assert_eq!(m.fds.len(), 2);
        for fd in m.fds {
            let got = Segment::from_fd_sealed(fd, crate::Access::ReadOnly, 1)?;
            assert_eq!(got.as_slice()[0], 9);
        }
        Ok(())
    }

    #[test]
    fn fds_beyond_what_a_frame_announces_are_closed_and_refused() -> Result<()> {
        let (a, b) = UnixStream::pair().map_err(|e| ShmError::io("socketpair", e))?;
        let b = FdSocket::from_fd(b.into());
        let a = FdSocket::from_fd(a.into());
        let seg = Segment::anonymous(4096)?.freeze()?;
        let before = npshmex_testkit::open_fds();
        // A good frame, then one of 1 byte (padded for its fd chunk) that
        // announces one fd and carries 200.
        a.send(b"good", &[seg.fd()?])?;
        let mut frame = Vec::new();
        frame.extend_from_slice(&MAGIC.to_le_bytes());
        frame.extend_from_slice(&1u32.to_le_bytes());
        frame.extend_from_slice(&1u64.to_le_bytes());
        frame.push(9);
        frame.resize(HEADER_LEN + 1 + pad_len(1, 1), 0);
        let fds: Vec<BorrowedFd<'_>> = (0..200).map(|_| seg.fd()).collect::<Result<_>>()?;
        sendmsg(a.as_fd(), &[IoSlice::new(&frame)], &fds)
            .map_err(|e| ShmError::io("sendmsg", e))?;
        let m = b.recv()?;
        assert_eq!((&m.bytes[..], m.fds.len()), (&b"good"[..], 1));
        drop(m);
        let r = b.recv();
        assert!(matches!(r, Err(ShmError::Frame { .. })), "{r:?}");
        assert_eq!(
            npshmex_testkit::open_fds(),
            before,
            "the surplus fds were closed"
        );
        // A broken stream stays broken.
        a.send(b"next", &[])?;
        assert!(matches!(b.recv(), Err(ShmError::Frame { .. })));
        Ok(())
    }

    #[test]
    fn a_send_to_a_peer_that_stopped_reading_times_out() -> Result<()> {
        let (a, b) = FdSocket::pair()?;
        let seg = Segment::anonymous(4096)?.freeze()?;
        let fds = [seg.fd()?, seg.fd()?];
        let mut sent = 0u64;
        // Nobody reads `b`: the buffer fills and then a send gives up.
        let err = loop {
            match a.send_vectored_timeout(&[&[7u8; 512]], &fds, Duration::from_millis(100)) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ShmError::TimedOut { .. }), "{err:?}");
        assert!(sent > 0);
        // What was sent whole is still there, in order, with its fds.
        for _ in 0..sent {
            let m = b.try_recv()?.ok_or(ShmError::PeerClosed)?;
            assert_eq!(m.bytes, [7u8; 512]);
            assert_eq!(m.fds.len(), 2);
        }
        Ok(())
    }

    #[test]
    fn a_frame_past_the_receivers_limit_is_refused_unread() -> Result<()> {
        let (a, b) = FdSocket::pair()?;
        let b = b.with_max_frame_len(1024);
        a.send(&[5u8; 1024], &[])?;
        assert_eq!(b.recv()?.bytes.len(), 1024);
        // Only the header is sent: the limit refuses it from that alone.
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&(1u64 << 30).to_le_bytes());
        sendmsg(a.as_fd(), &[IoSlice::new(&header)], &[])
            .map_err(|e| ShmError::io("sendmsg", e))?;
        let r = b.recv();
        assert!(
            matches!(&r, Err(ShmError::Frame { reason }) if reason.contains("1024")),
            "{r:?}"
        );
        Ok(())
    }

    #[test]
    fn garbage_is_a_frame_error() -> Result<()> {
        let (a, b) = UnixStream::pair().map_err(|e| ShmError::io("socketpair", e))?;
        let b = FdSocket::from_fd(b.into());
        io::Write::write_all(&mut &a, &[0xAB; 32]).map_err(|e| ShmError::io("write", e))?;
        assert!(matches!(b.recv(), Err(ShmError::Frame { .. })));
        assert!(matches!(b.try_recv(), Err(ShmError::Frame { .. })));
        Ok(())
    }

    #[test]
    fn eof_mid_frame_is_a_frame_error() -> Result<()> {
        let (a, b) = UnixStream::pair().map_err(|e| ShmError::io("socketpair", e))?;
        let b = FdSocket::from_fd(b.into());
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&10u64.to_le_bytes());
        header.extend_from_slice(b"abc");
        io::Write::write_all(&mut &a, &header).map_err(|e| ShmError::io("write", e))?;
        drop(a);
        assert!(matches!(b.recv(), Err(ShmError::Frame { .. })));
        Ok(())
    }

    #[test]
    fn send_to_closed_peer_is_peer_closed() -> Result<()> {
        let (a, b) = FdSocket::pair()?;
        drop(b);
        assert!(matches!(a.send(b"x", &[]), Err(ShmError::PeerClosed)));
        Ok(())
    }

    #[test]
    fn oversized_frames_are_refused_before_sending() -> Result<()> {
        let (a, b) = FdSocket::pair()?;
        let big = vec![0u8; 1 << 20];
        let parts: Vec<&[u8]> = std::iter::repeat_n(&big[..], 1025).collect();
        assert!(matches!(
            a.send_vectored(&parts, &[]),
            Err(ShmError::Frame { .. })
        ));
        a.send(b"ok", &[])?;
        assert_eq!(b.recv()?.bytes, b"ok");
        Ok(())
    }
}
