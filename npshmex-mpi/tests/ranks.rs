//! The executor across real process boundaries: every case runs this very
//! binary under `mpiexec` (`-n 3`: rank 0 and two workers), once with
//! OpenMPI's default transports and once forced over TCP
//! (`--mca btl tcp,self`), and checks what rank 0 printed, the launcher's
//! exit, and that no rank, daemon or `/dev/shm` entry is left.
//!
//! The binary has its own `main` (`harness = false`): started with
//! `NPSHMEX_MPI_CASE` set it is a rank of that case; otherwise it is the
//! driver, with the command line of a libtest harness that `cargo test` and
//! `cargo nextest` understand (`--list`, `--exact NAME`, a filter).

mod support;

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use ndarray::Array1;
use npshmex_mpi::hostile::Misbehaviour;
use npshmex_mpi::{InitOptions, Mpi, MpiError, MpiPoolExecutor};
use npshmex_ndarray::{Shm, ShmArg, ShmArray1};
use npshmex_pool::{
    as_completed, wait, Executor, MapOptions, PoolError, ReturnWhen, ShutdownOptions, TaskError,
};
use npshmex_shm::Transfer;

use support::{Driver, Launch, Transport, CASE_ENV};

// --- task functions (run in the worker ranks) ---

fn square(x: u64) -> u64 {
    x * x
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
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

fn add_in_place(mut x: ShmArray1<f64>) -> Result<(String, ShmArray1<f64>), String> {
    let mode = format!("{:?}", x.transfer());
    x.view_mut()
        .map_err(|e| e.to_string())?
        .map_inplace(|v| *v += 1.0);
    Ok((mode, x))
}

fn read_mode(x: ShmArray1<f64>) -> (String, f64) {
    (format!("{:?}", x.transfer()), x.view().sum())
}

fn scribble(mut x: ShmArray1<f64>) -> Result<(String, f64), String> {
    let mode = format!("{:?}", x.transfer());
    x.view_mut().map_err(|e| e.to_string())?.fill(-1.0);
    Ok((mode, x.view().sum()))
}

fn drop_in(x: ShmArg<'_, f64, ndarray::Ix1>) -> Shm<Array1<f64>> {
    Shm(x.into_owned() * 2.0)
}

fn bytes_sum(v: Vec<u8>) -> (usize, u64) {
    (v.len(), v.iter().map(|&b| u64::from(b)).sum())
}

fn make_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn bump_u8(mut x: ShmArray1<u8>) -> Result<ShmArray1<u8>, String> {
    x.view_mut()
        .map_err(|e| e.to_string())?
        .map_inplace(|v| *v = v.wrapping_add(1));
    Ok(x)
}

fn die(_: ()) -> u32 {
    std::process::abort()
}

// --- rank 0's side of each case ---

fn surface(mpi: &Mpi) -> Result<()> {
    let pool = MpiPoolExecutor::new(mpi)?;
    ensure!(pool.max_workers() == 2, "{} workers", pool.max_workers());
    ensure!(pool.submit(square, 12)?.result()? == 144);

    // map: ordered, chunked, lazy.
    let squares: Result<Vec<u64>, _> = pool
        .map(
            square,
            0..100u64,
            MapOptions {
                chunksize: 7,
                ..MapOptions::default()
            },
        )?
        .collect();
    ensure!(squares? == (0..100u64).map(|x| x * x).collect::<Vec<_>>());

    // as_completed, wait, .await, callbacks.
    let futs: Vec<_> = [30u64, 1, 10, 5]
        .iter()
        .map(|&ms| pool.submit(sleep_ms, ms))
        .collect::<Result<_, _>>()?;
    let mut got = Vec::new();
    for f in as_completed(futs) {
        got.push(f?.result()?);
    }
    got.sort_unstable();
    ensure!(got == vec![1, 5, 10, 30], "as_completed gave {got:?}");
    let slow = pool.submit(sleep_ms, 2_000)?;
    let quick = pool.submit(sleep_ms, 1)?;
    let w = wait(
        vec![slow, quick],
        Some(Duration::from_secs(10)),
        ReturnWhen::FirstCompleted,
    );
    ensure!(!w.done.is_empty(), "wait returned nothing done");
    ensure!(pollster::block_on(pool.submit(square, 3)?)? == 9);
    let (tx, rx) = std::sync::mpsc::channel();
    pool.submit(square, 4)?.add_done_callback(move |r| {
        let _ = tx.send(r.ok().copied());
    });
    ensure!(rx.recv_timeout(Duration::from_secs(10))? == Some(16));

    // Errors as values, and panics that fail only their own future.
    ensure!(pool.submit(checked_div, (7, 0))?.result()? == Err("division by zero".to_string()));
    let before: Vec<u32> = pool
        .map(pid, vec![(); 8], MapOptions::default())?
        .collect::<Result<_, _>>()?;
    match pool.submit(panic_on_7, 7)?.result() {
        Err(TaskError::Panicked(info)) => ensure!(info.message().contains("seven"), "{info}"),
        other => return Err(anyhow!("a panicking task gave {other:?}")),
    }
    let outcomes: Vec<_> = pool
        .map(panic_on_7, 0..10u64, MapOptions::default())?
        .collect();
    for (i, o) in outcomes.iter().enumerate() {
        match (i, o) {
            (7, Err(TaskError::Panicked(_))) => {}
            (i, Ok(v)) if *v == i as u64 => {}
            other => return Err(anyhow!("map over a panicking task: {other:?}")),
        }
    }
    let after: Vec<u32> = pool
        .map(pid, vec![(); 8], MapOptions::default())?
        .collect::<Result<_, _>>()?;
    let mut b = before.clone();
    b.sort_unstable();
    b.dedup();
    ensure!(
        after.iter().all(|p| b.contains(p)),
        "the ranks changed: {before:?} then {after:?}"
    );

    // Segments in every receive mode.
    let a = ShmArray1::from_elem(1 << 20, 1.0)?;
    let (mode, y) = pool
        .submit(add_in_place, a)?
        .result()?
        .map_err(|e| anyhow!(e))?;
    ensure!(
        mode == format!("{:?}", Transfer::Move),
        "moved array arrived as {mode}"
    );
    ensure!(y.view().iter().all(|&v| v == 2.0));
    let frozen = y.into_read_only()?;
    let (mode, sum) = pool.submit(read_mode, frozen.try_clone()?)?.result()?;
    ensure!(
        mode == format!("{:?}", Transfer::ReadOnly),
        "frozen array arrived as {mode}"
    );
    ensure!(sum == 2.0 * f64::from(1u32 << 20));
    // Copy-on-write: the receiver may write a private copy (a received
    // copy-on-write array is writable, as through the local pool).
    let (mode, sum) = pool
        .submit(scribble, frozen.share_copy_on_write()?)?
        .result()?
        .map_err(|e| anyhow!(e))?;
    ensure!(
        mode == format!("{:?}", Transfer::Move),
        "shared copy-on-write arrived as {mode}"
    );
    ensure!(sum == -f64::from(1u32 << 20));
    ensure!(
        frozen.view().iter().all(|&v| v == 2.0),
        "a copy-on-write receiver changed the caller's array"
    );
    let plain = Array1::from_elem(300_000, 1.5);
    let doubled = pool
        .submit(drop_in, ShmArg::from(&plain))?
        .result()?
        .into_inner();
    ensure!(doubled.iter().all(|&v| v == 3.0));

    // Plain serde payloads past the inline limit, both ways.
    let big = vec![7u8; 3 << 20];
    ensure!(pool.submit(bytes_sum, big)?.result()? == (3 << 20, 7 * (3 << 20)));
    let made = pool.submit(make_bytes, 5 << 20)?.result()?;
    ensure!(made.len() == 5 << 20 && made.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

    // Shutdown: no new tasks, no second executor on the ended workers.
    pool.shutdown(ShutdownOptions::default());
    ensure!(matches!(pool.submit(square, 1), Err(PoolError::ShutDown)));
    ensure!(matches!(
        MpiPoolExecutor::new(mpi),
        Err(MpiError::WorkersTaken)
    ));
    Ok(())
}

fn timeout(mpi: &Mpi) -> Result<()> {
    let pool = MpiPoolExecutor::builder()
        .task_timeout(Duration::from_millis(500))
        .build(mpi)?;
    let t = Instant::now();
    match pool.submit(sleep_ms, 60_000)?.result() {
        Err(TaskError::TimedOut { limit }) => ensure!(limit == Duration::from_millis(500)),
        other => return Err(anyhow!("a hung task gave {other:?}")),
    }
    ensure!(
        t.elapsed() < Duration::from_secs(10),
        "the timeout took {:?}",
        t.elapsed()
    );
    // The other worker still serves.
    for i in 0..20 {
        ensure!(pool.submit(square, i)?.result()? == i * i);
    }
    // Shutdown ends the stuck rank too, long before its task would end.
    let t = Instant::now();
    drop(pool);
    ensure!(
        t.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        t.elapsed()
    );
    Ok(())
}

/// Tasks run, and the executor and MPI end, with `Duration::MAX` for the
/// heartbeat and the handshake timeout.
fn unbounded_settings(mpi: &Mpi) -> Result<()> {
    let pool = MpiPoolExecutor::new(mpi)?;
    for i in 0..20 {
        ensure!(pool.submit(square, i)?.result()? == i * i);
    }
    // Long enough for the engine to park between tasks.
    std::thread::sleep(Duration::from_millis(300));
    ensure!(pool.submit(square, 9)?.result()? == 81);
    Ok(())
}

fn big(mpi: &Mpi) -> Result<()> {
    let pool = MpiPoolExecutor::new(mpi)?;
    // Past 2 GiB: three MPI messages each way.
    let len = (2usize << 30) + (64 << 20) + 5;
    let a = ShmArray1::<u8>::from_elem(len, 3)?;
    let y = pool.submit(bump_u8, a)?.result()?.map_err(|e| anyhow!(e))?;
    let v = y.view();
    ensure!(v.len() == len);
    for i in (0..len).step_by(4093).chain([len - 1]) {
        ensure!(v[i] == 4, "element {i} is {}", v[i]);
    }
    Ok(())
}

fn worker_dies(mpi: &Mpi) -> Result<()> {
    let pool = MpiPoolExecutor::new(mpi)?;
    let t = Instant::now();
    match pool.submit(die, ())?.result() {
        Err(TaskError::WorkerDied { .. }) => {}
        other => return Err(anyhow!("a task that aborts its rank gave {other:?}")),
    }
    ensure!(
        t.elapsed() < Duration::from_secs(30),
        "death noticed after {:?}",
        t.elapsed()
    );
    for i in 0..10 {
        ensure!(pool.submit(square, i)?.result()? == i * i);
    }
    Ok(())
}

fn serve_until_killed(mpi: &Mpi) -> Result<()> {
    let pool = MpiPoolExecutor::new(mpi)?;
    let futs: Vec<_> = (0..2)
        .map(|_| pool.submit(sleep_ms, 600_000))
        .collect::<Result<_, _>>()?;
    println!("ready {}", std::process::id());
    let _ = wait(
        futs,
        Some(Duration::from_secs(600)),
        ReturnWhen::AllCompleted,
    );
    Err(anyhow!("rank 0 was not killed"))
}

/// The misbehaviour of the worker ranks of a `hostile_*` case.
fn misbehaviour(case: &str) -> Option<Misbehaviour> {
    Some(match case {
        "hostile_wrong_id" => Misbehaviour::WrongId,
        "hostile_twice" => Misbehaviour::Twice,
        "hostile_missing_bytes" => Misbehaviour::MissingBytes(1 << 20),
        // Within the memory of any machine that runs this: accepted, and
        // its buffer must cost nothing until bytes arrive.
        "hostile_missing_gib" => Misbehaviour::MissingBytes(1 << 30),
        // 64 TiB: more than any machine that runs this has.
        "hostile_missing_tib" => Misbehaviour::MissingBytes(1 << 46),
        _ => return None,
    })
}

/// Whether this process is rank 0 of its job (read from the launcher's
/// environment: the hostile ranks decide before MPI is up).
fn launched_as_rank_0() -> bool {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .is_some_and(|r| r == "0")
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Rank 0 against worker ranks that break the protocol (see
/// `npshmex_mpi::hostile`): the task fails with a typed error within its
/// timeout, announced bytes commit no memory, and shutdown ends.
fn hostile(mpi: &Mpi, case: &str) -> Result<()> {
    let limit = Duration::from_secs(2);
    let pool = MpiPoolExecutor::builder().task_timeout(limit).build(mpi)?;
    let before = rss_kib();
    let t = Instant::now();
    let r = pool
        .submit(square, 3)?
        .result_timeout(Duration::from_secs(120));
    let grew = rss_kib().saturating_sub(before);
    let typed = match case {
        "hostile_wrong_id" | "hostile_twice" | "hostile_missing_tib" => {
            matches!(r, Err(TaskError::Transport { .. }))
        }
        _ => matches!(r, Err(TaskError::TimedOut { .. })),
    };
    ensure!(typed, "the task gave {r:?} after {:?}", t.elapsed());
    ensure!(
        grew < 256 << 10,
        "an announcement alone grew rank 0 by {} MiB",
        grew >> 10
    );
    let t = Instant::now();
    drop(pool);
    ensure!(
        t.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        t.elapsed()
    );
    Ok(())
}

/// A rank's whole life in a case.
fn rank_main(case: &str) -> i32 {
    if let Some(how) = misbehaviour(case) {
        if !launched_as_rank_0() {
            npshmex_mpi::hostile::serve(how);
        }
    }
    if case == "build_mismatch" {
        return match npshmex_mpi::init() {
            Err(MpiError::BuildMismatch { rank, ours, theirs }) => {
                println!("case {case} ok: rank {rank} runs {theirs}, rank 0 {ours}");
                0
            }
            Err(e) => {
                println!("case {case} FAILED: {e}");
                1
            }
            Ok(_) => {
                println!("case {case} FAILED: init accepted another build");
                1
            }
        };
    }
    // The cases about dead ranks take silence for death sooner.
    let opts = match case {
        "worker_dies" | "serve_until_killed" => InitOptions {
            heartbeat: Duration::from_millis(200),
            silence: Duration::from_secs(3),
            ..InitOptions::default()
        },
        // "No limit" settings must mean that, not an overflow.
        "unbounded_settings" => InitOptions {
            heartbeat: Duration::MAX,
            handshake_timeout: Duration::MAX,
            ..InitOptions::default()
        },
        _ => InitOptions::default(),
    };
    let mpi = match npshmex_mpi::init_with(opts) {
        Ok(m) => m,
        Err(e) => {
            println!("case {case} FAILED: init: {e}");
            return 1;
        }
    };
    let outcome = match case {
        "surface" => surface(&mpi),
        "timeout" => timeout(&mpi),
        "big" => big(&mpi),
        "worker_dies" => worker_dies(&mpi),
        "serve_until_killed" => serve_until_killed(&mpi),
        "two_hosts" => support::two_hosts_rank0(&mpi),
        "unbounded_settings" => unbounded_settings(&mpi),
        c if misbehaviour(c).is_some() => hostile(&mpi, c),
        other => Err(anyhow!("no case {other}")),
    };
    drop(mpi);
    match outcome {
        Ok(()) => {
            println!("case {case} ok");
            0
        }
        Err(e) => {
            println!("case {case} FAILED: {e:#}");
            1
        }
    }
}

// --- the driver's side ---

fn plain(case: &'static str, transport: Transport) -> Result<()> {
    let out = Launch::new(case, transport).run(Duration::from_secs(300))?;
    out.expect_ok(case)
}

fn kill_caller(transport: Transport, recovery: bool) -> Result<()> {
    let mut launch = Launch::new("serve_until_killed", transport);
    if recovery {
        launch.extra(&["--enable-recovery"]);
    }
    let out = launch.run_killing_rank0(Duration::from_secs(120))?;
    ensure!(
        !out.stdout.contains("case serve_until_killed"),
        "rank 0 finished instead of being killed:\n{}",
        out.stdout
    );
    Ok(())
}

fn worker_dies_driver(transport: Transport) -> Result<()> {
    let mut launch = Launch::new("worker_dies", transport);
    launch.extra(&["--enable-recovery"]);
    // The launcher reports the aborted rank in its exit status: only what
    // rank 0 printed counts.
    let out = launch.run(Duration::from_secs(180))?;
    ensure!(out.stdout.contains("case worker_dies ok"), "{out}");
    Ok(())
}

fn both_executors() -> Result<()> {
    let mut launch = Launch::new("both", Transport::Default);
    launch.program(support::example("both")?);
    let out = launch.run(Duration::from_secs(300))?;
    ensure!(
        out.status.is_some_and(|s| s.success())
            && out
                .stdout
                .contains("the same results through both executors"),
        "examples/both did not agree:\n{out}"
    );
    Ok(())
}

fn build_mismatch() -> Result<()> {
    let other = support::copy_with_another_build()
        .context("making a copy of this test with another build id")?;
    let mut launch = Launch::new("build_mismatch", Transport::Default);
    launch.mpmd(&other);
    let out = launch.run(Duration::from_secs(120));
    let _ = std::fs::remove_file(&other);
    out?.expect_ok("build_mismatch")
}

fn main() {
    if let Ok(case) = std::env::var(CASE_ENV) {
        std::process::exit(rank_main(&case));
    }
    let mut cases: Vec<(String, Driver)> = Vec::new();
    for t in [Transport::Default, Transport::Tcp] {
        let p = t.prefix();
        cases.push((
            format!("{p}::surface"),
            Box::new(move || plain("surface", t)),
        ));
        cases.push((
            format!("{p}::timeout"),
            Box::new(move || plain("timeout", t)),
        ));
        cases.push((
            format!("{p}::worker_dies_with_recovery"),
            Box::new(move || worker_dies_driver(t)),
        ));
        cases.push((
            format!("{p}::kill_9_of_rank_0"),
            Box::new(move || kill_caller(t, false)),
        ));
    }
    cases.push((
        "default::past_2_gib".into(),
        Box::new(|| plain("big", Transport::Default)),
    ));
    cases.push((
        "default::kill_9_of_rank_0_with_recovery".into(),
        Box::new(|| kill_caller(Transport::Default, true)),
    ));
    cases.push(("default::build_mismatch".into(), Box::new(build_mismatch)));
    cases.push((
        "default::example_both_executors".into(),
        Box::new(both_executors),
    ));
    cases.push(("two_hosts::seed".into(), Box::new(support::two_hosts)));
    for case in [
        "hostile_wrong_id",
        "hostile_twice",
        "hostile_missing_bytes",
        "hostile_missing_gib",
        "hostile_missing_tib",
        "unbounded_settings",
    ] {
        cases.push((
            format!("default::{case}"),
            Box::new(move || plain(case, Transport::Default)),
        ));
    }
    std::process::exit(support::harness(cases));
}
