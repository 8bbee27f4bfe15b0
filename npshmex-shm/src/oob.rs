//! Out-of-band segments for serde: what a value's `Serialize` hands over
//! besides its bytes, how the receiver gets it back, and the typed cause
//! of a failure on either side.
//!
//! A `Serialize` impl of a segment-bearing type calls [`send`] (a segment
//! handle) or [`push_fd`] (any fd) and writes only the small [`SegmentRef`]
//! or index it gets; the code that sends the bytes wraps encoding in
//! [`collect`] and sends the collected fds alongside. On the other side
//! decoding runs inside [`with_received`], and `Deserialize` calls
//! [`receive`] or [`take_fd`]. This is pickle protocol 5's out-of-band
//! buffers, done with fds, and the one wire shape every adapter crate
//! shares.
//!
//! # Moves are proven, not promised
//! A [`Transfer::Move`] gives the receiver a writable mapping of the very
//! pages the sender wrote, so the sender must keep no way to write them.
//! `Serialize` only borrows the value, so [`send`] does not hand out the fd
//! at once: it keeps a reference to the [`Slot`], and [`Collected::finish`],
//! called after the caller dropped the value it encoded, lends the segment
//! only if that reference is the last one. If the caller kept the value,
//! the receiver gets a copy instead. The receiver trusts a move only when
//! the transport says so ([`with_received_moves`], `unsafe`: the pool's
//! peers run this code); through the safe [`with_received`] a moved segment
//! is sealed against writes and mapped privately, or, when someone still
//! maps it writable, copied with `pread` into a segment of the receiver's
//! own.
//!
//! # One error channel
//! serde formats such as postcard drop the message of custom errors. The
//! adapters report the typed cause with [`ser_error`] / [`de_error`], which
//! record it in the innermost [`collect`] / [`with_received`] scope; the
//! scope returns it to whoever runs it (the pool puts it in its error), on
//! whatever thread that is, and nothing outlives the scope.
//!
//! Both stacks nest: an inner scope shadows the outer one until it returns.
//! Panics inside the closures unwind cleanly (the scope is popped and its
//! fds closed).
//!
//! ```
//! use npshmex_shm::{cache, oob, Transfer};
//! let mut slot = cache::alloc(4096)?;
//! slot.segment_mut().as_mut_slice()?[0] = 42;
//! let slot = std::sync::Arc::new(slot);
//! let (sent, collected) = oob::collect(|| oob::send(&slot, Transfer::Move));
//! let sent = sent?;
//! drop(slot); // the value is gone: the move is real
//! let fds = collected.finish()?;
//! assert!(fds.is_moved(0));
//! let (got, cause) = oob::with_received(fds.into_fds(), || oob::receive(sent));
//! assert!(cause.is_none());
//! // Through the safe receive a move arrives sealed and private.
//! assert_eq!(got?.segment().as_slice()[0], 42);
//! # Ok::<(), npshmex_shm::ShmError>(())
//! ```

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cache::{self, Origin, Slot};
use crate::error::{Result, ShmError};
use crate::segment::{self, Segment};
use crate::{Access, Seals};

/// A failure's typed cause, as carried by the scopes.
pub type Cause = Box<dyn Error + Send + Sync + 'static>;

/// How the receiver of a sent segment gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Transfer {
    /// The receiver maps the segment read-write and owns it; the sender gave
    /// its handle up (see the module docs for how that is proven).
    Move,
    /// The segment is sealed against writes; the receiver maps it read-only.
    ReadOnly,
    /// The segment is sealed against writes; the receiver maps it privately
    /// (`MAP_PRIVATE`): it may write, nobody else sees it, only touched
    /// pages are copied.
    CopyOnWrite,
}

impl Transfer {
    /// The mapping the receiver makes.
    pub fn access(self) -> Access {
        match self {
            Transfer::Move => Access::ReadWrite,
            Transfer::ReadOnly => Access::ReadOnly,
            Transfer::CopyOnWrite => Access::CopyOnWrite,
        }
    }
}

/// What the serialized bytes carry for one segment: the index of its fd
/// among the value's out-of-band fds, and how the receiver maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    index: u32,
    transfer: Transfer,
}

impl SegmentRef {
    /// A reference with another receive mode (for a receiver that asks
    /// less of the segment than the sender offered).
    pub fn with_transfer(self, transfer: Transfer) -> SegmentRef {
        SegmentRef { transfer, ..self }
    }

    /// How the receiver maps the segment.
    pub fn transfer(&self) -> Transfer {
        self.transfer
    }
}

/// One collected item, resolved into an fd by [`Collected::finish`].
enum Item {
    /// An fd to send as it is.
    Fd(OwnedFd),
    /// A slot to move: lent if this is the last reference, copied if not.
    /// Its first `used` bytes are the value's (the rest, a size class's or
    /// a reused segment's slack).
    Move { slot: Arc<Slot>, used: usize },
}

#[derive(Default)]
struct CollectFrame {
    items: Vec<Item>,
    cause: Option<Cause>,
}

struct ReceiveFrame {
    items: Vec<Option<Received>>,
    cause: Option<Cause>,
}

/// One out-of-band item of a value being decoded.
enum Received {
    /// An fd, and whether its sender proved it a move.
    Fd { fd: OwnedFd, moved: bool },
    /// A segment this process filled itself (a transport that carries
    /// segment contents, not fds).
    Slot(Slot),
}

