//! Snapshots of shared-memory names in `/dev/shm` and of the shared-memory
//! files this process holds open or mapped.

use crate::procs::proc_stat;
use std::collections::BTreeSet;

/// Entries of `/dev/shm` whose name starts with `prefix` (empty when
/// `/dev/shm` cannot be read).
pub fn shm_entries(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The prefix of the unique names this process makes: `npshmex-<pid>-`.
pub fn own_shm_prefix() -> String {
    format!("npshmex-{}-", std::process::id())
}

/// Entries of `/dev/shm` named `npshmex-<this pid>-*`. Tests of other crates
/// running at the same time make and remove names of their own, which are
/// none of this process's business.
pub fn own_shm_entries() -> BTreeSet<String> {
    shm_entries(&own_shm_prefix())
}

/// Entries of `/dev/shm` named `npshmex-<pid>-*` made by this process or by
/// one of its live children (its workers).
pub fn family_shm_entries() -> BTreeSet<String> {
    let me = std::process::id();
    shm_entries("npshmex-")
        .into_iter()
        .filter(|n| {
            let pid = n
                .strip_prefix("npshmex-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            matches!(pid, Some(p) if p == me || proc_stat(p).is_some_and(|s| s.ppid == me))
        })
        .collect()
}

/// Shared-memory files this process holds open or mapped: `dev:inode` of
/// every `memfd:npshmex…` or `/dev/shm/npshmex-…` file in `/proc/self/fd`,
/// and `map:inode` of every such mapping in `/proc/self/maps`.
pub fn held_segments() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if t.starts_with("/memfd:npshmex") || t.starts_with("/dev/shm/npshmex-") {
                if let Ok(m) = std::fs::metadata(e.path()) {
                    use std::os::unix::fs::MetadataExt;
                    out.insert(format!("{}:{}", m.dev(), m.ino()));
                }
            }
        }
    }
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        for line in maps.lines() {
            if line.contains("/memfd:npshmex") || line.contains("/dev/shm/npshmex-") {
                // address perms offset dev inode path
                if let Some(ino) = line.split_whitespace().nth(4) {
                    out.insert(format!("map:{ino}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_entry_is_seen_until_removed() -> std::io::Result<()> {
        let _serial = crate::leak::serial();
        let name = format!("{}testkit-seen", own_shm_prefix());
        let path = format!("/dev/shm/{name}");
        assert!(!own_shm_entries().contains(&name));
        std::fs::write(&path, b"x")?;
        let seen = (own_shm_entries(), family_shm_entries());
        std::fs::remove_file(&path)?;
        assert!(seen.0.contains(&name));
        assert!(seen.1.contains(&name));
        assert!(!own_shm_entries().contains(&name));
        Ok(())
    }

    #[test]
    fn an_open_segment_is_held() -> Result<(), npshmex_shm::ShmError> {
        let _serial = crate::leak::serial();
        let before = held_segments();
        let seg = npshmex_shm::Segment::anonymous(4096)?;
        let during = held_segments();
        drop(seg);
        assert!(during.len() > before.len(), "{during:?} vs {before:?}");
        Ok(())
    }
}
