//! Full shared memory: a small tmpfs mounted for the test stands in for a
//! full `/dev/shm` (filling the real one would disturb everything else on
//! the machine). Allocation beyond its size must be a `NoSpace` error at
//! creation, writing every byte of what was granted must not raise SIGBUS
//! (space is reserved up front), the process and its pool must go on
//! serving, and space must come back when segments go.

use super::Verdict;
use anyhow::{bail, Context, Result};
use npshmex_shm::{ShmDir, ShmError};
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
use std::ffi::CString;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;
/// Size of the test filesystem.
const FS_SIZE: usize = 32 * MIB;

/// Runs the scenario; skipped (loudly) when not root.
pub fn run() -> Result<Verdict> {
    if !rustix::process::geteuid().is_root() {
        return Ok(Verdict::Skip("mounting a tmpfs needs root".into()));
    }
    let dir = tempfile::Builder::new()
        .prefix("npshmex-chaos-tmpfs")
        .tempdir()
        .context("temp dir")?;
    let mount = Mount::tmpfs(dir.path(), FS_SIZE)?;
    let out = exercise(&ShmDir::new(dir.path()));
    mount.unmount()?;
    out
}

fn exercise(shm: &ShmDir) -> Result<Verdict> {
    let mut checks = 0;
    let no_space = |r: npshmex_shm::Result<npshmex_shm::NamedSegment>, what: &str| -> Result<()> {
        match r {
            Err(ShmError::NoSpace { .. }) => Ok(()),
            Err(e) => bail!("{what}: expected NoSpace, got {e}"),
            Ok(_) => bail!("{what}: expected NoSpace, got a segment"),
        }
    };
    // More than the whole filesystem.
    no_space(
        shm.create_unique(2 * FS_SIZE),
        "a segment twice the fs size",
    )?;
    checks += 1;
    // Three quarters of it, then every byte written: reserved, so no SIGBUS.
    let big = shm
        .create_unique(FS_SIZE * 3 / 4)
        .context("a segment of 3/4 of the fs")?;
    big.write_at(0, &vec![0xa5; FS_SIZE * 3 / 4])
        .context("writing it whole")?;
    checks += 1;
    // Half more does not fit any more.
    no_space(
        shm.create_unique(FS_SIZE / 2),
        "a half-size segment after 3/4 are taken",
    )?;
    checks += 1;
    // Fill the rest with an ordinary file (someone else's data), then even a page is refused.
    let filler = shm.path().join("not-ours");
    let _ = std::fs::write(&filler, vec![1u8; FS_SIZE]); // fails part-way with ENOSPC, on purpose
    no_space(shm.create_unique(64 * 1024), "64 KiB on a full fs")?;
    checks += 1;
    // The process is alive and its pool keeps serving (small) tasks.
    pool_serves().context("the pool while shm is full")?;
    checks += 1;
    // The granted segment is still intact and writable.
    let s = big.to_segment().context("reading it back")?;
    if s.as_slice().iter().any(|b| *b != 0xa5) {
        bail!("the granted segment lost its contents");
    }
    big.write_at(0, &vec![0x5a; FS_SIZE * 3 / 4])
        .context("writing it again")?;
    checks += 1;
    // Space comes back.
    let name = big.name().to_owned();
    drop(big);
    shm.remove(&name).context("removing the big segment")?;
    std::fs::remove_file(&filler).context("removing the filler")?;
    let again = shm
        .create_unique(FS_SIZE * 3 / 4)
        .context("the same size after freeing")?;
    let n = again.name().to_owned();
    drop(again);
    shm.remove(&n)?;
    checks += 1;
    Ok(Verdict::Pass(format!(
        "{checks} checks on a {} MiB tmpfs: NoSpace at creation, no SIGBUS, space returned",
        FS_SIZE / MIB
    )))
}

fn doubled(x: npshmex_ndarray::ShmArray1<u32>) -> Result<Vec<u32>, String> {
    Ok(x.view().iter().map(|v| v * 2).collect())
}

fn pool_serves() -> Result<()> {
    let pool = npshmex_pool::ProcessPoolExecutor::new(1)?;
    for i in 0..20u32 {
        let x = npshmex_ndarray::ShmArray1::from_elem(4096, i)?;
        let y = pool
            .submit(doubled, x)?
            .result()?
            .map_err(|e| anyhow::anyhow!("worker: {e}"))?;
        if y.len() != 4096 || y[4095] != 2 * i {
            bail!("task {i}: wrong result");
        }
    }
    Ok(())
}

/// A tmpfs mounted on a directory; unmounted (lazily) on drop at the latest.
struct Mount {
    target: PathBuf,
    mounted: bool,
}

impl Mount {
    fn tmpfs(dir: &Path, size: usize) -> Result<Mount> {
        let opts = CString::new(format!("size={size},mode=0700")).context("options")?;
        mount(
            "tmpfs",
            dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            opts.as_c_str(),
        )
        .context("mount -t tmpfs")?;
        Ok(Mount {
            target: dir.to_path_buf(),
            mounted: true,
        })
    }

    fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        unmount(&self.target, UnmountFlags::empty()).context("umount")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            // A lazy detach cannot fail in a way we could handle here.
            let _ = unmount(&self.target, UnmountFlags::DETACH);
        }
    }
}
