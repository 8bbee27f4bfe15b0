//! Reuse of already-faulted segments and of live mappings across transfers,
//! and the file-lock protocol that makes reuse safe between processes.
//!
//! # Why
//! Touching 160 MB of fresh shared pages costs ~70–170 ms here, a `memcpy`
//! into touched pages ~14 ms, and mapping a populated 160 MB segment anew
//! costs ~10 ms of minor faults plus ~4 ms to unmap, while `x += 1` over it
//! takes ~7 ms. So a transfer path that allocates or maps afresh every time
//! can never approach the bare computation: segments and mappings must be
//! kept and reused.
//!
//! # The lend protocol (when may a segment be overwritten?)
//! A segment may be overwritten by the process that allocated it only when no
//! other process can still read or write it. The kernel tells us, without any
//! cooperation from the receiver and even when it crashed:
//! - the allocating process keeps its own open file description `D1` of the
//!   memfd and never locks it nor sends it;
//! - every time it sends the segment it opens a *new* description of the same
//!   memfd (`/proc/self/fd/N`), takes a shared `flock` on it and sends that;
//!   receivers dup it (same description, same lock) when they pass it on, and a
//!   mapping keeps its description alive;
//! - a `flock` lock lives until the last fd *and mapping* of its description is
//!   gone, so the allocator may overwrite the memfd exactly when an exclusive
//!   non-blocking `flock` on `D1` succeeds (then releases it at once).
//!
//! A receiver therefore needs to do nothing but drop its handle. If the lock
//! cannot be taken (no `/proc`), the segment is sent as its own fd and marked
//! never reusable.
//!
//! The lock proves the receiver done only if the receiver *keeps* it: whoever
//! holds a descriptor can release its `flock` (`LOCK_UN`) or re-open the file
//! through `/proc` and go on writing. So the protocol is used only for
//! receivers that promise not to, through the `unsafe`
//! [`oob::Collected::finish_trusted`](crate::oob::Collected::finish_trusted)
//! (the pool's workers, which run this very code). The safe
//! [`oob::Collected::finish`](crate::oob::Collected::finish) lends a segment
//! of this process and forgets it (unmapped, never reused), and lends a
//! received one as a copy (its allocator would reuse it). The alternatives rejected: a "done" flag written into the
//! segment by the receiver (needs atomics in shared memory and trust in the
//! receiver, and a crashed receiver never sets it), or a hook in the pool's
//! reply (ties this crate to the pool's protocol and breaks for values sent
//! any other way).
//!
//! # Why this is sound
//! A [`Slot`] hands out views only through its [`Segment`], under that
//! segment's basis. While a segment lent to a trusted receiver is away, this
//! process keeps its mapping only inside the cache, which gives no access to
//! it: the mapping comes back out as a writable segment only when the
//! exclusive lock proves that every lent description is gone ([`alloc`]),
//! or when the file comes back by a trusted move ([`crate::oob`]), whose
//! sender gave it up. A segment lent to anyone else is not kept at all. So
//! at any moment at most one live handle, in one process, can write the
//! pages.
//!
//! # What is kept
//! On drop, an array's segment goes into a bounded per-process cache
//! (least recently stored evicted first) when it is anonymous, large enough
//! to matter, not a private copy-on-write mapping, and either
//! - allocated here (reusable for new arrays once the lock check passes, and
//!   its mapping is reused if the same memfd comes back), or
//! - received read-only (sealed, so never overwritten by anyone: keeping its
//!   mapping only saves faults when it is sent again), or
//! - received writable and passed on again by this process (it is "in
//!   circulation", like an array a worker updates in place task after task).
//!
//! A received writable segment that this process just consumed is *not* kept:
//! its allocator wants it back (keeping the mapping would hold its lock).

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use rustix::fs::FlockOperation;

use crate::error::{Result, ShmError};
use crate::segment::{FileKey, Segment};
use crate::{Access, Seals};

/// Segments smaller than this are never cached (their faults cost
/// little); the drop-in arrays of `npshmex-ndarray` start travelling in
/// segments at this size, so every one of them finds a reusable segment.
pub const MIN_CACHED: usize = 64 << 10;
/// Segments up to this size are small: allocated in power-of-two size
/// classes from 4 KiB and kept for reuse by class (see [`alloc`]); moves of
/// at most this many used bytes travel inline ([`crate::oob::send_segment`]).
pub const SMALL_MAX: usize = 32 << 10;
/// The smallest size class (a page).
const SMALL_MIN: usize = 4 << 10;
/// Small segments kept per size class.
const SMALL_PER_CLASS: usize = 32;
/// Segments from this size on get `MADV_HUGEPAGE` (where the kernel honours it).
const HUGEPAGE_FROM: usize = 4 << 20;

/// Bounds of the per-process segment cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most bytes of segments kept (mapped and alive) by the cache.
    pub bytes: usize,
    /// Most segments kept.
    pub entries: usize,
}

