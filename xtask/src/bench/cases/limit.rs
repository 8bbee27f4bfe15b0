//! The physical limits the targets are judged against, measured in the same
//! run: a memcpy into touched memory, the first touch of fresh shared pages,
//! and a cross-process round trip by socket and by spinning on shared memory.
//!
//! The two round trips fork a child that does nothing but answer; forking
//! (rather than re-executing) keeps the child's setup out of the figure. The
//! runner is single-threaded when it forks, and the child only makes
//! async-signal-safe calls (read, write, atomics, `_exit`).

use super::{ms_since, repeat, Scale};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
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
    repeat(scale, || {
        let t = Instant::now();
        let map = FreshMap::new(len)?;
        let page = page_size();
        let mut off = 0;
        while off < len {
            // SAFETY: `off < len`, and `map.ptr` is a writable mapping of `len` bytes.
            unsafe { map.ptr.add(off).write_volatile(1) };
            off += page;
        }
        let dt = ms_since(t);
        drop(map);
        Ok(dt)
    })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096).max(1)
}

/// A memfd of `len` bytes mapped read-write and shared.
struct FreshMap {
    ptr: *mut u8,
    len: usize,
    fd: libc::c_int,
}

impl FreshMap {
    fn new(len: usize) -> Result<FreshMap> {
        // SAFETY: the name is NUL-terminated; the flags are valid.
        let fd = unsafe { libc::memfd_create(c"npshmex-bench".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("memfd_create");
        }
        let off = libc::off_t::try_from(len).context("length")?;
        // SAFETY: fd is the memfd just created and owned here.
        if unsafe { libc::ftruncate(fd, off) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: fd is open and owned here; closed once.
            unsafe { libc::close(fd) };
            return Err(e).context("ftruncate");
        }
        // SAFETY: a new shared mapping of an fd of at least `len` bytes; no
        // existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            // SAFETY: fd is open and owned here; closed once.
            unsafe { libc::close(fd) };
            return Err(e).context("mmap");
        }
        Ok(FreshMap {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }
}

impl Drop for FreshMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in `new`, unmapped once; fd is
        // owned and closed once. Errors are ignored: nothing to do about them.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
            libc::close(self.fd);
        }
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

/// Two processes ping-pong a counter in a shared page, both spinning, µs per round trip.
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
            if done.is_multiple_of(1024) && t.elapsed() > SAMPLE_BUDGET {
                break;
            }
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / done.max(1) as f64)
    });
    counter.store(u64::MAX, Ordering::Release);
    child.reap()?;
    drop(page);
    out
}

/// One anonymous shared page, created before the fork so both processes map it.
struct SharedPage {
    ptr: *mut libc::c_void,
}

impl SharedPage {
    fn new() -> Result<SharedPage> {
        // SAFETY: a new anonymous shared mapping of one page; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap shared page");
        }
        Ok(SharedPage { ptr })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned (so aligned for u64), zero-filled
        // (a valid AtomicU64), lives as long as `self`, and is only accessed
        // atomically by both processes.
        unsafe { &*self.ptr.cast::<AtomicU64>() }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; an error is ignored.
        unsafe { libc::munmap(self.ptr, 4096) };
    }
}

/// A forked child; `reap` waits for it, `Drop` kills it if it was not reaped.
struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

/// Forks; the child runs `body` and exits with `_exit(0)` (no destructors,
/// no atexit handlers: they belong to the parent).
fn fork_child(body: impl FnOnce()) -> Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the runner is single-threaded here, and the child only runs
    // `body` (read/write/atomics) and `_exit`.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            // SAFETY: prctl/getppid have no memory preconditions. The child
            // must not outlive a parent killed mid-run (it would spin forever).
            let orphan = unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            };
            if !orphan {
                body();
            }
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        pid => Ok(Child { pid, reaped: false }),
    }
}

impl Child {
    fn reap(mut self) -> Result<()> {
        let mut status = 0;
        // SAFETY: pid is our child, not yet reaped; status is a valid out-pointer.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.reaped = true;
        if rc != self.pid {
            return Err(std::io::Error::last_os_error()).context("waitpid");
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: pid is our unreaped child (its pid cannot be reused before
            // we wait for it); the status is not needed.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
