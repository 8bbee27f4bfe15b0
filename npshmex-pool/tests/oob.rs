//! Values holding shared-memory segments travel by fd (`SCM_RIGHTS`), in
//! both directions, through the oob hook of npshmex-shm that the pool sets
//! up around encoding and decoding; a plain payload past the inline limit
//! goes through a memfd.

use npshmex_pool::ProcessPoolExecutor;
use npshmex_shm::{Access, Segment};
use npshmex_testkit::{FdSegment, LeakCheck};

npshmex_pool::test_support!();

/// Sums the bytes and doubles them in place (the mapping is shared).
fn sum_and_double(mut b: FdSegment) -> (u64, FdSegment) {
    let bytes = b.segment.as_mut_slice().expect("read-write");
    let sum = bytes.iter().map(|&x| u64::from(x)).sum();
    for x in bytes.iter_mut() {
        *x = x.wrapping_mul(2);
    }
    (sum, b)
}

fn lens(blobs: Vec<FdSegment>) -> Vec<usize> {
    blobs.iter().map(|b| b.segment.len()).collect()
}

fn make(len: usize, fill: u8) -> Segment {
    let mut s = Segment::anonymous(len).expect("memfd");
    s.as_mut_slice().expect("rw").fill(fill);
    s
}

#[test]
fn segments_travel_by_fd_both_ways() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::new(1).expect("pool");
        let seg = make(8192, 3);
        let view = seg.remap(Access::ReadOnly).expect("second mapping");
        let (sum, back) = p
            .submit(sum_and_double, FdSegment::read_write(seg))
            .expect("submit")
            .result()
            .expect("ok");
        assert_eq!(sum, 3 * 8192);
        assert!(
            view.as_slice().iter().all(|&x| x == 6),
            "the worker wrote to the same memory"
        );
        assert!(
            back.segment.as_slice().iter().all(|&x| x == 6),
            "the returned segment is the same memory"
        );
    }
    leaks.finish();
}

#[test]
fn hundreds_of_segments_in_one_value() {
    let leaks = LeakCheck::start();
    {
        let p = ProcessPoolExecutor::new(1).expect("pool");
        let blobs: Vec<FdSegment> = (0..600)
            .map(|i| FdSegment::read_write(make(4096 * (1 + i % 3), 1)))
            .collect();
        let want: Vec<usize> = blobs.iter().map(|b| b.segment.len()).collect();
        let got = p.submit(lens, blobs).expect("submit").result().expect("ok");
        assert_eq!(got, want);
    }
    leaks.finish();
}

#[test]
fn segment_types_refuse_to_serialize_outside_a_pool() {
    let leaks = LeakCheck::start();
    let err = postcard::to_allocvec(&FdSegment::read_write(make(64, 0))).expect_err("no collector");
    assert!(!err.to_string().is_empty());
    leaks.finish();
}