impl Default for CacheLimits {
    /// An eighth of the machine's memory, at least 1 GiB (3 GiB with 24 GiB
    /// of RAM), and 32 segments: an array of a good part of memory is still
    /// reused from call to call, and arrays of a few hundred KiB do not
    /// push it out at once.
    fn default() -> Self {
        static BYTES: OnceLock<usize> = OnceLock::new();
        let bytes = *BYTES.get_or_init(|| {
            let info = rustix::system::sysinfo();
            let total = (info.totalram as u64).saturating_mul(u64::from(info.mem_unit.max(1)));
            usize::try_from(total / 8)
                .unwrap_or(usize::MAX)
                .max(1 << 30)
        });
        CacheLimits { bytes, entries: 32 }
    }
}

/// What the segment cache holds right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Segments kept.
    pub entries: usize,
    /// Their total size in bytes.
    pub bytes: usize,
    /// Small segments (up to [`SMALL_MAX`]) kept for reuse, outside the
    /// [`CacheLimits`] (at most 32 per size class, under 2 MiB in all).
    pub small_entries: usize,
    /// Their total size in bytes.
    pub small_bytes: usize,
}

/// Where a segment handle came from (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Allocated by this process as a memfd; this handle is `D1`.
    Own,
    /// Received from another process, or opened by name.
    Received,
}

/// An owned segment handle with what the cache needs to know about it.
/// Dropping it offers the segment to the cache.
///
/// The handle that array and batch types of the adapters hold: get one from
/// [`alloc`] (a writable segment, reused when the cache has a free one), from
/// [`Slot::uncached`] (any segment), or by receiving one ([`crate::oob`]).
#[derive(Debug)]
pub struct Slot {
    seg: Option<Segment>,
    key: FileKey,
    origin: Origin,
    /// An `Own` segment was sent without the shared lock: never overwrite it.
    lent_unlocked: AtomicBool,
    /// A `Received` segment was sent on by this process.
    resent: AtomicBool,
    /// An `Own` segment's fd was sent (lent) at least once.
    lent: AtomicBool,
    /// Drop the segment instead of offering it to the cache.
    no_cache: bool,
    /// The process that made this handle: a forked child inherits handles
    /// (and the cache) but is not their owner.
    pid: u32,
    /// Bytes from the start that may hold anything but zeros (past them the
    /// segment is zero): the whole segment unless the writes went through
    /// [`Slot::prefix_mut`].
    dirty: usize,
}

impl Slot {
    pub(crate) fn new(seg: Segment, key: FileKey, origin: Origin) -> Slot {
        Slot {
            seg: Some(seg),
            key,
            origin,
            lent_unlocked: AtomicBool::new(false),
            resent: AtomicBool::new(false),
            lent: AtomicBool::new(false),
            no_cache: false,
            pid: crate::pid::current(),
            dirty: usize::MAX,
        }
    }

    /// A handle of a segment this process just made (all zeros) or took
    /// from the small free lists (`dirty` bytes written before).
    fn own(seg: Segment, key: FileKey, dirty: usize) -> Slot {
        let mut slot = Slot::new(seg, key, Origin::Own);
        slot.dirty = dirty;
        slot
    }

    /// A handle of `seg` that is unmapped on drop, never cached.
    ///
    /// # Errors
    /// [`ShmError::Io`] if the file cannot be identified (`fstat`).
    pub fn uncached(seg: Segment) -> Result<Slot> {
        let key = seg.file_key()?;
        let mut slot = Slot::new(seg, key, Origin::Received);
        slot.no_cache = true;
        Ok(slot)
    }

    /// The segment, taken out of the cache's reach (dropping it unmaps it).
    pub fn into_segment(mut self) -> Segment {
        self.seg.take().expect("segment present until drop")
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        // Invariant: `seg` is only `None` inside `Drop`.
        self.seg.as_ref().expect("segment present until drop")
    }

    /// The segment, mutably (to write through it). Anything may be written
    /// then: see [`Slot::prefix_mut`] for writes confined to a prefix.
    pub fn segment_mut(&mut self) -> &mut Segment {
        self.dirty = usize::MAX;
        // Invariant: `seg` is only `None` inside `Drop`.
        self.seg.as_mut().expect("segment present until drop")
    }

    /// The first `len` bytes, to write. Unlike [`Slot::segment_mut`] this
    /// records that nothing past `len` is written through it, so that a
    /// later user of a reused segment ([`alloc`]) knows how much of it may
    /// be non-zero ([`Slot::dirty_len`]) and clears no more than that.
    ///
    /// # Errors
    /// [`ShmError::TooSmall`] past the segment's end; [`ShmError::ReadOnly`]
    /// for a read-only mapping.
    ///
    /// ```
    /// use npshmex_shm::cache;
    /// let mut slot = cache::alloc(100)?;
    /// slot.prefix_mut(3)?.copy_from_slice(b"abc");
    /// assert!(slot.dirty_len() >= 3);
    /// assert!(slot.prefix_mut(1 << 20).is_err());
    /// # Ok::<(), npshmex_shm::ShmError>(())
    /// ```
    ///
    /// It borrows the slot as [`Slot::segment_mut`] does: while the bytes are
    /// writable through it, nothing else can read, map, send or drop them.
    ///
    /// ```compile_fail,E0502
    /// use npshmex_shm::cache;
    /// let mut slot = cache::alloc(100)?;
    /// let bytes = slot.prefix_mut(3)?;
    /// let other = slot.segment().as_slice(); // a second view of those bytes
    /// bytes[0] = other[0];
    /// # Ok::<(), npshmex_shm::ShmError>(())
    /// ```
    pub fn prefix_mut(&mut self, len: usize) -> Result<&mut [u8]> {
        // Invariant: `seg` is only `None` inside `Drop`.
        let seg = self.seg.as_mut().expect("segment present until drop");
        let actual = seg.len();
        let bytes = seg.as_mut_slice()?;
        let prefix = bytes.get_mut(..len).ok_or(ShmError::TooSmall {
            expected: len as u64,
            actual: actual as u64,
        })?;
        self.dirty = self.dirty.max(len);
        Ok(prefix)
    }