/// An out-of-band item of an encoded value, for a transport that carries
/// segment *contents* rather than fds (across machines, say): see
/// [`Collected::finish_local`].
#[derive(Debug)]
pub enum Outbound {
    /// A segment moved out of the value: this process's handle, readable
    /// (its pages are the value's; nothing else writes them).
    Slot(Slot),
    /// An fd a `Serialize` impl pushed ([`push_fd`]) or a write-sealed
    /// segment shared ([`Transfer::ReadOnly`], [`Transfer::CopyOnWrite`]).
    Fd(OwnedFd),
}

/// An out-of-band item of a value to decode, for
/// [`with_received_local`].
#[derive(Debug)]
pub enum Inbound {
    /// A segment this process made and filled with what the sender's
    /// [`Outbound::Slot`] or sealed [`Outbound::Fd`] held; [`receive`]
    /// hands it over in the mode the value asks for (sealing it first for
    /// the shared modes).
    Slot(Slot),
    /// An fd from outside, untrusted (as [`with_received`] treats them).
    Fd(OwnedFd),
}

thread_local! {
    static COLLECTORS: RefCell<Vec<CollectFrame>> = const { RefCell::new(Vec::new()) };
    static RECEIVERS: RefCell<Vec<ReceiveFrame>> = const { RefCell::new(Vec::new()) };
}

/// What [`collect`] gathered while encoding one value.
pub struct Collected {
    items: Vec<Item>,
    cause: Option<Cause>,
}

impl fmt::Debug for Collected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collected")
            .field("items", &self.items.len())
            .field("cause", &self.cause.as_ref().map(|c| c.to_string()))
            .finish()
    }
}

impl Collected {
    /// The items as a transport that carries contents needs them: each
    /// moved segment as this process's own [`Slot`] (copied first if the
    /// encoded value's handle is still alive, as in [`Collected::finish`]),
    /// each pushed fd as it is. Call it after dropping the encoded value.
    ///
    /// # Errors
    /// As [`Collected::finish`].
    pub fn finish_local(self) -> Result<Vec<Outbound>> {
        self.items
            .into_iter()
            .map(|item| match item {
                Item::Fd(fd) => Ok(Outbound::Fd(fd)),
                Item::Move { slot, .. } => Ok(Outbound::Slot(match Arc::try_unwrap(slot) {
                    Ok(slot) => slot,
                    Err(shared) => shared.copy_to_new(shared.segment().len())?,
                })),
            })
            .collect()
    }

    /// Number of fds the value will send.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the value sends no fd.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The typed cause an adapter recorded ([`ser_error`]) while encoding
    /// failed, taken out.
    pub fn take_cause(&mut self) -> Option<Cause> {
        self.cause.take()
    }

    /// The fds to send, in index order. Call it after dropping the value
    /// that was encoded: a moved segment whose handle is gone is lent as
    /// it is; one whose handle is still alive is copied first, so that the
    /// handle stays the only writer of its pages.
    ///
    /// Whoever gets a moved fd may write its pages for as long as it holds
    /// any descriptor of the file, so a segment lent here is never handed
    /// out again by this process's cache, and one this process received by
    /// a move (which its allocator will reuse) is copied before it is lent.
    /// A transport whose receivers keep to the lend protocol uses
    /// [`Collected::finish_trusted`] instead and keeps the reuse.
    ///
    /// # Errors
    /// [`ShmError`] when a copy cannot be made or an fd not duplicated;
    /// every fd is closed then.
    pub fn finish(self) -> Result<Outgoing> {
        self.finish_with(false)
    }

    /// [`Collected::finish`] for receivers that keep to the lend protocol
    /// (the `cache` module docs): a moved segment allocated here is reused
    /// once its receiver let go, and a received one is passed on without a
    /// copy.
    ///
    /// # Safety
    /// Every fd this returns as a move must reach only code that keeps the
    /// open file description it was given, with the `flock` that comes
    /// with it, for as long as it can write the file: it never releases
    /// that lock (`flock(LOCK_UN)`), never re-opens the file (through
    /// `/proc/<pid>/fd`, say) and hands the fd to nothing that would. The
    /// pool's workers, which run this very executable and receive through
    /// [`with_received_moves`] alone, are such code. Otherwise this
    /// process may reuse pages that the receiver still writes.
    ///
    /// # Errors
    /// As [`Collected::finish`].
    pub unsafe fn finish_trusted(self) -> Result<Outgoing> {
        self.finish_with(true)
    }

    fn finish_with(self, trusted: bool) -> Result<Outgoing> {
        let mut fds = Vec::with_capacity(self.items.len());
        let mut moved = Vec::with_capacity(self.items.len());
        for item in self.items {
            match item {
                Item::Fd(fd) => {
                    fds.push(fd);
                    moved.push(false);
                }
                Item::Move { slot, used } => {
                    let mut slot = match Arc::try_unwrap(slot) {
                        Ok(slot) => slot,
                        Err(shared) => shared.copy_to_new(used)?,
                    };
                    if !trusted {
                        // A receiver outside this program gets the value
                        // alone, not this process's older bytes in the
                        // slack of a reused segment.
                        slot.zero_from(used)?;
                    }
                    fds.push(slot.lend_move(trusted)?);
                    moved.push(true);
                }
            }
        }
        Ok(Outgoing { fds, moved })
    }
}

/// The fds of one encoded value, ready to send, and which of them are
/// proven moves.
#[derive(Debug, Default)]
pub struct Outgoing {
    fds: Vec<OwnedFd>,
    moved: Vec<bool>,
}

