//! The scenarios of CPython's `test_concurrent_futures` that apply: submit,
//! map (chunksize, timeout), shutdown (wait / no wait / cancel), cancel,
//! as_completed, wait modes, initializer, max_tasks_per_child, callbacks,
//! `.await`, and the fork start method.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use npshmex_pool::{
    as_completed, as_completed_keyed, as_completed_timeout, wait, wait_keyed, CancelFutures,
    Future, MapOptions, PoolError, ProcessPoolExecutor, ReturnWhen, ShutdownOptions, StartMethod,
    TaskError, Wait,
};
use npshmex_testkit::LeakCheck;

npshmex_pool::test_support!();

fn square(x: u64) -> u64 {
    x * x
}

/// Polls `cond` until it holds, failing after a generous deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn checked_div((a, b): (i64, i64)) -> Result<i64, String> {
    if b == 0 {
        Err("division by zero".into())
    } else {
        Ok(a / b)
    }
}

fn panic_on_7(x: u64) -> u64 {
    if x == 7 {
        panic!("seven is not allowed");
    }
    x
}

fn pool(n: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .build()
        .expect("pool starts")
}

#[test]
fn kept_futures_do_not_keep_their_workers_channels() {
    // A decided future lets go of the worker it went to: with a new worker
    // per task, 30 kept futures would otherwise hold 30 sockets and
    // control memfds (and their mappings) of workers long gone.
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(1)
            .build()
            .expect("pool");
        assert_eq!(
            p.submit(square, 1).expect("submit").result().expect("ran"),
            1
        );
        // Every way a caller learns that a future is decided, then keeps it.
        type Decide = fn(Future<u64>) -> Future<u64>;
        let ways: [(&str, Decide); 4] = [
            ("result_timeout", |mut f| {
                f.result_timeout(Duration::from_secs(60)).expect("ran");
                f
            }),
            ("wait", |f| {
                let mut r = wait(vec![f], None, ReturnWhen::AllCompleted);
                r.done.pop().expect("done")
            }),
            ("as_completed", |f| {
                let mut it = as_completed(vec![f]);
                it.next().expect("one").expect("no timeout")
            }),
            ("done", |f| {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !f.done() {
                    assert!(Instant::now() < deadline, "the task did not finish");
                    std::thread::sleep(Duration::from_millis(1));
                }
                f
            }),
        ];
        for (how, decide) in ways {
            let before = npshmex_testkit::open_fds();
            let kept: Vec<_> = (0..12)
                .map(|i| decide(p.submit(square, i).expect("submit")))
                .collect();
            let now = npshmex_testkit::open_fds();
            // One worker (and its replacement starting) at a time: a few fds.
            assert!(
                now <= before + 8,
                "12 futures seen finished by {how} hold {} fds more than one did",
                now.saturating_sub(before)
            );
            // The value is still there (result_timeout took it already).
            for (i, f) in kept.into_iter().enumerate() {
                let r = f.result();
                assert!(
                    r.as_ref().ok() == Some(&((i * i) as u64)) || how == "result_timeout",
                    "{how}: {r:?}"
                );
            }
        }
    }
    leaks.finish();
}

#[test]
fn submit_returns_the_value() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let f = p.submit(square, 12).expect("submit");
        assert_eq!(f.result().expect("result"), 144);
        let strings = p
            .submit(|s: String| s.to_uppercase(), "abc".to_string())
            .expect("submit");
        assert_eq!(strings.result().expect("result"), "ABC");
        let pids: Vec<u32> = (0..8)
            .map(|_| p.submit(pid, ()).expect("submit"))
            .map(|f| f.result().expect("result"))
            .collect();
        assert!(
            pids.iter().all(|&x| x != std::process::id()),
            "tasks ran in workers"
        );
        let mut workers = p.worker_pids();
        workers.sort_unstable();
        assert_eq!(workers.len(), 2);
        for pid in pids {
            assert!(
                workers.binary_search(&pid).is_ok(),
                "task ran on a pool worker"
            );
        }
    }
    leaks.finish();
}

