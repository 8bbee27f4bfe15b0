//! [`Carried`]: the one wire shape of values that travel inline when small
//! (or outside a pool) and as a segment otherwise, shared by the adapter
//! crates' drop-in types (ndarray's `Shm`, arrow's `Shm`), and [`Keep`],
//! their shared option for popping named segments.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::oob::SegmentRef;

/// Whether popping a named segment leaves its name in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Remove the name: the popped value is the last user of the data.
    No,
    /// Leave the name for other readers (npshmex's `keep=True`).
    Yes,
}

/// How a value's bytes travel: inline in the serialized bytes (a small
/// value, or any value serialized outside a pool, so the same types also
/// serialize to JSON or a file), or in a segment sent out of band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried<'a> {
    /// The value's bytes, inline.
    Inline(&'a [u8]),
    /// A segment sent with [`crate::oob::send`].
    Segment(SegmentRef),
}

/// A received [`Carried`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CarriedBuf {
    /// The value's bytes.
    Inline(Vec<u8>),
    /// The segment to take with [`crate::oob::receive`].
    Segment(SegmentRef),
}

const VARIANTS: &[&str] = &["Inline", "Segment"];

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl Serialize for Carried<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Carried::Inline(bytes) => {
                s.serialize_newtype_variant("Carried", 0, "Inline", &Bytes(bytes))
            }
            Carried::Segment(r) => s.serialize_newtype_variant("Carried", 1, "Segment", r),
        }
    }
}

/// Bytes, from any format's way of writing them (bytes or a sequence).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<ByteBuf, S::Error> {
                // The hint comes from the input: bounded, so a hostile length
                // cannot make us reserve memory it does not back with bytes.
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// The variant of a [`Carried`], by index (compact formats) or by name
/// (self-describing ones).
#[derive(Deserialize)]
#[serde(variant_identifier)]
enum Tag {
    Inline,
    Segment,
}

impl<'de> Deserialize<'de> for CarriedBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = CarriedBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value inline or as a segment")
            }
            fn visit_enum<E: de::EnumAccess<'de>>(self, e: E) -> Result<CarriedBuf, E::Error> {
                use de::VariantAccess;
                let (tag, v) = e.variant::<Tag>()?;
                match tag {
                    Tag::Inline => Ok(CarriedBuf::Inline(v.newtype_variant::<ByteBuf>()?.0)),
                    Tag::Segment => Ok(CarriedBuf::Segment(v.newtype_variant::<SegmentRef>()?)),
                }
            }
        }
        d.deserialize_enum("Carried", VARIANTS, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_round_trip() -> Result<(), postcard::Error> {
        let bytes = postcard::to_allocvec(&Carried::Inline(b"npy"))?;
        assert_eq!(
            postcard::from_bytes::<CarriedBuf>(&bytes)?,
            CarriedBuf::Inline(b"npy".to_vec())
        );
        let json = serde_json::to_string(&Carried::Inline(&[1, 2]))
            .map_err(|_| postcard::Error::SerdeSerCustom)?;
        let back: CarriedBuf =
            serde_json::from_str(&json).map_err(|_| postcard::Error::SerdeDeCustom)?;
        assert_eq!(back, CarriedBuf::Inline(vec![1, 2]));
        assert!(postcard::from_bytes::<CarriedBuf>(&[7, 0]).is_err());
        Ok(())
    }
}
