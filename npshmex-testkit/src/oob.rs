//! The in-process serde round trip through the fd collector.

use serde::{de::DeserializeOwned, Serialize};

/// Sends `v` through postcard and `npshmex_shm::oob`'s fd collector within
/// this process, as the pool does between processes: `v` is encoded inside
/// [`npshmex_shm::oob::collect`], dropped, then decoded inside
/// [`npshmex_shm::oob::with_received`] with the collected fds.
///
/// # Errors
/// What postcard's encoding or decoding returns.
pub fn oob_roundtrip<T: Serialize + DeserializeOwned>(v: T) -> Result<T, postcard::Error> {
    let (bytes, fds) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&v));
    drop(v);
    let bytes = bytes?;
    npshmex_shm::oob::with_received(fds, || postcard::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use npshmex_shm::{oob, Access, Segment};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A segment that travels as an fd index (as the real wrappers do).
    struct Carried(Segment);

    impl Serialize for Carried {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let fd = self.0.try_clone_fd().map_err(serde::ser::Error::custom)?;
            oob::push_fd(fd)
                .map_err(serde::ser::Error::custom)?
                .serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for Carried {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let index = u32::deserialize(d)?;
            let fd = oob::take_fd(index).map_err(serde::de::Error::custom)?;
            Segment::from_fd(fd, Access::ReadOnly)
                .map(Carried)
                .map_err(serde::de::Error::custom)
        }
    }

    #[test]
    fn plain_values_and_fds_come_back() -> anyhow::Result<()> {
        let _serial = crate::leak::serial();
        let v = (7u32, String::from("x"), vec![1.5f64]);
        assert_eq!(super::oob_roundtrip(v.clone())?, v);
        let mut seg = Segment::anonymous(16)?;
        seg.as_mut_slice()?[..3].copy_from_slice(b"abc");
        let back = super::oob_roundtrip(Carried(seg))?;
        assert_eq!(&back.0.as_slice()[..3], b"abc");
        Ok(())
    }

    #[test]
    fn an_fd_index_without_its_fd_is_an_error() -> anyhow::Result<()> {
        let _serial = crate::leak::serial();
        let encoded = postcard::to_allocvec(&0u32)?;
        assert!(postcard::from_bytes::<Carried>(&encoded).is_err());
        Ok(())
    }
}