    /// Zeroes the bytes from `from` on that may be non-zero (none past
    /// [`Slot::dirty_len`]), so that the segment is zero past `from`; only
    /// as many bytes as were written are touched.
    ///
    /// # Errors
    /// [`ShmError::ReadOnly`] for a read-only mapping with dirty bytes.
    pub fn zero_from(&mut self, from: usize) -> Result<()> {
        let dirty = self.dirty_len();
        if dirty > from {
            self.prefix_mut(dirty)?[from..].fill(0);
            self.dirty = from;
        }
        Ok(())
    }

    /// How many bytes from the start may hold anything but zeros: past them
    /// the segment is zero. A new segment is all zeros (0); a reused one
    /// carries what its earlier users wrote (all of it, unless every write
    /// went through [`Slot::prefix_mut`]).
    pub fn dirty_len(&self) -> usize {
        self.dirty.min(self.segment().len())
    }

    /// The identity of the file.
    pub fn file_key(&self) -> FileKey {
        self.key
    }

    /// Where the segment came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Freezes the segment ([`Segment::freeze`]) holding its first `len`
    /// bytes and zeros after them (a reused segment's older bytes are
    /// cleared first: every reader of the frozen file sees all of it). When
    /// the kernel refuses (another process, or a cache, still maps the file
    /// writable) the first `len` bytes are copied into a new segment, which
    /// is frozen.
    ///
    /// # Errors
    /// [`ShmError::NotSealable`] for files that cannot be sealed, and the
    /// errors of [`alloc`] when a copy is made.
    pub fn freeze(mut self, len: usize) -> Result<Slot> {
        // Whoever maps the frozen file reads all of it: a reused segment's
        // bytes past `len` (this process's earlier values) go first.
        if self.segment().access() == Access::ReadWrite && self.segment().is_exclusive() {
            self.zero_from(len)?;
        }
        let seg = self.seg.take().expect("segment present until drop");
        match seg.try_freeze() {
            Ok(frozen) => {
                self.seg = Some(frozen);
                Ok(self)
            }
            Err((ShmError::NotSealable { reason }, back)) => {
                self.seg = back;
                Err(ShmError::NotSealable { reason })
            }
            Err((_, back)) => {
                // Busy: copy what we still have into a segment of our own.
                let Some(back) = back else {
                    return Err(ShmError::NotSealable {
                        reason: "the segment could not be mapped again after a failed seal",
                    });
                };
                self.seg = Some(back);
                let copy = self.copy_to_new(len)?;
                drop(self);
                copy.freeze_fresh()
            }
        }
    }

    /// Freezes a segment nobody else can map writable (a fresh copy).
    fn freeze_fresh(mut self) -> Result<Slot> {
        let seg = self.seg.take().expect("segment present until drop");
        self.seg = Some(seg.freeze_fresh()?);
        Ok(self)
    }

    /// A copy of the whole segment in a new memfd of this process (never a
    /// reused or recycled one).
    fn copy_to_fresh(&self) -> Result<Slot> {
        let seg = self.segment().sized_copy()?;
        let key = seg.file_key()?;
        let written = seg.len();
        Ok(Slot::own(seg, key, written))
    }

    /// A copy of the first `len` bytes in a new writable segment of this
    /// process ([`alloc`]: reused pages where possible).
    ///
    /// # Errors
    /// As [`alloc`].
    pub fn copy_to_new(&self, len: usize) -> Result<Slot> {
        let src = self.segment().as_slice();
        let len = len.min(src.len());
        let mut copy = alloc(len)?;
        // A reused segment: nothing of its earlier values after the copy.
        copy.zero_from(len)?;
        copy.prefix_mut(len)?.copy_from_slice(&src[..len]);
        Ok(copy)
    }