#[test]
fn function_errors_come_back_as_values() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        assert_eq!(
            p.submit(checked_div, (7, 2))
                .expect("submit")
                .result()
                .expect("ok"),
            Ok(3)
        );
        assert_eq!(
            p.submit(checked_div, (7, 0))
                .expect("submit")
                .result()
                .expect("ok"),
            Err("division by zero".to_string())
        );
    }
    leaks.finish();
}

#[test]
fn map_is_ordered_with_any_chunksize() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        for chunksize in [1, 3, 256] {
            let opts = MapOptions {
                chunksize,
                ..MapOptions::default()
            };
            let got: Vec<u64> = p
                .map(square, 0..1000u64, opts)
                .expect("map")
                .collect::<Result<_, _>>()
                .expect("all ok");
            let want: Vec<u64> = (0..1000u64).map(square).collect();
            assert_eq!(got, want, "chunksize {chunksize}");
        }
        let empty: Vec<Result<u64, TaskError>> = p
            .map(square, Vec::<u64>::new(), MapOptions::default())
            .expect("map")
            .collect();
        assert!(empty.is_empty());
        let zero = p.map(
            square,
            0..3u64,
            MapOptions {
                chunksize: 0,
                ..MapOptions::default()
            },
        );
        assert!(matches!(zero, Err(PoolError::InvalidConfig { .. })));
    }
    leaks.finish();
}

#[test]
fn map_reports_a_panic_on_its_own_item() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let opts = MapOptions {
            chunksize: 4,
            ..MapOptions::default()
        };
        let got: Vec<Result<u64, TaskError>> =
            p.map(panic_on_7, 0..20u64, opts).expect("map").collect();
        assert_eq!(got.len(), 20);
        for (i, r) in got.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, i as u64),
                Err(TaskError::Panicked(m)) => {
                    assert_eq!(i, 7);
                    assert!(m.message().contains("seven"), "message: {m}");
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(got[7].is_err());
    }
    leaks.finish();
}

#[test]
fn map_timeout_ends_the_iteration() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        // The first item must finish well within the timeout even on a
        // loaded machine, the second never within it.
        let opts = MapOptions {
            chunksize: 1,
            timeout: Some(Duration::from_millis(2_000)),
        };
        let got: Vec<Result<u64, TaskError>> = p
            .map(sleep_ms, [10, 4_000, 10, 10], opts)
            .expect("map")
            .collect();
        assert!(matches!(got.first(), Some(Ok(10))), "{got:?}");
        assert!(
            matches!(got.last(), Some(Err(TaskError::WaitTimedOut { .. }))),
            "{got:?}"
        );
        assert!(got.len() <= 2);
        // The running task is not killed by a map timeout; shutting down
        // waits for it.
    }
    leaks.finish();
}

#[test]
fn lazy_map_over_an_endless_iterator() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let first: Vec<u64> = p
            .map(square, 0u64.., MapOptions::default())
            .expect("map")
            .take(50)
            .collect::<Result<_, _>>()
            .expect("ok");
        assert_eq!(first[49], 49 * 49);
    }
    leaks.finish();
}

#[test]
fn shutdown_waits_and_refuses_new_tasks() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let futs: Vec<_> = (0..6)
            .map(|_| p.submit(sleep_ms, 50).expect("submit"))
            .collect();
        p.shutdown(ShutdownOptions::default());
        assert!(
            futs.iter().all(|f| f.done()),
            "wait=UntilDone returns after every task"
        );
        assert!(p.worker_pids().is_empty());
        assert!(
            npshmex_testkit::worker_children().is_empty(),
            "workers reaped by shutdown"
        );
        assert!(matches!(p.submit(square, 1), Err(PoolError::ShutDown)));
        for f in futs {
            assert_eq!(f.result().expect("ran"), 50);
        }
    }
    leaks.finish();
}

