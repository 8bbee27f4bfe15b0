//! Sending a [`ShmArray`] through serde: the segment travels out of band
//! (`npshmex_shm::oob`), the serialized bytes carry only a
//! [`SegmentRef`](npshmex_shm::oob::SegmentRef): its index and receive mode.
//! A moved array of at most 32 KiB (`.npy` header and data) travels inline
//! instead ([`oob::send_segment`]) and lands in a small segment of the
//! receiver's own: no fd, mapping or seal per array.
//!
//! The receiver treats the segment as untrusted: it re-reads and validates
//! the `.npy` header against the element type and dimensionality it expects
//! and checks the size; the seals each mode needs are checked by
//! `oob::receive`. Errors keep their typed cause in the decoding scope
//! (`oob::de_error`), which the pool puts into the task's error.

use crate::array::ShmArray;
use crate::error::{NdarrayError, Result};
use crate::layout::Layout;
use ndarray::Dimension;
use npshmex_codec::Element;
use npshmex_shm::cache::Slot;
use npshmex_shm::oob::{self, ArrivedSegment};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the receiver of a sent [`ShmArray`] gets it (`npshmex_shm`'s, shared
/// by every adapter).
pub use npshmex_shm::Transfer;

impl<A: Element, D: Dimension> ShmArray<A, D> {
    /// An array over a received slot whose first `len` bytes hold the
    /// `.npy` form (the rest, if any, is a size class's slack), validated
    /// as `A` with dimension `D`.
    pub(crate) fn from_received(slot: Slot, len: usize) -> Result<Self> {
        let bytes = slot.segment().as_slice();
        let layout = Layout::read::<A>(bytes.get(..len).unwrap_or(bytes))?;
        let array = ShmArray::from_parts(slot, layout);
        array.try_view()?;
        Ok(array)
    }
}

impl<A: Element, D: Dimension> Serialize for ShmArray<A, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !oob::is_collecting() {
            return Err(oob::ser_error(NdarrayError::NoCollector));
        }
        oob::send_segment(&self.slot, self.transfer, self.layout.total_len())
            .map_err(|e| oob::ser_error(NdarrayError::from(e)))?
            .serialize(serializer)
    }
}

