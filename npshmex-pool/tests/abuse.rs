//! Hostile tasks and hostile timing: a task that exits 0, forks, or closes
//! every fd; results that fail to encode or decode (or panic decoding);
//! futures dropped unwaited; the pool dropped inside a done callback;
//! workers `kill -9`ed at random moments while tasks with fds and payloads
//! larger than `inline_max` are in flight. Each must fail at most the tasks
//! involved, with a typed error, never hang, and leak nothing.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use npshmex_pool::{ProcessPoolExecutor, TaskError, WorkerExit};
use npshmex_testkit::{FdSegment, LeakCheck, ProcExt};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Role of this binary run again by `killing_the_parent_at_random_moments`.
const ROLE: &str = "NPSHMEX_POOL_ABUSE_ROLE";

#[ctor::ctor]
fn role() {
    // Workers (of the tests and of the parent role) become workers here.
    npshmex_pool::init();
    if let Ok(r) = std::env::var(ROLE) {
        std::process::exit(busy_parent(&r));
    }
    if std::env::var_os(CLOSED_STDERR_ROLE).is_some() {
        std::process::exit(panics_with_stderr_closed());
    }
}

/// Role of this binary run again by `panics_are_reported_with_stderr_closed`.
const CLOSED_STDERR_ROLE: &str = "NPSHMEX_POOL_ABUSE_CLOSED_STDERR";

fn panic_always(_: u64) -> u64 {
    panic!("on purpose");
}

/// With stderr closed: a task that panics and a done callback that panics
/// (both reported on stderr) must still come out as they should. Exit 0
/// when they do.
fn panics_with_stderr_closed() -> i32 {
    // This role runs from a constructor, before Rust's runtime sets SIGPIPE
    // to ignored as it does for every `main`: do what it would.
    // SAFETY: SIG_IGN installs no handler; no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let Ok(p) = ProcessPoolExecutor::builder().max_workers(1).build() else {
        return 2;
    };
    let Ok(f) = p.submit(panic_always, 1) else {
        return 3;
    };
    f.add_done_callback(|_| panic!("callback on purpose"));
    if !matches!(f.result(), Err(TaskError::Panicked(_))) {
        return 4;
    }
    // The pool (its slot thread ran the callback) goes on.
    match p.submit(plus_one, 1).map(|f| f.result()) {
        Ok(Ok(2)) => 0,
        _ => 5,
    }
}

/// A parent that keeps its pool busy with fd-carrying, memfd-sized tasks
/// until it is killed. `role` is "<seed>".
fn busy_parent(role: &str) -> i32 {
    let seed: u64 = role.parse().unwrap_or(1);
    let method = if seed.is_multiple_of(2) {
        npshmex_pool::StartMethod::Spawn
    } else {
        npshmex_pool::StartMethod::Fork
    };
    let mut b = ProcessPoolExecutor::builder()
        .max_workers(1 + (seed / 2 % 3) as usize)
        .inline_max(1024)
        .start_method(method);
    if seed.is_multiple_of(3) {
        b = b.initializer(short_initializer);
    }
    let Ok(p) = b.build() else { return 2 };
    loop {
        let futs: Vec<_> = (0..8)
            .filter_map(|i| {
                let seg = FdSegment::new(8192, |_| ()).ok()?.into_read_only().ok()?;
                p.submit(heavy, (seg, vec![i as u8; 4000])).ok()
            })
            .collect();
        for f in futs {
            let _ = f.result();
        }
    }
}

fn short_initializer() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Long enough for any of these tasks on a loaded machine; a hang fails.
const PATIENCE: Duration = Duration::from_secs(120);

fn pool(n: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .build()
        .expect("pool starts")
}

fn plus_one(x: u64) -> u64 {
    x + 1
}

fn exit_zero(_: u64) -> u64 {
    std::process::exit(0)
}

