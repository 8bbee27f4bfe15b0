//! A worker that panics, aborts, segfaults, exits or is killed fails only
//! the one task it was running, among 1,000 that complete; a hung task
//! times out; dropping a busy pool leaves no process; fds do not grow; a
//! 256 MiB argument and result travel through the memfd path.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use npshmex_pool::{ProcessPoolExecutor, TaskError, WorkerExit};
use npshmex_testkit::LeakCheck;

npshmex_pool::test_support!();

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Act {
    Ok(u64),
    Panic,
    Abort,
    Segfault,
    Exit3,
}

fn act(a: Act) -> u64 {
    match a {
        Act::Ok(x) => x + 1,
        Act::Panic => panic!("task asked to panic"),
        Act::Abort => std::process::abort(),
        Act::Segfault => {
            // SAFETY: raising a signal has no memory-safety preconditions;
            // SIGSEGV's default action kills this worker, which is the point.
            #[allow(unsafe_code)]
            unsafe {
                libc::raise(libc::SIGSEGV);
            }
            0
        }
        Act::Exit3 => std::process::exit(3),
    }
}

/// Writes this worker's pid to `path`, then sleeps a long time.
fn report_pid_and_hang(path: PathBuf) -> u64 {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::write(&tmp, std::process::id().to_string());
    let _ = std::fs::rename(&tmp, &path);
    std::thread::sleep(Duration::from_secs(120));
    0
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pool(n: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .build()
        .expect("pool starts")
}

/// Submits 500 good tasks, `bad`, 500 good tasks; returns the bad one's
/// outcome after checking the 1,000 others succeeded.
fn one_bad_among_1000(bad: Act) -> Result<u64, TaskError> {
    let p = pool(2);
    let before: Vec<_> = (0..500)
        .map(|i| p.submit(act, Act::Ok(i)).expect("submit"))
        .collect();
    let bad = p.submit(act, bad).expect("submit");
    let after: Vec<_> = (500..1000)
        .map(|i| p.submit(act, Act::Ok(i)).expect("submit"))
        .collect();
    for (i, f) in before.into_iter().chain(after).enumerate() {
        assert_eq!(f.result().expect("a good task succeeds"), i as u64 + 1);
    }
    let outcome = bad.result();
    // The pool still works afterwards.
    assert_eq!(
        p.submit(act, Act::Ok(41))
            .expect("submit")
            .result()
            .expect("ok"),
        42
    );
    outcome
}

/// An error whose chain of sources is `levels` long (dropped without
/// recursion, so only the pool's own handling of the depth is tested).
#[derive(Debug)]
struct Link(Option<Box<Link>>);

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("link")
    }
}

impl std::error::Error for Link {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.as_deref().map(|l| l as _)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let mut next = self.0.take();
        while let Some(mut l) = next {
            next = l.0.take();
        }
    }
}

fn fail_deeply(levels: u32) -> Result<u64, npshmex_pool::RemoteError> {
    let mut chain = Link(None);
    for _ in 0..levels {
        chain = Link(Some(Box::new(chain)));
    }
    Err(chain.into())
}

#[test]
fn an_error_with_a_deep_source_chain_comes_back_cut() {
    // 50,000 links decoded by recursion overflowed the slot thread's stack
    // and aborted the caller's whole process; the chain now travels flat
    // and cut to RemoteCause::MAX_LINKS.
    let leaks = LeakCheck::start();
    {
        // spin 0: the slot thread (the smaller stack) receives the result.
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .spin(Duration::ZERO)
            .build()
            .expect("pool");
        let r = p.submit(fail_deeply, 50_000).expect("submit").result();
        let Ok(Err(e)) = r else {
            panic!("expected the task's own error, got {r:?}");
        };
        let links: Vec<&str> = e.cause().messages().collect();
        assert_eq!(links.len(), npshmex_pool::RemoteCause::MAX_LINKS);
        assert_eq!(links[0], "link");
        assert!(links[links.len() - 1].contains("left out"));
        assert_eq!(
            p.submit(act, Act::Ok(5))
                .expect("submit")
                .result()
                .expect("ran"),
            6
        );
    }
    leaks.finish();
}

/// Writes the "closed" word of its own control region (re-opened through
/// `/proc/self/fd`), then hangs: a worker that says it is leaving and
/// does not.
fn claim_closed_and_hang(_: u32) -> u32 {
    use std::os::unix::fs::FileExt;
    for e in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        let Ok(target) = std::fs::read_link(&p) else {
            continue;
        };
        if target.to_string_lossy().contains("npshmex-ctl") {
            if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&p) {
                // 32-bit word 8 (CLOSED), at byte 32.
                let _ = f.write_at(&1u32.to_le_bytes(), 32);
            }
        }
    }
    std::thread::sleep(Duration::from_secs(3600));
    0
}

#[test]
fn a_worker_that_claims_to_close_and_hangs_is_killed() {
    // The parent used to trust the word and wait for the exit without
    // end: the task's timeout never fired and dropping the pool hung.
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .task_timeout(Duration::from_secs(1))
            .build()
            .expect("pool");
        let mut f = p.submit(claim_closed_and_hang, 0).expect("submit");
        let r = f.result_timeout(Duration::from_secs(60));
        assert!(r.is_err(), "the hung task cannot succeed: {r:?}");
        assert!(
            !matches!(r, Err(TaskError::WaitTimedOut { .. })),
            "the future itself completed"
        );
        assert_eq!(
            p.submit(act, Act::Ok(1))
                .expect("submit")
                .result()
                .expect("ran"),
            2
        );
    }
    leaks.finish();
}

