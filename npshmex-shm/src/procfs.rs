//! [`ProcStat`]: one process's line of `/proc/<pid>/stat`, parsed once for
//! the whole workspace (stale-segment detection here, leak checks and CPU
//! accounting in the tests and the xtask).
//!
//! A pid alone does not identify a process: after a `kill -9` the pid may
//! be reused. The pair (pid, [`ProcStat::start_time`]) does, for the life of
//! the system, which is what segment names carry.
//!
//! [`MemInfo`]: what `/proc/meminfo` says about free memory, read by the
//! checks that refuse an allocation the machine cannot back (a segment
//! here, a decompression buffer in npshmex-arrow).

use std::io;

/// What `/proc/<pid>/stat` says about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Its pid.
    pub pid: u32,
    /// Its comm name (field 2; may hold spaces and parentheses).
    pub comm: String,
    /// Its state letter (field 3): `R`, `S`, `D`, `Z` (zombie), `X` (dead)...
    pub state: char,
    /// Its parent's pid (field 4).
    pub ppid: u32,
    /// Its process group (field 5).
    pub pgrp: u32,
    /// Clock ticks spent in user mode (field 14).
    pub utime: u64,
    /// Clock ticks spent in kernel mode (field 15).
    pub stime: u64,
    /// Clock ticks after boot at which it started (field 22).
    pub start_time: u64,
}

impl ProcStat {
    /// Reads `/proc/<pid>/stat`.
    ///
    /// # Errors
    /// `NotFound` when the process is gone; `InvalidData` for a line that
    /// does not parse.
    pub fn read(pid: u32) -> io::Result<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        ProcStat::parse(pid, &text).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat")
        })
    }

    /// Parses one stat line of process `pid`: `pid (comm) state ppid pgrp
    /// ...`; the comm name ends at the last `)`.
    pub fn parse(pid: u32, text: &str) -> Option<ProcStat> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        let fields: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
        // `fields[0]` is field 3 of the line.
        let field = |n: usize| fields.get(n - 3).copied();
        Some(ProcStat {
            pid,
            comm,
            state: field(3)?.chars().next()?,
            ppid: field(4)?.parse().ok()?,
            pgrp: field(5)?.parse().ok()?,
            utime: field(14)?.parse().ok()?,
            stime: field(15)?.parse().ok()?,
            start_time: field(22)?.parse().ok()?,
        })
    }

    /// Whether it has ended and is not reaped yet, or is dying (`Z`, `X`, `x`).
    pub fn is_defunct(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// CPU time used so far (user + kernel), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// Clock ticks per second of the `/proc` times (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Whether the process `(pid, start)` is certainly gone: no such pid, a
/// defunct one, or a pid reused by a process that started at another time.
/// An unreadable `/proc` counts as alive: never act on a guess.
pub fn is_gone(pid: u32, start: Option<u64>) -> bool {
    match ProcStat::read(pid) {
        Ok(st) => st.is_defunct() || start.is_some_and(|s| s != st.start_time),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// What `/proc/meminfo` says about free memory, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemAvailable`: what can be allocated without swapping.
    pub available: u64,
    /// `SwapFree` (0 without swap, or when the line is missing).
    pub swap_free: u64,
}

impl MemInfo {
    /// Reads `/proc/meminfo`; `None` when it cannot be read or has no
    /// `MemAvailable` line (kernels before 3.14).
    pub fn read() -> Option<MemInfo> {
        MemInfo::parse(&std::fs::read_to_string("/proc/meminfo").ok()?)
    }

    /// What can be allocated at all: `MemAvailable + SwapFree`, the bound
    /// the checks that refuse an allocation before making it use.
    pub fn allocatable(&self) -> u64 {
        self.available.saturating_add(self.swap_free)
    }

    /// Parses the text of `/proc/meminfo` (`Key:   value kB` lines).
    pub fn parse(text: &str) -> Option<MemInfo> {
        let field = |key: &str| -> Option<u64> {
            let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib.saturating_mul(1024))
        };
        Some(MemInfo {
            available: field("MemAvailable:")?,
            swap_free: field("SwapFree:").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses_and_refuses_what_it_cannot_read() {
        let text = "MemTotal:       24576000 kB\nMemAvailable:    1000 kB\nSwapFree:  2 kB\n";
        assert_eq!(
            MemInfo::parse(text),
            Some(MemInfo {
                available: 1_024_000,
                swap_free: 2048
            })
        );
        assert_eq!(
            MemInfo::parse(text).map(|m| m.allocatable()),
            Some(1_026_048)
        );
        assert_eq!(
            MemInfo::parse("MemAvailable: 3 kB\n").map(|m| m.swap_free),
            Some(0)
        );
        assert_eq!(MemInfo::parse("MemTotal: 3 kB\n"), None);
        assert_eq!(MemInfo::parse("MemAvailable: lots\n"), None);
        assert!(MemInfo::read().is_some_and(|m| m.available > 0));
    }

    #[test]
    fn lines_parse_with_odd_comm_names() {
        let line = "42 (npshmex-w (1) x) S 7 9 9 0 -1 4194560 1 2 3 4 55 66 0 0 20 0 1 0 777 0 0";
        let p = ProcStat::parse(42, line);
        assert_eq!(
            p,
            Some(ProcStat {
                pid: 42,
                comm: "npshmex-w (1) x".into(),
                state: 'S',
                ppid: 7,
                pgrp: 9,
                utime: 55,
                stime: 66,
                start_time: 777,
            })
        );
        assert_eq!(p.map(|p| p.cpu_ticks()), Some(121));
        assert_eq!(ProcStat::parse(1, "1 (init S 0 1"), None);
        assert_eq!(ProcStat::parse(1, "1 (init) S x 1"), None);
        assert_eq!(ProcStat::parse(1, "1 (init) S 0 1 1"), None, "too short");
    }

    #[test]
    fn this_process_is_alive() -> io::Result<()> {
        let me = ProcStat::read(std::process::id())?;
        assert!(!me.is_defunct());
        assert!(!is_gone(me.pid, Some(me.start_time)));
        assert!(is_gone(me.pid, Some(me.start_time + 1)));
        assert!(ticks_per_second() > 0);
        Ok(())
    }
}