impl Outgoing {
    /// The fds, in index order.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Whether fd `index` is a move [`Collected::finish`] proved.
    pub fn is_moved(&self, index: usize) -> bool {
        self.moved.get(index).copied().unwrap_or(false)
    }

    /// Per fd, whether it is a proven move (for the receiver's
    /// [`with_received_moves`]).
    pub fn moved(&self) -> &[bool] {
        &self.moved
    }

    /// The fds alone.
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }

    /// The fds and their move flags.
    pub fn into_parts(self) -> (Vec<OwnedFd>, Vec<bool>) {
        (self.fds, self.moved)
    }
}

/// Pops the top collector when dropped (also on unwind).
struct CollectGuard;

impl CollectGuard {
    fn finish(self) -> CollectFrame {
        std::mem::forget(self);
        COLLECTORS
            .with(|c| c.borrow_mut().pop())
            .unwrap_or_default()
    }
}

impl Drop for CollectGuard {
    fn drop(&mut self) {
        // During thread teardown the thread-local may be gone; nothing to pop then.
        let frame = COLLECTORS.try_with(|c| c.borrow_mut().pop());
        drop(frame);
    }
}

/// Pops the top receiver (closing every fd not taken) when dropped.
struct ReceiveGuard;

impl ReceiveGuard {
    fn finish(self) -> Option<Cause> {
        std::mem::forget(self);
        let frame = RECEIVERS.with(|r| r.borrow_mut().pop());
        frame.and_then(|f| f.cause)
    }
}

impl Drop for ReceiveGuard {
    fn drop(&mut self) {
        // Take the frame out first and drop its fds after the borrow ends.
        let frame = RECEIVERS.try_with(|r| r.borrow_mut().pop());
        drop(frame);
    }
}

/// Runs `f` (which encodes a value) with a fresh collector installed on
/// this thread; returns what it returned and what it collected.
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Collected) {
    COLLECTORS.with(|c| c.borrow_mut().push(CollectFrame::default()));
    let guard = CollectGuard;
    let value = f();
    let frame = guard.finish();
    (
        value,
        Collected {
            items: frame.items,
            cause: frame.cause,
        },
    )
}

fn push(item: Item) -> Result<u32> {
    COLLECTORS.with(|c| {
        let mut stack = c.borrow_mut();
        let top = stack.last_mut().ok_or(ShmError::NoCollector)?;
        let index = u32::try_from(top.items.len())
            .map_err(|_| ShmError::frame("more than u32::MAX out-of-band fds"))?;
        top.items.push(item);
        Ok(index)
    })
}

/// Hands `fd` to the innermost collector and returns its index there. The
/// receiver treats it as untrusted: [`receive`] maps it only if it is
/// sealed; [`take_fd`] gives it back as it is.
///
/// # Errors
/// [`ShmError::NoCollector`] outside [`collect`] (the fd is closed);
/// [`ShmError::Frame`] past `u32::MAX` fds.
pub fn push_fd(fd: OwnedFd) -> Result<u32> {
    push(Item::Fd(fd))
}

/// Sends the segment of `slot` with the receive mode `transfer`, out of
/// band; returns what to serialize in its place.
///
/// - [`Transfer::Move`]: the fd of a slot this handle owns exclusively is
///   handed out by [`Collected::finish`] (see the module docs); any other
///   slot (a copy-on-write mapping, whose writes live only in this process,
///   a sealed or a vouched-for one) is copied first.
/// - [`Transfer::ReadOnly`] and [`Transfer::CopyOnWrite`] need a
///   write-sealed segment ([`Slot::freeze`]).
///
/// # Errors
/// [`ShmError::NoCollector`] outside [`collect`]; [`ShmError::NotSealed`]
/// for a shared mode of a segment that is not write-sealed; the errors of
/// [`cache::alloc`] when a copy is made.
pub fn send(slot: &Arc<Slot>, transfer: Transfer) -> Result<SegmentRef> {
    send_used(slot, transfer, usize::MAX)
}

/// [`send`] of a slot whose first `used` bytes hold the value.
fn send_used(slot: &Arc<Slot>, transfer: Transfer, used: usize) -> Result<SegmentRef> {
    if !is_collecting() {
        return Err(ShmError::NoCollector);
    }
    let seg = slot.segment();
    let index = match transfer {
        // Only pages this handle owns exclusively can move as they are; a
        // private (copy-on-write) mapping, whose writes live only here, a
        // sealed one, or one an `unsafe` constructor vouched for, moves as
        // a copy the receiver owns.
        Transfer::Move if seg.is_exclusive() && seg.access() == Access::ReadWrite => {
            push(Item::Move {
                slot: Arc::clone(slot),
                used,
            })?
        }
        Transfer::Move => push(Item::Move {
            slot: Arc::new(slot.copy_to_new(used)?),
            used,
        })?,
        Transfer::ReadOnly | Transfer::CopyOnWrite => {
            segment::require_seals(seg.raw_fd(), Seals::SHRINK | Seals::WRITE)?;
            // Write-sealed: handing out a duplicate cannot alias anything.
            let fd = seg
                .raw_fd()
                .try_clone_to_owned()
                .map_err(|e| ShmError::io("dup", e))?;
            push(Item::Fd(fd))?
        }
    };
    Ok(SegmentRef { index, transfer })
}

/// How a segment travels in a value's bytes: by reference to an
/// out-of-band fd, or, for a small move, its bytes inline. What
/// [`send_segment`] returns and adapters serialize; the receiving side
/// deserializes an [`ArrivedSegment`].
#[derive(Clone, Copy, Debug)]
pub enum SentSegment<'a> {
    /// An fd sent out of band ([`send`]).
    Ref(SegmentRef),
    /// The used bytes of a small segment, inline.
    Bytes(&'a [u8]),
}

