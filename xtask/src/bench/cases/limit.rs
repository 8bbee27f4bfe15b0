//! The physical limits the targets are judged against, measured in the same
//! run: a memcpy into touched memory, the first touch of fresh shared pages,
//! and a cross-process round trip by socket and by spinning on shared memory.
//!
//! The two round trips fork a child that does nothing but answer; forking
//! (rather than re-executing) keeps the child's setup out of the figure and
//! lets the spinning pair share an anonymous `MAP_SHARED` page made before
//! the fork. The runner is single-threaded when it forks, and the child only
//! makes async-signal-safe calls (read, write, atomics, `_exit`).
//!
//! System calls go through rustix; what stays `unsafe` is creating, viewing
//! and removing the two mappings, and `fork`/`_exit` (see [`fork_child`]).

use super::{ms_since, repeat, Scale};
use anyhow::{bail, Context, Result};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use rustix::process::{
    getpid, getppid, kill_process, set_parent_process_death_signal, waitpid, Pid, Signal,
    WaitOptions,
};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a single latency sample may take: on a loaded machine a spinning
/// peer can be descheduled for whole time slices, and a sample is then cut
/// short rather than left to run for minutes.
const SAMPLE_BUDGET: Duration = Duration::from_secs(1);

/// Copy of the seed size into memory that is already mapped and touched, ms.
pub fn memcpy(scale: &Scale) -> Result<Vec<f64>> {
    let src = vec![1u8; scale.seed_bytes()];
    let mut dst = vec![2u8; scale.seed_bytes()];
    repeat(scale, || {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        let dt = ms_since(t);
        std::hint::black_box(&mut dst);
        Ok(dt)
    })
}

/// Create a memfd of the seed size, map it, write one byte per page, ms
/// (the unmap and close happen after the clock stops).
pub fn first_touch(scale: &Scale) -> Result<Vec<f64>> {
    let len = scale.seed_bytes();
    let page = rustix::param::page_size();
    repeat(scale, || {
        let t = Instant::now();
        let mut map = FreshMap::new(len)?;
        let bytes = map.as_mut_slice();
        for off in (0..len).step_by(page) {
            bytes[off] = 1;
        }
        std::hint::black_box(bytes);
        let dt = ms_since(t);
        drop(map);
        Ok(dt)
    })
}

/// A memfd of `len` bytes mapped read-write and shared. The memfd never
/// leaves this process, so the mapping is the only way to its pages.
struct FreshMap {
    ptr: NonNull<u8>,
    len: usize,
    /// Kept open for the life of the mapping (closed after the unmap).
    _fd: OwnedFd,
}

