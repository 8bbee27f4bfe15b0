//! `cargo xtask mpi [-n N]`, and what every MPI step of the xtask shares:
//! finding (or, as root, installing) the system MPI, starting `mpiexec`
//! with the project's settings, and checking that a job left nothing.
//!
//! npshmex-mpi links the system's OpenMPI (and rsmpi's bindings need
//! libclang to build), which a plain `cargo build` of the workspace must
//! not need: the crate is not a default member, and the steps that build it
//! run only when [`ensure_installed`] says MPI is here. As root, the
//! Debian packages are installed when missing, loudly; otherwise the MPI
//! steps are skipped, loudly. OpenMPI refuses to run as root unless two
//! variables are set; they are set on this xtask's own `mpiexec` commands
//! only, never in the user's environment.

use crate::flags;
use crate::util::{self, cargo, run_cmd as sh};
use anyhow::{bail, ensure, Context, Result};
use npshmex_testkit::mpi::launchers;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian packages npshmex-mpi builds and runs with.
pub const PACKAGES: [&str; 3] = ["libopenmpi-dev", "openmpi-bin", "libclang-dev"];

/// Whether MPI can be built and run here.
pub enum Availability {
    /// It is (or was just installed).
    Ready,
    /// It is not, and why (what is missing, and that nothing installed it).
    Missing(String),
}

/// What of the system MPI is missing.
fn missing_parts() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !util::on_path("mpiexec") {
        missing.push("mpiexec (openmpi-bin)");
    }
    let headers = Command::new("mpicc")
        .arg("--showme:incdirs")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !headers {
        missing.push("MPI headers and mpicc (libopenmpi-dev)");
    }
    if !libclang_present() {
        missing.push("libclang (libclang-dev)");
    }
    missing
}

fn libclang_present() -> bool {
    if std::env::var_os("LIBCLANG_PATH").is_some() {
        return true;
    }
    let has = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libclang"))
        })
    };
    let llvm = std::fs::read_dir("/usr/lib").map_or(Vec::new(), |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
            .map(|e| e.path().join("lib"))
            .collect()
    });
    llvm.iter().any(|d| has(d)) || has(Path::new("/usr/lib/x86_64-linux-gnu"))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Checks for the system MPI; as root, installs it when missing (and says
/// so). `Missing` with the reason otherwise.
pub fn ensure_installed() -> Result<Availability> {
    let missing = missing_parts();
    if missing.is_empty() {
        return Ok(Availability::Ready);
    }
    let what = missing.join(", ");
    if !is_root() {
        return Ok(Availability::Missing(format!(
            "{what} not installed, and not root to `apt-get install -y {}`",
            PACKAGES.join(" ")
        )));
    }
    if !util::on_path("apt-get") {
        return Ok(Availability::Missing(format!(
            "{what} not installed, and no apt-get to install {}",
            PACKAGES.join(" ")
        )));
    }
    eprintln!(
        "!!! MPI: {what} missing; running as root, so installing: apt-get install -y {}",
        PACKAGES.join(" ")
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        eprintln!("!!! MPI: apt-get install failed; running apt-get update and trying again");
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        if !install() {
            bail!("apt-get install -y {} failed", PACKAGES.join(" "));
        }
    }
    let still = missing_parts();
    ensure!(
        still.is_empty(),
        "still missing after apt-get install: {}",
        still.join(", ")
    );
    eprintln!("!!! MPI: installed {}", PACKAGES.join(" "));
    Ok(Availability::Ready)
}

/// `mpiexec` with the project's settings: ranks may outnumber cores
/// (`--oversubscribe`), no binding (the ranks poll; pinning two to one core
/// would starve one), and, as root, the two variables OpenMPI wants, on
/// this command only.
pub fn mpiexec() -> Command {
    let mut c = Command::new("mpiexec");
    c.args(npshmex_testkit::mpi::LAUNCH_ARGS);
    if is_root() {
        c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    c
}

/// What a job printed.
pub struct JobOutput {
    pub stdout: String,
    pub stderr: String,
}

fn processes(keep: impl Fn(&Path, &str) -> bool) -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|&pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .unwrap_or_default();
            keep(&exe, &cmdline)
        })
        .collect()
}