#[test]
fn shutdown_without_wait_still_finishes_the_work() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        let futs: Vec<_> = (0..3)
            .map(|_| p.submit(sleep_ms, 100).expect("submit"))
            .collect();
        p.shutdown(ShutdownOptions {
            wait: Wait::Return,
            cancel_futures: CancelFutures::RunPending,
        });
        assert!(matches!(p.submit(square, 1), Err(PoolError::ShutDown)));
        for f in futs {
            assert_eq!(f.result().expect("ran"), 100);
        }
    }
    leaks.finish();
}

#[test]
fn shutdown_can_cancel_pending_futures() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_in_flight(1)
            .build()
            .expect("pool");
        let running = p.submit(sleep_ms, 300).expect("submit");
        let pending: Vec<_> = (0..5)
            .map(|_| p.submit(sleep_ms, 300).expect("submit"))
            .collect();
        wait_until("the first task is sent", || running.running());
        p.shutdown(ShutdownOptions {
            wait: Wait::UntilDone,
            cancel_futures: CancelFutures::CancelPending,
        });
        assert_eq!(running.result().expect("the running task finishes"), 300);
        for f in pending {
            assert!(f.cancelled());
            assert!(matches!(f.result(), Err(TaskError::Cancelled)));
        }
    }
    leaks.finish();
}

#[test]
fn cancel_only_while_pending() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_in_flight(1)
            .build()
            .expect("pool");
        let first = p.submit(sleep_ms, 300).expect("submit");
        let second = p.submit(sleep_ms, 10).expect("submit");
        let third = p.submit(square, 3).expect("submit");
        wait_until("the first task is sent", || first.running());
        assert!(!first.cancel(), "a running task cannot be cancelled");
        assert!(second.cancel());
        assert!(second.cancel(), "cancelling twice still says cancelled");
        assert!(second.cancelled() && second.done() && !second.running());
        assert!(matches!(second.result(), Err(TaskError::Cancelled)));
        assert_eq!(first.result().expect("ran"), 300);
        assert_eq!(third.result().expect("ran"), 9);
    }
    leaks.finish();
}

#[test]
fn result_timeout_leaves_the_future_usable() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        let mut f = p.submit(sleep_ms, 300).expect("submit");
        assert!(matches!(
            f.result_timeout(Duration::from_millis(10)),
            Err(TaskError::WaitTimedOut { .. })
        ));
        assert!(!f.done());
        assert_eq!(f.result_timeout(Duration::from_secs(60)).expect("ran"), 300);
        assert!(matches!(
            f.result_timeout(Duration::from_secs(1)),
            Err(TaskError::ResultTaken)
        ));
    }
    leaks.finish();
}

#[test]
fn as_completed_yields_in_completion_order() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let slow = p.submit(sleep_ms, 600).expect("submit");
        let fast = p.submit(sleep_ms, 1).expect("submit");
        let order: Vec<u64> = as_completed(vec![slow, fast])
            .map(|f| f.expect("no timeout").result().expect("ok"))
            .collect();
        assert_eq!(order, vec![1, 600]);

        let hung = p.submit(sleep_ms, 2_000).expect("submit");
        let quick = p.submit(square, 5).expect("submit");
        let got: Vec<_> =
            as_completed_timeout(vec![hung, quick], Duration::from_millis(500)).collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Ok(f) if f.done()));
        assert!(matches!(got[1], Err(TaskError::WaitTimedOut { .. })));
    }
    leaks.finish();
}

