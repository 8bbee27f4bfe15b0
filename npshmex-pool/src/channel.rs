//! [`Channel`]: the doorbell between the pool and one worker — a request
//! ring and a response ring in one shared control region, with futex
//! parking — and the worker's socket, which stays for file descriptors.
//!
//! # Why
//! A blocked read on a socket costs tens of µs per hop on a VM (a sleeping
//! CPU must be woken, twice per task); two processes polling a word in a
//! shared page see each other's writes in well under a µs. So every frame
//! (tasks one way, results, readiness and fatal reports the other way)
//! goes through single-producer/single-consumer rings in an
//! [`AtomicRegion`], which both sides poll for a bounded time after each
//! message and then park on with a futex (an eventcount: announce "sleeping",
//! re-check, wait; the producer wakes only if the flag is set, so a busy
//! pair never makes a system call). A frame's file descriptors still cross
//! the socket (`SCM_RIGHTS` has no other road): they are sent *before* the
//! ring entry that announces them is published, so a reader that sees the
//! entry finds them already queued. One queue, the ring, orders everything.
//!
//! # Faults
//! The region is a peer's memory: every entry read is validated (length,
//! fd count, a sequence number), and anything inconsistent — a torn or
//! hostile entry — is a typed error, never a panic or an out-of-bounds
//! read. A writer that dies before publishing leaves nothing visible (the
//! head moves last). Before it runs a task, the worker stores the task's id
//! in the region ([`Channel::set_running`]): after its death the pool knows
//! whether the task it held had started.
//!
//! # Layout
//! 32-bit words: per ring a data eventcount and its sleeping flag, a space
//! eventcount and its sleeping flag; the closed flag. 64-bit words: per
//! ring head and tail (in words, ever increasing), the running task, then
//! the two rings. An entry is two header words — payload length and fd
//! count, then its sequence number — and the payload, 8 bytes per word.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use npshmex_shm::{AtomicRegion, FdSocket, Message, ShmError};
use rustix::thread::futex;

/// Words of each ring (1 MiB each).
pub(crate) const RING_WORDS: usize = 1 << 17;
/// Largest payload of one entry (a quarter of a ring).
pub(crate) const MAX_ENTRY_BYTES: usize = RING_WORDS * 8 / 4;
/// How long the pool waits for room to send to a worker before it gives up
/// (the worker is stuck, or stopped reading on purpose). A worker waits for
/// as long as the pool lives: a stopped parent (a debugger, a shell's job
/// control) must not make it give up its results.
const SPACE_PATIENCE: Duration = Duration::from_secs(10);
/// How long fds announced by an entry may take to show up on the socket
/// (they are sent before the entry is published, so they are normally
/// there already).
const FD_PATIENCE: Duration = Duration::from_secs(10);

// 32-bit words.
const N32: usize = 11;
const CLOSED: usize = 8;
/// The CPU each end's polling thread last ran on, plus one (0: none is
/// polling): see [`Pacer`].
const PARENT_CPU: usize = 9;
const WORKER_CPU: usize = 10;

// 64-bit words.
const RUNNING: usize = 4;
const RINGS_AT: usize = 5;
const N64: usize = RINGS_AT + 2 * RING_WORDS;

/// The two directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The pool's end: writes requests, reads responses.
    Parent,
    /// The worker's end: reads requests, writes responses.
    Worker,
}

/// One ring's words in the region.
#[derive(Clone, Copy)]
struct RingAt {
    data_event: usize,
    data_sleeping: usize,
    space_event: usize,
    space_sleeping: usize,
    head: usize,
    tail: usize,
    base: usize,
}

const REQUESTS: RingAt = RingAt {
    data_event: 0,
    data_sleeping: 1,
    space_event: 2,
    space_sleeping: 3,
    head: 0,
    tail: 1,
    base: RINGS_AT,
};

