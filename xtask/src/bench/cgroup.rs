//! Memory cgroups for the `mem.*` cases: the measured call runs in a child
//! process placed in a fresh memory cgroup of its own, so the kernel charges
//! to that group everything the call makes resident — the child's heap, the
//! pool workers it starts (children inherit the group) and the shared-memory
//! pages any of them touch first — and keeps the high-water mark for us.
//!
//! Two halves: [`MemCgroup`] is the parent's (create the group under this
//! process's own one, move the child in, remove the group afterwards, even on
//! error); [`Meter`] is the child's (read the usage just before the call,
//! reset the peak, read the peak after it). cgroup v1 (`memory.usage_in_bytes`,
//! `memory.max_usage_in_bytes`) and v2 (`memory.current`, `memory.peak`) are
//! both handled, whichever the machine mounts.
//!
//! Sampling `MemTotal − MemAvailable` from `/proc/meminfo` (what this
//! replaced) was rejected: it is machine-wide, so any other process's frees
//! during the call made the figure small or zero, and a 5 ms sampler misses
//! short peaks.

use anyhow::{bail, Context, Result};
use rustix::process::{kill_process, Pid, Signal};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which cgroup hierarchy the memory controller lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// cgroup v1: a `memory` hierarchy of its own.
    V1,
    /// cgroup v2: the unified hierarchy.
    V2,
}

impl Flavor {
    /// The file with the current usage, bytes.
    fn usage_file(self) -> &'static str {
        match self {
            Flavor::V1 => "memory.usage_in_bytes",
            Flavor::V2 => "memory.current",
        }
    }

    /// The file with the high-water mark, bytes.
    fn peak_file(self) -> &'static str {
        match self {
            Flavor::V1 => "memory.max_usage_in_bytes",
            Flavor::V2 => "memory.peak",
        }
    }

    /// Tells which flavor a group directory is, by the files it has.
    fn of_dir(dir: &Path) -> Result<Flavor> {
        for f in [Flavor::V1, Flavor::V2] {
            if dir.join(f.peak_file()).exists() {
                return Ok(f);
            }
        }
        bail!(
            "{} has neither memory.max_usage_in_bytes nor memory.peak",
            dir.display()
        )
    }
}

/// One line of `/proc/self/mountinfo` that mounts a cgroup hierarchy.
struct CgroupMount {
    /// Where the hierarchy's `root` is mounted.
    point: PathBuf,
    /// The directory of the hierarchy that is mounted there.
    root: String,
    flavor: Flavor,
}

/// The cgroup mounts that hold the memory controller, v1 first.
fn memory_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root point options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(point), Some(fstype)) = (l.get(3), l.get(4), r.first()) else {
            continue;
        };
        let flavor = match *fstype {
            "cgroup"
                if r.get(2)
                    .is_some_and(|o| o.split(',').any(|x| x == "memory")) =>
            {
                Flavor::V1
            }
            "cgroup2" => Flavor::V2,
            _ => continue,
        };
        out.push(CgroupMount {
            point: PathBuf::from(unescape(point)),
            root: unescape(root),
            flavor,
        });
    }
    out.sort_by_key(|m| m.flavor != Flavor::V1);
    out
}

/// mountinfo escapes blanks and backslashes as octal (`\040`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// This process's group in a hierarchy, from `/proc/self/cgroup`.
fn own_group(proc_cgroup: &str, flavor: Flavor) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut it = line.splitn(3, ':');
        let (id, controllers, path) = (it.next()?, it.next()?, it.next()?);
        let ours = match flavor {
            Flavor::V1 => controllers.split(',').any(|c| c == "memory"),
            Flavor::V2 => id == "0" && controllers.is_empty(),
        };
        ours.then(|| path.to_string())
    })
}

/// The directory of this process's own memory cgroup, or why there is none.
fn own_dir() -> std::result::Result<(PathBuf, Flavor), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let mounts = memory_mounts(&mountinfo);
    if mounts.is_empty() {
        return Err("no cgroup v1 memory hierarchy and no cgroup v2 mounted".into());
    }
    let mut why = Vec::new();
    for m in mounts {
        let Some(path) = own_group(&cgroups, m.flavor) else {
            why.push(format!("not in a {:?} memory group", m.flavor));
            continue;
        };
        // The mount may show only a subtree (a container): strip its root.
        let Some(rel) = path.strip_prefix(m.root.trim_end_matches('/')) else {
            why.push(format!(
                "own group {path} lies outside the mounted {}",
                m.root
            ));
            continue;
        };
        let dir = m.point.join(rel.trim_start_matches('/'));
        if m.flavor == Flavor::V2 {
            let controllers =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                why.push(format!(
                    "cgroup v2 group {} has no memory controller",
                    dir.display()
                ));
                continue;
            }
        }
        if dir.is_dir() {
            return Ok((dir, m.flavor));
        }
        why.push(format!("{} is not a directory", dir.display()));
    }
    Err(why.join("; "))
}

/// A memory cgroup made for one measured child; removed on drop at the latest.
pub struct MemCgroup {
    dir: PathBuf,
    removed: bool,
}

/// Longest the removal waits for the group's processes (pool workers die
/// with their parent, but asynchronously) before killing what is left.
const DRAIN: Duration = Duration::from_secs(10);

