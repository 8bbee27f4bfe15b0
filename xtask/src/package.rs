//! The `package` step of `cargo xtask test`: what `cargo publish` would
//! upload, checked from the `.crate` files themselves rather than from this
//! checkout, so that a file outside a crate's directory (an `include_str!`
//! of `../`, an example reading `../data`) or a dev-dependency without a
//! version (stripped on packaging) shows up before a release does.
//!
//! Two stages:
//! 1. `cargo package` of the published crates, with cargo's verification:
//!    each crate is built from its `.crate` against the packaged forms of
//!    the others (cargo's overlay of unpublished versions). That builds the
//!    libraries only.
//! 2. The examples of the packaged crates, checked in a scratch workspace of
//!    the unpacked `.crate`s whose `[patch.crates-io]` points each crate at
//!    its packaged form: what a user who downloads the crate gets.
//!
//! The packaged crates' tests are not built: most of them use
//! `npshmex-testkit`, which is not published and is stripped from their
//! dev-dependencies on packaging, so they build only inside this checkout.

use crate::util::{self, cargo, run_cmd as sh};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Runs both stages; `allow_dirty` packages uncommitted files too. Without
/// `with_mpi` (no system MPI here), npshmex-mpi is left out: its packaged
/// form could not be built.
pub fn run(allow_dirty: bool, with_mpi: bool) -> Result<()> {
    forget_verified_builds()?;
    let mut cmd = cargo();
    cmd.env("CARGO_TARGET_DIR", verify_target());
    // Every member but the two that are never published.
    cmd.args([
        "package",
        "--workspace",
        "--exclude",
        "xtask",
        "--exclude",
        "npshmex-testkit",
    ]);
    if !with_mpi {
        cmd.args(["--exclude", "npshmex-mpi"]);
    }
    if allow_dirty {
        cmd.arg("--allow-dirty");
    }
    sh(&mut cmd)?;
    let mut crates = published()?;
    if !with_mpi {
        crates.retain(|(name, _)| name != "npshmex-mpi");
    }
    examples_from_crates(&crates)
}

/// Where cargo packages and verifies: a target directory of its own. The
/// verification builds the packaged crates with their own (default)
/// profile, so it shares no artifact with the checkout's builds anyway.
fn verify_target() -> std::path::PathBuf {
    util::target_dir().join("package-verify")
}

/// Makes cargo rebuild the packaged crates it verified in an earlier run.
///
/// Packaged sources carry the fixed mtime cargo writes into `.crate`
/// files, and cargo extracts a registry crate only once: a crate changed
/// since the last run (same version) would be taken from its old
/// extraction, or its old build would look fresh, and be linked in its old
/// form. So our crates' builds in the verification's target directory and
/// cargo's extractions of them from the local registries it makes for
/// verifying (`$CARGO_HOME/registry/src/-<hash>/npshmex-*`) are removed;
/// the dependencies stay compiled.
fn forget_verified_builds() -> Result<()> {
    let debug = verify_target().join("debug");
    let mut stale: Vec<std::path::PathBuf> = Vec::new();
    for dir in [debug.join(".fingerprint"), debug.join("deps")] {
        stale.extend(entries(&dir, |name| name.contains("npshmex")));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(home) = cargo_home {
        // Local registries have no name: their directories start with '-'.
        for registry in entries(&home.join("registry").join("src"), |n| n.starts_with('-')) {
            stale.extend(entries(&registry, |n| n.starts_with("npshmex-")));
        }
    }
    for path in stale {
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        gone.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The entries of `dir` whose names pass `keep` (none if `dir` is absent).
fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The workspace members that may be published, as `(name, version)`.
fn published() -> Result<Vec<(String, String)>> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        out.status
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    let mut names = Vec::new();
    for p in meta["packages"]
        .as_array()
        .context("no packages in cargo metadata")?
    {
        // `publish = false` is an empty registry list; absent means crates.io.
        let never = p["publish"].as_array().is_some_and(|r| r.is_empty());
        if !never {
            let name = p["name"].as_str().context("a package without a name")?;
            let version = p["version"]
                .as_str()
                .context("a package without a version")?;
            names.push((name.to_string(), version.to_string()));
        }
    }
    Ok(names)
}

/// Stage 2: the examples, built from the unpacked `.crate` files.
fn examples_from_crates(crates: &[(String, String)]) -> Result<()> {
    let target = util::target_dir();
    let packaged = verify_target().join("package");
    let scratch = target.join("package-check");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("clearing {}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch)?;
    let mut manifest = String::from("# written by `cargo xtask test` (package step)\n[workspace]\nresolver = \"2\"\nmembers = [");
    let mut patch = String::from("\n[patch.crates-io]\n");
    for (krate, version) in crates {
        let dir = format!("{krate}-{version}");
        unpack(&packaged.join(format!("{dir}.crate")), &scratch)?;
        let _ = write!(manifest, "\"{dir}\", ");
        let _ = writeln!(patch, "{krate} = {{ path = \"{dir}\" }}");
    }
    manifest.push_str("]\n");
    manifest.push_str(&patch);
    std::fs::write(scratch.join("Cargo.toml"), manifest)
        .with_context(|| format!("writing {}/Cargo.toml", scratch.display()))?;
    // `check`, not `build`: what this stage catches (a missing file, an
    // unresolved crate) are compile errors, and codegen of every
    // dev-dependency would double its time (~2 min cold here).
    sh(cargo()
        .current_dir(&scratch)
        .env("CARGO_TARGET_DIR", &target)
        .args(["check", "--workspace", "--examples"]))
}

fn unpack(krate: &Path, into: &Path) -> Result<()> {
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(krate)
        .arg("-C")
        .arg(into))
    .with_context(|| format!("unpacking {}", krate.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libraries_are_published_and_the_tools_are_not() {
        let names: Vec<String> = published().unwrap().into_iter().map(|(n, _)| n).collect();
        for lib in [
            "npshmex-shm",
            "npshmex-codec",
            "npshmex-pool",
            "npshmex-ndarray",
            "npshmex-arrow",
            "npshmex-mpi",
        ] {
            assert!(
                names.iter().any(|n| n == lib),
                "{lib} missing from {names:?}"
            );
        }
        for tool in ["xtask", "npshmex-testkit"] {
            assert!(
                !names.iter().any(|n| n == tool),
                "{tool} would be published"
            );
        }
    }
}