#[test]
fn keyed_forms_say_which_job_finished() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let jobs = [600u64, 1, 30];
        let pairs: Vec<_> = jobs
            .iter()
            .map(|&ms| (format!("job-{ms}"), p.submit(sleep_ms, ms).expect("submit")))
            .collect();
        let got: Vec<(String, u64)> = as_completed_keyed(pairs, None)
            .map(|(k, r)| (k, r.expect("ok")))
            .collect();
        assert_eq!(got.len(), 3);
        for (k, v) in &got {
            assert_eq!(k, &format!("job-{v}"), "each key comes with its own result");
        }
        assert_eq!(got[2].1, 600, "the slow job completes last: {got:?}");

        // A timeout yields every unfinished key with WaitTimedOut.
        let pairs = vec![
            ("hung", p.submit(sleep_ms, 3_000).expect("s")),
            ("quick", p.submit(square, 4).expect("s")),
        ];
        let got: Vec<_> = as_completed_keyed(pairs, Some(Duration::from_millis(1_000))).collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], ("quick", Ok(16))), "{got:?}");
        assert!(
            matches!(got[1], ("hung", Err(TaskError::WaitTimedOut { .. }))),
            "{got:?}"
        );

        let pairs = vec![
            (1, p.submit(sleep_ms, 1).expect("s")),
            (2, p.submit(sleep_ms, 2_000).expect("s")),
        ];
        let r = wait_keyed(pairs, None, ReturnWhen::FirstCompleted);
        assert_eq!(r.done.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            r.not_done.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec![2]
        );
        let r = wait_keyed(r.not_done, None, ReturnWhen::AllCompleted);
        assert_eq!(r.done.len(), 1);
        assert_eq!(r.done[0].0, 2);
    }
    leaks.finish();
}

#[test]
fn wait_modes() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let futs = vec![
            p.submit(sleep_ms, 1).expect("s"),
            p.submit(sleep_ms, 800).expect("s"),
        ];
        let r = wait(futs, None, ReturnWhen::FirstCompleted);
        assert!(!r.done.is_empty());
        assert_eq!(r.done.len() + r.not_done.len(), 2);

        let r = wait(r.not_done, None, ReturnWhen::AllCompleted);
        assert_eq!(r.done.len(), 1);
        assert!(r.not_done.is_empty());

        let futs = vec![
            p.submit(panic_on_7, 7).expect("s"),
            p.submit(panic_on_7, 1).expect("s"),
        ];
        let r = wait(futs, None, ReturnWhen::FirstException);
        assert!(r.done.iter().any(|f| f.done()));
        let all = wait(
            r.done.into_iter().chain(r.not_done).collect(),
            Some(Duration::from_secs(60)),
            ReturnWhen::AllCompleted,
        );
        let outcomes: Vec<_> = all.done.into_iter().map(|f| f.result()).collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|r| matches!(r, Err(TaskError::Panicked(_))))
                .count(),
            1,
            "{outcomes:?}"
        );

        let slow = vec![p.submit(sleep_ms, 1_000).expect("s")];
        let r = wait(
            slow,
            Some(Duration::from_millis(50)),
            ReturnWhen::AllCompleted,
        );
        assert_eq!(r.not_done.len(), 1);
    }
    leaks.finish();
}

#[test]
fn done_callbacks_see_the_outcome() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let f = p.submit(square, 4).expect("submit");
        let s = seen.clone();
        f.add_done_callback(move |r| {
            s.lock()
                .expect("lock")
                .push(r.copied().map_err(|e| e.to_string()))
        });
        let v = {
            let mut f = f;
            f.result_timeout(Duration::from_secs(60)).expect("ok")
        };
        assert_eq!(v, 16);
        let g = p.submit(panic_on_7, 7).expect("submit");
        while !g.done() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let s = seen.clone();
        g.add_done_callback(move |r| {
            s.lock()
                .expect("lock")
                .push(r.copied().map_err(|e| e.to_string()))
        });
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], Ok(16));
        assert!(seen[1].as_ref().is_err_and(|m| m.contains("seven")));
    }
    leaks.finish();
}

static INITIALIZED_IN_WORKER: AtomicU64 = AtomicU64::new(0);

fn init_worker() {
    INITIALIZED_IN_WORKER.store(42, Ordering::SeqCst);
}

fn read_init(_: ()) -> u64 {
    INITIALIZED_IN_WORKER.load(Ordering::SeqCst)
}

fn failing_init() {
    panic!("initializer refuses");
}

