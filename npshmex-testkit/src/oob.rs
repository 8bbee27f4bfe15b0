//! The in-process serde round trip through the out-of-band scopes, and a
//! segment-bearing type as a user of the pool would write one.

use std::fmt;
use std::sync::Arc;

use npshmex_shm::cache::{self, Slot};
use npshmex_shm::oob::{self, Cause, SegmentRef};
use npshmex_shm::Transfer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why [`oob_roundtrip`] failed: postcard's error, and the typed cause an
/// adapter recorded in the scope ([`oob::ser_error`] / [`oob::de_error`]).
#[derive(Debug)]
pub struct RoundtripError {
    /// What postcard returned.
    pub format: postcard::Error,
    /// The typed cause, if an adapter recorded one.
    pub cause: Option<Cause>,
}

impl RoundtripError {
    /// The typed cause as `E`, if it is one.
    pub fn cause<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.cause.as_ref()?.downcast_ref::<E>()
    }
}

impl fmt::Display for RoundtripError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{}: {c}", self.format),
            None => write!(f, "{}", self.format),
        }
    }
}

impl std::error::Error for RoundtripError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Some(c) => Some(c.as_ref()),
            None => Some(&self.format),
        }
    }
}

/// Sends `v` through postcard and `npshmex_shm::oob` within this process,
/// as the pool does between processes: `v` is encoded inside
/// [`oob::collect`], dropped, its fds resolved ([`oob::Collected::finish`]),
/// then decoded inside [`oob::with_received_moves`] with the move flags
/// `finish` certified.
///
/// # Errors
/// What postcard's encoding or decoding returns, with the typed cause.
#[allow(unsafe_code)]
pub fn oob_roundtrip<T: Serialize + DeserializeOwned>(v: T) -> Result<T, RoundtripError> {
    let (bytes, mut collected) = oob::collect(|| postcard::to_allocvec(&v));
    drop(v);
    let bytes = bytes.map_err(|format| RoundtripError {
        format,
        cause: collected.take_cause(),
    })?;
    let out = collected.finish().map_err(|e| RoundtripError {
        format: postcard::Error::SerdeSerCustom,
        cause: Some(Box::new(e)),
    })?;
    let (fds, moved) = out.into_parts();
    let decode = || postcard::from_bytes(&bytes);
    // SAFETY: `fds` and `moved` come straight from `Collected::finish` in this
    // process, which marks as moved only segments whose last handle was
    // dropped (`v` above); nothing else holds a writable handle of them.
    let (value, cause) = unsafe { oob::with_received_moves(fds, &moved, decode) };
    value.map_err(|format| RoundtripError { format, cause })
}

/// A segment that travels out of band, as a user type of the pool would
/// write one: its handle is a [`Slot`] sent with [`oob::send`]; only the
/// [`SegmentRef`] goes into the bytes.
#[derive(Debug)]
pub struct FdSegment {
    /// The segment's handle.
    pub slot: Arc<Slot>,
    /// How the receiver maps it.
    pub transfer: Transfer,
}

impl FdSegment {
    /// A new writable segment of `len` bytes filled by `fill`, moved to the
    /// receiver when sent.
    ///
    /// # Errors
    /// As [`cache::alloc`].
    pub fn new(len: usize, fill: impl FnOnce(&mut [u8])) -> npshmex_shm::Result<FdSegment> {
        let mut slot = cache::alloc(len)?;
        let bytes = slot.segment_mut().as_mut_slice()?;
        fill(&mut bytes[..len]);
        Ok(FdSegment {
            slot: Arc::new(slot),
            transfer: Transfer::Move,
        })
    }

    /// The same segment, frozen and shared read-only when sent.
    ///
    /// # Errors
    /// As [`Slot::freeze`].
    pub fn into_read_only(self) -> npshmex_shm::Result<FdSegment> {
        let slot = match Arc::try_unwrap(self.slot) {
            Ok(slot) => {
                let len = slot.segment().len();
                slot.freeze(len)?
            }
            Err(shared) => {
                let len = shared.segment().len();
                shared.copy_to_new(len)?.freeze(len)?
            }
        };
        Ok(FdSegment {
            slot: Arc::new(slot),
            transfer: Transfer::ReadOnly,
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        self.slot.segment().as_slice()
    }

    /// The bytes, writable when this is the only handle of a writable
    /// mapping.
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        Arc::get_mut(&mut self.slot)?
            .segment_mut()
            .as_mut_slice()
            .ok()
    }
}

impl Serialize for FdSegment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        oob::send(&self.slot, self.transfer)
            .map_err(oob::ser_error)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for FdSegment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = SegmentRef::deserialize(d)?;
        let slot = oob::receive(r).map_err(oob::de_error)?;
        Ok(FdSegment {
            slot: Arc::new(slot),
            transfer: r.transfer(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{oob_roundtrip, FdSegment};
    use npshmex_shm::{Access, ShmError, Transfer};

    #[test]
    fn plain_values_and_segments_come_back() -> anyhow::Result<()> {
        let _serial = crate::leak::serial();
        let v = (7u32, String::from("x"), vec![1.5f64]);
        assert_eq!(oob_roundtrip(v.clone())?, v);
        let seg = FdSegment::new(16, |b| b[..3].copy_from_slice(b"abc"))?;
        let mut back = oob_roundtrip(seg)?;
        assert_eq!(&back.bytes()[..3], b"abc");
        assert_eq!(back.slot.segment().access(), Access::ReadWrite);
        back.bytes_mut()
            .ok_or_else(|| anyhow::anyhow!("writable"))?[0] = b'x';
        let ro = oob_roundtrip(back.into_read_only()?)?;
        assert_eq!(ro.transfer, Transfer::ReadOnly);
        assert_eq!(ro.slot.segment().access(), Access::ReadOnly);
        assert_eq!(&ro.bytes()[..3], b"xbc");
        Ok(())
    }

    #[test]
    fn without_a_collector_it_is_an_error_with_a_cause() -> anyhow::Result<()> {
        let _serial = crate::leak::serial();
        let seg = FdSegment::new(16, |_| ())?;
        assert!(postcard::to_allocvec(&seg).is_err());
        let bytes = postcard::to_allocvec(&(0u32, Transfer::ReadOnly))?;
        let err = match oob_roundtrip(bytes) {
            Ok(bytes) => postcard::from_bytes::<FdSegment>(&bytes).err(),
            Err(e) => return Err(e.into()),
        };
        assert!(err.is_some());
        Ok(())
    }

    #[test]
    fn a_missing_fd_is_a_typed_cause() -> anyhow::Result<()> {
        let _serial = crate::leak::serial();
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Forged(u32, Transfer);
        #[derive(serde::Deserialize)]
        struct Wants(#[allow(dead_code)] FdSegment);
        let err = match oob_roundtrip(Forged(3, Transfer::Move)) {
            Ok(f) => {
                let bytes = postcard::to_allocvec(&f)?;
                let (r, cause) = npshmex_shm::oob::with_received(Vec::new(), || {
                    postcard::from_bytes::<Wants>(&bytes)
                });
                assert!(r.is_err());
                cause
            }
            Err(e) => return Err(e.into()),
        };
        let err = err.ok_or_else(|| anyhow::anyhow!("a cause"))?;
        assert!(matches!(
            err.downcast_ref::<ShmError>(),
            Some(ShmError::MissingFd { index: 3, .. })
        ));
        Ok(())
    }
}