/// Runs an MPI job (started through `cmd`, an `mpiexec`) whose ranks run
/// `program` (an executable or script path in their command line),
/// echoing its stdout as it comes; kills it past `limit`; then checks that
/// no rank, no new launcher daemon and no MPI file in `/dev/shm` is left.
pub fn run_job(cmd: &mut Command, program: &Path, limit: Duration) -> Result<JobOutput> {
    let daemons_before = launchers();
    let shm_before = util::shm_entries();
    eprintln!("$ {cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting mpiexec")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let echo = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            println!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > limit {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
                std::thread::sleep(Duration::from_secs(2));
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = JobOutput {
        stdout: echo.join().unwrap_or_default(),
        stderr: errs.join().unwrap_or_default(),
    };
    let leftovers = wait_gone(
        program,
        &daemons_before,
        &shm_before,
        Duration::from_secs(30),
    );
    let Some(status) = status else {
        bail!(
            "mpiexec did not end within {limit:?}; killed. stderr:\n{}",
            out.stderr
        );
    };
    leftovers?;
    ensure!(
        status.success(),
        "mpiexec exited with {status}; stderr:\n{}",
        out.stderr
    );
    Ok(out)
}

fn wait_gone(
    program: &Path,
    daemons_before: &BTreeSet<u32>,
    shm_before: &BTreeSet<String>,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let marker = program.to_string_lossy();
        let ranks =
            processes(|exe, cmdline| exe == program || cmdline.split('\0').any(|a| a == marker));
        let new_daemons: Vec<u32> = launchers().difference(daemons_before).copied().collect();
        let new_shm: Vec<String> = util::shm_entries()
            .difference(shm_before)
            .filter(|n| n.starts_with("vader") || n.contains("ompi"))
            .cloned()
            .collect();
        if ranks.is_empty() && new_daemons.is_empty() && new_shm.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "left behind by the MPI job: ranks {ranks:?}, launcher daemons {new_daemons:?}, /dev/shm {new_shm:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Builds `npshmex-mpi`'s example `seed_mpi` (release, or the dev build
/// in a smoke run: [`util::runner_profile`]); its path.
pub fn build_seed_example() -> Result<PathBuf> {
    sh(cargo().args([
        "build",
        "--profile",
        util::runner_profile(),
        "--quiet",
        // The whole workspace's package set (not `-p`): the same features
        // as the other builds, so no dependency is built a second time.
        "--workspace",
        "--example",
        "seed_mpi",
    ]))?;
    Ok(seed_example_path())
}

/// Where [`build_seed_example`] puts the example.
pub fn seed_example_path() -> PathBuf {
    util::target_dir()
        .join(util::runner_profile_dir())
        .join("examples")
        .join("seed_mpi")
}

/// Runs `cargo xtask mpi`.
pub fn run(opts: &flags::Mpi) -> Result<()> {
    let ranks = opts.ranks();
    ensure!(
        ranks >= 2,
        "mpi: -n {ranks}: at least 2 ranks (rank 0 and one worker)"
    );
    if let Availability::Missing(why) = ensure_installed()? {
        bail!("mpi: the system MPI is not available: {why}");
    }
    let exe = build_seed_example()?;
    let mut cmd = mpiexec();
    cmd.arg("-n").arg(ranks.to_string()).arg(&exe);
    let out = run_job(&mut cmd, &exe, Duration::from_secs(600))?;
    let last = out.stdout.lines().rev().find(|l| !l.trim().is_empty());
    ensure!(
        last == Some("all results checked"),
        "the last line was {last:?}, not \"all results checked\"; stderr:\n{}",
        out.stderr
    );
    Ok(())
}
