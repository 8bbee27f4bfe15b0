//! Values holding shared-memory segments travel by fd (`SCM_RIGHTS`), in
//! both directions, through the oob hook of npshmex-shm that the pool sets
//! up around encoding and decoding; a plain payload past the inline limit
//! goes through a memfd.

use npshmex_pool::ProcessPoolExecutor;
use npshmex_testkit::{FdSegment, LeakCheck};

npshmex_pool::test_support!();

/// Sums the bytes and doubles them in place (the segment was moved here).
fn sum_and_double(mut b: FdSegment) -> (u64, FdSegment) {
    let bytes = b.bytes_mut().expect("moved: writable");
    let sum = bytes.iter().map(|&x| u64::from(x)).sum();
    for x in bytes.iter_mut() {
        *x = x.wrapping_mul(2);
    }
    (sum, b)
}

fn lens(blobs: Vec<FdSegment>) -> Vec<usize> {
    blobs.iter().map(|b| b.bytes().len()).collect()
}

fn make(len: usize, fill: u8) -> FdSegment {
    FdSegment::new(len, |b| b.fill(fill)).expect("segment")
}

#[test]
fn segments_travel_by_fd_both_ways() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::new(1).expect("pool");
        // Large enough to be kept by the segment cache: it comes home to
        // this process's own mapping.
        let seg = make(3 << 20, 3);
        let key = seg.slot.file_key();
        let (sum, back) = p
            .submit(sum_and_double, seg)
            .expect("submit")
            .result()
            .expect("ok");
        assert_eq!(sum, 3 * (3 << 20));
        assert!(
            back.bytes().iter().all(|&x| x == 6),
            "the worker wrote to the moved memory"
        );
        assert_eq!(back.slot.file_key(), key, "the same memory came back");
    }
    leaks.finish();
}

#[test]
fn hundreds_of_segments_in_one_value() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::new(1).expect("pool");
        let blobs: Vec<FdSegment> = (0..600).map(|i| make(4096 * (1 + i % 3), 1)).collect();
        let want: Vec<usize> = blobs.iter().map(|b| b.bytes().len()).collect();
        let got = p.submit(lens, blobs).expect("submit").result().expect("ok");
        assert_eq!(got, want);
    }
    leaks.finish();
}

#[test]
fn segment_types_refuse_to_serialize_outside_a_pool() {
    let leaks = LeakCheck::start();
    let err = postcard::to_allocvec(&make(64, 0)).expect_err("no collector");
    assert!(!err.to_string().is_empty());
    leaks.finish();
}
