//! How the workspace's tests and benches start `mpiexec` (one copy for
//! npshmex-mpi's test driver and xtask), and how they find the launcher
//! daemons a job leaves behind.

use std::collections::BTreeSet;

/// Arguments every `mpiexec` of the project takes: ranks may outnumber
/// cores, and no rank is bound to one (the ranks poll; pinning two to one
/// core would starve one).
pub const LAUNCH_ARGS: [&str; 3] = ["--oversubscribe", "--bind-to", "none"];

/// TCP as the only byte transport between ranks (with `self` for a rank's
/// messages to itself).
pub const TCP_ONLY_ARGS: [&str; 3] = ["--mca", "btl", "tcp,self"];

/// TCP, both the ranks' bytes and the launcher's own channel, over
/// loopback only (one machine: no other address is ever used).
pub const LOOPBACK_ARGS: [&str; 6] = [
    "--mca",
    "btl_tcp_if_include",
    "lo",
    "--mca",
    "oob_tcp_if_include",
    "lo",
];

/// The programs an OpenMPI job runs besides its ranks (launchers and their
/// daemons, across OpenMPI 4 and 5).
pub const LAUNCHERS: [&str; 6] = ["orted", "orterun", "mpiexec", "mpirun", "prterun", "prted"];

/// Whether a process whose `/proc/<pid>/cmdline` is `cmdline` is one of
/// the [`LAUNCHERS`].
pub fn is_launcher(cmdline: &[u8]) -> bool {
    let prog = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
    LAUNCHERS.iter().any(|d| prog.ends_with(d.as_bytes()))
}

/// Launcher processes running now, this one excluded.
pub fn launchers() -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_launcher(&c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launchers_are_known_by_their_program_alone() {
        assert!(is_launcher(b"/usr/bin/mpiexec\0-n\0two\0"));
        assert!(is_launcher(b"prted\0"));
        assert!(!is_launcher(b"/bin/sh\0-c\0mpiexec -n 2\0"));
        assert!(!is_launcher(b""));
    }
}
