//! Helpers shared by the integration tests: one pool per test, and the
//! leak check (npshmex-testkit's) with the segment cache emptied first.
#![allow(dead_code)]

use npshmex_ndarray::record;
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

record! {
    /// The record of issue 16 (and of the benchmark): 33 bytes of fields,
    /// 7 of padding at the end.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Padded {
        /// A field.
        pub id: i64,
        /// A field.
        pub x: f64,
        /// A field.
        pub flag: u8,
        /// A field.
        pub name: [u8; 16],
    }
}
