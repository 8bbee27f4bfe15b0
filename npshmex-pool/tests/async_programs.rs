//! The pool in async programs (issue 16.2):
//!
//! - `init()` as the first line of a `#[tokio::main]` function (the runtime
//!   is built before it, in workers too) still gives tasks a thread outside
//!   any runtime, so a task may build a runtime of its own. This runs as a
//!   role: the test binary started again, whose constructor takes over
//!   before the harness, as a program's `main` would.
//! - Dropping an un-awaited future (a `tokio::time::timeout` that expires):
//!   a pending task is cancelled and never runs, a running one finishes on
//!   its worker with its result discarded, and nothing leaks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use npshmex_pool::{ProcessPoolExecutor, ShutdownOptions, TaskError};
use npshmex_testkit::LeakCheck;

const ROLE: &str = "NPSHMEX_POOL_ASYNC_ROLE";

#[ctor::ctor]
fn role() {
    if std::env::var(ROLE).as_deref() == Ok("tokio_main") {
        // Workers of this role get here too, and call `init` inside the
        // runtime, as a `#[tokio::main]` program does.
        std::process::exit(tokio_main());
    }
    npshmex_pool::init();
}

/// A task that runs a runtime of its own: it panics ("Cannot start a
/// runtime from within a runtime") if the worker runs it on a thread of
/// the program's runtime.
fn own_runtime(x: u64) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        x + 1
    })
}

/// The program: `init()` first in an async main.
#[tokio::main]
async fn tokio_main() -> i32 {
    npshmex_pool::init();
    let outcome = async {
        let pool = ProcessPoolExecutor::new(2)?;
        let a = pool.submit(own_runtime, 1)?;
        let b = pool.submit(own_runtime, 2)?;
        let (a, b) = tokio::join!(a, b);
        let got = (a?, b?);
        println!("results {got:?}");
        Ok::<_, Box<dyn std::error::Error>>(got)
    }
    .await;
    match outcome {
        Ok((2, 3)) => 0,
        other => {
            println!("unexpected {other:?}");
            1
        }
    }
}

#[test]
fn init_inside_tokio_main_gives_tasks_a_thread_outside_the_runtime() {
    let leaks = LeakCheck::start();
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .env(ROLE, "tokio_main")
        .output()
        .expect("run the role");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("results (2, 3)"),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    leaks.finish();
}

/// Sleeps, then leaves a mark: a file named after the task in `dir`.
fn nap_and_mark((dir, name, ms): (PathBuf, String, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(dir.join(name), b"ran").expect("mark");
    ms
}

fn big(n: usize) -> Vec<u8> {
    vec![7; n]
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("npshmex-async-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn marked(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

#[test]
fn a_future_dropped_by_an_expired_timeout_is_cancelled_or_discarded() {
    let leaks = LeakCheck::start();
    let dir = scratch_dir("timeout");
    {
        let pool = ProcessPoolExecutor::new(1).expect("pool");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let running = pool
                .submit(nap_and_mark, (dir.clone(), "running".into(), 600))
                .expect("submit");
            wait_until("the first task runs", || running.running());
            // The only worker is busy: this one waits in the parent.
            let queued = pool
                .submit(nap_and_mark, (dir.clone(), "queued".into(), 1))
                .expect("submit");
            let r = tokio::time::timeout(Duration::from_millis(20), queued).await;
            assert!(r.is_err(), "a queued task cannot finish in 20 ms");
            let r = tokio::time::timeout(Duration::from_millis(20), running).await;
            assert!(r.is_err(), "a 600 ms task cannot finish in 20 ms");
            // Both handles are gone. The pool goes on; a large result
            // (in a memfd) of a task whose handle is dropped mid-run is
            // discarded without a leak.
            let dropped = pool.submit(big, 1 << 20).expect("submit");
            drop(dropped);
            let v = pool.submit(big, 3).expect("submit").await.expect("ok");
            assert_eq!(v, vec![7; 3]);
        });
        pool.shutdown(ShutdownOptions::default());
        assert!(marked(&dir, "running"), "a running task finishes");
        assert!(!marked(&dir, "queued"), "a dropped pending task never runs");

        // Detached and callback futures run to their end without a handle.
        let f = pool.submit(nap_and_mark, (dir.clone(), "detached".into(), 1));
        assert!(matches!(f, Err(npshmex_pool::PoolError::ShutDown)), "{f:?}");
        let pool = ProcessPoolExecutor::new(1).expect("pool");
        let blocker = pool
            .submit(nap_and_mark, (dir.clone(), "blocker".into(), 300))
            .expect("submit");
        wait_until("the blocker runs", || blocker.running());
        pool.submit(nap_and_mark, (dir.clone(), "detached".into(), 1))
            .expect("submit")
            .detach();
        let (tx, rx) = std::sync::mpsc::channel();
        pool.submit(nap_and_mark, (dir.clone(), "callback".into(), 1))
            .expect("submit")
            .add_done_callback(move |r| {
                let _ = tx.send(r.copied().map_err(TaskError::to_string));
            });
        drop(blocker);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(120)).expect("callback"),
            Ok(1)
        );
        drop(pool);
        assert!(marked(&dir, "blocker"), "it was running when dropped");
        assert!(marked(&dir, "detached"), "a detached task runs");
        assert!(marked(&dir, "callback"), "a task with a callback runs");
    }
    std::fs::remove_dir_all(&dir).expect("clean scratch dir");
    leaks.finish();
}
