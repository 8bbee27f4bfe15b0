//! A small tmpfs mounted for one test (to run out of space on purpose).

use std::path::Path;
use std::process::{Command, Stdio};

/// A tmpfs of a given size mounted on a fresh temporary directory, unmounted
/// (lazily) and the directory removed on drop.
#[derive(Debug)]
pub struct TmpfsMount {
    dir: TempDir,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `"1m"`); `None`
    /// when this process may not mount (not root, no `CAP_SYS_ADMIN`), after
    /// a note on stderr so the skipped part shows in the test output.
    pub fn new(size: &str) -> Option<TmpfsMount> {
        let dir = TempDir::new()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "npshmex-test",
            ])
            .arg(&dir.0)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(TmpfsMount { dir })
        } else {
            eprintln!("note: cannot mount a tmpfs here; the small-tmpfs part is skipped");
            None
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// A fresh empty directory under the system temp dir, removed on drop
/// (after the mount on it is gone: fields drop after `Drop::drop`).
#[derive(Debug)]
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Option<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        for _ in 0..100 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = std::env::temp_dir()
                .join(format!("npshmex-tmpfs-{}-{n}-{nanos}", std::process::id()));
            // create_dir fails if it exists: the directory is ours alone
            if std::fs::create_dir(&path).is_ok() {
                return Some(TempDir(path));
            }
        }
        None
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::TmpfsMount;

    #[test]
    fn mounted_or_skipped_and_gone_after_drop() -> std::io::Result<()> {
        let _serial = crate::leak::serial();
        let Some(m) = TmpfsMount::new("64k") else {
            return Ok(());
        };
        let path = m.path().to_path_buf();
        std::fs::write(path.join("f"), [0u8; 1024])?;
        // 64 KiB of room: a 1 MiB file does not fit
        assert!(std::fs::write(path.join("big"), vec![0u8; 1 << 20]).is_err());
        drop(m);
        assert!(!path.exists());
        Ok(())
    }
}