/// Sends the first `used` bytes of `slot` as [`send`] does, except that a
/// move of at most [`cache::SMALL_MAX`] bytes travels inline: no fd, no
/// mapping, no seal. The receiver copies the bytes into a small segment
/// of its own (reused from its free list), which it owns exclusively as a
/// move requires; the copy costs less than the system calls it saves. The
/// shared modes (read-only, copy-on-write) always send the fd: sharing the
/// same pages is their point.
///
/// # Errors
/// As [`send`].
pub fn send_segment(slot: &Arc<Slot>, transfer: Transfer, used: usize) -> Result<SentSegment<'_>> {
    if !is_collecting() {
        return Err(ShmError::NoCollector);
    }
    let bytes = slot.segment().as_slice();
    if transfer == Transfer::Move && used <= cache::SMALL_MAX && used <= bytes.len() {
        return Ok(SentSegment::Bytes(&bytes[..used]));
    }
    send_used(slot, transfer, used).map(SentSegment::Ref)
}

const SENT_VARIANTS: &[&str] = &["Ref", "Bytes"];

impl Serialize for SentSegment<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        struct Raw<'b>(&'b [u8]);
        impl Serialize for Raw<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        match self {
            SentSegment::Ref(r) => s.serialize_newtype_variant("Segment", 0, "Ref", r),
            SentSegment::Bytes(b) => s.serialize_newtype_variant("Segment", 1, "Bytes", &Raw(b)),
        }
    }
}

/// A segment as it arrives ([`SentSegment`] on the other side): a
/// reference to claim with [`receive_segment`], or a small segment already
/// filled with the inline bytes while decoding.
#[derive(Debug)]
pub enum ArrivedSegment {
    /// An fd to claim.
    Ref(SegmentRef),
    /// A small segment of this process whose first `len` bytes are the
    /// ones that came (the rest is its size class's slack, zero).
    Bytes {
        /// The segment.
        slot: Slot,
        /// How many bytes came.
        len: usize,
    },
}

impl<'de> Deserialize<'de> for ArrivedSegment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{self, EnumAccess, VariantAccess};

        #[derive(Deserialize)]
        #[serde(variant_identifier)]
        enum Tag {
            Ref,
            Bytes,
        }

        /// Copies the inline bytes straight into a small segment.
        struct IntoSlot;
        impl<'de> de::Visitor<'de> for IntoSlot {
            type Value = (Slot, usize);
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of a small segment")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<(Slot, usize), E> {
                if v.len() > cache::SMALL_MAX {
                    return Err(de_error(ShmError::Frame {
                        reason: format!(
                            "an inline segment of {} bytes (at most {} travel inline)",
                            v.len(),
                            cache::SMALL_MAX
                        ),
                    }));
                }
                let mut slot = cache::alloc(v.len()).map_err(de_error)?;
                // A reused segment may hold this process's own old bytes
                // after the value: zero them (only as far as they were
                // written) so that the slot holds the value alone.
                slot.zero_from(v.len()).map_err(de_error)?;
                slot.prefix_mut(v.len())
                    .map_err(de_error)?
                    .copy_from_slice(v);
                Ok((slot, v.len()))
            }
        }
        impl<'de> de::Deserialize<'de> for SlotBytes {
            fn deserialize<D2: serde::Deserializer<'de>>(
                d: D2,
            ) -> std::result::Result<Self, D2::Error> {
                d.deserialize_bytes(IntoSlot).map(SlotBytes)
            }
        }
        struct SlotBytes((Slot, usize));

        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ArrivedSegment;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a segment reference or its bytes")
            }
            fn visit_enum<A: EnumAccess<'de>>(
                self,
                data: A,
            ) -> std::result::Result<ArrivedSegment, A::Error> {
                let (tag, v) = data.variant::<Tag>()?;
                match tag {
                    Tag::Ref => v.newtype_variant::<SegmentRef>().map(ArrivedSegment::Ref),
                    Tag::Bytes => v
                        .newtype_variant::<SlotBytes>()
                        .map(|SlotBytes((slot, len))| ArrivedSegment::Bytes { slot, len }),
                }
            }
        }
        d.deserialize_enum("Segment", SENT_VARIANTS, V)
    }
}

/// The slot of an [`ArrivedSegment`] and how many of its bytes came:
/// [`receive`] for a reference (the whole segment), the filled small
/// segment as it is for inline bytes (the bytes that came; a reader must
/// not take the slack after them for data).
///
/// # Errors
/// As [`receive`].
pub fn receive_segment(arrived: ArrivedSegment) -> Result<(Slot, usize)> {
    match arrived {
        ArrivedSegment::Ref(r) => {
            let slot = receive(r)?;
            let len = slot.segment().len();
            Ok((slot, len))
        }
        ArrivedSegment::Bytes { slot, len } => Ok((slot, len)),
    }
}

/// Whether a collector is installed on this thread.
pub fn is_collecting() -> bool {
    COLLECTORS.with(|c| !c.borrow().is_empty())
}

