//! Small helpers shared by the subcommands: locating the workspace, running
//! commands, and snapshotting `/dev/shm` and the process table for leak checks.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    }
}

/// This dev build, kept as the runner of smoke runs (see
/// [`use_dev_runners`]).
static DEV_RUNNER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes release-built runners (the bench runner, the MPI seed example)
/// dev builds instead: `cargo xtask test`'s bench and MPI steps are smoke
/// runs, and CI should not compile the workspace a third time at
/// opt-level 3. The bench runner is this very executable, hard-linked
/// aside first: a later cargo step of the same run may replace
/// `target/debug/xtask` (another feature set), and a replaced file can no
/// longer be started by its path.
///
/// # Errors
/// When this executable cannot be found or linked (or copied) aside.
pub fn use_dev_runners() -> Result<()> {
    let exe = std::env::current_exe().context("locating this xtask")?;
    let runner = target_dir().join("xtask-smoke-runner");
    let _ = std::fs::remove_file(&runner);
    if std::fs::hard_link(&exe, &runner).is_err() {
        std::fs::copy(&exe, &runner)
            .with_context(|| format!("copying {} to {}", exe.display(), runner.display()))?;
    }
    let _ = DEV_RUNNER.set(runner);
    Ok(())
}

/// Set in the environment of a bench runner started by a smoke run, so
/// that it looks for the dev builds its parent made.
pub const DEV_RUNNERS_ENV: &str = "NPSHMEX_XTASK_DEV_RUNNERS";

/// Whether runners are dev builds (`cargo xtask test`, and the runners it
/// starts) or release builds.
pub fn dev_runners() -> bool {
    DEV_RUNNER.get().is_some() || std::env::var_os(DEV_RUNNERS_ENV).is_some()
}

/// The cargo profile runners are built with: `dev` or `release`.
pub fn runner_profile() -> &'static str {
    if dev_runners() {
        "dev"
    } else {
        "release"
    }
}

/// The directory under the target directory that runners are built in
/// (cargo puts the `dev` profile in `debug`).
pub fn runner_profile_dir() -> &'static str {
    match runner_profile() {
        "dev" => "debug",
        other => other,
    }
}

/// The bench runner of a smoke run, if [`use_dev_runners`] was called.
pub fn dev_runner() -> Option<&'static Path> {
    DEV_RUNNER.get().map(PathBuf::as_path)
}

/// The `cargo` that runs this xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd`, echoing it first; errors when it does not exit 0.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether the git work tree has changes not committed (untracked files
/// included, ignored ones not).
pub fn worktree_dirty() -> Result<bool> {
    let out = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(workspace_root())
        .output()
        .context("running git status")?;
    if !out.status.success() {
        bail!(
            "git status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(!out.stdout.is_empty())
}

/// Whether a program is on PATH.
pub fn on_path(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Names of all the entries of `/dev/shm` (a whole run's leak check looks
/// at every name, whichever process made it).
pub fn shm_entries() -> BTreeSet<String> {
    npshmex_testkit::shm_entries("")
}

/// Removes every `/dev/shm` entry whose name starts with `prefix` (cleanup of
/// a step that put named segments; errors are ignored: it runs on drop).
pub fn remove_shm_entries(prefix: &str) {
    for name in npshmex_testkit::shm_entries(prefix) {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
    }
}

/// Pids of every pool worker process on the machine (comm `npshmex-w…`).
pub use npshmex_testkit::worker_pids;