impl FreshMap {
    fn new(len: usize) -> Result<FreshMap> {
        let fd = memfd_create("npshmex-bench", MemfdFlags::CLOEXEC).context("memfd_create")?;
        ftruncate(&fd, u64::try_from(len).context("length")?).context("ftruncate")?;
        // SAFETY: a new shared mapping of the first `len` bytes of a memfd
        // just sized to `len`; the kernel picks the address, so no existing
        // memory is affected.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .context("mmap")?;
        let ptr = NonNull::new(ptr.cast()).context("mmap returned null")?;
        Ok(FreshMap { ptr, len, _fd: fd })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live read-write mapping of `len` bytes that
        // lives as long as `self`; no other process maps the memfd and no
        // other view of it exists while `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for FreshMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no slice of it
        // outlives the `&mut self` borrow it came from. An error is ignored:
        // nothing could be done about it here, and the fd still closes.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// 64-byte ping-pong over a unix socket pair between two processes, µs per round trip.
pub fn socket_rtt(scale: &Scale) -> Result<Vec<f64>> {
    let (mut near, far) = UnixStream::pair().context("socketpair")?;
    let child = fork_child(|| {
        let mut far = &far;
        let mut buf = [0u8; 64];
        while far.read_exact(&mut buf).is_ok() {
            if far.write_all(&buf).is_err() {
                break;
            }
        }
    })?;
    drop(far);
    let rounds = scale.roundtrips * 5;
    let out = repeat(scale, || {
        let mut buf = [7u8; 64];
        let t = Instant::now();
        let mut done = 0usize;
        while done < rounds && t.elapsed() < SAMPLE_BUDGET {
            near.write_all(&buf).context("ping")?;
            near.read_exact(&mut buf).context("pong")?;
            done += 1;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / done.max(1) as f64)
    });
    // The child holds a copy of `near` too (fork), so closing ours would not
    // end its reads: shutting the connection down does.
    let _ = near.shutdown(std::net::Shutdown::Both);
    drop(near);
    child.reap()?;
    out
}

/// Round trips per timed stretch of [`spin_rtt`].
const STRETCH: usize = 1024;

/// Two processes ping-pong a counter in a shared page, both spinning, µs per
/// round trip: each sample is its fastest stretch of [`STRETCH`] round trips.
/// A spinning pair needs both cores at once; on a shared machine one of them
/// is descheduled now and then, and a whole time slice added to the average
/// says nothing about the limit this case stands for (the floor under every
/// cross-process round trip).
pub fn spin_rtt(scale: &Scale) -> Result<Vec<f64>> {
    let page = SharedPage::new()?;
    let counter = page.counter();
    let child = fork_child(|| {
        // Odd values are pings, the next even value the pong; u64::MAX: stop.
        let mut expect = 1u64;
        loop {
            let v = counter.load(Ordering::Acquire);
            if v == u64::MAX {
                break;
            }
            if v == expect {
                counter.store(expect + 1, Ordering::Release);
                expect += 2;
            } else {
                std::hint::spin_loop();
            }
        }
    })?;
    let rounds = scale.roundtrips * 500;
    let mut next = 1u64;
    let out = repeat(scale, || {
        let t = Instant::now();
        let mut stretch = Instant::now();
        let mut best = f64::INFINITY;
        let mut done = 0usize;
        while done < rounds {
            counter.store(next, Ordering::Release);
            let mut spins = 0u32;
            while counter.load(Ordering::Acquire) != next + 1 {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1 << 20) && t.elapsed() > SAMPLE_BUDGET * 10 {
                    bail!("the spinning child stopped answering");
                }
            }
            next += 2;
            done += 1;
            if done.is_multiple_of(STRETCH) {
                best = best.min(stretch.elapsed().as_secs_f64() * 1e6 / STRETCH as f64);
                stretch = Instant::now();
                if t.elapsed() > SAMPLE_BUDGET {
                    break;
                }
            }
        }
        // Fewer round trips than one stretch (never at the sizes used): the average.
        Ok(if best.is_finite() {
            best
        } else {
            t.elapsed().as_secs_f64() * 1e6 / done.max(1) as f64
        })
    });
    counter.store(u64::MAX, Ordering::Release);
    child.reap()?;
    drop(page);
    out
}

/// One anonymous shared page, created before the fork so both processes map it.
struct SharedPage {
    ptr: NonNull<AtomicU64>,
}

/// The size of the [`SharedPage`] mapping (the kernel rounds up to a page).
const SHARED_LEN: usize = 4096;

impl SharedPage {
    fn new() -> Result<SharedPage> {
        // SAFETY: a new anonymous shared mapping of one page at an address
        // the kernel picks; no existing memory is affected.
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                SHARED_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )
        }
        .context("mmap shared page")?;
        let ptr = NonNull::new(ptr.cast()).context("mmap returned null")?;
        Ok(SharedPage { ptr })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned (so aligned for u64), zero-filled
        // (a valid AtomicU64), lives as long as `self`, and is only accessed
        // atomically by both processes.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the `&AtomicU64`
        // borrows of it end with `self`. An error is ignored: nothing to do.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), SHARED_LEN) };
    }
}

/// A forked child; `reap` waits for it, `Drop` kills it if it was not reaped.
struct Child {
    pid: Pid,
    reaped: bool,
}

/// Forks; the child runs `body` and exits with `_exit(0)` (no destructors,
/// no atexit handlers: they belong to the parent).
///
/// `fork` and `_exit` are the two raw libc calls left in the xtask: rustix
/// wraps neither for programs that run on libc (its `kernel_fork` and
/// `exit_group` live in a hidden runtime API for libc replacements, and
/// bypass libc's own fork handling).
fn fork_child(body: impl FnOnce()) -> Result<Child> {
    let parent = getpid();
    // SAFETY: the runner is single-threaded here, and the child only runs
    // `body` (read/write/atomics: no allocation, no locks) and `_exit`.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            // The child must not outlive a parent killed mid-run (it would
            // spin forever); the parent may have died before the prctl.
            let orphan = set_parent_process_death_signal(Some(Signal::KILL)).is_err()
                || getppid() != Some(parent);
            if !orphan {
                body();
            }
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        pid => Ok(Child {
            pid: Pid::from_raw(pid).context("fork returned a bad pid")?,
            reaped: false,
        }),
    }
}

impl Child {
    fn reap(mut self) -> Result<()> {
        self.reaped = true;
        waitpid(Some(self.pid), WaitOptions::empty()).context("waitpid")?;
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // The pid is our unreaped child: it cannot be reused before we
            // wait for it. Errors leave nothing to clean up.
            let _ = kill_process(self.pid, Signal::KILL);
            let _ = waitpid(Some(self.pid), WaitOptions::empty());
        }
    }
}
