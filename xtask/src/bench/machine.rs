//! Facts about the machine a run was made on, recorded in `results.json`:
//! the figures mean little without them.

use serde::Serialize;

/// The `machine` object of `results.json`.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// Free bytes on `/dev/shm` (statvfs) when the run started.
    pub shm_free_bytes: u64,
    /// The 1-minute load average when the run started: a high one means the
    /// figures are noisy (other builds were running).
    pub loadavg_1m: f64,
}

impl Machine {
    /// Reads the facts; unknown ones are left empty or zero rather than failing the run.
    pub fn probe() -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            shm_free_bytes: shm_free_bytes().unwrap_or(0),
            loadavg_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

/// Free bytes of the filesystem holding `/dev/shm`.
pub fn shm_free_bytes() -> Option<u64> {
    let st = rustix::fs::statvfs("/dev/shm").ok()?;
    st.f_bavail.checked_mul(st.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_the_kernel_and_cores() {
        let m = Machine::probe();
        assert!(m.cores >= 1);
        assert!(!m.kernel.is_empty());
        assert!(shm_free_bytes().is_some());
    }
}
