//! Sending a [`ShmArray`] through serde: the segment travels out of band as
//! a file descriptor (`npshmex_shm::oob`), the serialized bytes carry only
//! its index and the receive mode.
//!
//! The receiver treats the segment as untrusted: it re-reads and validates
//! the `.npy` header against the element type and dimensionality it expects,
//! checks the size, and for the read-only mode that the segment is sealed
//! against writes. Errors become serde errors; because serde formats such as
//! postcard drop the message of custom errors, the typed cause is also kept
//! for [`take_last_error`] on the thread that failed.

use crate::array::ShmArray;
use crate::cache::{self, FileKey, Origin, Slot};
use crate::error::{NdarrayError, Result};
use crate::layout::Layout;
use ndarray::Dimension;
use npshmex_codec::Element;
use npshmex_shm::{oob, Access, Seals, Segment};
use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};

/// How the receiver of a sent [`ShmArray`] gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Transfer {
    /// The receiver maps the segment read-write and owns the array; the
    /// sender gave its handle up (the pool consumes what it sends).
    Move,
    /// The segment is sealed against writes; the receiver maps it read-only.
    ReadOnly,
    /// The receiver maps the segment privately (`MAP_PRIVATE`): it may
    /// write, the sender never sees it, only touched pages are copied.
    CopyOnWrite,
}

impl Transfer {
    fn access(self) -> Access {
        match self {
            Transfer::Move => Access::ReadWrite,
            Transfer::ReadOnly => Access::ReadOnly,
            Transfer::CopyOnWrite => Access::CopyOnWrite,
        }
    }
}

/// What travels in the serialized bytes.
#[derive(Serialize, Deserialize)]
struct Wire {
    fd: u32,
    transfer: Transfer,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<NdarrayError>> = const { RefCell::new(None) };
}

/// The typed cause of the last failed (de)serialization of an array type of
/// this crate on this thread, taken out (serde formats keep only a message,
/// some not even that).
pub fn take_last_error() -> Option<NdarrayError> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

pub(crate) fn ser_error<E: ser::Error>(err: NdarrayError) -> E {
    let e = E::custom(&err);
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(err));
    e
}

pub(crate) fn de_error<E: de::Error>(err: NdarrayError) -> E {
    let e = E::custom(&err);
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(err));
    e
}

impl<A: Element, D: Dimension> ShmArray<A, D> {
    /// The descriptor to send and the mode the receiver gets.
    fn lend(&self) -> Result<(OwnedFd, Transfer)> {
        let seg = self.slot.seg();
        // A receiver maps only segments sealed against shrinking (anything
        // else could be truncated under it: SIGBUS). Named segments (keys)
        // cannot be sealed, so they travel as a sealed copy, like the
        // private writes of a copy-on-write handle, which live only in this
        // process's mapping.
        let size_sealed = seg.seals().is_ok_and(|s| s.contains(Seals::SHRINK));
        if seg.access() == Access::CopyOnWrite || !size_sealed {
            let copy = self.deep_copy()?;
            return Ok((copy.slot.lend()?, Transfer::Move));
        }
        Ok((self.slot.lend()?, self.transfer))
    }

    /// Maps a received segment (or reuses a mapping of it this process
    /// still holds) and validates it as an array of `A` with dimension `D`.
    pub(crate) fn receive(fd: OwnedFd, transfer: Transfer) -> Result<Self> {
        let access = transfer.access();
        let key = FileKey::of(fd.as_fd())?;
        let slot = match cache::take_mapping(key, access) {
            Some(slot) => slot,
            // Sealed against shrinking, or refused: the sender is another
            // process, and an unsealed file could be truncated under our
            // reads (SIGBUS) by anyone holding it.
            None => Slot::new(
                Segment::from_fd_sealed(fd, access, 0, Seals::NONE)?,
                key,
                Origin::Received,
            ),
        };
        if transfer == Transfer::ReadOnly && !slot.seg().seals()?.contains(Seals::WRITE) {
            return Err(NdarrayError::NotSealed);
        }
        let layout = Layout::read::<A>(slot.seg().as_slice())?;
        let array = ShmArray::from_parts(slot, layout);
        array.try_view()?;
        Ok(array)
    }
}

impl<A: Element, D: Dimension> Serialize for ShmArray<A, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !oob::is_collecting() {
            return Err(ser_error(NdarrayError::NoCollector));
        }
        let (fd, transfer) = self.lend().map_err(ser_error)?;
        let index = oob::push_fd(fd).map_err(|e| ser_error(e.into()))?;
        Wire {
            fd: index,
            transfer,
        }
        .serialize(serializer)
    }
}

