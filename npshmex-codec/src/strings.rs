//! Fixed-width string elements for records: [`FixedBytes`] (`'S<n>'`) and
//! [`FixedUnicode`] (`'U<n>'`, UCS-4 in native byte order), the two string
//! kinds numpy stores inline.
//!
//! numpy pads both with NULs and reads a value up to its first trailing NUL;
//! these types do the same. Rejected alternative: mapping `[u8; N]` to
//! `'S<n>'`; arrays of bytes are `('|u1', (n,))` in numpy and must stay so
//! for records of small integers.

use crate::dtype::{ByteOrder, DType};
use crate::element::Element;
use crate::error::{CodecError, Result};

/// numpy `'S<N>'`: `N` bytes, NUL-padded.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> FixedBytes<N> {
    /// `bytes` padded with NULs.
    ///
    /// # Errors
    /// [`CodecError::TooLong`] when `bytes` has more than `N` bytes.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > N {
            return Err(CodecError::TooLong {
                len: bytes.len(),
                capacity: N,
            });
        }
        let mut out = [0u8; N];
        out[..bytes.len()].copy_from_slice(bytes);
        Ok(FixedBytes(out))
    }

    /// The value as numpy reads it: without trailing NULs.
    pub fn as_trimmed(&self) -> &[u8] {
        let end = self.0.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        &self.0[..end]
    }
}

// SAFETY: `repr(transparent)` over `[u8; N]`: N bytes, alignment 1, every
// bit pattern valid, described exactly by `'S<N>'`.
unsafe impl<const N: usize> Element for FixedBytes<N> {
    fn dtype() -> DType {
        DType::Bytes { len: N }
    }
}

/// numpy `'U<N>'` in native byte order: `N` UCS-4 code units, NUL-padded.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedUnicode<const N: usize>(pub [u32; N]);

impl<const N: usize> FixedUnicode<N> {
    /// `text` padded with NULs.
    ///
    /// # Errors
    /// [`CodecError::TooLong`] when `text` has more than `N` characters.
    pub fn new(text: &str) -> Result<Self> {
        let len = text.chars().count();
        if len > N {
            return Err(CodecError::TooLong { len, capacity: N });
        }
        let mut out = [0u32; N];
        for (slot, c) in out.iter_mut().zip(text.chars()) {
            *slot = u32::from(c);
        }
        Ok(FixedUnicode(out))
    }

    /// The text without trailing NULs; code units that are not characters
    /// (numpy does not check them) become U+FFFD.
    pub fn to_string_lossy(&self) -> String {
        let end = self.0.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
        self.0[..end]
            .iter()
            .map(|&c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
}

// SAFETY: `repr(transparent)` over `[u32; N]`: 4N bytes, alignment 4, every
// bit pattern valid, described exactly by native-order `'U<N>'`.
unsafe impl<const N: usize> Element for FixedUnicode<N> {
    fn dtype() -> DType {
        DType::Unicode {
            chars: N,
            order: ByteOrder::NATIVE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{as_bytes, cast_slice};

    #[test]
    fn strings_match_numpy_layout() {
        assert_eq!(FixedBytes::<5>::dtype().to_descr(), "'|S5'");
        let u = FixedUnicode::<3>::dtype();
        assert_eq!(u.itemsize(), 12);
        assert_eq!(u.alignment(), std::mem::align_of::<FixedUnicode<3>>());
        let b = FixedBytes::<4>::new(b"ab").unwrap();
        assert_eq!(b.as_trimmed(), b"ab");
        assert_eq!(
            FixedBytes::<1>::new(b"ab"),
            Err(CodecError::TooLong {
                len: 2,
                capacity: 1
            })
        );
        let s = [FixedUnicode::<3>::new("é名").unwrap()];
        let back: &[FixedUnicode<3>] = cast_slice(&u, as_bytes(&s).unwrap()).unwrap();
        assert_eq!(back[0].to_string_lossy(), "é名");
        assert!(FixedUnicode::<1>::new("ab").is_err());
    }
}