impl<'de, A: Element, D: Dimension> Deserialize<'de> for ShmArray<A, D> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let arrived = ArrivedSegment::deserialize(deserializer)?;
        if !oob::is_receiving() {
            return Err(oob::de_error(NdarrayError::NoCollector));
        }
        let (slot, len) =
            oob::receive_segment(arrived).map_err(|e| oob::de_error(NdarrayError::from(e)))?;
        ShmArray::from_received(slot, len).map_err(oob::de_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::roundtrip;
    use crate::ShmArray1;
    use ndarray::{arr1, Array1, Ix1, Ix2};
    use npshmex_shm::{Access, Seals, ShmError};

    fn big(n: usize) -> ShmArray1<f64> {
        ShmArray::from_shape_fn(n, |i| i as f64).unwrap()
    }

    #[test]
    fn moved_arrays_arrive_writable_with_same_data() {
        let a = big(1 << 18); // 2 MiB: large enough to be cached
        let mut b = roundtrip(a).unwrap();
        assert_eq!(b.transfer(), Transfer::Move);
        assert_eq!(b.view()[1000], 1000.0);
        b.view_mut().unwrap()[0] = -1.0;
        assert_eq!(b.view()[0], -1.0);
    }

    #[test]
    fn read_only_arrays_arrive_read_only() {
        let a = big(100).into_read_only().unwrap();
        let keep = a.try_clone().unwrap();
        let mut b = roundtrip(a).unwrap();
        assert_eq!(b.transfer(), Transfer::ReadOnly);
        assert!(matches!(b.view_mut(), Err(NdarrayError::ReadOnly)));
        assert_eq!(b.view(), keep.view());
    }

    #[test]
    fn copy_on_write_is_a_snapshot_whose_writes_stay_with_the_receiver() {
        let mut a = big(1000);
        let share = a.share_copy_on_write().unwrap();
        assert_eq!(share.transfer(), Transfer::CopyOnWrite);
        // Issue 11, case 3: a write to the source after sharing never
        // reaches the share (it is a write-sealed snapshot).
        let v = share.view();
        a.view_mut().unwrap()[0] = 5.0;
        assert_eq!(v[0], 0.0);
        let mut b = roundtrip(share).unwrap();
        b.view_mut().unwrap().fill(5.0);
        assert_eq!(b.view()[3], 5.0);
        assert_eq!(
            a.view()[3],
            3.0,
            "the sender never sees the receiver's writes"
        );
        // A frozen array is its own snapshot: shared without a copy.
        let frozen = a.into_read_only().unwrap();
        let share = frozen.share_copy_on_write().unwrap();
        assert_eq!(
            share.segment().file_key().unwrap(),
            frozen.segment().file_key().unwrap()
        );
        let mut b2 = roundtrip(share).unwrap();
        b2.view_mut().unwrap()[3] = 6.0;
        assert_eq!(b2.into_read_only().unwrap().view()[3], 6.0);
        assert_eq!(frozen.view()[3], 3.0);
        // Sent on, the receiver's private writes travel (as a copy).
        let c = roundtrip(b).unwrap();
        assert_eq!(c.view()[3], 5.0);
    }

    #[test]
    fn the_segment_of_an_array_cannot_alias_its_views() {
        // Issue 11, case 4: no second writable (or any) mapping of a
        // writable array's segment, and no fd to make one with.
        let a = big(16);
        assert!(matches!(
            a.segment().remap(Access::ReadWrite),
            Err(ShmError::NotExclusive { .. })
        ));
        assert!(matches!(
            a.segment().remap(Access::ReadOnly),
            Err(ShmError::NotSealed { .. })
        ));
        assert!(matches!(a.segment().fd(), Err(ShmError::Exclusive)));
        assert!(matches!(
            a.segment().try_clone_fd(),
            Err(ShmError::Exclusive)
        ));
        // A frozen array's segment may be mapped again: nobody can write it.
        let frozen = a.into_read_only().unwrap();
        let again = frozen.segment().remap(Access::ReadOnly).unwrap();
        // The segment may be longer than the file (a size class).
        assert_eq!(
            &again.as_slice()[..frozen.as_npy_bytes().len()],
            frozen.as_npy_bytes()
        );
    }

    #[test]
    fn sending_a_kept_array_sends_a_copy() {
        // Issue 11, case 5: serialization borrows; if the sender still
        // holds the array when the fds are handed out, the receiver gets a
        // copy and the sender stays the only writer of its pages.
        let mut a = big(1 << 18);
        let (bytes, collected) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&a));
        let bytes = bytes.unwrap();
        let out = collected.finish().unwrap();
        let (fds, moved) = out.into_parts();
        #[allow(unsafe_code)]
        // SAFETY: the flags come straight from `finish`.
        let (b, _) = unsafe {
            npshmex_shm::oob::with_received_moves(fds, &moved, || {
                postcard::from_bytes::<ShmArray1<f64>>(&bytes)
            })
        };
        let mut b = b.unwrap();
        assert_ne!(
            b.segment().file_key().unwrap(),
            a.segment().file_key().unwrap()
        );
        b.view_mut().unwrap()[0] = 99.0;
        a.view_mut().unwrap()[0] = -1.0;
        assert_eq!(b.view()[0], 99.0);
        assert_eq!(a.view()[0], -1.0);
    }

    #[test]
    fn receiver_refuses_segments_not_sealed_against_shrinking() {
        // A peer that sends a memfd it can still truncate could turn our
        // reads into SIGBUS: such a segment is refused with a typed error.
        let a = big(16);
        let mut raw = npshmex_shm::Segment::anonymous(a.segment().len()).unwrap();
        raw.as_mut_slice()
            .unwrap()
            .copy_from_slice(a.segment().as_slice());
        let fd = raw.into_fd().unwrap();
        let dup = fd.try_clone().unwrap();
        let (index, collected) = npshmex_shm::oob::collect(|| npshmex_shm::oob::push_fd(dup));
        let wire = (REF, index.unwrap(), Transfer::ReadOnly);
        let bytes = postcard::to_allocvec(&wire).unwrap();
        let (r, cause) =
            npshmex_shm::oob::with_received(collected.finish().unwrap().into_fds(), || {
                postcard::from_bytes::<ShmArray1<f64>>(&bytes)
            });
        assert!(r.is_err());
        let cause = cause.unwrap();
        assert!(matches!(
            cause.downcast_ref::<NdarrayError>(),
            Some(NdarrayError::Shm(ShmError::NotSealed { .. }))
        ));
        // Sealed for good, the same bytes are accepted.
        let seg = npshmex_shm::Segment::from_fd_sealed(fd, Access::CopyOnWrite, 0);
        assert!(seg.is_err(), "not write-sealed yet");
    }

    #[test]
    fn receiver_validates_type_and_dimension() {
        let a = big(10).into_read_only().unwrap();
        let r = roundtrip_as::<ShmArray<f32, Ix1>>(a.try_clone().unwrap());
        assert!(matches!(
            r.err().and_then(|e| e.cause.and_then(|c| c.downcast::<NdarrayError>().ok())),
            Some(e) if matches!(*e, NdarrayError::DTypeMismatch { .. })
        ));
        let r = roundtrip_as::<ShmArray<f64, Ix2>>(a);
        assert!(matches!(
            r.err().and_then(|e| e.cause.and_then(|c| c.downcast::<NdarrayError>().ok())),
            Some(e) if matches!(*e, NdarrayError::DimMismatch { expected: 2, .. })
        ));
    }

    /// Sends a value and decodes it as another type.
    fn roundtrip_as<T: serde::de::DeserializeOwned>(
        v: impl Serialize,
    ) -> Result<T, npshmex_testkit::RoundtripError> {
        let (bytes, collected) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&v));
        drop(v);
        let bytes = bytes.unwrap();
        let (r, cause) =
            npshmex_shm::oob::with_received(collected.finish().unwrap().into_fds(), || {
                postcard::from_bytes::<T>(&bytes)
            });
        r.map_err(|format| npshmex_testkit::RoundtripError { format, cause })
    }

    /// The variant tag of a segment reference on the wire (`SentSegment::Ref`).
    const REF: u32 = 0;
    /// The variant tag of inline segment bytes (`SentSegment::Bytes`).
    const BYTES: u32 = 1;

    /// A hostile sender's `.npy` of 8 bools whose element 3 is the byte 7.
    fn npy_with_a_bad_bool() -> Vec<u8> {
        let a = ShmArray::<bool, Ix1>::zeros(8).unwrap();
        let mut npy = a.as_npy_bytes().to_vec();
        npy[a.layout.offset + 3] = 7;
        npy
    }

    /// Decoding [`npy_with_a_bad_bool`] failed with exactly that cause.
    fn refused_the_bad_bool(
        r: Result<ShmArray1<bool>, postcard::Error>,
        cause: Option<oob::Cause>,
    ) {
        assert!(r.is_err());
        assert!(cause.is_some_and(|c| matches!(
            c.downcast_ref::<NdarrayError>(),
            Some(NdarrayError::Codec(
                npshmex_codec::CodecError::InvalidBool { index: 3, value: 7 }
            ))
        )));
    }

    #[test]
    fn a_move_lent_outside_the_pool_is_never_handed_out_again() {
        // The receiver of the safe `finish` may release the lend lock and
        // keep writing: a new array must never get those pages (a bool
        // view would then see the peer's 7).
        use std::os::unix::fs::FileExt;
        let n = (3 << 20) + 777;
        let a = ShmArray::<bool, Ix1>::from_elem(n, false).unwrap();
        let (bytes, collected) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&a));
        bytes.unwrap();
        let key = a.segment().file_key().unwrap();
        drop(a);
        let mut fds = collected.finish().unwrap().into_fds();
        let peer = std::fs::File::from(fds.pop().unwrap());
        rustix::fs::flock(&peer, rustix::fs::FlockOperation::Unlock).unwrap();
        let b = ShmArray::<bool, Ix1>::zeros(n).unwrap();
        assert_ne!(b.segment().file_key().unwrap(), key);
        let v = b.view();
        peer.write_all_at(&[7; 64], 0).unwrap();
        peer.write_all_at(&[7; 64], 4096).unwrap();
        assert!(!v[0] && !v[4000], "the peer's writes land elsewhere");
    }

    #[test]
    fn a_frozen_array_holds_nothing_but_itself() {
        // Small segments come back from the free list holding older
        // arrays' bytes past what the next array writes; a frozen (shared)
        // segment must not carry them to its readers.
        for _ in 0..8 {
            drop(ShmArray1::<u8>::from_elem(3000, 0xab).unwrap());
        }
        let frozen = ShmArray1::<u8>::from_elem(10, 0)
            .unwrap()
            .into_read_only()
            .unwrap();
        let used = frozen.as_npy_bytes().len();
        assert!(frozen.segment().as_slice()[used..].iter().all(|&b| b == 0));
        for _ in 0..8 {
            drop(ShmArray1::<u8>::from_elem(3000, 0xab).unwrap());
        }
        let src = ShmArray1::<u8>::from_elem(10, 0).unwrap();
        let share = src.share_copy_on_write().unwrap();
        let used = share.as_npy_bytes().len();
        assert!(share.segment().as_slice()[used..].iter().all(|&b| b == 0));
    }

    #[test]
    fn inline_bytes_are_validated_as_segments_are() {
        let npy = npy_with_a_bad_bool();
        let wire = postcard::to_allocvec(&(BYTES, serde_bytes_of(&npy))).unwrap();
        let (r, cause) = npshmex_shm::oob::with_received(Vec::new(), || {
            postcard::from_bytes::<ShmArray1<bool>>(&wire)
        });
        refused_the_bad_bool(r, cause);
        // Truncated: the header promises more data than came.
        let good = ShmArray1::<f64>::from_elem(16, 1.0).unwrap();
        let npy = good.as_npy_bytes();
        let wire = postcard::to_allocvec(&(BYTES, serde_bytes_of(&npy[..npy.len() - 8]))).unwrap();
        let (r, cause) = npshmex_shm::oob::with_received(Vec::new(), || {
            postcard::from_bytes::<ShmArray1<f64>>(&wire)
        });
        assert!(r.is_err() && cause.is_some());
        // More bytes than may travel inline: refused before any allocation.
        let huge = vec![0u8; npshmex_shm::cache::SMALL_MAX + 1];
        let wire = postcard::to_allocvec(&(BYTES, serde_bytes_of(&huge))).unwrap();
        let (r, cause) = npshmex_shm::oob::with_received(Vec::new(), || {
            postcard::from_bytes::<ShmArray1<u8>>(&wire)
        });
        assert!(r.is_err());
        assert!(cause
            .is_some_and(|c| matches!(c.downcast_ref::<ShmError>(), Some(ShmError::Frame { .. }))));
        // A good one arrives writable and equal.
        let wire = postcard::to_allocvec(&(BYTES, serde_bytes_of(npy))).unwrap();
        let (r, _) = npshmex_shm::oob::with_received(Vec::new(), || {
            postcard::from_bytes::<ShmArray1<f64>>(&wire)
        });
        let mut got = r.unwrap();
        assert_eq!(got.view(), good.view());
        got.view_mut().unwrap()[0] = 2.0;
    }

    /// Bytes that serialize as bytes (postcard: length and raw bytes).
    fn serde_bytes_of(b: &[u8]) -> impl Serialize + '_ {
        struct B<'a>(&'a [u8]);
        impl Serialize for B<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        B(b)
    }

    #[test]
    fn read_only_mode_requires_a_sealed_segment() {
        // A hostile sender claims read-only for a segment that is not sealed.
        let mut seg = npshmex_shm::Segment::anonymous(4096).unwrap();
        seg.as_mut_slice().unwrap()[0] = 1;
        seg.seal(Seals::SIZE).unwrap();
        let (index, collected) =
            npshmex_shm::oob::collect(|| npshmex_shm::oob::push_fd(seg.into_fd().unwrap()));
        let bytes = postcard::to_allocvec(&(REF, index.unwrap(), Transfer::ReadOnly)).unwrap();
        let (r, cause) =
            npshmex_shm::oob::with_received(collected.finish().unwrap().into_fds(), || {
                postcard::from_bytes::<ShmArray1<f64>>(&bytes)
            });
        assert!(r.is_err());
        assert!(cause.is_some_and(|c| matches!(
            c.downcast_ref::<NdarrayError>(),
            Some(NdarrayError::Shm(ShmError::NotSealed { .. }))
        )));
    }

    #[test]
    fn invalid_bools_from_a_sender_are_refused() {
        // A sealed segment holding a `.npy` of bools with a byte that is
        // no bool: refused with a typed error at receive, never viewed.
        let bytes = npy_with_a_bad_bool();
        let mut seg = npshmex_shm::Segment::anonymous(bytes.len()).unwrap();
        seg.as_mut_slice().unwrap().copy_from_slice(&bytes);
        let seg = seg.freeze().unwrap();
        let (index, collected) =
            npshmex_shm::oob::collect(|| npshmex_shm::oob::push_fd(seg.try_clone_fd().unwrap()));
        let wire = postcard::to_allocvec(&(REF, index.unwrap(), Transfer::ReadOnly)).unwrap();
        let (r, cause) =
            npshmex_shm::oob::with_received(collected.finish().unwrap().into_fds(), || {
                postcard::from_bytes::<ShmArray1<bool>>(&wire)
            });
        refused_the_bad_bool(r, cause);
    }

    #[test]
    fn reused_segments_of_other_types_make_valid_bools() {
        let n = (7 << 20) + 13;
        let a = ShmArray::<u8, Ix1>::from_elem(n, 0xaa).unwrap();
        drop(a);
        let b = ShmArray::<bool, Ix1>::from_shape_fn(n, |i| i % 2 == 0).unwrap();
        assert!(b.view()[0] && !b.view()[1]);
    }

    #[test]
    fn refuses_outside_a_pool() {
        let a = ShmArray::from_array(&arr1(&[1u8, 2])).unwrap();
        assert!(postcard::to_allocvec(&a).is_err());
        let msg = NdarrayError::NoCollector.to_string();
        assert!(
            msg.contains("only be serialized inside a pool task"),
            "{msg}"
        );
    }

    #[test]
    fn containers_of_arrays_travel() {
        let mut m = std::collections::HashMap::new();
        m.insert("a".to_string(), big(3));
        m.insert("b".to_string(), big(4));
        let v = vec![big(1), big(2)];
        let (m2, v2, n) = roundtrip((m, v, 7u8)).unwrap();
        assert_eq!(m2["b"].len(), 4);
        assert_eq!(v2[1].view(), arr1(&[0.0, 1.0]));
        assert_eq!(n, 7);
        let owned: Array1<f64> = m2["a"].to_owned();
        assert_eq!(owned, arr1(&[0.0, 1.0, 2.0]));
    }
}