/// Forks a child that keeps the worker's socket open for a while, then
/// exits the worker: its death must still be seen (not only as EOF).
fn fork_then_exit(pid_file: String) -> u64 {
    // SAFETY: the child only calls async-signal-safe functions (close,
    // sleep, _exit) before it ends.
    #[allow(unsafe_code)]
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: async-signal-safe calls in a forked child. It keeps
            // the worker's socket open (the point of the test) but lets go
            // of the test's stdio.
            #[allow(unsafe_code)]
            unsafe {
                for fd in 0..3 {
                    libc::close(fd);
                }
                libc::sleep(30);
                libc::_exit(0);
            }
        }
        child => {
            // The test kills the grandchild once the pool has noticed.
            let _ = std::fs::write(&pid_file, child.to_string());
            std::process::exit(0)
        }
    }
}

/// Forks a child that exits at once and returns normally (the worker keeps
/// serving; the child is its own business).
fn fork_and_return(x: u64) -> u64 {
    // SAFETY: the child only calls _exit.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe in a forked child.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(0)
        };
    }
    if pid > 0 {
        let mut status = 0;
        // SAFETY: reaps the child just forked; status is a valid out pointer.
        #[allow(unsafe_code)]
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
    }
    x + 1
}

/// Closes every fd above 2, the worker's socket included.
fn close_all_fds(_: u64) -> u64 {
    for fd in 3..1024 {
        // SAFETY: closing fds this process owns; nothing in this task uses
        // them afterwards (the point is to break the worker).
        #[allow(unsafe_code)]
        unsafe {
            libc::close(fd);
        }
    }
    7
}

/// The sum of a segment's bytes.
fn segment_sum(s: FdSegment) -> u64 {
    s.bytes().iter().map(|&b| u64::from(b)).sum()
}

/// Points the worker's socket (every fd above 2) at /dev/null.
fn dup_over_fds(_: u64) -> u64 {
    let null = std::fs::File::open("/dev/null").expect("open /dev/null");
    use std::os::fd::AsRawFd;
    for fd in 3..64 {
        if fd != null.as_raw_fd() {
            // SAFETY: dup2 onto fds of this process; breaking the worker
            // is the point.
            #[allow(unsafe_code)]
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
    7
}

/// A value whose encoding always fails.
#[derive(Debug)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("Unencodable refuses"))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unencodable)
    }
}

fn make_unencodable(_: u64) -> Unencodable {
    Unencodable
}

/// A value that encodes but never decodes (or panics decoding).
#[derive(Debug)]
struct Undecodable(bool);

impl Serialize for Undecodable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if bool::deserialize(d)? {
            panic!("Undecodable panics decoding");
        }
        Err(D::Error::custom("Undecodable refuses"))
    }
}

fn make_undecodable(panics: bool) -> Undecodable {
    Undecodable(panics)
}

fn died(r: Result<u64, TaskError>) -> WorkerExit {
    match r {
        Err(TaskError::WorkerDied { exit, .. }) => exit,
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

#[test]
fn exit_zero_fails_as_worker_died() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        let mut f = p.submit(exit_zero, 1).expect("submit");
        assert_eq!(died(f.result_timeout(PATIENCE)), WorkerExit::Code(0));
        assert_eq!(
            p.submit(plus_one, 1).expect("submit").result().ok(),
            Some(2)
        );
    }
    leaks.finish();
}

#[test]
fn a_worker_that_forks_and_dies_is_noticed() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        assert_eq!(
            p.submit(fork_and_return, 1).expect("submit").result().ok(),
            Some(2)
        );
        let pid_file =
            std::env::temp_dir().join(format!("npshmex-abuse-grandchild-{}", std::process::id()));
        let arg = pid_file.to_string_lossy().into_owned();
        let mut f = p.submit(fork_then_exit, arg).expect("submit");
        // The grandchild still holds the worker's socket: only the exit of
        // the worker itself can tell the pool.
        assert_eq!(died(f.result_timeout(PATIENCE)), WorkerExit::Code(0));
        assert_eq!(
            p.submit(plus_one, 1).expect("submit").result().ok(),
            Some(2)
        );
        let grandchild: u32 = std::fs::read_to_string(&pid_file)
            .expect("the worker wrote its child's pid")
            .parse()
            .expect("a pid");
        let _ = std::fs::remove_file(&pid_file);
        npshmex_testkit::kill9(grandchild);
        // Reaped by whoever adopted it; a zombie counts as gone.
        let deadline = Instant::now() + PATIENCE;
        while npshmex_testkit::proc_stat(grandchild).is_some_and(|s| s.state != 'Z') {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    leaks.finish();
}