    /// The descriptor to send for a move of this slot: the slot is used
    /// up; its mapping may stay in the cache, where nothing can reach it
    /// until the lock protocol (or the segment coming back) says the
    /// receiver is done.
    ///
    /// With `trusted`, the lend protocol holds: the receiver keeps the
    /// locked description it gets for as long as it may write the pages,
    /// so a segment allocated here is reused once the lock is free, and a
    /// received one is passed on as it is (its allocator waits for the same
    /// lock). Without it the receiver could release the lock (`flock`
    /// `LOCK_UN`) or re-open the file and keep writing, so the lock proves
    /// nothing: the segment is lent as a new file of this process that it
    /// then forgets (the slot's own when it was allocated here; a copy when
    /// it was received, since its allocator would reuse it).
    pub(crate) fn lend_move(mut self, trusted: bool) -> Result<OwnedFd> {
        if !trusted {
            if self.origin == Origin::Received {
                return self.copy_to_fresh()?.lend_move(false);
            }
            // Unmapped and closed here when `self` drops: nothing of this
            // process can reach the pages again.
            self.no_cache = true;
            return dup(self.segment().raw_fd());
        }
        let seg = self.segment();
        if self.origin == Origin::Own {
            self.lent.store(true, Ordering::Relaxed);
        }
        match self.origin {
            Origin::Own => match reopen_locked(seg.raw_fd()) {
                Ok(fd) => Ok(fd),
                Err(_) => {
                    self.lent_unlocked.store(true, Ordering::Relaxed);
                    dup(seg.raw_fd())
                }
            },
            Origin::Received => {
                self.resent.store(true, Ordering::Relaxed);
                dup(seg.raw_fd())
            }
        }
    }
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned().map_err(|e| ShmError::io("dup", e))
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(seg) = self.seg.take() else { return };
        if self.pid != crate::pid::current() {
            // Inherited through fork: the fd may already be closed by the
            // child's setup (closing it again would abort); leave the handle
            // as the fork left it.
            std::mem::forget(seg);
            return;
        }
        if self.no_cache {
            return;
        }
        let seg = if self.origin == Origin::Received
            && !self.resent.load(Ordering::Relaxed)
            && seg.access() == Access::ReadWrite
            && seg.is_exclusive()
            && seg.len() >= MIN_CACHED
        {
            match stash_recycled(seg, self.key) {
                Some(seg) => seg,
                None => return,
            }
        } else {
            seg
        };
        if self.origin == Origin::Own
            && !self.lent.load(Ordering::Relaxed)
            && !self.lent_unlocked.load(Ordering::Relaxed)
            && seg.is_exclusive()
            && seg.access() == Access::ReadWrite
        {
            if let Some(class) = small_class(seg.len()).filter(|&c| c == seg.len()) {
                let dirty = self.dirty.min(seg.len());
                put_small(
                    class,
                    FreeSmall {
                        seg,
                        key: self.key,
                        dirty,
                    },
                );
                return;
            }
        }
        let entry = Entry {
            seg,
            key: self.key,
            origin: self.origin,
            reusable: !self.lent_unlocked.load(Ordering::Relaxed),
        };
        if entry.worth_keeping(self.resent.load(Ordering::Relaxed)) {
            put(entry);
        }
    }
}

#[derive(Debug)]
struct Entry {
    seg: Segment,
    key: FileKey,
    origin: Origin,
    reusable: bool,
}

impl Entry {
    fn worth_keeping(&self, resent: bool) -> bool {
        if self.seg.is_vouched() || self.seg.len() < MIN_CACHED {
            return false;
        }
        match (self.origin, self.seg.access()) {
            (_, Access::CopyOnWrite) => false,
            (Origin::Own, _) => true,
            (Origin::Received, Access::ReadOnly) => true,
            (Origin::Received, Access::ReadWrite) => resent,
        }
    }

    /// Whether this process may overwrite the segment now.
    fn exclusive(&self) -> bool {
        self.origin == Origin::Own
            && self.reusable
            && self.seg.access() == Access::ReadWrite
            && try_exclusive(self.seg.raw_fd())
    }
}

struct Cache {
    entries: Vec<Entry>,
    bytes: usize,
    /// `None`: [`CacheLimits::default`].
    limits: Option<CacheLimits>,
    /// The process the entries belong to (0: none yet).
    pid: u32,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: Vec::new(),
    bytes: 0,
    limits: None,
    pid: 0,
});

fn cache() -> MutexGuard<'static, Cache> {
    // A panic while holding the lock leaves the cache consistent (every
    // mutation is a single push/remove), so a poisoned lock is still usable.
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let me = crate::pid::current();
    if c.pid != me {
        // A forked child: the parent's entries are the parent's (it may reuse
        // them at any time), never this process's. Their fds may already be
        // closed by the child's setup (closing again would abort): leave them
        // as the fork left them.
        c.pid = me;
        c.bytes = 0;
        std::mem::forget(std::mem::take(&mut c.entries));
    }
    c
}

impl Cache {
    fn limits(&self) -> CacheLimits {
        self.limits.unwrap_or_default()
    }

    fn remove(&mut self, i: usize) -> Entry {
        let e = self.entries.remove(i);
        self.bytes -= e.seg.len();
        e
    }

    /// Evicts the oldest entries until within limits; returns them so they are
    /// unmapped after the lock is released.
    fn trim(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        let limits = self.limits();
        while !self.entries.is_empty()
            && (self.entries.len() > limits.entries || self.bytes > limits.bytes)
        {
            out.push(self.remove(0));
        }
        out
    }
}

fn put(entry: Entry) {
    let evicted = {
        let mut c = cache();
        let limits = c.limits();
        if entry.seg.len() > limits.bytes || limits.entries == 0 {
            Vec::from([entry])
        } else {
            c.bytes += entry.seg.len();
            c.entries.push(entry);
            c.trim()
        }
    };
    drop(evicted);
}

