//! The in-process serde round trip through the fd collector, and a segment
//! that travels by fd.

use npshmex_shm::{oob, Access, Segment};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Sends `v` through postcard and `npshmex_shm::oob`'s fd collector within
/// this process, as the pool does between processes: `v` is encoded inside
/// [`npshmex_shm::oob::collect`], dropped, then decoded inside
/// [`npshmex_shm::oob::with_received`] with the collected fds.
///
/// # Errors
/// What postcard's encoding or decoding returns.
pub fn oob_roundtrip<T: Serialize + DeserializeOwned>(v: T) -> Result<T, postcard::Error> {
    let (bytes, fds) = oob::collect(|| postcard::to_allocvec(&v));
    drop(v);
    let bytes = bytes?;
    oob::with_received(fds, || postcard::from_bytes(&bytes))
}

/// A segment that travels out of band, as a user type of the pool would:
/// only its fd index, length and access go into the bytes; the receiver maps
/// the fd with that access.
#[derive(Debug)]
pub struct FdSegment {
    /// The segment.
    pub segment: Segment,
    /// How the receiver maps it.
    pub access: Access,
}

impl FdSegment {
    /// `segment`, mapped read-write by the receiver.
    pub fn read_write(segment: Segment) -> FdSegment {
        FdSegment {
            segment,
            access: Access::ReadWrite,
        }
    }

    /// `segment`, mapped read-only by the receiver.
    pub fn read_only(segment: Segment) -> FdSegment {
        FdSegment {
            segment,
            access: Access::ReadOnly,
        }
    }
}

impl Serialize for FdSegment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fd = self.segment.try_clone_fd().map_err(S::Error::custom)?;
        let index = oob::push_fd(fd).map_err(S::Error::custom)?;
        (index, self.segment.len() as u64, self.access).serialize(s)
    }
}

impl<'de> Deserialize<'de> for FdSegment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (index, len, access) = <(u32, u64, Access)>::deserialize(d)?;
        let fd = oob::take_fd(index).map_err(D::Error::custom)?;
        Segment::from_fd_expect(fd, access, len)
            .map(|segment| FdSegment { segment, access })
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::{oob_roundtrip, FdSegment};
    use npshmex_shm::{Access, Segment};

    #[test]
    fn plain_values_and_fds_come_back() -> anyhow::Result<()> {
        let _serial = crate::leak::serial();
        let v = (7u32, String::from("x"), vec![1.5f64]);
        assert_eq!(oob_roundtrip(v.clone())?, v);
        let mut seg = Segment::anonymous(16)?;
        seg.as_mut_slice()?[..3].copy_from_slice(b"abc");
        let mut back = oob_roundtrip(FdSegment::read_write(seg))?;
        assert_eq!(&back.segment.as_slice()[..3], b"abc");
        back.segment.as_mut_slice()?[0] = b'x';
        let ro = oob_roundtrip(FdSegment::read_only(back.segment))?;
        assert_eq!(
            (ro.access, &ro.segment.as_slice()[..3]),
            (Access::ReadOnly, &b"xbc"[..])
        );
        assert!(ro.segment.as_slice().len() >= 16);
        Ok(())
    }

    #[test]
    fn without_a_collector_or_an_fd_it_is_an_error() -> anyhow::Result<()> {
        let _serial = crate::leak::serial();
        let seg = Segment::anonymous(16)?;
        assert!(postcard::to_allocvec(&FdSegment::read_only(seg)).is_err());
        let encoded = postcard::to_allocvec(&(0u32, 16u64, Access::ReadOnly))?;
        assert!(postcard::from_bytes::<FdSegment>(&encoded).is_err());
        Ok(())
    }
}