#[test]
fn a_task_that_breaks_the_socket_fails_alone() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        for f in [close_all_fds, dup_over_fds] {
            let mut fut = p.submit(f, 1).expect("submit");
            match fut.result_timeout(PATIENCE) {
                // The control ring needs no fd once mapped: the answer may
                // still arrive; or the worker breaks and only this task fails.
                Ok(7) | Err(TaskError::WorkerDied { .. } | TaskError::Transport { .. }) => {}
                other => panic!("expected 7 or a dead worker, got {other:?}"),
            }
            assert_eq!(
                p.submit(plus_one, 1).expect("submit").result().ok(),
                Some(2)
            );
            // A task that brings a segment needs the socket: the broken
            // worker is replaced and the task, which never ran, runs on the
            // new one.
            let seg = FdSegment::new(4096, |b| b.fill(3)).expect("segment");
            let mut fut = p.submit(segment_sum, seg).expect("submit");
            assert_eq!(fut.result_timeout(PATIENCE).ok(), Some(3 * 4096));
        }
    }
    leaks.finish();
}

#[test]
fn encode_and_decode_failures_are_typed() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        let pid = p.worker_pids();
        match p.submit(make_unencodable, 1).expect("submit").result() {
            // postcard keeps no custom message, only its kind.
            Err(TaskError::ResultEncode(_)) => {}
            other => panic!("expected ResultEncode, got {other:?}"),
        }
        match p.submit(make_undecodable, false).expect("submit").result() {
            Err(TaskError::ResultDecode { .. }) => {}
            other => panic!("expected ResultDecode, got {other:?}"),
        }
        let mut f = p.submit(make_undecodable, true).expect("submit");
        match f.result_timeout(PATIENCE) {
            Err(TaskError::ResultDecode { .. }) => {}
            other => panic!("expected ResultDecode, got {other:?}"),
        }
        assert_eq!(
            p.submit(plus_one, 1).expect("submit").result().ok(),
            Some(2)
        );
        assert_eq!(p.worker_pids(), pid, "the worker survived");
        assert!(matches!(
            p.submit(plus_one_of_unencodable, Unencodable),
            Err(npshmex_pool::PoolError::Encode { .. })
        ));
    }
    leaks.finish();
}

fn plus_one_of_unencodable(_: Unencodable) -> u64 {
    1
}

#[test]
fn futures_dropped_unwaited() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        for i in 0..2000 {
            drop(p.submit(plus_one, i).expect("submit"));
        }
        let last = p.submit(plus_one, 1).expect("submit");
        assert_eq!(last.result().ok(), Some(2));
    }
    leaks.finish();
}

#[test]
fn pool_dropped_inside_a_done_callback() {
    let leaks = LeakCheck::start();
    let holder: Arc<Mutex<Option<ProcessPoolExecutor>>> = Arc::new(Mutex::new(Some(pool(2))));
    let dropped = Arc::new(AtomicBool::new(false));
    let futs: Vec<_> = {
        let guard = holder.lock().expect("lock");
        let p = guard.as_ref().expect("pool");
        (0..50)
            .map(|i| p.submit(plus_one, i).expect("submit"))
            .collect()
    };
    {
        let (h, d) = (holder.clone(), dropped.clone());
        futs[10].add_done_callback(move |_| {
            let pool = h.lock().ok().and_then(|mut g| g.take());
            drop(pool);
            d.store(true, Ordering::SeqCst);
        });
    }
    for mut f in futs {
        assert!(f.result_timeout(PATIENCE).is_ok());
    }
    assert!(dropped.load(Ordering::SeqCst));
    leaks.finish();
}