const RESPONSES: RingAt = RingAt {
    data_event: 4,
    data_sleeping: 5,
    space_event: 6,
    space_sleeping: 7,
    head: 2,
    tail: 3,
    base: RINGS_AT + RING_WORDS,
};

/// A channel end: the region, the socket, and this end's sequence counters.
#[derive(Debug)]
pub(crate) struct Channel {
    region: AtomicRegion,
    sock: FdSocket,
    side: Side,
    /// Sequence number of the next entry this end writes (one writer at a
    /// time: the pool's dispatcher under its state lock, or the worker).
    sent: AtomicU64,
    /// Sequence number of the next entry this end reads (one reader at a
    /// time: whoever holds the receive role, or the worker).
    received: AtomicU64,
}

fn frame(reason: impl Into<String>) -> ShmError {
    ShmError::Frame {
        reason: reason.into(),
    }
}

impl Channel {
    /// The pool's end: a new control region, and the socket to the worker.
    pub(crate) fn parent(sock: FdSocket) -> Result<Channel, ShmError> {
        Ok(Channel::with(
            AtomicRegion::new(N32, N64)?,
            sock,
            Side::Parent,
        ))
    }

    /// The worker's end, over the region the pool sent.
    pub(crate) fn worker(sock: FdSocket, region: OwnedFd) -> Result<Channel, ShmError> {
        Ok(Channel::with(
            AtomicRegion::from_fd(region, N32, N64)?,
            sock,
            Side::Worker,
        ))
    }

