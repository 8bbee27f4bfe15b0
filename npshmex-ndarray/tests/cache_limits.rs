//! The public knobs of the segment cache: limits, stats, clear. A test
//! binary of its own because the cache is process-wide.

use npshmex_ndarray::cache::{self, CacheLimits};
use npshmex_ndarray::ShmArray1;

#[test]
fn limits_bound_what_is_kept_and_clear_releases_it() {
    assert_eq!(cache::limits(), CacheLimits::default());
    cache::set_limits(CacheLimits {
        bytes: 10 << 20,
        entries: 2,
    });
    // Dropped arrays are kept (they were allocated here)...
    for k in 0..4 {
        let a = ShmArray1::<u8>::from_elem((3 << 20) + k * 4096, 1).unwrap();
        drop(a);
        let s = cache::stats();
        assert!(s.entries <= 2 && s.bytes <= 10 << 20, "{s:?}");
    }
    assert_eq!(cache::stats().entries, 2);
    // ...small ones go to their own free list, outside the limits.
    drop(ShmArray1::<u8>::from_elem(1000, 1).unwrap());
    assert_eq!(cache::stats().entries, 2);
    assert_eq!(cache::stats().small_entries, 1);
    // A segment larger than the byte limit is never kept.
    drop(ShmArray1::<u8>::from_elem(11 << 20, 1).unwrap());
    assert!(cache::stats().bytes <= 10 << 20);
    assert_eq!(cache::clear(), 3);
    assert_eq!(cache::stats(), cache::CacheStats::default());
    cache::set_limits(CacheLimits {
        bytes: 0,
        entries: 0,
    });
    drop(ShmArray1::<u8>::from_elem(4 << 20, 1).unwrap());
    drop(ShmArray1::<u8>::from_elem(1000, 1).unwrap());
    assert_eq!(
        cache::stats(),
        cache::CacheStats::default(),
        "a zero limit disables the cache"
    );
    cache::set_limits(CacheLimits::default());
}
