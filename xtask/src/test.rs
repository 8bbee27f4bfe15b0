//! `cargo xtask test`: everything CI checks, in order, with a one-line summary.
//!
//! Each step is independent: a failing step is reported and the next one
//! still runs, so one CI log shows every problem at once. The run ends with
//! `xtask test: N passed, M failed, K skipped` and a non-zero exit on any
//! failure. Skips are loud: they name what was not checked and why.

use crate::flags;
use crate::util::{self, cargo, run_cmd as sh};
use anyhow::{bail, Result};

/// What became of one step.
enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

struct Report {
    steps: Vec<(String, Outcome, std::time::Duration)>,
}

impl Report {
    fn step(&mut self, name: &str, f: impl FnOnce() -> Result<Outcome>) {
        eprintln!("\n==== xtask test: {name}");
        let t = std::time::Instant::now();
        let outcome = match f() {
            Ok(o) => o,
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        match &outcome {
            Outcome::Passed => eprintln!("==== {name}: passed"),
            Outcome::Failed(why) => eprintln!("==== {name}: FAILED: {why}"),
            Outcome::Skipped(why) => eprintln!("==== {name}: SKIPPED: {why}"),
        }
        self.steps.push((name.to_string(), outcome, t.elapsed()));
    }
}

/// Runs every step and prints the summary.
pub fn run(opts: &flags::Test) -> Result<()> {
    let root = util::workspace_root();
    std::env::set_current_dir(&root)?;
    let shm_before = util::shm_entries();
    let workers_before = util::worker_pids();
    let mut r = Report { steps: Vec::new() };
    util::use_dev_runners()?;

    // npshmex-mpi needs the system MPI: installed here when missing and
    // root; otherwise every step leaves that one crate out, and its own
    // steps below are skipped, loudly.
    let mpi = match crate::mpi::ensure_installed() {
        Ok(crate::mpi::Availability::Ready) => Ok(()),
        Ok(crate::mpi::Availability::Missing(why)) => Err(why),
        Err(e) => Err(format!("installing the system MPI failed: {e:#}")),
    };
    if let Err(why) = &mpi {
        eprintln!("!!! xtask test: npshmex-mpi is NOT built or tested: {why}");
    }
    let with_mpi = mpi.is_ok();
    // `--workspace` minus npshmex-mpi when there is no MPI.
    let workspace = |args: &[&'static str]| -> Vec<&'static str> {
        let mut v = args.to_vec();
        v.push("--workspace");
        if !with_mpi {
            v.extend(["--exclude", "npshmex-mpi"]);
        }
        v
    };

    r.step("fmt", || {
        sh(cargo().args(["fmt", "--all", "--check"]))?;
        Ok(Outcome::Passed)
    });
    r.step("clippy", || {
        sh(cargo()
            .args(workspace(&["clippy"]))
            .args(["--all-targets", "--", "-D", "warnings"]))?;
        Ok(Outcome::Passed)
    });
    r.step("tests", || {
        if util::on_path("cargo-nextest") {
            // npshmex-mpi's tests start MPI jobs: the "mpi tests" step runs
            // them, one job at a time. It is still part of the build (a
            // filter leaves its tests out), so that every step builds the
            // same package set: one set of features, one build of each
            // dependency on disk instead of one per step.
            let mut cmd = cargo();
            cmd.args(["nextest", "run"]).args(workspace(&[]));
            if with_mpi {
                cmd.args(["-E", "not package(npshmex-mpi)"]);
            }
            sh(cmd.args(["--no-fail-fast", "--failure-output", "final"]))?;
        } else {
            eprintln!("cargo-nextest not found: using cargo test");
            sh(cargo().args([
                "test",
                "--workspace",
                "--exclude",
                "npshmex-mpi",
                "--no-fail-fast",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ]))?;
        }
        Ok(Outcome::Passed)
    });
    r.step("doctests", || {
        sh(cargo().args(workspace(&["test", "--doc"])))?;
        Ok(Outcome::Passed)
    });
    r.step("docs", || {
        sh(cargo()
            .args(workspace(&["doc", "--no-deps"]))
            .env("RUSTDOCFLAGS", "-D warnings"))?;
        Ok(Outcome::Passed)
    });
    r.step("package", || {
        if opts.quick {
            return Ok(Outcome::Skipped(
                "--quick skips packaging the published crates".into(),
            ));
        }
        // CI packages a clean clone, so there it runs without --allow-dirty
        // and a step that writes into the source tree fails here. Locally,
        // with edits not yet committed, cargo would refuse to package at
        // all; then (only outside CI) the uncommitted files are allowed.
        let allow_dirty = std::env::var_os("CI").is_none() && util::worktree_dirty()?;
        if allow_dirty {
            eprintln!("package: uncommitted changes, outside CI: --allow-dirty");
        }
        let t = std::time::Instant::now();
        crate::package::run(allow_dirty, with_mpi)?;
        eprintln!("package: {:.0} s", t.elapsed().as_secs_f64());
        Ok(Outcome::Passed)
    });
    r.step("mpi tests", || {
        if let Err(why) = &mpi {
            return Ok(Outcome::Skipped(format!(
                "npshmex-mpi NOT tested (ranks under mpiexec, two hosts): {why}"
            )));
        }
        // Its unit tests, and tests/ranks.rs: every case an mpiexec job of
        // its own, with default transports and over TCP, and the two-host
        // case in network namespaces (which says SKIPPED where they cannot
        // be made).
        // Through nextest over the whole workspace when it is there (the
        // build of the "tests" step, nothing rebuilt), one job at a time.
        if util::on_path("cargo-nextest") {
            sh(cargo()
                .args(["nextest", "run"])
                .args(workspace(&[]))
                .args(["-E", "package(npshmex-mpi)", "--test-threads", "1"])
                .args(["--no-fail-fast", "--failure-output", "final"]))?;
        } else {
            sh(cargo().args(["test", "-p", "npshmex-mpi", "--no-fail-fast"]))?;
        }
        Ok(Outcome::Passed)
    });
    r.step("mpi example", || {
        if let Err(why) = &mpi {
            return Ok(Outcome::Skipped(format!(
                "`cargo xtask mpi` NOT run: {why}"
            )));
        }
        crate::mpi::run(&flags::Mpi { np: Some(3) })?;
        Ok(Outcome::Passed)
    });
    r.step("npy-fuzz", || {
        if opts.quick {
            return Ok(Outcome::Skipped(
                "--quick skips the release-mode .npy header fuzzing".into(),
            ));
        }
        // Arbitrary and mutated bytes into NpyHeader::read, arbitrary descr
        // text into DType::parse_descr: must never panic.
        sh(cargo()
            .args(["test", "--release", "-p", "npshmex-codec", "--test", "fuzz"])
            .env("PROPTEST_CASES", "300000"))?;
        Ok(Outcome::Passed)
    });
    r.step("numpy-interop", || {
        if opts.no_python {
            return Ok(Outcome::Skipped(
                "--no-python: numpy interop of .npy files NOT checked".into(),
            ));
        }
        Ok(match crate::npy_interop::run()? {
            crate::npy_interop::Interop::Checked { corpus, written } => {
                eprintln!("numpy-interop: checked {} files", corpus + written);
                Outcome::Passed
            }
            crate::npy_interop::Interop::Skipped(why) => Outcome::Skipped(why),
        })
    });
    r.step("ndarray-interop", || {
        if opts.no_python {
            return Ok(Outcome::Skipped(
                "--no-python: numpy interop of ShmArray keys NOT checked".into(),
            ));
        }
        Ok(match crate::ndarray_interop::run()? {
            crate::ndarray_interop::Interop::Checked { put, popped } => {
                eprintln!("ndarray-interop: numpy checked {put} keys, Rust popped {popped} files");
                Outcome::Passed
            }
            crate::ndarray_interop::Interop::Skipped(why) => Outcome::Skipped(why),
        })
    });
    r.step("arrow-interop", || {
        if opts.no_python {
            return Ok(Outcome::Skipped(
                "--no-python: pyarrow interop of Arrow IPC segments NOT checked".into(),
            ));
        }
        Ok(match crate::arrow_interop::run()? {
            crate::arrow_interop::Interop::Checked {
                put,
                popped,
                roundtrip,
            } => {
                eprintln!("arrow-interop: pyarrow checked {put} files, Rust read {popped}, roundtrip {roundtrip}");
                Outcome::Passed
            }
            crate::arrow_interop::Interop::Skipped(why) => Outcome::Skipped(why),
        })
    });
    r.step("chaos --quick", || {
        if opts.quick {
            return Ok(Outcome::Skipped("--quick skips the chaos run".into()));
        }
        crate::chaos::run(&flags::Chaos {
            quick: true,
            only: None,
        })?;
        Ok(Outcome::Passed)
    });
    r.step("bench --quick", || {
        if opts.quick {
            return Ok(Outcome::Skipped(
                "--quick skips the benchmark smoke run".into(),
            ));
        }
        // Only that every case runs and the three files are written: no
        // verdict on ratios from one reduced run on a CI machine.
        crate::bench::run(&flags::Bench {
            quick: true,
            case: None,
            peers: None,
        })?;
        Ok(Outcome::Passed)
    });

    r.step("leaks", || {
        let shm_after = util::shm_entries();
        let new: Vec<_> = shm_after.difference(&shm_before).collect();
        let workers: Vec<_> = util::worker_pids()
            .difference(&workers_before)
            .copied()
            .collect();
        if !new.is_empty() || !workers.is_empty() {
            bail!("left behind: /dev/shm entries {new:?}, worker processes {workers:?}");
        }
        Ok(Outcome::Passed)
    });

    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    eprintln!("\n==== summary");
    for (name, o, took) in &r.steps {
        let took = format!("{:>5.0} s", took.as_secs_f64());
        match o {
            Outcome::Passed => {
                passed += 1;
                eprintln!("  ok      {took}  {name}");
            }
            Outcome::Failed(why) => {
                failed += 1;
                eprintln!("  FAILED  {took}  {name}: {why}");
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                eprintln!("  SKIPPED {took}  {name}: {why}");
            }
        }
    }
    println!("xtask test: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        bail!("{failed} step(s) failed");
    }
    Ok(())
}