/// Runs `f` (which decodes a value) with `fds` claimable by [`take_fd`] and
/// [`receive`]; every fd not taken is closed when `f` returns. Returns what
/// `f` returned and the typed cause an adapter recorded ([`de_error`]).
///
/// No fd counts as a proven move: a segment sent as [`Transfer::Move`] is
/// sealed against writes and mapped privately (the receiver may still
/// write it, privately), or copied (read with `pread`, never mapped) into
/// a new segment of this process if someone else maps it writable.
pub fn with_received<T>(fds: Vec<OwnedFd>, f: impl FnOnce() -> T) -> (T, Option<Cause>) {
    let items = fds
        .into_iter()
        .map(|fd| Received::Fd { fd, moved: false })
        .collect();
    enter_received(items, f)
}

/// [`with_received`] where `moved[i]` says that fd `i` is a proven move:
/// [`receive`] maps it shared and writable, as the sender's own pages.
///
/// # Safety
/// For every `i` with `moved[i]`, nobody but the segment decoded from fd
/// `i` may write the file or map it writable while that segment lives: the
/// sender gave up every handle, fd and writable mapping of it (as the
/// flags of [`Collected::finish`] certify for fds sent by this crate), and
/// no other copy of the fd is used to write. A transport may pass those
/// flags on only if its peer is trusted to report them faithfully (the
/// pool's workers run the caller's own executable, checked at handshake).
pub unsafe fn with_received_moves<T>(
    fds: Vec<OwnedFd>,
    moved: &[bool],
    f: impl FnOnce() -> T,
) -> (T, Option<Cause>) {
    let items = fds
        .into_iter()
        .enumerate()
        .map(|(i, fd)| Received::Fd {
            fd,
            moved: moved.get(i).copied().unwrap_or(false),
        })
        .collect();
    enter_received(items, f)
}

/// [`with_received`] for a transport that carries segment contents: the
/// items are segments this process filled ([`Inbound::Slot`], safe: nobody
/// else has them) or untrusted fds ([`Inbound::Fd`]).
pub fn with_received_local<T>(items: Vec<Inbound>, f: impl FnOnce() -> T) -> (T, Option<Cause>) {
    let items = items
        .into_iter()
        .map(|i| match i {
            Inbound::Slot(slot) => Received::Slot(slot),
            Inbound::Fd(fd) => Received::Fd { fd, moved: false },
        })
        .collect();
    enter_received(items, f)
}

fn enter_received<T>(items: Vec<Received>, f: impl FnOnce() -> T) -> (T, Option<Cause>) {
    RECEIVERS.with(|r| {
        r.borrow_mut().push(ReceiveFrame {
            items: items.into_iter().map(Some).collect(),
            cause: None,
        })
    });
    let guard = ReceiveGuard;
    let value = f();
    (value, guard.finish())
}

/// Takes item `index` of the innermost receiver.
fn take(index: u32) -> Result<Received> {
    RECEIVERS.with(|r| {
        let mut stack = r.borrow_mut();
        let top = stack.last_mut().ok_or(ShmError::NoCollector)?;
        let available = u32::try_from(top.items.len()).unwrap_or(u32::MAX);
        top.items
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or(ShmError::MissingFd { index, available })
    })
}

/// Takes the fd at `index` of the innermost [`with_received`], as it is;
/// a segment that came by a proven move (on loan: [`Segment::into_fd`])
/// as the fd of a copy.
///
/// # Errors
/// [`ShmError::MissingFd`] when `index` is out of range or already taken,
/// [`ShmError::NoCollector`] outside [`with_received`]; for a proven move,
/// those of mapping and copying it.
pub fn take_fd(index: u32) -> Result<OwnedFd> {
    match take(index)? {
        Received::Fd { fd, moved: false } => Ok(fd),
        Received::Fd { fd, moved: true } => {
            segment::require_seals(fd.as_fd(), Seals::SHRINK)?;
            Segment::from_moved_fd(fd, Access::ReadOnly)?.into_fd()
        }
        // This process's own segment, given up: the fd is all that is left.
        Received::Slot(slot) => slot.into_segment().into_fd(),
    }
}

/// Maps the segment `r` refers to, in its receive mode, as a [`Slot`]:
/// - a proven move: shared and writable (reusing this process's own
///   mapping of the file when it has one, which is how a segment that comes
///   back costs no page faults); it must be sealed against shrinking;
/// - a move that is not proven: sealed against writes here, then mapped
///   privately ([`Access::CopyOnWrite`]); when that cannot be done (someone
///   maps the file writable, such as a sender whose cache keeps its mapping
///   for reuse) its bytes are read with `pread` into a new writable segment
///   of this process, so no write of the sender's can race with a read here;
/// - [`Transfer::ReadOnly`] / [`Transfer::CopyOnWrite`]: the segment must
///   be sealed against shrinking and writes ([`Segment::from_fd_sealed`]).
///
/// # Errors
/// [`ShmError::NotSealed`], [`ShmError::TooSmall`] (a file shrunk while
/// it was copied), [`ShmError::NotRegular`], [`ShmError::NoSpace`], and as
/// [`take_fd`].
pub fn receive(r: SegmentRef) -> Result<Slot> {
    let (fd, moved) = match take(r.index)? {
        Received::Fd { fd, moved } => (fd, moved),
        Received::Slot(slot) => return receive_local(slot, r.transfer),
    };
    let key = segment::FileKey::of(fd.as_fd())?;
    match r.transfer {
        Transfer::Move if moved => {
            segment::require_seals(fd.as_fd(), Seals::SHRINK)?;
            if let Some(slot) = cache::take_mapping(key, Access::ReadWrite) {
                return Ok(slot);
            }
            let seg = Segment::from_moved_fd(fd, Access::ReadWrite)?;
            Ok(Slot::new(seg, key, Origin::Received))
        }
        Transfer::Move => {
            let sealed = segment::require_seals(fd.as_fd(), Seals::SHRINK | Seals::WRITE)
                .or_else(|_| segment::add_seals(fd.as_fd(), Seals::SIZE | Seals::WRITE));
            if sealed.is_ok() {
                let seg = Segment::from_fd_sealed(fd, Access::CopyOnWrite, 0)?;
                return Ok(Slot::new(seg, key, Origin::Received));
            }
            // Someone still maps the file writable (a sender that keeps its
            // mapping for reuse, in this process or another), or it cannot
            // be sealed: a copy read with `pread`, which no write of theirs
            // can turn into a data race here.
            let seg = segment::copy_of_file(fd.as_fd())?;
            let key = seg.file_key()?;
            Ok(Slot::new(seg, key, Origin::Own))
        }
        Transfer::ReadOnly => {
            segment::require_seals(fd.as_fd(), Seals::SHRINK | Seals::WRITE)?;
            if let Some(slot) = cache::take_mapping(key, Access::ReadOnly) {
                return Ok(slot);
            }
            let seg = Segment::from_fd_sealed(fd, Access::ReadOnly, 0)?;
            Ok(Slot::new(seg, key, Origin::Received))
        }
        Transfer::CopyOnWrite => {
            let seg = Segment::from_fd_sealed(fd, Access::CopyOnWrite, 0)?;
            Ok(Slot::new(seg, key, Origin::Received))
        }
    }
}