/// Sums a segment and a large inline payload; returns a new segment and a
/// large payload.
fn heavy((b, payload): (FdSegment, Vec<u8>)) -> (u64, FdSegment, Vec<u8>) {
    let sum = b.bytes().iter().map(|&x| u64::from(x)).sum::<u64>()
        + payload.iter().map(|&x| u64::from(x)).sum::<u64>();
    let out = FdSegment::new(4096, |b| b.fill(1))
        .and_then(FdSegment::into_read_only)
        .expect("segment");
    (sum, out, payload)
}

#[test]
fn random_kill_9_with_fds_and_large_payloads_in_flight() {
    let leaks = LeakCheck::start();
    for method in [
        npshmex_pool::StartMethod::Spawn,
        npshmex_pool::StartMethod::Fork,
    ] {
        let p = Arc::new(
            ProcessPoolExecutor::builder()
                .max_workers(3)
                .inline_max(1024)
                .start_method(method)
                .build()
                .expect("pool starts"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let killer = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut kills = 0;
                while !stop.load(Ordering::SeqCst) {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    std::thread::sleep(Duration::from_micros(200 + (n >> 33) % 5000));
                    let pids = p.worker_pids();
                    if let Some(&pid) = pids.get((n >> 40) as usize % pids.len().max(1)) {
                        if npshmex_testkit::is_live_worker(pid) {
                            npshmex_testkit::kill9(pid);
                            kills += 1;
                        }
                    }
                }
                kills
            })
        };
        let submitters: Vec<_> = (0..3)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut died) = (0, 0);
                    for i in 0..150u64 {
                        let seg = FdSegment::new(8192, |b| b.fill(2))
                            .and_then(FdSegment::into_read_only)
                            .expect("segment");
                        let payload = vec![1u8; 3000 + (i as usize * 97 + t) % 5000];
                        let expect = 8192 * 2 + payload.len() as u64;
                        let mut f = p.submit(heavy, (seg, payload)).expect("submit");
                        match f.result_timeout(PATIENCE) {
                            Ok((sum, blob, back)) => {
                                assert_eq!(sum, expect);
                                assert_eq!(blob.bytes().len(), 4096);
                                assert!(blob.bytes().iter().all(|&x| x == 1));
                                assert_eq!(back.len() as u64 + 8192 * 2, expect);
                                ok += 1;
                            }
                            Err(TaskError::WorkerDied { exit, .. }) => {
                                assert_eq!(exit, WorkerExit::Signal(libc::SIGKILL));
                                died += 1;
                            }
                            Err(e) => panic!("unexpected failure: {e:?}"),
                        }
                    }
                    (ok, died)
                })
            })
            .collect();
        let mut total = (0, 0);
        for s in submitters {
            let (ok, died) = s.join().expect("submitter");
            total.0 += ok;
            total.1 += died;
        }
        stop.store(true, Ordering::SeqCst);
        let kills = killer.join().expect("killer");
        eprintln!("{method:?}: (ok, died) = {total:?} with {kills} kills");
        assert_eq!(total.0 + total.1, 450);
        assert!(total.1 <= kills, "{total:?} with {kills} kills");
        assert!(total.0 > 0);
    }
    leaks.finish();
}

/// An argument whose decoding panics in the worker.
#[derive(Debug)]
struct PanicsDecoding;

impl Serialize for PanicsDecoding {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PanicsDecoding {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("PanicsDecoding panics decoding")
    }
}

fn take_panics_decoding(_: PanicsDecoding) -> u64 {
    1
}

/// A result whose encoding panics in the worker.
#[derive(Debug)]
struct PanicsEncoding;

impl Serialize for PanicsEncoding {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("PanicsEncoding panics encoding")
    }
}

impl<'de> Deserialize<'de> for PanicsEncoding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| PanicsEncoding)
    }
}

fn make_panics_encoding(_: u64) -> PanicsEncoding {
    PanicsEncoding
}