#[test]
fn a_panic_fails_only_its_task() {
    let leaks = LeakCheck::start();
    match one_bad_among_1000(Act::Panic) {
        Err(TaskError::Panicked(m)) => assert!(m.message().contains("asked to panic"), "{m}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    leaks.finish();
}

#[test]
fn an_abort_fails_only_its_task() {
    let leaks = LeakCheck::start();
    match one_bad_among_1000(Act::Abort) {
        Err(TaskError::WorkerDied { exit, .. }) => {
            assert_eq!(exit, WorkerExit::Signal(libc::SIGABRT))
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    leaks.finish();
}

#[test]
fn a_segfault_fails_only_its_task() {
    let leaks = LeakCheck::start();
    match one_bad_among_1000(Act::Segfault) {
        Err(TaskError::WorkerDied { exit, .. }) => {
            assert_eq!(exit, WorkerExit::Signal(libc::SIGSEGV))
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    leaks.finish();
}

#[test]
fn an_exit_fails_only_its_task() {
    let leaks = LeakCheck::start();
    match one_bad_among_1000(Act::Exit3) {
        Err(TaskError::WorkerDied { exit, .. }) => assert_eq!(exit, WorkerExit::Code(3)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    leaks.finish();
}

#[test]
fn kill_9_of_a_worker_fails_only_its_task() {
    let leaks = LeakCheck::start();
    let dir = std::env::temp_dir().join(format!("npshmex-pool-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let marker = dir.join("pid");
    {
        let p = pool(2);
        let before: Vec<_> = (0..500)
            .map(|i| p.submit(act, Act::Ok(i)).expect("submit"))
            .collect();
        let victim = p
            .submit(report_pid_and_hang, marker.clone())
            .expect("submit");
        let after: Vec<_> = (500..1000)
            .map(|i| p.submit(act, Act::Ok(i)).expect("submit"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid = loop {
            if let Ok(s) = std::fs::read_to_string(&marker) {
                break s.trim().parse::<i32>().expect("a pid");
            }
            assert!(Instant::now() < deadline, "the task never started");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(npshmex_testkit::kill9(pid as u32), "kill -9");
        match victim.result() {
            Err(TaskError::WorkerDied { pid: died, exit }) => {
                assert_eq!(died, pid as u32);
                assert_eq!(exit, WorkerExit::Signal(libc::SIGKILL));
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        for (i, f) in before.into_iter().chain(after).enumerate() {
            assert_eq!(f.result().expect("a good task succeeds"), i as u64 + 1);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    leaks.finish();
}

#[test]
fn a_hung_task_times_out_and_the_pool_goes_on() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .task_timeout(Duration::from_millis(1500))
            .build()
            .expect("pool");
        let first_pid = p.worker_pids();
        let hung = p.submit(sleep_ms, 600_000).expect("submit");
        // Queued behind the hung task on the same worker: re-dispatched.
        let behind: Vec<_> = (0..10)
            .map(|i| p.submit(act, Act::Ok(i)).expect("submit"))
            .collect();
        match hung.result() {
            Err(TaskError::TimedOut { limit }) => assert_eq!(limit, Duration::from_millis(1500)),
            other => panic!("expected TimedOut, got {other:?}"),
        }
        for (i, f) in behind.into_iter().enumerate() {
            assert_eq!(f.result().expect("ran on the new worker"), i as u64 + 1);
        }
        assert_ne!(p.worker_pids(), first_pid, "the hung worker was replaced");
        assert_eq!(
            p.submit(sleep_ms, 10)
                .expect("submit")
                .result()
                .expect("ok"),
            10
        );
    }
    leaks.finish();
}

#[test]
fn dropping_a_busy_pool_leaves_no_process() {
    let leaks = LeakCheck::start();
    let futs = {
        let p = pool(2);
        let futs: Vec<_> = (0..6)
            .map(|_| p.submit(sleep_ms, 100).expect("submit"))
            .collect();
        assert_eq!(npshmex_testkit::worker_children().len(), 2);
        futs
        // dropped here, with tasks running
    };
    assert!(
        npshmex_testkit::children().is_empty(),
        "drop reaped every worker"
    );
    for f in futs {
        assert_eq!(f.result().expect("drop waits for submitted tasks"), 100);
    }
    leaks.finish();
}

#[test]
fn no_fd_growth_over_10000_tasks() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let warm: Vec<_> = (0..200)
            .map(|i| p.submit(act, Act::Ok(i)).expect("submit"))
            .collect();
        for f in warm {
            f.result().expect("ok");
        }
        let before = npshmex_testkit::open_fds();
        for round in 0..10u64 {
            let futs: Vec<_> = (0..1000)
                .map(|i| p.submit(act, Act::Ok(round * 1000 + i)).expect("submit"))
                .collect();
            for f in futs {
                f.result().expect("ok");
            }
        }
        // Large payloads use memfds: those must be closed too.
        let big = vec![7u8; 200 * 1024];
        let back = p
            .submit(|v: Vec<u8>| v, big.clone())
            .expect("submit")
            .result()
            .expect("ok");
        assert_eq!(back, big);
        assert_eq!(
            npshmex_testkit::open_fds(),
            before,
            "fds grew over 10,000 tasks"
        );
    }
    leaks.finish();
}

fn bump_all(mut v: Vec<u8>) -> Vec<u8> {
    for b in &mut v {
        *b = b.wrapping_add(1);
    }
    v
}

#[test]
fn a_256_mib_argument_and_result_round_trip() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        let len = 256 << 20;
        let v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let back = p.submit(bump_all, v).expect("submit").result().expect("ok");
        assert_eq!(back.len(), len);
        assert!(back
            .iter()
            .enumerate()
            .all(|(i, &b)| b == ((i % 251) as u8).wrapping_add(1)));
    }
    leaks.finish();
}