/// A small segment on a free list.
struct FreeSmall {
    seg: Segment,
    key: FileKey,
    /// Bytes from the start its users may have written (zero past them).
    dirty: usize,
}

/// The small-segment free lists: by size class, segments this process made
/// and never let out of its hands (no fd sent, never sealed, mapped only
/// here), so reusing one needs no system call and no lock protocol.
struct SmallPool {
    /// `classes[i]`: segments of `SMALL_MIN << i` bytes.
    classes: Vec<Vec<FreeSmall>>,
    /// The process the entries belong to (0: none yet).
    pid: u32,
}

static SMALL: Mutex<SmallPool> = Mutex::new(SmallPool {
    classes: Vec::new(),
    pid: 0,
});

fn small_pool() -> MutexGuard<'static, SmallPool> {
    // Every mutation is a single push/pop: a poisoned lock is consistent.
    let mut p = SMALL.lock().unwrap_or_else(|p| p.into_inner());
    let me = crate::pid::current();
    if p.pid != me {
        // A forked child: the entries' mappings were not inherited
        // (MADV_DONTFORK) and their fds may be closed already; they are
        // the parent's. Leave them as the fork left them.
        p.pid = me;
        std::mem::forget(std::mem::take(&mut p.classes));
    }
    if p.classes.is_empty() {
        let n = (SMALL_MAX / SMALL_MIN).trailing_zeros() as usize + 1;
        p.classes = (0..n).map(|_| Vec::new()).collect();
    }
    p
}

/// The size class of a small segment of `len` bytes, `None` past
/// [`SMALL_MAX`].
fn small_class(len: usize) -> Option<usize> {
    (len <= SMALL_MAX).then(|| len.max(SMALL_MIN).next_power_of_two())
}

fn class_index(class: usize) -> usize {
    (class / SMALL_MIN).trailing_zeros() as usize
}

/// `set_limits` with zero entries: no segment is kept, small ones included
/// (read without the cache lock on every small drop).
static NO_REUSE: AtomicBool = AtomicBool::new(false);

fn put_small(class: usize, free: FreeSmall) {
    if NO_REUSE.load(Ordering::Relaxed) {
        // A zero limit disables every kind of reuse.
        return;
    }
    let mut p = small_pool();
    let list = &mut p.classes[class_index(class)];
    if list.len() < SMALL_PER_CLASS {
        list.push(free);
        return;
    }
    drop(p);
    drop(free);
}

/// Allocates a segment of at least `len` bytes: a reusable cached one (pages
/// already faulted, old contents) or a new memfd sealed against resizing.
///
/// Small segments (up to [`SMALL_MAX`]) come in power-of-two size classes
/// from 4 KiB and go back to a per-class free list when their last handle
/// drops, unless their fd was ever sent or they were sealed: in a steady
/// state (a task's small arguments and results) they cost no system call.
///
/// # Errors
/// As [`Segment::anonymous`].
pub fn alloc(len: usize) -> Result<Slot> {
    if let Some(class) = small_class(len) {
        let reused = small_pool().classes[class_index(class)].pop();
        if let Some(f) = reused {
            return Ok(Slot::own(f.seg, f.key, f.dirty));
        }
        let seg = Segment::anonymous(class)?;
        seg.seal(Seals::SIZE)?;
        let key = seg.file_key()?;
        return Ok(Slot::own(seg, key, 0));
    }
    if len >= MIN_CACHED {
        if let Some((seg, key)) = take_recycled(len) {
            // Received by a proven move, so writable here alone; when it is
            // let go (unsent, or after it moved on) it goes back to its
            // allocator instead of this cache.
            let mut slot = Slot::new(seg, key, Origin::Received);
            slot.no_cache = true;
            return Ok(slot);
        }
        let mut c = cache();
        let found = c
            .entries
            .iter()
            .position(|e| about(e.seg.len(), len) && e.exclusive());
        if let Some(i) = found {
            let e = c.remove(i);
            drop(c);
            let mut slot = Slot::new(e.seg, e.key, Origin::Own);
            *slot.lent_unlocked.get_mut() = !e.reusable;
            return Ok(slot);
        }
    }
    let seg = Segment::anonymous(len)?;
    seg.seal(Seals::SIZE)?;
    if len >= HUGEPAGE_FROM {
        seg.advise_hugepage();
    }
    let key = seg.file_key()?;
    Ok(Slot::own(seg, key, 0))
}

thread_local! {
    /// Segments this thread received by a proven move and let go inside a
    /// [`recycle_scope`], kept for [`alloc`] until the scope ends; `None`
    /// outside a scope.
    static RECYCLED: RefCell<Option<Recycled>> = const { RefCell::new(None) };
}

/// The segments of one [`recycle_scope`].
struct Recycled {
    /// The process that opened the scope: a child forked inside it does not
    /// have the mappings (`MADV_DONTFORK`) and must not touch them.
    pid: u32,
    segs: Vec<(Segment, FileKey)>,
}

impl Recycled {
    /// Whether this process opened the scope (not a child forked in it).
    fn here(&self) -> bool {
        self.pid == crate::pid::current()
    }

