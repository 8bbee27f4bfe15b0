//! Test support for the npshmex-rs crates: one copy of the leak checks and
//! small helpers their integration tests (and `cargo xtask`) share.
//!
//! **This is not public API.** The crate is `publish = false` and is meant to
//! be a dev-dependency of the workspace's crates (and a dependency of xtask);
//! it may change with any commit. It depends only on `npshmex-shm` (for the
//! fd collector of [`oob_roundtrip`]), `serde`, `postcard` and std, so every
//! crate above `npshmex-shm` can use it without a layering cycle.
//!
//! What it reads is Linux's view of this process: `/dev/shm`,
//! `/proc/self/fd`, `/proc/self/maps` and `/proc/<pid>/stat`. A pool worker
//! names itself `npshmex-w…` (see [`WORKER_COMM_PREFIX`]), which is how the
//! process checks find workers.
//!
//! ```
//! let leaks = npshmex_testkit::LeakCheck::start();
//! // ... make segments, run a pool, drop them ...
//! leaks.finish(); // panics with what was left behind
//! ```
#![deny(unsafe_code)]

mod fds;
mod leak;
pub mod mpi;
mod oob;
mod procs;
mod shm;
mod tmpfs;

pub use fds::open_fds;
pub use leak::LeakCheck;
pub use oob::{oob_roundtrip, FdSegment, RoundtripError};
pub use procs::{
    all_processes, children, is_live_worker, kill9, proc_stat, wait_no_worker_children,
    worker_children, worker_pids, Proc, ProcExt, WORKER_COMM_PREFIX,
};
pub use shm::{family_shm_entries, held_segments, own_shm_entries, own_shm_prefix, shm_entries};
pub use tmpfs::TmpfsMount;