#[test]
fn serde_panics_in_the_worker_fail_only_their_task() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        let pid = p.worker_pids();
        let behind: Vec<_> = (0..20)
            .map(|i| p.submit(plus_one, i).expect("submit"))
            .collect();
        match p
            .submit(take_panics_decoding, PanicsDecoding)
            .expect("submit")
            .result()
        {
            Err(TaskError::ArgumentDecode(m)) => {
                assert!(m.message().contains("PanicsDecoding"), "{m}")
            }
            other => panic!("expected ArgumentDecode, got {other:?}"),
        }
        match p.submit(make_panics_encoding, 1).expect("submit").result() {
            Err(TaskError::ResultEncode(m)) => {
                assert!(m.message().contains("PanicsEncoding"), "{m}")
            }
            other => panic!("expected ResultEncode, got {other:?}"),
        }
        for (i, f) in behind.into_iter().enumerate() {
            assert_eq!(f.result().ok(), Some(i as u64 + 1));
        }
        assert_eq!(p.worker_pids(), pid, "the worker survived");
    }
    leaks.finish();
}

fn slow_initializer() {
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn a_worker_killed_while_starting_is_replaced() {
    let leaks = LeakCheck::start();
    {
        // Kill the worker while its initializer runs, four times in a row
        // (more than the start deaths that break a pool): the pool must go
        // on (a kill from outside is not a crashing initializer), and the
        // task, which never started, runs.
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(slow_initializer)
            .max_tasks_per_child(1)
            .build()
            .expect("pool starts");
        for round in 0..4u64 {
            // A fresh worker (each serves one task), in its initializer.
            let mut pids = p.worker_pids();
            while pids.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
                pids = p.worker_pids();
            }
            let f = p.submit(plus_one, round).expect("submit");
            for pid in pids {
                npshmex_testkit::kill9(pid);
            }
            let r = f.result();
            assert_eq!(r.as_ref().ok(), Some(&(round + 1)), "{r:?}");
        }
        assert_eq!(
            p.submit(plus_one, 1).expect("submit").result().ok(),
            Some(2)
        );
    }
    leaks.finish();
}

/// Live (non-zombie) processes in process group `pgid`, and /dev/shm
/// entries named after `pid`.
fn remains_of(pgid: u32) -> (Vec<u32>, Vec<String>) {
    let procs = npshmex_testkit::all_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && !p.is_zombie())
        .map(|p| p.pid)
        .collect();
    let shm = npshmex_testkit::shm_entries(&format!("npshmex-{pgid}-"));
    (procs, shm.into_iter().collect())
}

#[test]
fn killing_the_parent_at_random_moments_leaves_nothing() {
    let leaks = LeakCheck::start();
    let exe = std::env::current_exe().expect("current exe");
    let mut n = u64::from(std::process::id());
    for round in 0..8u64 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Its own process group, so that every process it starts can be
        // found after it is gone (orphans are re-parented).
        let mut child = Command::new(&exe)
            .env(ROLE, (round + (n >> 60)).to_string())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the parent role");
        let pgid = child.id();
        // From "still starting its pool" to "busy for a while".
        std::thread::sleep(Duration::from_millis((n >> 33) % 400));
        child.kill().expect("kill -9 the parent");
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = remains_of(pgid);
        while !left.0.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            left = remains_of(pgid);
        }
        assert_eq!(
            left,
            (vec![], vec![]),
            "round {round}: orphans or segments left"
        );
    }
    leaks.finish();
}

fn sleep_then_plus_one(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(x % 7));
    x + 1
}

fn abort_task(_: u64) -> u64 {
    std::process::abort()
}

