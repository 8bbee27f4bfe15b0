//! The fixed list of benchmark cases (names from BENCHMARKS.md) and who runs
//! each one: the release build of this xtask, or the Python peer script.
//!
//! The list is data, not a registry of closures, so the parent process (which
//! only orchestrates) and the runner process (which measures) agree on names
//! without sharing any state.

/// Payload sizes of the `sweep.<bytes>.*` cases, in bytes.
pub const SWEEP_BYTES: [usize; 7] = [8, 1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30];

/// Largest sweep payload run by `--quick`: bigger ones are left out of the smoke run.
pub const QUICK_SWEEP_MAX: usize = 16 << 20;

/// The transfer paths of the sweep, in plot order.
pub const SWEEP_PATHS: [&str; 3] = ["zero_copy", "pool_copy", "serde_pipe"];

/// Who measures a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The release build of the xtask (`xtask bench-case NAME`).
    Rust,
    /// `xtask/py/bench_peers.py` in the virtualenv (numpy, npshmex, SharedArray).
    Python,
    /// The same script, but only with `--peers all` (installs ray).
    PythonRay,
    /// The release build of the xtask, driving an `mpiexec` job of
    /// npshmex-mpi's example `seed_mpi` (needs the system MPI).
    Mpi,
    /// The same, driving `mpi4py.futures` (needs the system MPI and mpi4py
    /// in the virtualenv).
    Mpi4py,
    /// Nobody yet: the case is named in BENCHMARKS.md but its code does not
    /// exist; it is reported absent with this reason.
    #[allow(dead_code)]
    NotYet(&'static str),
}

/// One case of the catalogue.
#[derive(Clone, Debug)]
pub struct Case {
    /// Its fixed name, e.g. `seed.bare`.
    pub name: String,
    /// Who runs it.
    pub runner: Runner,
}

/// Every case, in the order they run (cheap, noise-sensitive ones first).
pub fn all() -> Vec<Case> {
    let rust = |n: &str| Case {
        name: n.to_string(),
        runner: Runner::Rust,
    };
    let py = |n: &str| Case {
        name: n.to_string(),
        runner: Runner::Python,
    };
    let mut v = vec![
        rust("limit.memcpy"),
        rust("limit.first_touch"),
        rust("limit.socket_rtt"),
        rust("limit.spin_rtt"),
        rust("seed.bare"),
        rust("seed.bare_in_place"),
        rust("seed.pool_copy"),
        rust("seed.pool_zero_copy"),
        rust("seed.pool_in_place"),
        rust("seed.serde_pipe"),
        rust("seed.rs_procspawn"),
        py("seed.py_stdlib"),
        py("seed.py_npshmex"),
        py("seed.py_sharedarray"),
        Case {
            name: "seed.py_ray".into(),
            runner: Runner::PythonRay,
        },
        rust("tiny.roundtrip"),
        rust("tiny.throughput"),
        rust("tiny.map_chunked"),
        py("py.tiny_roundtrip"),
        py("py.tiny_throughput"),
        rust("rs_procspawn.tiny_roundtrip"),
        rust("rs_procspawn.tiny_throughput"),
    ];
    for bytes in SWEEP_BYTES {
        for path in SWEEP_PATHS {
            v.push(rust(&format!("sweep.{bytes}.{path}")));
        }
    }
    v.extend([
        rust("workers.1"),
        rust("workers.2"),
        rust("big.4gib"),
        rust("records.zero_copy"),
        rust("records.serde_pipe"),
        rust("arrow.zero_copy"),
        rust("arrow.ipc_pipe"),
        rust("mem.copy_peak"),
        rust("mem.zero_copy_peak"),
        py("mem.py_npshmex_peak"),
        py("mem.py_stdlib_peak"),
    ]);
    for (name, runner) in [
        ("mpi.seed", Runner::Mpi),
        ("mpi.tiny_roundtrip", Runner::Mpi),
        ("mpi.py_mpi4py_seed", Runner::Mpi4py),
        ("mpi.py_mpi4py_tiny", Runner::Mpi4py),
    ] {
        v.push(Case {
            name: name.into(),
            runner,
        });
    }
    v
}

/// Why a case is left out of a `--quick` run, if it is.
pub fn quick_skip(name: &str) -> Option<&'static str> {
    if name == "big.4gib" {
        return Some("left out of --quick (a 4.5 GiB payload is no smoke test)");
    }
    let bytes = name
        .strip_prefix("sweep.")
        .and_then(|r| r.split('.').next())
        .and_then(|b| b.parse::<usize>().ok())?;
    (bytes > QUICK_SWEEP_MAX).then_some("left out of --quick (payloads past 16 MiB)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cover_the_sweep() {
        let all = all();
        let mut names: Vec<_> = all.iter().map(|c| c.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(names.contains(&"sweep.1073741824.zero_copy".to_string()));
        assert_eq!(
            quick_skip("sweep.268435456.serde_pipe"),
            Some("left out of --quick (payloads past 16 MiB)")
        );
        assert_eq!(quick_skip("sweep.16777216.serde_pipe"), None);
        assert_eq!(quick_skip("seed.bare"), None);
    }
}