#[test]
fn initializer_runs_in_every_worker() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(2)
            .initializer(init_worker)
            .max_tasks_per_child(3)
            .build()
            .expect("pool");
        for f in (0..10)
            .map(|_| p.submit(read_init, ()).expect("submit"))
            .collect::<Vec<_>>()
        {
            assert_eq!(f.result().expect("ok"), 42);
        }
        assert_eq!(
            INITIALIZED_IN_WORKER.load(Ordering::SeqCst),
            0,
            "not run in the parent"
        );
    }
    leaks.finish();
}

#[test]
fn failing_initializer_breaks_the_pool() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(failing_init)
            .build()
            .expect("the handshake happens before the initializer");
        let mut saw_initializer_error = false;
        for _ in 0..5 {
            match p.submit(square, 2) {
                Ok(f) => match f.result() {
                    Err(TaskError::Initializer(m)) => {
                        assert!(m.contains("refuses"), "{m}");
                        saw_initializer_error = true;
                    }
                    other => panic!("expected an initializer error, got {other:?}"),
                },
                Err(PoolError::Broken { reason }) => {
                    assert!(reason.contains("refuses"), "{reason}");
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let later = p.submit(square, 2);
        assert!(matches!(later, Err(PoolError::Broken { .. })) || saw_initializer_error);
    }
    leaks.finish();
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(2)
            .build()
            .expect("pool");
        let pids: Vec<u32> = (0..6)
            .map(|_| p.submit(pid, ()).expect("submit"))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|f| f.result().expect("ok"))
            .collect();
        assert_eq!(pids[0], pids[1]);
        assert_eq!(pids[2], pids[3]);
        assert_eq!(pids[4], pids[5]);
        assert_ne!(pids[0], pids[2]);
        assert_ne!(pids[2], pids[4]);
    }
    leaks.finish();
}

#[test]
fn futures_can_be_awaited() {
    let leaks = LeakCheck::start();
    {
        let p = pool(2);
        let a = p.submit(square, 3).expect("submit");
        let b = p.submit(sleep_ms, 20).expect("submit");
        let sum = pollster::block_on(async { a.await.expect("a") + b.await.expect("b") });
        assert_eq!(sum, 29);
        let bad = p.submit(panic_on_7, 7).expect("submit");
        assert!(matches!(
            pollster::block_on(bad),
            Err(TaskError::Panicked(_))
        ));
    }
    leaks.finish();
}

#[test]
fn fork_start_method() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(2)
            .start_method(StartMethod::Fork)
            .build()
            .expect("pool");
        assert_eq!(
            p.submit(square, 9).expect("submit").result().expect("ok"),
            81
        );
        let got: Vec<u64> = p
            .map(square, 0..100u64, MapOptions::default())
            .expect("map")
            .collect::<Result<_, _>>()
            .expect("ok");
        assert_eq!(got[99], 99 * 99);
        assert!(matches!(
            p.submit(panic_on_7, 7).expect("submit").result(),
            Err(TaskError::Panicked(_))
        ));
    }
    leaks.finish();
}

#[test]
fn invalid_settings_are_errors() {
    let leaks = LeakCheck::start();
    assert!(matches!(
        ProcessPoolExecutor::builder().max_workers(0).build(),
        Err(PoolError::InvalidConfig { .. })
    ));
    assert!(matches!(
        ProcessPoolExecutor::builder()
            .max_tasks_per_child(0)
            .build(),
        Err(PoolError::InvalidConfig { .. })
    ));
    for b in [
        ProcessPoolExecutor::builder().inline_max(1 << 30),
        ProcessPoolExecutor::builder().task_timeout(Duration::ZERO),
        ProcessPoolExecutor::builder().max_in_flight(0),
    ] {
        assert!(matches!(b.build(), Err(PoolError::InvalidConfig { .. })));
    }
    leaks.finish();
}

fn exiting_init() {
    std::process::exit(7);
}

