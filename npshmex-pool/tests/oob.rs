//! Values holding shared-memory segments travel by fd (`SCM_RIGHTS`), in
//! both directions, through the oob hook of npshmex-shm that the pool sets
//! up around encoding and decoding; a plain payload past the inline limit
//! goes through a memfd.

mod common;

use npshmex_pool::ProcessPoolExecutor;
use npshmex_shm::{oob, Access, Segment};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

npshmex_pool::test_support!();

/// A segment that travels out of band: only its fd index and length go
/// into the bytes.
struct Blob(Segment);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fd = self.0.try_clone_fd().map_err(S::Error::custom)?;
        let index = oob::push_fd(fd).map_err(S::Error::custom)?;
        (index, self.0.len() as u64).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (index, len) = <(u32, u64)>::deserialize(d)?;
        let fd = oob::take_fd(index).map_err(D::Error::custom)?;
        Segment::from_fd_expect(fd, Access::ReadWrite, len)
            .map(Blob)
            .map_err(D::Error::custom)
    }
}

/// Sums the bytes and doubles them in place (the mapping is shared).
fn sum_and_double(mut b: Blob) -> (u64, Blob) {
    let bytes = b.0.as_mut_slice().expect("read-write");
    let sum = bytes.iter().map(|&x| u64::from(x)).sum();
    for x in bytes.iter_mut() {
        *x = x.wrapping_mul(2);
    }
    (sum, b)
}

fn lens(blobs: Vec<Blob>) -> Vec<usize> {
    blobs.iter().map(|b| b.0.len()).collect()
}

fn make(len: usize, fill: u8) -> Segment {
    let mut s = Segment::anonymous(len).expect("memfd");
    s.as_mut_slice().expect("rw").fill(fill);
    s
}

#[test]
fn segments_travel_by_fd_both_ways() {
    let leaks = common::start();
    {
        let p = ProcessPoolExecutor::new(1).expect("pool");
        let seg = make(8192, 3);
        let view = seg.remap(Access::ReadOnly).expect("second mapping");
        let (sum, back) = p
            .submit(sum_and_double, Blob(seg))
            .expect("submit")
            .result()
            .expect("ok");
        assert_eq!(sum, 3 * 8192);
        assert!(
            view.as_slice().iter().all(|&x| x == 6),
            "the worker wrote to the same memory"
        );
        assert!(
            back.0.as_slice().iter().all(|&x| x == 6),
            "the returned segment is the same memory"
        );
    }
    leaks.check();
}

#[test]
fn hundreds_of_segments_in_one_value() {
    let leaks = common::start();
    {
        let p = ProcessPoolExecutor::new(1).expect("pool");
        let blobs: Vec<Blob> = (0..600)
            .map(|i| Blob(make(4096 * (1 + i % 3), 1)))
            .collect();
        let want: Vec<usize> = blobs.iter().map(|b| b.0.len()).collect();
        let got = p.submit(lens, blobs).expect("submit").result().expect("ok");
        assert_eq!(got, want);
    }
    leaks.check();
}

#[test]
fn segment_types_refuse_to_serialize_outside_a_pool() {
    let leaks = common::start();
    let err = postcard::to_allocvec(&Blob(make(64, 0))).expect_err("no collector");
    assert!(!err.to_string().is_empty());
    leaks.check();
}