impl<'de, A: Element, D: Dimension> Deserialize<'de> for ShmArray<A, D> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let wire = Wire::deserialize(deserializer)?;
        if !oob::is_receiving() {
            return Err(de_error(NdarrayError::NoCollector));
        }
        let fd = oob::take_fd(wire.fd).map_err(|e| de_error(e.into()))?;
        ShmArray::receive(fd, wire.transfer).map_err(de_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::roundtrip;
    use crate::ShmArray1;
    use ndarray::{arr1, Array1, Ix1, Ix2};

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
    fn copy_on_write_writes_stay_with_the_receiver() {
        let a = big(1000);
        let share = a.share_copy_on_write().unwrap();
        assert_eq!(share.transfer(), Transfer::CopyOnWrite);
        let mut b = roundtrip(share).unwrap();
        b.view_mut().unwrap().fill(5.0);
        assert_eq!(b.view()[3], 5.0);
        assert_eq!(
            a.view()[3],
            3.0,
            "the sender never sees the receiver's writes"
        );
        // Frozen, the private writes are kept and the sender is not sealed.
        let mut b2 = roundtrip(a.share_copy_on_write().unwrap()).unwrap();
        b2.view_mut().unwrap()[3] = 6.0;
        let frozen = b2.into_read_only().unwrap();
        assert_eq!(frozen.view()[3], 6.0);
        assert!(!a.segment().seals().unwrap().contains(Seals::WRITE));
        // Sent on, the receiver's private writes travel (as a copy).
        let c = roundtrip(b).unwrap();
        assert_eq!(c.view()[3], 5.0);
    }

    #[test]
    fn receiver_refuses_segments_not_sealed_against_shrinking() {
        // A peer that sends a memfd it can still truncate could turn our
        // reads into SIGBUS: such a segment is refused with a typed error.
        let a = big(16);
        let mut raw = Segment::anonymous(a.segment().len()).unwrap();
        raw.as_mut_slice()
            .unwrap()
            .copy_from_slice(a.segment().as_slice());
        let wire = Wire {
            fd: 0,
            transfer: Transfer::Move,
        };
        let bytes = postcard::to_allocvec(&wire).unwrap();
        let fds = vec![raw.try_clone_fd().unwrap()];
        let r = oob::with_received(fds, || postcard::from_bytes::<ShmArray1<f64>>(&bytes));
        assert!(r.is_err());
        assert!(matches!(
            take_last_error(),
            Some(NdarrayError::Shm(npshmex_shm::ShmError::NotSealed { .. }))
        ));
        // Sealed, the same bytes are accepted.
        raw.seal(Seals::SIZE).unwrap();
        let fds = vec![raw.try_clone_fd().unwrap()];
        let b = oob::with_received(fds, || postcard::from_bytes::<ShmArray1<f64>>(&bytes));
        assert_eq!(b.unwrap().view(), a.view());
    }

    #[test]
    fn receiver_validates_type_and_dimension() {
        let a = big(10);
        let (bytes, fds) = oob::collect(|| postcard::to_allocvec(&a));
        let bytes = bytes.unwrap();
        let r = oob::with_received(fds, || postcard::from_bytes::<ShmArray<f32, Ix1>>(&bytes));
        assert!(r.is_err());
        assert!(matches!(
            take_last_error(),
            Some(NdarrayError::DTypeMismatch { .. })
        ));

        let (bytes, fds) = oob::collect(|| postcard::to_allocvec(&a));
        let bytes = bytes.unwrap();
        let r = oob::with_received(fds, || postcard::from_bytes::<ShmArray<f64, Ix2>>(&bytes));
        assert!(r.is_err());
        assert!(matches!(
            take_last_error(),
            Some(NdarrayError::DimMismatch { expected: 2, .. })
        ));
    }

    #[test]
    fn read_only_mode_requires_a_sealed_segment() {
        // A hostile sender claims read-only for a writable segment.
        let a = big(10);
        let fd = a.segment().try_clone_fd().unwrap();
        let r = ShmArray::<f64, Ix1>::receive(fd, Transfer::ReadOnly);
        assert!(matches!(r, Err(NdarrayError::NotSealed)));
    }

    #[test]
    fn invalid_bools_from_a_peer_are_refused() {
        let a = ShmArray::<bool, Ix1>::zeros(8).unwrap();
        let mut peer = a.segment().remap(Access::ReadWrite).unwrap();
        let at = a.layout.offset + 3;
        peer.as_mut_slice().unwrap()[at] = 7;
        assert!(matches!(
            a.try_view(),
            Err(NdarrayError::Codec(
                npshmex_codec::CodecError::InvalidBool { index: 3, value: 7 }
            ))
        ));
        let r = roundtrip(a);
        assert!(r.is_err());
        assert!(matches!(take_last_error(), Some(NdarrayError::Codec(_))));
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
        assert!(matches!(take_last_error(), Some(NdarrayError::NoCollector)));
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