    fn mine(&mut self) -> Option<&mut Vec<(Segment, FileKey)>> {
        self.here().then_some(&mut self.segs)
    }
}

/// Keeps a received, exclusively owned segment for reuse in the current
/// [`recycle_scope`]; gives it back when there is none.
fn stash_recycled(seg: Segment, key: FileKey) -> Option<Segment> {
    RECYCLED.with(|r| match r.borrow_mut().as_mut().and_then(Recycled::mine) {
        Some(v) => {
            v.push((seg, key));
            None
        }
        None => Some(seg),
    })
}

/// Whether a kept segment of `have` bytes may serve a request for `len`:
/// large enough, and at most a quarter larger.
fn about(have: usize, len: usize) -> bool {
    have >= len && have - len <= len / 4
}

/// A recycled segment of about `len` bytes ([`about`]).
fn take_recycled(len: usize) -> Option<(Segment, FileKey)> {
    RECYCLED.with(|r| {
        let mut r = r.borrow_mut();
        let v = r.as_mut().and_then(Recycled::mine)?;
        let i = v.iter().position(|(s, _)| about(s.len(), len))?;
        Some(v.swap_remove(i))
    })
}

/// Runs `f` with received segments recycled: a segment this thread
/// received by a proven move (writable, and nobody else's) and let go
/// inside `f` is kept until `f` returns instead of being unmapped, and
/// [`alloc`] inside `f` hands it out again for a new segment of about its
/// size. When `f` returns (or unwinds) whatever was not reused is let go,
/// so its allocator can overwrite it again.
///
/// A pool worker runs each task in one. The drop-in path copies its argument
/// out of the caller's segment and writes its result, of the same size,
/// into those very pages, which go back to the caller by a move: one
/// segment per call instead of two, no fresh pages to fault in the worker
/// and no fresh mapping in the caller. Scopes nest; an inner one starts
/// empty.
///
/// ```
/// use npshmex_shm::cache;
/// let n = cache::recycle_scope(|| cache::alloc(1 << 20).map(|s| s.segment().len()));
/// assert_eq!(n?, 1 << 20);
/// # Ok::<(), npshmex_shm::ShmError>(())
/// ```
pub fn recycle_scope<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Recycled>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let mine = RECYCLED.with(|r| std::mem::replace(&mut *r.borrow_mut(), self.0.take()));
            match mine {
                // Unmapped with no borrow of the cell held.
                Some(m) if m.here() => drop(m),
                // A forked child's copy: the mappings are not its own.
                other => std::mem::forget(other),
            }
        }
    }
    let outer = RECYCLED.with(|r| {
        r.borrow_mut().replace(Recycled {
            pid: crate::pid::current(),
            segs: Vec::new(),
        })
    });
    let _restore = Restore(outer);
    f()
}

/// [`alloc`] for a segment that will be sealed right away (a file format
/// whose readers want the file to end where the segment ends, such as an
/// Arrow IPC file with its footer at the end): a small one is made at
/// exactly `len` bytes instead of a size class (sealed, it could never go
/// back to the free list anyway); larger ones come from the cache as with
/// [`alloc`], at least `len` bytes.
///
/// # Errors
/// As [`Segment::anonymous`].
pub fn alloc_exact(len: usize) -> Result<Slot> {
    if len > SMALL_MAX {
        return alloc(len);
    }
    let seg = Segment::anonymous(len)?;
    seg.seal(Seals::SIZE)?;
    let key = seg.file_key()?;
    Ok(Slot::own(seg, key, 0))
}

/// Takes a cached mapping of the file `key` with the given access, if any
/// (a received segment that this process already maps).
pub(crate) fn take_mapping(key: FileKey, access: Access) -> Option<Slot> {
    if access == Access::CopyOnWrite {
        return None;
    }
    let mut c = cache();
    let i = c
        .entries
        .iter()
        .position(|e| e.key == key && e.seg.access() == access)?;
    let e = c.remove(i);
    drop(c);
    let mut slot = Slot::new(e.seg, e.key, e.origin);
    *slot.lent_unlocked.get_mut() = !e.reusable;
    Some(slot)
}

/// Sets the bounds of this process's segment cache, evicting what exceeds them.
pub fn set_limits(limits: CacheLimits) {
    let evicted = {
        let mut c = cache();
        c.limits = Some(limits);
        NO_REUSE.store(limits.entries == 0, Ordering::Relaxed);
        c.trim()
    };
    drop(evicted);
}

/// The bounds of this process's segment cache.
pub fn limits() -> CacheLimits {
    cache().limits()
}

/// What this process's segment cache holds.
pub fn stats() -> CacheStats {
    let (entries, bytes) = {
        let c = cache();
        (c.entries.len(), c.bytes)
    };
    let p = small_pool();
    let (mut small_entries, mut small_bytes) = (0, 0);
    for (i, list) in p.classes.iter().enumerate() {
        small_entries += list.len();
        small_bytes += list.len() * (SMALL_MIN << i);
    }
    CacheStats {
        entries,
        bytes,
        small_entries,
        small_bytes,
    }
}