#[test]
fn a_worker_dying_in_its_initializer_breaks_the_pool() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(exiting_init)
            .build()
            .expect("the handshake happens before the initializer");
        match p.submit(square, 2) {
            Ok(f) => match f.result() {
                Err(TaskError::Initializer(m)) => assert!(m.contains("status 7"), "{m}"),
                other => panic!("expected an initializer error, got {other:?}"),
            },
            Err(PoolError::Broken { reason }) => assert!(reason.contains("status 7"), "{reason}"),
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(matches!(p.submit(square, 2), Err(PoolError::Broken { .. })));
    }
    leaks.finish();
}

fn slow_init() {
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn task_timeouts_start_after_the_initializer() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(slow_init)
            .task_timeout(Duration::from_millis(1000))
            .build()
            .expect("pool");
        assert_eq!(
            p.submit(sleep_ms, 100)
                .expect("submit")
                .result()
                .expect("not timed out"),
            100
        );
    }
    leaks.finish();
}

fn nested(x: u64) -> u64 {
    let inner = ProcessPoolExecutor::new(1).expect("a pool inside a worker");
    inner
        .submit(square, x)
        .expect("submit")
        .result()
        .expect("ok")
        + 1
}

#[test]
fn a_task_can_start_a_pool_of_its_own() {
    let leaks = LeakCheck::start();
    {
        let p = pool(1);
        assert_eq!(
            p.submit(nested, 5).expect("submit").result().expect("ok"),
            26
        );
    }
    leaks.finish();
}

#[test]
fn many_threads_submit_to_one_pool() {
    let leaks = LeakCheck::start();
    {
        let p = Arc::new(pool(2));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let futs: Vec<_> = (0..500u64)
                        .map(|i| p.submit(square, t * 1000 + i).expect("submit"))
                        .collect();
                    futs.into_iter()
                        .enumerate()
                        .all(|(i, f)| f.result().ok() == Some(square(t * 1000 + i as u64)))
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().expect("thread"), "every result right");
        }
    }
    leaks.finish();
}

/// Submits from several threads race a shutdown, for both ways of
/// shutting down: every submit either fails with `ShutDown` or returns a
/// future that is done once `shutdown` returns (its value, or cancelled
/// when pending tasks are cancelled); nothing is left waiting, and the
/// tasks that got through while every worker was busy (waiting for the
/// next dispatch rather than queued under the pool's lock) are among them.
#[test]
fn submits_racing_shutdown_fail_or_complete() {
    let leaks = LeakCheck::start();
    for cancel in [CancelFutures::RunPending, CancelFutures::CancelPending] {
        for round in 0..12u64 {
            let p = Arc::new(
                ProcessPoolExecutor::builder()
                    .max_workers(2)
                    .max_in_flight(4)
                    .build()
                    .expect("pool"),
            );
            let submitted = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..3u64)
                .map(|t| {
                    let (p, submitted) = (p.clone(), submitted.clone());
                    std::thread::spawn(move || {
                        let mut futs = Vec::new();
                        for i in 0.. {
                            let x = t * 1_000_000 + i;
                            match p.submit(square, x) {
                                Ok(f) => futs.push((x, f)),
                                Err(PoolError::ShutDown) => break,
                                Err(e) => panic!("submit failed with {e}"),
                            }
                            submitted.fetch_add(1, Ordering::Relaxed);
                        }
                        futs
                    })
                })
                .collect();
            let goal = 200 + round * 300;
            wait_until("tasks are submitted", || {
                submitted.load(Ordering::Relaxed) >= goal
            });
            p.shutdown(ShutdownOptions {
                wait: Wait::UntilDone,
                cancel_futures: cancel,
            });
            for t in threads {
                for (x, f) in t.join().expect("submitting thread") {
                    assert!(f.done(), "a future of an accepted task is done");
                    match (cancel, f.result()) {
                        (_, Ok(v)) => assert_eq!(v, square(x)),
                        (CancelFutures::CancelPending, Err(TaskError::Cancelled)) => {}
                        (_, Err(e)) => panic!("task {x}: {e}"),
                    }
                }
            }
            assert!(matches!(p.submit(square, 1), Err(PoolError::ShutDown)));
        }
    }
    leaks.finish();
}