    fn with(region: AtomicRegion, sock: FdSocket, side: Side) -> Channel {
        Channel {
            region,
            sock,
            side,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// The control region's fd, to send to the worker at handshake.
    pub(crate) fn region_fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }

    /// The socket (handshake frames, and the fds of ring entries).
    pub(crate) fn socket(&self) -> &FdSocket {
        &self.sock
    }

    fn w32(&self, i: usize) -> &AtomicU32 {
        // The region was made (or checked) with N32 words.
        &self.region.u32s()[i]
    }

    fn w64(&self, i: usize) -> &AtomicU64 {
        // The region was made (or checked) with N64 words.
        &self.region.u64s()[i]
    }

    /// The words of ring `r`.
    #[inline]
    fn ring(&self, r: RingAt) -> &[AtomicU64] {
        // The region was made (or checked) with room for both rings.
        &self.region.u64s()[r.base..r.base + RING_WORDS]
    }

    fn outgoing(&self) -> RingAt {
        match self.side {
            Side::Parent => REQUESTS,
            Side::Worker => RESPONSES,
        }
    }

    fn incoming(&self) -> RingAt {
        match self.side {
            Side::Parent => RESPONSES,
            Side::Worker => REQUESTS,
        }
    }

    /// Words free in the outgoing ring.
    fn room(&self, r: RingAt) -> u64 {
        let head = self.w64(r.head).load(Ordering::Relaxed);
        let tail = self.w64(r.tail).load(Ordering::Acquire);
        (RING_WORDS as u64).saturating_sub(head.wrapping_sub(tail))
    }

    /// Sends one frame made of `parts`, with `fds`: the fds first, over the
    /// socket, then the entry, published on the ring. Waits (spinning, then
    /// parked) while the ring or the socket buffer is full; the pool's end
    /// for at most `SPACE_PATIENCE` each: a worker that stops reading
    /// either fails the send rather than blocking its caller (who may hold
    /// the pool's state lock) for as long.
    ///
    /// # Errors
    /// [`ShmError::Frame`] for a frame past [`MAX_ENTRY_BYTES`] or a ring
    /// that stays full (the reader is gone), [`ShmError::TimedOut`] for a
    /// socket that stays full, [`ShmError::PeerClosed`] and socket errors
    /// while sending fds.
    pub(crate) fn send(&self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> Result<(), ShmError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_ENTRY_BYTES {
            return Err(frame(format!(
                "a frame of {len} bytes exceeds the ring's {MAX_ENTRY_BYTES}"
            )));
        }
        let nfds = u32::try_from(fds.len()).map_err(|_| frame("too many fds"))?;
        let patience = match self.side {
            Side::Parent => SPACE_PATIENCE,
            Side::Worker => Duration::MAX,
        };
        if !fds.is_empty() {
            self.sock.send_vectored_timeout(&[], fds, patience)?;
        }
        let r = self.outgoing();
        let need = 2 + len.div_ceil(8) as u64;
        self.wait_for_room(r, need, patience)?;
        let head = self.w64(r.head).load(Ordering::Relaxed);
        let seq = self.sent.fetch_add(1, Ordering::Relaxed);
        let ring = self.ring(r);
        let put =
            |i: u64, v: u64| ring[(i % RING_WORDS as u64) as usize].store(v, Ordering::Relaxed);
        put(head, len as u64 | (u64::from(nfds) << 32));
        put(head.wrapping_add(1), seq);
        // The payload, packed 8 bytes to a word, parts back to back.
        let mut word = [0u8; 8];
        let mut fill = 0;
        let mut at = head.wrapping_add(2);
        for part in parts {
            let mut rest: &[u8] = part;
            if fill > 0 {
                let take = (8 - fill).min(rest.len());
                word[fill..fill + take].copy_from_slice(&rest[..take]);
                fill += take;
                rest = &rest[take..];
                if fill == 8 {
                    put(at, u64::from_le_bytes(word));
                    at = at.wrapping_add(1);
                    fill = 0;
                }
            }
            let mut chunks = rest.chunks_exact(8);
            for c in &mut chunks {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                put(at, u64::from_le_bytes(w));
                at = at.wrapping_add(1);
            }
            let tail = chunks.remainder();
            if !tail.is_empty() {
                word[..tail.len()].copy_from_slice(tail);
                fill = tail.len();
            }
        }
        if fill > 0 {
            word[fill..].fill(0);
            put(at, u64::from_le_bytes(word));
        }
        // Publish last: a writer that dies before this leaves nothing.
        self.w64(r.head)
            .store(head.wrapping_add(need), Ordering::SeqCst);
        self.wake(r.data_event, r.data_sleeping);
        Ok(())
    }

    /// Waits until `need` words are free in ring `r`, for at most
    /// `patience` (past the end of time: until the other end closes).
    fn wait_for_room(&self, r: RingAt, need: u64, patience: Duration) -> Result<(), ShmError> {
        if self.room(r) >= need {
            return Ok(());
        }
        let deadline = Instant::now().checked_add(patience);
        loop {
            if self.is_closed() {
                return Err(ShmError::PeerClosed);
            }
            let event = self.w32(r.space_event).load(Ordering::Acquire);
            self.w32(r.space_sleeping).store(1, Ordering::SeqCst);
            if self.room(r) >= need {
                self.w32(r.space_sleeping).store(0, Ordering::Relaxed);
                return Ok(());
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                self.w32(r.space_sleeping).store(0, Ordering::Relaxed);
                return Err(frame("the ring stayed full: its reader is gone or stuck"));
            }
            park(
                self.w32(r.space_event),
                event,
                left.min(Duration::from_millis(50)),
            );
            self.w32(r.space_sleeping).store(0, Ordering::Relaxed);
        }
    }

    /// Wakes the other end if it announced that it sleeps on `event`.
    fn wake(&self, event: usize, sleeping: usize) {
        if self.w32(sleeping).load(Ordering::SeqCst) != 0 {
            let ev = self.w32(event);
            ev.fetch_add(1, Ordering::Release);
            // Shared (not process-private) futex: the sleeper is another
            // process. A failed wake only leaves it to its timeout.
            let _ = futex::wake(ev, futex::Flags::empty(), 1);
        }
    }

    /// Whether the incoming ring holds an entry.
    pub(crate) fn has_incoming(&self) -> bool {
        let r = self.incoming();
        self.w64(r.head).load(Ordering::SeqCst) != self.w64(r.tail).load(Ordering::Relaxed)
    }

    /// The next frame, if one is published; its fds are taken from the
    /// socket.
    ///
    /// # Errors
    /// [`ShmError::Frame`] for an inconsistent (torn or hostile) entry or
    /// fds that do not arrive; socket errors.
    pub(crate) fn try_recv(&self) -> Result<Option<Message>, ShmError> {
        let r = self.incoming();
        let head = self.w64(r.head).load(Ordering::Acquire);
        let tail = self.w64(r.tail).load(Ordering::Relaxed);
        if head == tail {
            return Ok(None);
        }
        let avail = head.wrapping_sub(tail);
        if avail > RING_WORDS as u64 || avail < 2 {
            return Err(frame(format!("ring indices out of range ({avail} words)")));
        }
        let ring = self.ring(r);
        let get = |i: u64| ring[(i % RING_WORDS as u64) as usize].load(Ordering::Relaxed);
        let h0 = get(tail);
        let seq = get(tail.wrapping_add(1));
        let len = (h0 & 0xffff_ffff) as usize;
        let nfds = (h0 >> 32) as usize;
        let expect = self.received.load(Ordering::Relaxed);
        if seq != expect {
            return Err(frame(format!(
                "ring entry out of sequence ({seq}, expected {expect})"
            )));
        }
        let need = 2 + len.div_ceil(8) as u64;
        if len > MAX_ENTRY_BYTES || need > avail {
            return Err(frame(format!(
                "torn ring entry: {len} bytes announced, {avail} words published"
            )));
        }
        let mut bytes = Vec::with_capacity(len);
        for i in 0..len.div_ceil(8) as u64 {
            let w = get(tail.wrapping_add(2 + i)).to_le_bytes();
            let take = (len - bytes.len()).min(8);
            bytes.extend_from_slice(&w[..take]);
        }
        let fds = if nfds > 0 {
            self.take_fds(nfds)?
        } else {
            Vec::new()
        };
        self.received.store(expect + 1, Ordering::Relaxed);
        self.w64(r.tail)
            .store(tail.wrapping_add(need), Ordering::Release);
        self.wake(r.space_event, r.space_sleeping);
        Ok(Some(Message { bytes, fds }))
    }

    /// The `n` fds a published entry announced, from the socket.
    fn take_fds(&self, n: usize) -> Result<Vec<OwnedFd>, ShmError> {
        let msg = match self.sock.try_recv()? {
            Some(m) => m,
            None => self
                .sock
                .recv_timeout(FD_PATIENCE)?
                .ok_or_else(|| frame("the fds of a ring entry did not arrive"))?,
        };
        if msg.fds.len() != n || !msg.bytes.is_empty() {
            return Err(frame(format!(
                "a ring entry announced {n} fds, the socket brought {}",
                msg.fds.len()
            )));
        }
        Ok(msg.fds)
    }

    /// Waits for an incoming frame: polls for `spin` (the CPU yielded
    /// every so often), then parks on the futex for at most `timeout` in
    /// all. `Ok(None)`: nothing yet (or the channel was closed).
    ///
    /// # Errors
    /// As [`Channel::try_recv`].
    pub(crate) fn recv_timeout(
        &self,
        spin: Duration,
        timeout: Duration,
    ) -> Result<Option<Message>, ShmError> {
        let start = Instant::now();
        let spin_until = start.checked_add(spin.min(timeout));
        let mut pacer = Pacer::new(Some(self));
        loop {
            if let Some(m) = self.try_recv()? {
                return Ok(Some(m));
            }
            // The clock and the closed flag only now and then.
            if pacer.clock_due()
                && (self.is_closed() || spin_until.is_none_or(|u| Instant::now() >= u))
            {
                break;
            }
            pacer.pause();
        }
        let deadline = start.checked_add(timeout);
        loop {
            if self.is_closed() {
                return self.try_recv();
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return self.try_recv();
            }
            self.park(left.unwrap_or(Duration::from_secs(1)));
            if let Some(m) = self.try_recv()? {
                return Ok(Some(m));
            }
        }
    }

    /// Stops the other end from waking a reader parked on the incoming
    /// ring: someone else polls it (a caller receiving for the slot
    /// thread), so a wake-up would only put a third thread on two busy
    /// cores. Undone by [`Channel::rearm_wakes`].
    pub(crate) fn mute_wakes(&self) {
        self.w32(self.incoming().data_sleeping)
            .store(0, Ordering::SeqCst);
    }

    /// Undoes [`Channel::mute_wakes`] for a reader still parked on the
    /// incoming ring: the other end wakes it again from its next publish
    /// on, and what was published while muted wakes it now (the flag is
    /// stored before the ring is checked, and the writer publishes before
    /// it reads the flag, so one of the two sees the other).
    pub(crate) fn rearm_wakes(&self) {
        let r = self.incoming();
        self.w32(r.data_sleeping).store(1, Ordering::SeqCst);
        if self.has_incoming() || self.is_closed() {
            self.wake(r.data_event, r.data_sleeping);
        }
    }

    /// Notes the CPU this end's polling thread runs on; whether the other
    /// end's polling thread last ran there too.
    fn note_cpu(&self) -> bool {
        let (mine, theirs) = self.cpu_words();
        let me = cpu_tag();
        self.w32(mine).store(me, Ordering::Relaxed);
        self.w32(theirs).load(Ordering::Relaxed) == me
    }

    /// This end stops polling (it parks, or a helping caller leaves).
    pub(crate) fn forget_cpu(&self) {
        self.w32(self.cpu_words().0).store(0, Ordering::Relaxed);
    }

    /// This end's CPU word, then the other end's.
    fn cpu_words(&self) -> (usize, usize) {
        match self.side {
            Side::Parent => (PARENT_CPU, WORKER_CPU),
            Side::Worker => (WORKER_CPU, PARENT_CPU),
        }
    }

    /// Parks until the other end publishes (or closes), at most `timeout`.
    pub(crate) fn park(&self, timeout: Duration) {
        self.forget_cpu();
        let r = self.incoming();
        let event = self.w32(r.data_event).load(Ordering::Acquire);
        self.w32(r.data_sleeping).store(1, Ordering::SeqCst);
        if !self.has_incoming() && !self.is_closed() {
            park(self.w32(r.data_event), event, timeout);
        }
        self.w32(r.data_sleeping).store(0, Ordering::Relaxed);
    }

    /// Tells the worker to stop: sets the closed flag, wakes it wherever it
    /// parks, and shuts the socket down both ways.
    pub(crate) fn close(&self) {
        self.w32(CLOSED).store(1, Ordering::SeqCst);
        for r in [REQUESTS, RESPONSES] {
            for (event, sleeping) in [
                (r.data_event, r.data_sleeping),
                (r.space_event, r.space_sleeping),
            ] {
                self.w32(sleeping).store(1, Ordering::SeqCst);
                self.wake(event, sleeping);
            }
        }
        let _ = rustix::net::shutdown(self.sock.as_fd(), rustix::net::Shutdown::Both);
    }

    /// Whether the pool closed the channel.
    pub(crate) fn is_closed(&self) -> bool {
        self.w32(CLOSED).load(Ordering::SeqCst) != 0
    }

    /// The worker announces the task it is about to run (before any of
    /// its code runs, decoding included).
    pub(crate) fn set_running(&self, id: u64) {
        self.w64(RUNNING).store(id, Ordering::SeqCst);
    }

    /// The task the worker last announced (0: none).
    pub(crate) fn running(&self) -> u64 {
        self.w64(RUNNING).load(Ordering::SeqCst)
    }
}

/// The pace of a loop that polls a channel: a spin-loop hint between polls
/// and the CPU yielded every 64 of them, or after every poll while the
/// other end's polling thread runs on this same CPU. Two pollers that the
/// scheduler put on one CPU otherwise take turns only at those yields
/// (measured with both ends pinned to one CPU: a one-element `ShmArray`
/// round trip 18.6-19.0 µs yielding every 64 polls, 7.6-11.1 µs yielding on
/// every poll); on different CPUs a yield per poll would only add a system
/// call to each one.
/// Without a channel (a loop that polls something else) it yields every 64.
pub(crate) struct Pacer<'a> {
    conn: Option<&'a Channel>,
    polls: u32,
    shared: bool,
}