#[test]
fn shutdown_racing_crashes_and_kills() {
    use npshmex_pool::{CancelFutures, ShutdownOptions, Wait};
    let leaks = LeakCheck::start();
    let mut n = u64::from(std::process::id()) | 1;
    for round in 0..12u64 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = pool(2);
        let mut futs: Vec<_> = (0..20)
            .map(|i| p.submit(sleep_then_plus_one, i).expect("submit"))
            .collect();
        futs.insert(5, p.submit(abort_task, 0).expect("submit"));
        if n & 1 == 0 {
            if let Some(&pid) = p.worker_pids().first() {
                npshmex_testkit::kill9(pid);
            }
        }
        std::thread::sleep(Duration::from_micros((n >> 33) % 3000));
        let opts = ShutdownOptions {
            wait: if n & 2 == 0 {
                Wait::UntilDone
            } else {
                Wait::Return
            },
            cancel_futures: if n & 4 == 0 {
                CancelFutures::RunPending
            } else {
                CancelFutures::CancelPending
            },
        };
        p.shutdown(opts);
        for (i, mut f) in futs.into_iter().enumerate() {
            match f.result_timeout(PATIENCE) {
                Ok(v) => assert!(v >= 1, "round {round} task {i}"),
                Err(
                    TaskError::WorkerDied { .. } | TaskError::Cancelled | TaskError::Pool { .. },
                ) => {}
                Err(e) => panic!("round {round} task {i}: {e:?}"),
            }
        }
        drop(p);
    }
    leaks.finish();
}

#[test]
fn durations_past_the_end_of_time_mean_no_limit() {
    use npshmex_pool::{as_completed_timeout, wait, MapOptions, ReturnWhen};
    let leaks = LeakCheck::start();
    {
        // Duration::MAX as "no limit" everywhere a duration is taken; each
        // used to overflow `Instant + Duration` and panic (in a pool thread
        // for the task timeout, hanging that worker's futures).
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .task_timeout(Duration::MAX)
            .spin(Duration::MAX)
            .build()
            .expect("pool starts");
        assert_eq!(
            p.submit(plus_one, 1).expect("submit").result().ok(),
            Some(2)
        );
        let mut f = p.submit(plus_one, 2).expect("submit");
        assert_eq!(f.result_timeout(Duration::MAX).ok(), Some(3));
        let opts = MapOptions {
            timeout: Some(Duration::MAX),
            ..MapOptions::default()
        };
        let all: Result<Vec<u64>, _> = p.map(plus_one, 0..10, opts).expect("map").collect();
        assert_eq!(all.ok(), Some((1..11).collect()));
        let futs: Vec<_> = (0..3)
            .map(|i| p.submit(plus_one, i).expect("submit"))
            .collect();
        assert_eq!(
            as_completed_timeout(futs, Duration::MAX)
                .filter(Result::is_ok)
                .count(),
            3
        );
        let futs: Vec<_> = (0..3)
            .map(|i| p.submit(plus_one, i).expect("submit"))
            .collect();
        let w = wait(futs, Some(Duration::MAX), ReturnWhen::AllCompleted);
        assert_eq!(w.done.len(), 3);
    }
    leaks.finish();
}

/// The marker directory of test `tag` run by the process `pid`: workers
/// leave markers there for the test to read.
fn marker_dir(tag: &str, pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("npshmex-abuse-{tag}-{pid}"))
}

/// In a worker: the marker directory of test `tag`, run by its parent.
fn parents_marker_dir(tag: &str) -> std::path::PathBuf {
    marker_dir(tag, std::os::unix::process::parent_id())
}

/// In a worker: whether it is the first of its pool to ask, for test `tag`.
fn first_worker(tag: &str) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(parents_marker_dir(tag).join("first"))
        .is_ok()
}

/// The first worker's initializer succeeds; any later one fails after a
/// while.
fn second_initializer_fails() {
    if first_worker("init") {
        return;
    }
    std::thread::sleep(Duration::from_millis(500));
    panic!("the second initializer refuses");
}

/// Sleeps 20 s, then leaves a marker saying it was not killed.
fn sleep_then_mark(_: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(20));
    let _ = std::fs::write(parents_marker_dir("init").join("survived"), b"");
    0
}

