//! The Python side of the interop checks and benchmarks: a virtualenv under
//! `target/py-venv` that the xtask builds itself from PyPI, so a fresh machine
//! needs nothing but `python3`. When `python3` (or its `venv` module) is
//! missing, callers get `None` with the reason and skip loudly; they never
//! fail the run for it.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned versions: interop results must not drift with PyPI releases.
pub const NUMPY: &str = "numpy==2.2.6";
/// pyarrow for the Arrow interop checks.
pub const PYARROW: &str = "pyarrow==21.0.0";
/// SharedArray: the shm layer under npshmex, and a bench peer of its own.
pub const SHAREDARRAY: &str = "SharedArray==3.2.4";
/// npshmex, the Python library this project ports (bench peer).
pub const NPSHMEX: &str = "npshmex==0.2.1";
/// mpi4py, the peer of the `mpi.*` cases; pip builds it against the system
/// OpenMPI (mpicc), the same one npshmex-mpi links.
pub const MPI4PY: &str = "mpi4py==4.1.2";
/// Ray, the heavy bench peer, installed only by `cargo xtask bench --peers all`.
pub const RAY: &str = "ray==2.60.0";

/// A ready virtualenv.
pub struct Venv {
    /// Its `bin/python`.
    pub python: PathBuf,
}

impl Venv {
    /// A command running this venv's python on `script` (a path or `-c`).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.python);
        c.env_remove("PYTHONPATH");
        c
    }

    /// Runs `xtask/py/<script>` with `args`, echoing it; errors when it does
    /// not exit 0.
    pub fn run_script<A: AsRef<OsStr>>(
        &self,
        script: &str,
        args: impl IntoIterator<Item = A>,
    ) -> Result<()> {
        let path = crate::util::workspace_root()
            .join("xtask")
            .join("py")
            .join(script);
        let mut cmd = self.cmd();
        cmd.arg(path).args(args);
        crate::util::run_cmd(&mut cmd)
    }
}

/// Returns the virtualenv with `packages` installed, creating or extending it
/// as needed; `Ok(Err(reason))` when Python is not available on this machine.
pub fn venv(packages: &[&str]) -> Result<std::result::Result<Venv, String>> {
    let dir = crate::util::target_dir().join("py-venv");
    let python = dir.join("bin").join("python");
    if !python.exists() {
        let Some(sys) = find_python() else {
            return Ok(Err("python3 not found on PATH".into()));
        };
        eprintln!("creating virtualenv {}", dir.display());
        let ok = Command::new(&sys)
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .with_context(|| format!("running {} -m venv", sys.display()))?
            .success();
        if !ok {
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(Err(format!(
                "{} -m venv failed (is the venv module installed?)",
                sys.display()
            )));
        }
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !installed(&dir, p))
        .collect();
    if !missing.is_empty() {
        eprintln!("installing into {}: {}", dir.display(), missing.join(" "));
        let ok = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(&missing)
            .status()
            .context("running pip")?
            .success();
        if !ok {
            bail!("pip install {} failed", missing.join(" "));
        }
        for p in &missing {
            mark_installed(&dir, p)?;
        }
    }
    Ok(Ok(Venv { python }))
}

fn find_python() -> Option<PathBuf> {
    for name in ["python3", "python"] {
        let ok = Command::new(name)
            .args(["-c", "import sys; assert sys.version_info >= (3, 9)"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Some(PathBuf::from(name));
        }
    }
    None
}

// A stamp file per requirement string: pip is slow to answer "already
// installed", and the stamp is exact about the pinned version.
fn stamp(dir: &Path, req: &str) -> PathBuf {
    let safe: String = req
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!(".installed-{safe}"))
}

fn installed(dir: &Path, req: &str) -> bool {
    stamp(dir, req).exists()
}

fn mark_installed(dir: &Path, req: &str) -> Result<()> {
    std::fs::write(stamp(dir, req), b"")?;
    Ok(())
}