impl MemCgroup {
    /// Creates a new group under this process's own memory cgroup;
    /// `Err(reason)` when none can be made here (the case is then absent).
    pub fn create() -> std::result::Result<MemCgroup, String> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let (parent, flavor) = own_dir()?;
        if flavor == Flavor::V2 {
            // A child group gets the memory controller only if the parent
            // hands it down (a group with processes of its own cannot, by
            // the "no internal processes" rule). Enabling it here would
            // change the machine for everyone else, so it is only checked.
            let sub =
                std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            if !sub.split_whitespace().any(|c| c == "memory") {
                return Err(format!(
                    "cgroup v2: groups under {} get no memory controller (not in its cgroup.subtree_control)",
                    parent.display()
                ));
            }
        }
        let name = format!(
            "npshmex-bench-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create memory cgroup {}: {e}", dir.display()))?;
        let group = MemCgroup {
            dir,
            removed: false,
        };
        // A group whose peak cannot be read is no use: check before any child runs.
        match Flavor::of_dir(&group.dir) {
            Ok(f) if f == flavor => Ok(group),
            Ok(f) => Err(format!(
                "{} is a {f:?} group under a {flavor:?} parent",
                group.dir.display()
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// The group's directory (passed to the child as `--cgroup DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves process `pid` (and the children it starts afterwards) into the group.
    pub fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.dir.display()))
    }

    fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Removes the group once its processes are gone, killing those still
    /// there after [`DRAIN`] (they are the measured child's own workers).
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.remove_dir()
    }

    fn remove_dir(&self) -> Result<()> {
        let start = Instant::now();
        let mut killed = false;
        loop {
            let left = self.procs();
            if left.is_empty() {
                break;
            }
            if start.elapsed() > DRAIN && !killed {
                // They are the measured child's own workers, left running.
                for pid in left
                    .iter()
                    .filter_map(|p| Pid::from_raw(i32::try_from(*p).ok()?))
                {
                    let _ = kill_process(pid, Signal::KILL);
                }
                killed = true;
            } else if start.elapsed() > DRAIN * 2 {
                bail!(
                    "memory cgroup {} still holds processes {left:?}",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // v1 moves what is still charged to the parent; v2 keeps it charged upward.
        std::fs::remove_dir(&self.dir)
            .with_context(|| format!("removing memory cgroup {}", self.dir.display()))
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.remove_dir() {
                eprintln!("bench: {e:#}");
            }
        }
    }
}

/// The child's view of its group: usage before the call, peak during it.
pub struct Meter {
    flavor: Flavor,
    usage: PathBuf,
    /// Kept open: on v2 a reset of `memory.peak` holds for the fd that wrote it.
    peak: File,
}

fn read_bytes(f: &mut File, what: &Path) -> Result<u64> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_string(&mut s)
        .with_context(|| format!("reading {}", what.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("{} holds {s:?}, not a byte count", what.display()))
}

impl Meter {
    /// Opens the group `dir` this process was moved into.
    pub fn open(dir: &Path) -> Result<Meter> {
        let flavor = Flavor::of_dir(dir)?;
        let path = dir.join(flavor.peak_file());
        let peak = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let me = std::process::id();
        let members = std::fs::read_to_string(dir.join("cgroup.procs"))
            .with_context(|| format!("reading {}/cgroup.procs", dir.display()))?;
        if !members.lines().any(|l| l.trim() == me.to_string()) {
            bail!("process {me} is not in the cgroup {}", dir.display());
        }
        Ok(Meter {
            flavor,
            usage: dir.join(flavor.usage_file()),
            peak,
        })
    }

    /// Resets the peak to the current usage and returns that usage, bytes.
    pub fn start(&mut self) -> Result<u64> {
        // v1: writing 0 resets max_usage to the current usage. v2 (Linux
        // 6.12+): any write resets the peak seen through this fd; older v2
        // kernels refuse, and the peak then counts from the group's creation.
        let reset = match self.flavor {
            Flavor::V1 => "0",
            Flavor::V2 => "reset",
        };
        let r = self.peak.write_all(reset.as_bytes());
        if self.flavor == Flavor::V1 {
            r.context("resetting memory.max_usage_in_bytes")?;
        }
        let mut f =
            File::open(&self.usage).with_context(|| format!("opening {}", self.usage.display()))?;
        read_bytes(&mut f, &self.usage)
    }

    /// The peak usage since [`Meter::start`], bytes.
    pub fn peak(&mut self) -> Result<u64> {
        let path = PathBuf::from(self.flavor.peak_file());
        read_bytes(&mut self.peak, &path)
    }
}

/// Waits for the parent's go (a line on stdin): it is sent once this
/// process sits in its cgroup, so everything after it is charged there.
pub fn wait_for_go() -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("waiting for the go from the bench parent")?;
    if line.trim() != "go" {
        bail!("expected `go` from the bench parent, got {line:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_memory_mounts_and_own_group() {
        let mountinfo = "\
30 24 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 24 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 24 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 24 0:33 /a\\040b /mnt/x rw - tmpfs tmpfs rw";
        let m = memory_mounts(mountinfo);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].flavor, Flavor::V1);
        assert_eq!(m[0].point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[1].flavor, Flavor::V2);
        assert_eq!(unescape("/a\\040b"), "/a b");
        let cg = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/user.slice";
        assert_eq!(
            own_group(cg, Flavor::V1).as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(own_group(cg, Flavor::V2).as_deref(), Some("/user.slice"));
        assert_eq!(own_group("1:cpu:/", Flavor::V1), None);
    }

    #[test]
    fn a_group_takes_a_child_and_is_removed() {
        let group = match MemCgroup::create() {
            Ok(g) => g,
            // No cgroup here: the reason is what the bench reports.
            Err(why) => {
                assert!(!why.is_empty());
                return;
            }
        };
        let dir = group.dir().to_path_buf();
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        group.add(child.id()).unwrap();
        assert_eq!(group.procs(), vec![child.id()]);
        assert!(
            Meter::open(&dir).is_err(),
            "this process is not in the group"
        );
        drop(child.stdin.take());
        child.wait().unwrap();
        group.remove().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn a_meter_refuses_a_directory_that_is_no_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Meter::open(dir.path()).is_err());
    }
}
