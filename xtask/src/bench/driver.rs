//! Orchestration of a bench run: build the release runner, prepare the
//! Python peers, run each case in its own process under a deadline, and hand
//! the summaries to the report writers.

use super::cases::Scale;
use super::catalog::{self, Case, Runner};
use super::cgroup::MemCgroup;
use super::machine::Machine;
use super::stats::Summary;
use super::{report, svg};
use crate::{flags, python, util};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Everything a run produced.
pub struct Results {
    /// Where it ran.
    pub machine: Machine,
    /// `--quick`: reduced sizes, one run.
    pub quick: bool,
    /// Measured cases.
    pub cases: BTreeMap<String, Summary>,
    /// Cases that could not run here, and why (no Python, crate not built, ...).
    pub absent: BTreeMap<String, String>,
    /// Cases whose runner failed (crashed, wrong result, timed out): a bug.
    pub failed: BTreeMap<String, String>,
}

/// What one case process reported.
enum Report {
    Measured(Summary),
    Absent(String),
}

/// Runs `cargo xtask bench`.
pub fn run(opts: &flags::Bench) -> Result<()> {
    let root = util::workspace_root();
    std::env::set_current_dir(&root)?;
    let machine = Machine::probe();
    let mut selected = catalog::all();
    if let Some(name) = &opts.case {
        selected.retain(|c| &c.name == name);
        if selected.is_empty() {
            let names: Vec<_> = catalog::all().into_iter().map(|c| c.name).collect();
            bail!("no case named {name:?}; cases: {}", names.join(" "));
        }
    }

    let bin = if let Some(runner) = util::dev_runner() {
        // `cargo xtask test`'s smoke run: this very (dev) build runs the
        // cases; its figures only show that every case works.
        eprintln!(
            "bench: smoke run in the dev build (figures are not comparable to a release run)"
        );
        runner.to_path_buf()
    } else {
        eprintln!("building the release runner");
        util::run_cmd(util::cargo().args(["build", "--release", "--quiet", "-p", "xtask"]))?;
        util::target_dir().join("release").join("xtask")
    };
    let peers = Peers::prepare(&selected, opts);

    let mut res = Results {
        machine,
        quick: opts.quick,
        cases: BTreeMap::new(),
        absent: BTreeMap::new(),
        failed: BTreeMap::new(),
    };
    let bar = ProgressBar::new(selected.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:32} {pos}/{len} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let deadline = if opts.quick {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(600)
    };
    for case in &selected {
        bar.set_message(case.name.clone());
        let outcome = match (
            opts.quick
                .then(|| catalog::quick_skip(&case.name))
                .flatten(),
            peers.command(case, &bin, opts.quick),
        ) {
            (Some(why), _) => Ok(Report::Absent(why.to_string())),
            (None, Err(why)) => Ok(Report::Absent(why)),
            (None, Ok(_)) if case.name.starts_with("mem.") => run_in_cgroups(
                || peers.command(case, &bin, opts.quick),
                &case.name,
                deadline,
                opts.quick,
            ),
            (None, Ok(mut cmd)) => run_one(&mut cmd, &case.name, deadline, None),
        };
        let line = match outcome {
            Ok(Report::Measured(s)) => {
                let l = format!(
                    "{:<34} {:>12.3} {} (min {:.3}, max {:.3})",
                    case.name, s.median, s.unit, s.min, s.max
                );
                res.cases.insert(case.name.clone(), s);
                l
            }
            Ok(Report::Absent(why)) => {
                let l = format!("{:<34} absent: {why}", case.name);
                res.absent.insert(case.name.clone(), why);
                l
            }
            Err(e) => {
                let why = format!("{e:#}");
                let l = format!("{:<34} FAILED: {why}", case.name);
                res.failed.insert(case.name.clone(), why);
                l
            }
        };
        if bar.is_hidden() {
            // No terminal (CI): indicatif draws nothing and drops println.
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    if opts.case.is_some() {
        // One case says nothing about the targets; keep the files of the last full run.
        println!(
            "bench: {} measured, {} absent, {} failed (--case: results files not rewritten)",
            res.cases.len(),
            res.absent.len(),
            res.failed.len()
        );
    } else {
        let dir = util::target_dir().join("bench");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write(&dir.join("results.json"), &report::json(&res)?)?;
        write(&dir.join("results.md"), &report::markdown(&res))?;
        write(&dir.join("sweep.svg"), &svg::sweep(&res.cases))?;
        eprintln!("{}", report::targets_text(&res));
        println!(
            "bench: {} measured, {} absent, {} failed; wrote {}",
            res.cases.len(),
            res.absent.len(),
            res.failed.len(),
            dir.display()
        );
    }
    if !res.failed.is_empty() {
        bail!(
            "{} case(s) failed: {}",
            res.failed.len(),
            res.failed.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The Python side, prepared once per run.
struct Peers {
    /// The virtualenv with numpy, npshmex, SharedArray, or why there is none.
    base: Result<python::Venv, String>,
    /// The same with ray (only with `--peers all`), or why not.
    ray: Result<python::Venv, String>,
    script: PathBuf,
    /// The system MPI with npshmex-mpi's example built, or why not.
    mpi: Result<(), String>,
    /// The virtualenv's python with mpi4py, or why there is none.
    mpi4py: Result<PathBuf, String>,
}

impl Peers {
    fn prepare(selected: &[Case], opts: &flags::Bench) -> Peers {
        let wants = |r: Runner| selected.iter().any(|c| c.runner == r);
        let script = util::workspace_root().join("xtask/py/bench_peers.py");
        let setup = |pkgs: &[&str]| match python::venv(pkgs) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(format!("virtualenv setup failed: {e:#}")),
        };
        let base_pkgs = [python::NUMPY, python::SHAREDARRAY, python::NPSHMEX];
        let base = if wants(Runner::Python) || (opts.peers_all() && wants(Runner::PythonRay)) {
            setup(&base_pkgs)
        } else {
            Err("not selected".into())
        };
        let ray = if !opts.peers_all() {
            Err("only with --peers all (installs ray)".into())
        } else if !wants(Runner::PythonRay) {
            Err("not selected".into())
        } else {
            match &base {
                Err(why) => Err(why.clone()),
                Ok(_) => setup(&[
                    python::NUMPY,
                    python::SHAREDARRAY,
                    python::NPSHMEX,
                    python::RAY,
                ]),
            }
        };
        let mpi = if wants(Runner::Mpi) || wants(Runner::Mpi4py) {
            match crate::mpi::ensure_installed() {
                Ok(crate::mpi::Availability::Ready) => {
                    if wants(Runner::Mpi) {
                        crate::mpi::build_seed_example()
                            .map(|_| ())
                            .map_err(|e| format!("building npshmex-mpi's seed_mpi failed: {e:#}"))
                    } else {
                        Ok(())
                    }
                }
                Ok(crate::mpi::Availability::Missing(why)) => Err(format!("no MPI: {why}")),
                Err(e) => Err(format!("installing MPI failed: {e:#}")),
            }
        } else {
            Err("not selected".into())
        };
        let mpi4py = match (&mpi, wants(Runner::Mpi4py)) {
            (_, false) => Err("not selected".into()),
            (Err(why), true) => Err(why.clone()),
            (Ok(()), true) => setup(&[python::NUMPY, python::MPI4PY]).map(|v| v.python),
        };
        Peers {
            base,
            ray,
            script,
            mpi,
            mpi4py,
        }
    }

    /// The command that measures `case`, or why it cannot run here.
    fn command(&self, case: &Case, bin: &Path, quick: bool) -> Result<Command, String> {
        let venv = match case.runner {
            Runner::Rust => {
                let mut c = Command::new(bin);
                c.args(["bench-case", &case.name]);
                if quick {
                    c.arg("--quick");
                }
                return Ok(c);
            }
            Runner::Mpi | Runner::Mpi4py => {
                self.mpi.clone()?;
                let mut c = Command::new(bin);
                c.args(["bench-case", &case.name]);
                // The runner looks for the seed example the parent built.
                if util::dev_runners() {
                    c.env(util::DEV_RUNNERS_ENV, "1");
                }
                if quick {
                    c.arg("--quick");
                }
                if case.runner == Runner::Mpi4py {
                    let python = self
                        .mpi4py
                        .as_ref()
                        .map_err(|why| format!("no mpi4py: {why}"))?;
                    c.env(super::cases::mpi::PYTHON_ENV, python);
                }
                return Ok(c);
            }
            Runner::Python => self.base.as_ref(),
            Runner::PythonRay => self.ray.as_ref(),
            Runner::NotYet(why) => return Err(why.to_string()),
        };
        let venv = venv.map_err(|why| format!("no Python peers: {why}"))?;
        let mut c = venv.cmd();
        c.arg(&self.script).arg(&case.name);
        c.args([
            "--cores",
            &std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string(),
        ]);
        if quick {
            c.arg("--quick");
        }
        Ok(c)
    }
}

/// Runs a `mem.*` case: each sample (warm-up included) is one call in a
/// fresh process inside a fresh memory cgroup, removed after it; absent
/// with the reason when no cgroup can be made here.
fn run_in_cgroups(
    command: impl Fn() -> Result<Command, String>,
    name: &str,
    deadline: Duration,
    quick: bool,
) -> Result<Report> {
    let scale = Scale::new(quick);
    let mut samples = Vec::new();
    for i in 0..scale.warmup + scale.runs {
        let group = match MemCgroup::create() {
            Ok(g) => g,
            Err(why) => return Ok(Report::Absent(format!("no memory cgroup: {why}"))),
        };
        let mut cmd = match command() {
            Ok(c) => c,
            Err(why) => return Ok(Report::Absent(why)),
        };
        cmd.arg("--cgroup").arg(group.dir());
        let report = run_one(&mut cmd, name, deadline, Some(&group));
        group.remove()?;
        match report? {
            Report::Measured(s) if i >= scale.warmup => samples.push(s.median),
            Report::Measured(_) => {}
            absent @ Report::Absent(_) => return Ok(absent),
        }
    }
    Summary::of(&samples, "x")
        .map(Report::Measured)
        .context("no usable samples")
}

/// Runs one case process and parses its report line; kills it past
/// `deadline`. With a `group`, the process is moved into it and then told
/// to go (a line on its stdin) before it does anything it measures.
fn run_one(
    cmd: &mut Command,
    name: &str,
    deadline: Duration,
    group: Option<&MemCgroup>,
) -> Result<Report> {
    let mut child = cmd
        .stdin(if group.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the runner of {name}"))?;
    if let Some(group) = group {
        let go = group.add(child.id()).and_then(|()| {
            let mut stdin = child.stdin.take().context("no stdin pipe")?;
            stdin.write_all(b"go\n").context("telling the runner to go")
        });
        if let Err(e) = go {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    }
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    };
    let Some(status) = status else {
        bail!(
            "timed out after {} s; stderr: {}",
            deadline.as_secs(),
            tail(&stderr)
        );
    };
    if !status.success() {
        bail!("runner exited with {status}; stderr: {}", tail(&stderr));
    }
    parse_report(&stdout, name).with_context(|| format!("stderr: {}", tail(&stderr)))
}

/// Finds the report line of `name` in a runner's stdout.
fn parse_report(stdout: &str, name: &str) -> Result<Report> {
    for line in stdout.lines().rev() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("case").and_then(|c| c.as_str()) != Some(name) {
            continue;
        }
        if let Some(why) = v.get("absent").and_then(|a| a.as_str()) {
            return Ok(Report::Absent(why.to_string()));
        }
        let unit = v
            .get("unit")
            .and_then(|u| u.as_str())
            .context("report without a unit")?;
        let samples: Vec<f64> = v
            .get("samples")
            .and_then(|s| s.as_array())
            .context("report without samples")?
            .iter()
            .map(|x| x.as_f64().context("a sample is not a number"))
            .collect::<Result<_>>()?;
        return Summary::of(&samples, unit)
            .map(Report::Measured)
            .context("no usable samples (empty or not finite)");
    }
    bail!("the runner printed no report line for {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_measured_and_absent_lines() {
        let out = "noise\n{\"case\":\"seed.bare\",\"unit\":\"ms\",\"samples\":[3,1,2]}\n";
        let Report::Measured(s) = parse_report(out, "seed.bare").unwrap() else {
            panic!("expected a measurement");
        };
        assert_eq!(
            (s.median, s.min, s.max, s.unit.as_str()),
            (2.0, 1.0, 3.0, "ms")
        );
        let out = "{\"case\":\"seed.py_stdlib\",\"absent\":\"no python\"}";
        assert!(
            matches!(parse_report(out, "seed.py_stdlib").unwrap(), Report::Absent(w) if w == "no python")
        );
        assert!(parse_report(out, "seed.bare").is_err());
        assert!(parse_report("{\"case\":\"a\",\"unit\":\"ms\",\"samples\":[]}", "a").is_err());
    }
}