impl<'a> Pacer<'a> {
    pub(crate) fn new(conn: Option<&'a Channel>) -> Pacer<'a> {
        Pacer {
            conn,
            polls: 0,
            shared: false,
        }
    }

    /// Whether a polling loop should read the clock now: once every 16
    /// polls (a clock read costs more than a poll of the ring; on a VM as
    /// much as the rest of the loop).
    pub(crate) fn clock_due(&self) -> bool {
        self.polls.is_multiple_of(16)
    }

    /// Between two polls.
    pub(crate) fn pause(&mut self) {
        self.polls = self.polls.wrapping_add(1);
        if let Some(conn) = self.conn.filter(|_| self.polls.is_multiple_of(16)) {
            self.shared = conn.note_cpu();
        }
        if self.shared || self.polls.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The calling thread's CPU, plus one (never 0).
fn cpu_tag() -> u32 {
    u32::try_from(rustix::thread::sched_getcpu())
        .unwrap_or(u32::MAX - 1)
        .wrapping_add(1)
        .max(1)
}

/// Waits on a shared futex word while it holds `expected`, at most
/// `timeout`. Spurious returns are fine: callers re-check.
fn park(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::thread::futex::Timespec::try_from(timeout).ok();
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Result<(Channel, Channel), ShmError> {
        let (a, b) = FdSocket::pair()?;
        let parent = Channel::parent(a)?;
        let fd = parent.region.try_clone_fd()?;
        let worker = Channel::worker(b, fd)?;
        Ok((parent, worker))
    }

    #[test]
    fn frames_cross_in_order_with_their_fds() -> Result<(), ShmError> {
        let (p, w) = pair()?;
        let seg = npshmex_shm::Segment::anonymous(4096)?.freeze()?;
        for i in 0..1000u32 {
            let payload = vec![i as u8; (i as usize * 7) % 300];
            let fds: Vec<BorrowedFd<'_>> = if i % 10 == 0 {
                vec![seg.fd()?]
            } else {
                Vec::new()
            };
            p.send(&[&i.to_le_bytes(), &payload], &fds)?;
            let m = w.try_recv()?.ok_or(ShmError::PeerClosed)?;
            assert_eq!(&m.bytes[..4], &i.to_le_bytes());
            assert_eq!(&m.bytes[4..], &payload[..]);
            assert_eq!(m.fds.len(), fds.len());
        }
        assert!(w.try_recv()?.is_none());
        Ok(())
    }

    #[test]
    fn a_send_to_a_reader_that_stopped_gives_up() -> Result<(), ShmError> {
        let (p, _w) = pair()?;
        let seg = npshmex_shm::Segment::anonymous(4096)?.freeze()?;
        let fds = [seg.fd()?];
        // Nobody reads: the socket (or the ring) fills, and a send then
        // fails within SPACE_PATIENCE instead of blocking for good.
        let err = loop {
            if let Err(e) = p.send(&[b"x"], &fds) {
                break e;
            }
        };
        assert!(
            matches!(err, ShmError::TimedOut { .. } | ShmError::Frame { .. }),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn the_ring_wraps_and_waits_for_room() -> Result<(), ShmError> {
        let (p, w) = pair()?;
        let big = vec![7u8; MAX_ENTRY_BYTES];
        let reader = std::thread::scope(|s| {
            let h = s.spawn(|| -> Result<usize, ShmError> {
                let mut n = 0;
                while n < 20 {
                    if let Some(m) =
                        w.recv_timeout(Duration::from_micros(50), Duration::from_secs(30))?
                    {
                        assert_eq!(m.bytes.len(), MAX_ENTRY_BYTES);
                        n += 1;
                    }
                }
                Ok(n)
            });
            for _ in 0..20 {
                p.send(&[&big], &[])?;
            }
            h.join().map_err(|_| frame("reader panicked"))?
        })?;
        assert_eq!(reader, 20);
        Ok(())
    }

    #[test]
    fn ring_indices_near_the_end_of_u64_wrap() -> Result<(), ShmError> {
        // The indices live in memory the peer writes: any value, including
        // ones next to u64::MAX, must wrap (the ring size divides 2^64),
        // never overflow (a panic in a debug build).
        let (p, w) = pair()?;
        let r = RESPONSES;
        let t = u64::MAX - 1;
        let at = |i: u64| r.base + (i % RING_WORDS as u64) as usize;
        w.w64(at(t)).store(0, Ordering::Relaxed); // 0 bytes, no fds
        w.w64(at(t.wrapping_add(1))).store(0, Ordering::Relaxed); // sequence 0
        w.w64(r.tail).store(t, Ordering::SeqCst);
        w.w64(r.head).store(t.wrapping_add(2), Ordering::SeqCst);
        let got = p.try_recv()?.ok_or_else(|| frame("no entry"))?;
        assert!(got.bytes.is_empty() && got.fds.is_empty());
        let (p, w) = pair()?;
        w.w64(REQUESTS.head).store(u64::MAX, Ordering::SeqCst);
        w.w64(REQUESTS.tail).store(u64::MAX, Ordering::SeqCst);
        p.send(&[b"task"], &[])?;
        let got = w.try_recv()?.ok_or_else(|| frame("no entry"))?;
        assert_eq!(got.bytes, b"task");
        Ok(())
    }

    #[test]
    fn torn_and_hostile_entries_are_typed_errors() -> Result<(), ShmError> {
        // A writer that published a head past what it wrote (torn), or wrote
        // garbage: the reader refuses, without panicking.
        let (p, w) = pair()?;
        let r = REQUESTS;
        // Announce 1000 bytes but publish only the two header words.
        p.w64(r.base).store(1000, Ordering::Relaxed);
        p.w64(r.base + 1).store(0, Ordering::Relaxed);
        p.w64(r.head).store(2, Ordering::SeqCst);
        assert!(matches!(w.try_recv(), Err(ShmError::Frame { .. })));
        // Out of sequence.
        let (p, w) = pair()?;
        p.w64(r.base).store(0, Ordering::Relaxed);
        p.w64(r.base + 1).store(5, Ordering::Relaxed);
        p.w64(r.head).store(2, Ordering::SeqCst);
        assert!(matches!(w.try_recv(), Err(ShmError::Frame { .. })));
        // Indices past the ring.
        let (p, w) = pair()?;
        p.w64(r.head).store(u64::MAX, Ordering::SeqCst);
        assert!(matches!(w.try_recv(), Err(ShmError::Frame { .. })));
        // Fds announced that never come.
        let (p, w) = pair()?;
        p.w64(r.base).store(3 << 32, Ordering::Relaxed);
        p.w64(r.base + 1).store(0, Ordering::Relaxed);
        p.w64(r.head).store(2, Ordering::SeqCst);
        drop(p); // the socket closes: no fds will ever arrive
        assert!(w.try_recv().is_err());
        Ok(())
    }

    #[test]
    fn parking_wakes_on_publish_and_on_close() -> Result<(), ShmError> {
        let (p, w) = pair()?;
        std::thread::scope(|s| -> Result<(), ShmError> {
            let h = s.spawn(|| w.recv_timeout(Duration::ZERO, Duration::from_secs(60)));
            // Whenever the reader parks, the publish wakes it.
            std::thread::sleep(Duration::from_millis(20));
            p.send(&[b"wake"], &[])?;
            let got = h.join().map_err(|_| frame("reader panicked"))??;
            assert_eq!(got.map(|m| m.bytes), Some(b"wake".to_vec()));
            let h = s.spawn(|| w.recv_timeout(Duration::ZERO, Duration::from_secs(60)));
            p.close();
            let got = h.join().map_err(|_| frame("reader panicked"))??;
            assert!(got.is_none());
            assert!(w.is_closed());
            Ok(())
        })
    }

    #[test]
    fn pollers_on_one_cpu_see_each_other_and_a_parked_one_is_forgotten() -> Result<(), ShmError> {
        let (p, w) = pair()?;
        // Both "ends" poll from this thread, held on one CPU meanwhile.
        let was =
            rustix::thread::sched_getaffinity(None).map_err(|e| frame(format!("affinity: {e}")))?;
        let mut one = rustix::thread::CpuSet::new();
        one.set(rustix::thread::sched_getcpu());
        rustix::thread::sched_setaffinity(None, &one)
            .map_err(|e| frame(format!("affinity: {e}")))?;
        let seen = [
            p.note_cpu(), // the worker has not polled yet
            w.note_cpu(), // the pool's end polls on this CPU
            p.note_cpu(),
        ];
        w.park(Duration::from_micros(1)); // a parked end is not polling
        let after_park = p.note_cpu();
        w.note_cpu();
        p.forget_cpu(); // a helping caller left
        let after_leave = w.note_cpu();
        rustix::thread::sched_setaffinity(None, &was)
            .map_err(|e| frame(format!("affinity: {e}")))?;
        assert_eq!(seen, [false, true, true]);
        assert!(!after_park);
        assert!(!after_leave);
        Ok(())
    }

    /// Polls `cond` until it holds or `limit` passes.
    fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        cond()
    }

    #[test]
    fn a_muted_reader_is_not_woken_until_rearmed_and_then_misses_nothing() -> Result<(), ShmError> {
        let (p, w) = pair()?;
        let r = RESPONSES;
        std::thread::scope(|s| -> Result<(), ShmError> {
            // The slot thread's role: parked on the response ring for long.
            let parked = s.spawn(|| {
                let t = Instant::now();
                p.park(Duration::from_secs(60));
                t.elapsed()
            });
            assert!(
                eventually(Duration::from_secs(30), || p
                    .w32(r.data_sleeping)
                    .load(Ordering::SeqCst)
                    == 1),
                "the reader never parked"
            );
            // A caller starts receiving for it: the worker's publish makes
            // no wake-up (the eventcount does not move)...
            p.mute_wakes();
            let event = p.w32(r.data_event).load(Ordering::SeqCst);
            w.send(&[b"result"], &[])?;
            assert_eq!(p.w32(r.data_event).load(Ordering::SeqCst), event);
            // ...and when the caller leaves without taking it, re-arming
            // wakes the reader for what came meanwhile.
            p.rearm_wakes();
            let waited = parked.join().map_err(|_| frame("reader panicked"))?;
            assert!(
                waited < Duration::from_secs(30),
                "woken only by its timeout"
            );
            assert_eq!(p.try_recv()?.map(|m| m.bytes), Some(b"result".to_vec()));
            // Re-armed with nothing waiting: the next publish wakes it.
            let parked = s.spawn(|| p.park(Duration::from_secs(60)));
            assert!(eventually(Duration::from_secs(30), || p
                .w32(r.data_sleeping)
                .load(Ordering::SeqCst)
                == 1));
            p.mute_wakes();
            p.rearm_wakes();
            w.send(&[b"next"], &[])?;
            parked.join().map_err(|_| frame("reader panicked"))?;
            assert_eq!(p.try_recv()?.map(|m| m.bytes), Some(b"next".to_vec()));
            Ok(())
        })
    }
}