/// Unmaps and closes every cached segment (small ones included); returns
/// how many there were.
pub fn clear() -> usize {
    let all = {
        let mut c = cache();
        c.bytes = 0;
        std::mem::take(&mut c.entries)
    };
    let small = std::mem::take(&mut small_pool().classes);
    let n = all.len() + small.iter().map(Vec::len).sum::<usize>();
    drop(all);
    drop(small);
    n
}

/// A new open file description of the memfd behind `fd`, with a shared lock.
fn reopen_locked(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .or_else(|_| OpenOptions::new().read(true).open(&path))?;
    rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockShared)?;
    Ok(file.into())
}

/// Whether no other open file description of this file holds a lock: takes
/// an exclusive lock without blocking and releases it at once.
fn try_exclusive(fd: BorrowedFd<'_>) -> bool {
    if rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive).is_err() {
        return false;
    }
    // Releasing cannot fail on a valid fd; if it did, the lock would only
    // stop this segment from being lent with a shared lock later (lend falls
    // back to an unlocked dup and marks it unreusable).
    let _ = rustix::fs::flock(fd, FlockOperation::Unlock);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oob::{self, Transfer};
    use std::sync::Arc;

    /// Sends `slot` as a move to a receiver that keeps to the lend protocol
    /// and returns the lent fd (what that receiver holds).
    fn lend(slot: Slot) -> Result<OwnedFd> {
        lend_to(slot, true)
    }

    /// Sends `slot` as a move; `trusted`: through
    /// [`oob::Collected::finish_trusted`], else through the safe `finish`.
    fn lend_to(slot: Slot, trusted: bool) -> Result<OwnedFd> {
        let slot = Arc::new(slot);
        let (r, collected) = oob::collect(|| oob::send(&slot, Transfer::Move));
        r?;
        drop(slot);
        let out = if trusted {
            // SAFETY: the tests keep the fd as they got it (or map it) and
            // only ever close it: the lock is never released early.
            unsafe { collected.finish_trusted()? }
        } else {
            collected.finish()?
        };
        let mut fds = out.into_fds();
        fds.pop().ok_or(ShmError::NoCollector)
    }

    #[test]
    fn a_receiver_outside_the_protocol_cannot_get_pages_reused() -> Result<()> {
        // Lent through the safe finish, a receiver may drop the lock, or
        // re-open the file, and keep writing: the sender must never hand
        // those pages out again (issue: a hostile peer writing under a
        // live borrow of a reused segment).
        let n = (3 << 20) + 12345;
        for reopen in [false, true] {
            let mut a = alloc(n)?;
            a.segment_mut().as_mut_slice()?.fill(1);
            let key = a.file_key();
            let lent = lend_to(a, false)?;
            let peer: OwnedFd = if reopen {
                let path = format!("/proc/self/fd/{}", lent.as_raw_fd());
                let again = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| ShmError::io("reopen", e))?;
                drop(lent);
                again.into()
            } else {
                rustix::fs::flock(&lent, FlockOperation::Unlock)
                    .map_err(|e| ShmError::io("flock", e.into()))?;
                lent
            };
            let b = alloc(n)?;
            assert_ne!(
                b.file_key(),
                key,
                "pages reused while a peer can write them"
            );
            assert!(take_mapping(key, Access::ReadWrite).is_none());
            assert!(take_mapping(key, Access::ReadOnly).is_none());
            // And the peer holds a file nothing here maps writable: the
            // kernel grants the write seal.
            rustix::fs::fcntl_add_seals(&peer, rustix::fs::SealFlags::WRITE)
                .map_err(|e| ShmError::io("seal", e.into()))?;
            drop(b);
        }
        Ok(())
    }

    #[test]
    fn a_received_move_passed_on_unsafely_goes_as_a_copy() -> Result<()> {
        // A segment this process received by a move belongs to its
        // allocator, which reuses it once the lent description is closed:
        // lent on through the safe finish it must go as a copy, or its new
        // holder could release that lock and write after the reuse.
        let n = (2 << 20) + 333;
        let mut a = alloc(n)?;
        a.segment_mut().as_mut_slice()?[..4].copy_from_slice(b"mine");
        let key = a.file_key();
        let fd = lend(a)?;
        let got = Slot::new(
            Segment::from_moved_fd(fd, Access::ReadWrite)?,
            key,
            Origin::Received,
        );
        let passed = lend_to(got, false)?;
        rustix::fs::fcntl_add_seals(&passed, rustix::fs::SealFlags::WRITE)
            .map_err(|e| ShmError::io("seal", e.into()))?;
        let copy = Segment::from_fd_sealed(passed, Access::ReadOnly, 0)?;
        assert_ne!(copy.file_key()?, key, "went as a copy");
        assert_eq!(&copy.as_slice()[..4], b"mine");
        Ok(())
    }

    #[test]
    fn segments_are_reused_only_after_the_receiver_let_go() -> Result<()> {
        // A size no other test uses, so the shared cache holds no candidate.
        let n = (3 << 20) + 4099;
        let mut a = alloc(n)?;
        assert_eq!(a.dirty_len(), 0, "a new segment has nothing written");
        a.segment_mut().as_mut_slice()?.fill(7);
        let first = a.file_key();
        let held = lend(a)?;
        let b = alloc(n)?;
        assert_ne!(b.file_key(), first, "reused while a receiver holds it");
        drop(held);
        let c = alloc(n)?;
        assert_eq!(c.file_key(), first, "reused once the receiver let go");
        assert_eq!(
            c.dirty_len(),
            c.segment().len(),
            "reused: may hold anything"
        );
        assert!(c.segment().is_exclusive());
        drop(b);
        Ok(())
    }

    #[test]
    fn a_reused_small_segment_knows_how_far_it_was_written() -> Result<()> {
        // The 16 KiB class, which no other test of this module uses.
        let len = 16 << 10;
        let fresh_slot = || -> Result<Slot> {
            let seg = Segment::anonymous(len)?;
            seg.seal(Seals::SIZE)?;
            let key = seg.file_key()?;
            Ok(Slot::own(seg, key, 0))
        };
        // Written through a prefix: that much, and no more, is dirty.
        let mut a = fresh_slot()?;
        assert_eq!(a.dirty_len(), 0);
        a.prefix_mut(100)?.fill(1);
        a.prefix_mut(10)?.fill(2);
        assert_eq!(a.dirty_len(), 100);
        a.zero_from(50)?;
        assert_eq!(a.dirty_len(), 50);
        assert!(a.segment().as_slice()[50..].iter().all(|&x| x == 0));
        a.prefix_mut(100)?.fill(1);
        assert!(matches!(
            a.prefix_mut(len + 1),
            Err(ShmError::TooSmall { .. })
        ));
        let key = a.file_key();
        drop(a);
        // Whoever used a segment from the free list, every byte past what
        // it says was written is zero (what an inline receive relies on).
        let clean_past_dirty = |s: &Slot| {
            let dirty = s.dirty_len();
            assert!(dirty <= s.segment().len());
            assert!(s.segment().as_slice()[dirty..].iter().all(|&x| x == 0));
        };
        let mut b = alloc(9000)?;
        clean_past_dirty(&b);
        // Exactly our extent when it is ours (under `cargo test` another
        // thread of this binary may have popped it first; under nextest, as
        // in CI, nothing else runs in this process and it always is).
        if b.file_key() == key {
            assert_eq!(b.dirty_len(), 100);
        }
        // Written through the whole segment: all of it is dirty, and stays
        // so through the free list.
        b.segment_mut().as_mut_slice()?.fill(3);
        assert_eq!(b.dirty_len(), len);
        let key = b.file_key();
        drop(b);
        let c = alloc(9000)?;
        clean_past_dirty(&c);
        if c.file_key() == key {
            assert_eq!(c.dirty_len(), len);
        }
        Ok(())
    }

    #[test]
    fn a_moved_segment_coming_back_reuses_its_mapping() -> Result<()> {
        let n = (5 << 20) + 8191;
        let a = alloc(n)?;
        let first = a.file_key();
        let ptr = a.segment().as_ptr();
        let fd = lend(a)?;
        let back = take_mapping(FileKey::of(fd.as_fd())?, Access::ReadWrite)
            .ok_or(ShmError::NoCollector)?;
        assert_eq!(back.file_key(), first);
        assert_eq!(back.origin(), Origin::Own, "came back to its allocator");
        assert_eq!(back.segment().as_ptr(), ptr, "same mapping, no new faults");
        Ok(())
    }

    #[test]
    fn lock_protocol_tracks_other_descriptions() -> Result<()> {
        let seg = Segment::anonymous(4096)?;
        assert!(try_exclusive(seg.raw_fd()));
        let lent = reopen_locked(seg.raw_fd()).map_err(|e| ShmError::io("reopen", e))?;
        assert!(
            !try_exclusive(seg.raw_fd()),
            "a lent description blocks reuse"
        );
        let dup = lent.try_clone().map_err(|e| ShmError::io("dup", e))?;
        drop(lent);
        assert!(!try_exclusive(seg.raw_fd()), "a dup carries the same lock");
        let mapped = Segment::from_moved_fd(dup, Access::ReadOnly)?;
        assert!(
            !try_exclusive(seg.raw_fd()),
            "the receiver's segment holds it"
        );
        drop(mapped);
        assert!(try_exclusive(seg.raw_fd()), "all gone: reusable again");
        Ok(())
    }

    #[test]
    fn freezing_a_segment_mapped_elsewhere_copies_it() -> Result<()> {
        let n = (2 << 20) + 77;
        let mut a = alloc(n)?;
        a.segment_mut().as_mut_slice()?[..4].copy_from_slice(b"data");
        let key = a.file_key();
        // A receiver maps it writable: the kernel refuses the write seal.
        let fd = lend(a)?;
        let peer = Segment::from_moved_fd(fd, Access::ReadWrite)?;
        let back = take_mapping(key, Access::ReadWrite).ok_or(ShmError::NoCollector)?;
        let frozen = back.freeze(n)?;
        assert_ne!(frozen.file_key(), key, "frozen as a copy");
        assert_eq!(&frozen.segment().as_slice()[..4], b"data");
        assert!(frozen.segment().seals()?.contains(Seals::WRITE));
        drop(peer);
        Ok(())
    }
}