#[test]
fn a_broken_pool_kills_workers_still_running_tasks() {
    let leaks = LeakCheck::start();
    let dir = marker_dir("init", std::process::id());
    std::fs::create_dir_all(&dir).expect("marker dir");
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(2)
            .initializer(second_initializer_fails)
            .build()
            .expect("pool starts");
        // One long task per worker: the good worker runs its own, then the
        // other worker's initializer fails and breaks the pool.
        let futs: Vec<_> = (0..2)
            .map(|i| p.submit(sleep_then_mark, i).expect("submit"))
            .collect();
        for mut f in futs {
            match f.result_timeout(PATIENCE) {
                Err(TaskError::Initializer(_)) => {}
                other => panic!("expected an initializer error, got {other:?}"),
            }
        }
        // Dropping the pool must not wait for the task nobody will read.
    }
    let survived = dir.join("survived").exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!survived, "the broken pool let its worker finish a task");
    leaks.finish();
}

#[test]
fn pool_dropped_in_a_callback_run_by_a_waiting_caller() {
    let leaks = LeakCheck::start();
    {
        // A long spin makes the caller of `result` receive the worker's
        // answer itself, so the callback (which drops the pool) runs on
        // the caller's thread while it holds the worker's receive role.
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .spin(Duration::from_secs(30))
            .build()
            .expect("pool starts");
        let holder = Arc::new(Mutex::new(Some(pool)));
        for round in 0..3u64 {
            let f = {
                let guard = holder.lock().expect("lock");
                let Some(p) = guard.as_ref() else { break };
                p.submit(plus_one, round).expect("submit")
            };
            if round == 1 {
                let h = holder.clone();
                f.add_done_callback(move |_| {
                    let pool = h.lock().ok().and_then(|mut g| g.take());
                    drop(pool);
                });
            }
            assert_eq!(f.result().ok(), Some(round + 1));
        }
        assert!(holder.lock().expect("lock").is_none());
    }
    leaks.finish();
}

fn hung_initializer() {
    std::thread::sleep(Duration::from_secs(3600));
}

#[test]
fn a_hung_initializer_fails_its_tasks_after_initializer_timeout() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(hung_initializer)
            .initializer_timeout(Duration::from_millis(300))
            .task_timeout(Duration::from_secs(1))
            .build()
            .expect("the handshake happens before the initializer");
        let mut f = p.submit(plus_one, 1).expect("submit");
        match f.result_timeout(PATIENCE) {
            Err(TaskError::Initializer(m)) => assert!(m.contains("initializer_timeout"), "{m}"),
            other => panic!("expected an initializer error, got {other:?}"),
        }
        assert!(matches!(
            p.submit(plus_one, 1),
            Err(npshmex_pool::PoolError::Broken { .. })
        ));
        // Dropping the pool must not wait for the hung initializer.
    }
    leaks.finish();
}

/// The first worker's initializer hangs; later ones return at once.
fn first_initializer_hangs() {
    if first_worker("hang") {
        hung_initializer();
    }
}

#[test]
fn a_worker_whose_initializer_hangs_once_is_replaced() {
    let leaks = LeakCheck::start();
    let dir = marker_dir("hang", std::process::id());
    std::fs::create_dir_all(&dir).expect("marker dir");
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(first_initializer_hangs)
            .initializer_timeout(Duration::from_millis(500))
            .build()
            .expect("pool starts");
        let first = p.worker_pids();
        let mut f = p.submit(plus_one, 41).expect("submit");
        let r = f.result_timeout(PATIENCE);
        assert_eq!(r.as_ref().ok(), Some(&42), "{r:?}");
        assert_ne!(p.worker_pids(), first, "the hung worker was replaced");
        assert!(dir.join("first").exists(), "the first initializer ran");
    }
    let _ = std::fs::remove_dir_all(&dir);
    leaks.finish();
}

#[test]
fn panics_are_reported_with_stderr_closed() {
    // `eprintln!` panics on a closed stderr: in the worker's panic hook
    // that aborted the worker (WorkerDied instead of Panicked), and on the
    // slot thread that runs a panicking callback it ended the thread.
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .env(CLOSED_STDERR_ROLE, "1")
        .arg("--exact")
        .arg("no_such_test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close the only read end: every write to stderr now fails (EPIPE).
    drop(child.stderr.take());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}