/// A segment this process filled, in the mode `transfer` asks: as it is
/// for a move; sealed for the shared modes (a receiver of those expects
/// pages nobody can change), privately mapped for copy-on-write.
fn receive_local(slot: Slot, transfer: Transfer) -> Result<Slot> {
    match transfer {
        Transfer::Move => Ok(slot),
        Transfer::ReadOnly => {
            let len = slot.segment().len();
            slot.freeze(len)
        }
        Transfer::CopyOnWrite => {
            let len = slot.segment().len();
            let frozen = slot.freeze(len)?;
            let private = frozen.segment().remap(Access::CopyOnWrite)?;
            Slot::uncached(private)
        }
    }
}

/// Whether [`with_received`] is active on this thread.
pub fn is_receiving() -> bool {
    RECEIVERS.with(|r| !r.borrow().is_empty())
}

/// Records `cause` as the typed reason an encoding failed (in the
/// innermost [`collect`], if any; the first cause recorded wins) and
/// returns the serializer error to return, carrying its message.
pub fn ser_error<E: serde::ser::Error>(cause: impl Error + Send + Sync + 'static) -> E {
    let err = E::custom(&cause);
    let _ = COLLECTORS.try_with(|c| {
        if let Some(top) = c.borrow_mut().last_mut() {
            top.cause.get_or_insert_with(|| Box::new(cause));
        }
    });
    err
}

