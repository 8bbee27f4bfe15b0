//! Helpers shared by the integration tests: names, /dev/shm checks, tmpfs mounts.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// A name prefix no other test (or process) uses: `npshmex-shmtest-<pid>-<tag>-`.
pub fn prefix(tag: &str) -> String {
    format!("npshmex-shmtest-{}-{tag}-", std::process::id())
}

/// Entries of /dev/shm whose name starts with `prefix`.
pub fn dev_shm_entries(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A small tmpfs mounted on a fresh temp dir, unmounted on drop. `None` when this
/// process may not mount (not root, no CAP_SYS_ADMIN).
pub struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    pub fn new(size: &str) -> Option<TmpfsMount> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "npshmex-test",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            Some(TmpfsMount { dir })
        } else {
            eprintln!("note: cannot mount a tmpfs here; the small-tmpfs part is skipped");
            None
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| rd.count())
        .unwrap_or(0)
}
