//! Helpers shared by the integration tests: one pool per test, and the
//! leak check (npshmex-testkit's) with the segment cache emptied first.
#![allow(dead_code)]

use npshmex_pool::ProcessPoolExecutor;
use npshmex_testkit::LeakCheck;
use std::time::Duration;

pub fn pool() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .task_timeout(Duration::from_secs(120))
        .build()
        .expect("pool starts")
}

/// Starts a leak check; the segment cache (which keeps segments on purpose
/// between calls) is emptied before each snapshot.
pub fn leak_check() -> LeakCheck {
    LeakCheck::start_after(|| {
        npshmex_ndarray::cache::clear();
    })
}

/// Number of shared-memory mappings and fds of this process (worker side).
pub fn held_segment_count(_: ()) -> usize {
    npshmex_ndarray::cache::clear();
    npshmex_testkit::held_segments().len()
}