/// Records `cause` as the typed reason a decoding failed (in the innermost
/// [`with_received`], if any; the first cause recorded wins) and returns
/// the deserializer error to return, carrying its message.
pub fn de_error<E: serde::de::Error>(cause: impl Error + Send + Sync + 'static) -> E {
    let err = E::custom(&cause);
    let _ = RECEIVERS.try_with(|r| {
        if let Some(top) = r.borrow_mut().last_mut() {
            top.cause.get_or_insert_with(|| Box::new(cause));
        }
    });
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::FileKey;

    fn fd() -> Result<OwnedFd> {
        Segment::anonymous(0)?.into_fd()
    }

    #[test]
    fn an_inline_move_lands_alone_in_a_reused_segment() -> Result<()> {
        // Fill the free list of the 8 KiB class with fully written segments.
        let dirtied: Vec<Slot> = (0..4)
            .map(|_| -> Result<Slot> {
                let mut s = cache::alloc(5000)?;
                s.segment_mut().as_mut_slice()?.fill(0xff);
                Ok(s)
            })
            .collect::<Result<_>>()?;
        drop(dirtied);
        let mut src = cache::alloc(5000)?;
        src.prefix_mut(4100)?.fill(7);
        let src = Arc::new(src);
        let (bytes, collected) = collect(|| {
            let sent = send_segment(&src, Transfer::Move, 4100)?;
            postcard::to_allocvec(&sent).map_err(|e| ShmError::frame(e.to_string()))
        });
        let bytes = bytes?;
        assert!(collected.finish()?.into_fds().is_empty(), "went inline");
        for _ in 0..2 {
            let (got, cause) = with_received(Vec::new(), || {
                postcard::from_bytes::<ArrivedSegment>(&bytes)
                    .map_err(|e| ShmError::frame(e.to_string()))
                    .and_then(receive_segment)
            });
            assert!(cause.is_none());
            let (slot, len) = got?;
            assert_eq!(len, 4100);
            let all = slot.segment().as_slice();
            assert!(all[..4100].iter().all(|&x| x == 7));
            assert!(
                all[4100..].iter().all(|&x| x == 0),
                "old bytes after the value"
            );
            assert!(slot.dirty_len() <= 4100);
        }
        Ok(())
    }

    fn writable_slot(byte: u8) -> Result<Arc<Slot>> {
        let mut slot = cache::alloc(4096)?;
        slot.segment_mut().as_mut_slice()?[0] = byte;
        Ok(Arc::new(slot))
    }

    #[test]
    fn outside_any_scope() -> Result<()> {
        assert!(!is_collecting());
        assert!(!is_receiving());
        assert!(matches!(push_fd(fd()?), Err(ShmError::NoCollector)));
        assert!(matches!(take_fd(0), Err(ShmError::NoCollector)));
        assert!(matches!(
            send(&writable_slot(1)?, Transfer::Move),
            Err(ShmError::NoCollector)
        ));
        Ok(())
    }

    #[test]
    fn nesting_shadows_and_restores() -> Result<()> {
        let (inner, outer) = collect(|| -> Result<_> {
            assert_eq!(push_fd(fd()?)?, 0);
            let (i, inner) = collect(|| push_fd(fd()?));
            assert_eq!(i?, 0);
            assert_eq!(inner.len(), 1);
            assert_eq!(push_fd(fd()?)?, 1);
            Ok(is_collecting())
        });
        assert!(inner?);
        assert_eq!(outer.len(), 2);
        assert!(!is_collecting());
        Ok(())
    }

    #[test]
    fn take_twice_or_out_of_range() -> Result<()> {
        let fds = vec![fd()?, fd()?];
        let (r, cause) = with_received(fds, || -> Result<()> {
            assert!(is_receiving());
            take_fd(1)?;
            assert!(matches!(
                take_fd(1),
                Err(ShmError::MissingFd {
                    index: 1,
                    available: 2
                })
            ));
            assert!(matches!(
                take_fd(5),
                Err(ShmError::MissingFd {
                    index: 5,
                    available: 2
                })
            ));
            let (inner, _) = with_received(Vec::new(), || take_fd(0));
            assert!(matches!(
                inner,
                Err(ShmError::MissingFd {
                    index: 0,
                    available: 0
                })
            ));
            take_fd(0)?;
            Ok(())
        });
        r?;
        assert!(cause.is_none());
        assert!(!is_receiving());
        Ok(())
    }

    #[test]
    fn panics_pop_the_stack() {
        let result = std::panic::catch_unwind(|| collect(|| panic!("boom")));
        assert!(result.is_err());
        assert!(!is_collecting());
        let result = std::panic::catch_unwind(|| with_received(Vec::new(), || panic!("boom")));
        assert!(result.is_err());
        assert!(!is_receiving());
    }

    /// A segment of `n` bytes starting with `tag, 1`, lent as a trusted
    /// move: the reference, the fds and their move flags, and its file.
    fn lent_trusted(n: usize, tag: u8) -> Result<(SegmentRef, Outgoing, FileKey)> {
        let mut slot = cache::alloc(n)?;
        slot.segment_mut().as_mut_slice()?[..2].copy_from_slice(&[tag, 1]);
        let key = slot.file_key();
        let slot = Arc::new(slot);
        let (r, collected) = collect(|| send(&slot, Transfer::Move));
        let r = r?;
        drop(slot);
        // SAFETY: the fds go only to `with_received_moves` or
        // `with_received` in the tests below, whose slots keep them; what
        // the tests take out is what they check: never the lent
        // description itself.
        let out = unsafe { collected.finish_trusted()? };
        Ok((r, out, key))
    }

    #[test]
    fn a_move_for_an_outside_receiver_carries_the_value_alone() -> Result<()> {
        // A reused cached segment may be a quarter larger than asked for,
        // its slack holding this process's older values: through the safe
        // finish the receiver sees zeros there.
        let n = (3 << 20) + 4096 * 7;
        let mut old = cache::alloc(n)?;
        old.segment_mut().as_mut_slice()?.fill(0xab);
        drop(old);
        // Whichever cached segment comes back (ours, or under `cargo test`
        // another test's of a size close enough), its slack is not zero.
        let used = n - 4096 * 100;
        let mut slot = cache::alloc(used)?;
        slot.prefix_mut(used)?.fill(1);
        let slot = Arc::new(slot);
        let (r, collected) = collect(|| send_segment(&slot, Transfer::Move, used));
        let SentSegment::Ref(r) = r? else {
            panic!("too large to travel inline")
        };
        drop(slot);
        let (got, _) = with_received(collected.finish()?.into_fds(), || receive(r));
        let got = got?;
        let bytes = got.segment().as_slice();
        assert!(bytes[..used].iter().all(|&b| b == 1));
        assert!(bytes[used..].iter().all(|&b| b == 0), "no older bytes");
        Ok(())
    }

    #[test]
    fn a_loaned_segment_never_gives_up_its_fd() -> Result<()> {
        // A move received from a trusted sender is on loan: the sender
        // writes the pages again once the lent description is closed, so
        // whoever could get that description could release its lock early
        // and keep writing. Every way out of a handle gives a copy instead.
        let n = (2 << 20) + 4096 * 5;
        // 1. `take_fd` on a proven move.
        let (r, out, key) = lent_trusted(n, 7)?;
        let (fds, moved) = out.into_parts();
        // SAFETY: the flags come straight from `finish_trusted`.
        let (fd, _) = unsafe { with_received_moves(fds, &moved, || take_fd(r.index)) };
        let fd = fd?;
        assert_ne!(FileKey::of(fd.as_fd())?, key, "a copy, not the loan");
        assert!(segment::get_seals(fd.as_fd())?.contains(Seals::SIZE));
        // 2. A received slot's segment, taken out of it (or swapped out of
        // `segment_mut`) and turned into an fd.
        let (r, out, key) = lent_trusted(n, 8)?;
        let (fds, moved) = out.into_parts();
        // SAFETY: as above.
        let (got, _) = unsafe { with_received_moves(fds, &moved, || receive(r)) };
        let mut got = got?;
        // Back in the process that lent it, the cache hands its own
        // mapping back (taken out of the slot, nothing else reaches the
        // file again); in a peer the segment is on loan, as in 3. below.
        let swapped = std::mem::replace(got.segment_mut(), Segment::anonymous(1)?);
        assert!(matches!(swapped.fd(), Err(ShmError::Exclusive)));
        let fd = swapped.into_fd()?;
        let copy = Segment::from_fd_sealed(
            {
                segment::add_seals(fd.as_fd(), Seals::SIZE | Seals::WRITE)?;
                fd
            },
            Access::ReadOnly,
            0,
        )?;
        assert_eq!(copy.as_slice()[0], 8);
        assert!(cache::take_mapping(key, Access::ReadWrite).is_none());
        // 3. A segment mapped from a lent fd directly is on loan too.
        let (_, out, key) = lent_trusted(n, 9)?;
        let lent = out.into_fds().pop().ok_or(ShmError::NoCollector)?;
        let seg = Segment::from_moved_fd(lent, Access::ReadWrite)?;
        assert!(seg.is_exclusive());
        let fd = seg.into_fd()?;
        assert_ne!(FileKey::of(fd.as_fd())?, key, "a copy, not the loan");
        Ok(())
    }

    #[test]
    fn an_unproven_move_is_sealed_and_private() -> Result<()> {
        // Large enough for the cache to keep its mapping after the send.
        let n = (2 << 20) + 4096 * 3;
        // Lent for a trusted receiver, received without trusting the flags:
        // the sender's cache still maps the segment writable, so it cannot
        // be sealed: the receiver gets a copy of its own, read without
        // mapping the sender's file.
        let (r, out, sent_key) = lent_trusted(n, 3)?;
        let (got, _) = with_received(out.into_fds(), || receive(r));
        let mut got = got?;
        assert_ne!(got.file_key(), sent_key, "a copy, not the sent file");
        assert_eq!(got.segment().len(), n);
        assert!(got.segment().is_exclusive());
        assert_eq!(got.segment().as_slice()[0], 3);
        got.segment_mut().as_mut_slice()?[0] = 9;
        let mut sent =
            cache::take_mapping(sent_key, Access::ReadWrite).ok_or(ShmError::NoCollector)?;
        assert_eq!(sent.segment().as_slice()[0], 3, "the copy is its own");
        sent.segment_mut().as_mut_slice()?[1] = 7;
        assert_eq!(
            got.segment().as_slice()[1],
            1,
            "and the sender's is its own"
        );
        // A segment nobody maps any more is sealed and mapped privately.
        let mut seg = Segment::anonymous(100)?;
        seg.as_mut_slice()?[0] = 4;
        seg.seal(Seals::SIZE)?;
        let (r, collected) = collect(|| push_fd(seg.into_fd()?));
        let r = SegmentRef {
            index: r?,
            transfer: Transfer::Move,
        };
        let (got, _) = with_received(collected.finish()?.into_fds(), || receive(r));
        let mut got = got?;
        assert_eq!(got.segment().access(), Access::CopyOnWrite);
        assert!(got.segment().seals()?.contains(Seals::WRITE));
        got.segment_mut().as_mut_slice()?[0] = 5;
        // Lent through the safe finish, the sender keeps no mapping: the
        // receiver seals the very file and maps it privately, no copy.
        let mut slot = cache::alloc(n)?;
        slot.segment_mut().as_mut_slice()?[0] = 6;
        let key = slot.file_key();
        let slot = Arc::new(slot);
        let (r, collected) = collect(|| send(&slot, Transfer::Move));
        let r = r?;
        drop(slot);
        let (got, _) = with_received(collected.finish()?.into_fds(), || receive(r));
        let got = got?;
        assert_eq!(got.file_key(), key, "no copy");
        assert_eq!(got.segment().access(), Access::CopyOnWrite);
        assert_eq!(got.segment().as_slice()[0], 6);
        Ok(())
    }

    #[test]
    fn shared_modes_need_write_seals() -> Result<()> {
        let slot = writable_slot(1)?;
        let (r, _) = collect(|| send(&slot, Transfer::ReadOnly));
        assert!(matches!(r, Err(ShmError::NotSealed { .. })));
        let frozen = Arc::new(
            Arc::try_unwrap(slot)
                .map_err(|_| ShmError::ReadOnly)?
                .freeze(4096)?,
        );
        let (r, collected) = collect(|| send(&frozen, Transfer::CopyOnWrite));
        let r = r?;
        let (got, _) = with_received(collected.finish()?.into_fds(), || receive(r));
        let mut got = got?;
        got.segment_mut().as_mut_slice()?[0] = 2;
        assert_eq!(frozen.segment().as_slice()[0], 1, "private writes");
        Ok(())
    }

    #[test]
    fn causes_stay_in_their_scope() {
        #[derive(Debug)]
        struct Boom;
        impl fmt::Display for Boom {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("boom")
            }
        }
        impl Error for Boom {}
        let (e, mut collected) = collect(|| ser_error::<postcard::Error>(Boom));
        assert_eq!(e, postcard::Error::SerdeSerCustom);
        assert_eq!(
            collected.take_cause().map(|c| c.to_string()),
            Some("boom".into())
        );
        let (_, cause) = with_received(Vec::new(), || de_error::<postcard::Error>(Boom));
        assert_eq!(cause.map(|c| c.to_string()), Some("boom".into()));
        let (_, cause) = with_received(Vec::new(), || ());
        assert!(cause.is_none(), "nothing leaks into the next scope");
    }
}
