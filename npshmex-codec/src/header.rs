//! `.npy` headers: the magic, version, length and the Python dict
//! `{'descr': .., 'fortran_order': .., 'shape': ..}`, read and written
//! exactly as numpy 2's `numpy.lib.format` does.
//!
//! Writing reproduces numpy's bytes: keys sorted, `repr` of each value, 21 -
//! digits spare spaces after the dict for in-place growth of the first (C) or
//! last (Fortran) axis, then spaces and a `\n` so the data starts at a
//! multiple of 64. The version is the lowest that fits: 1.0 (latin-1, u16
//! length), 2.0 (latin-1, u32 length), 3.0 (utf-8). Reading accepts every
//! header numpy accepts (any key order, 16-byte aligned files of old numpy,
//! Python 2 `3L` longs in versions 1 and 2) and validates dtype, shape and the
//! size of the data.

use crate::descr::shape_len;
use crate::dtype::DType;
use crate::error::{CodecError, Result};
use crate::literal::{self, Lit, LitKind, LongSuffix};
use crate::pyrepr::write_shape;
use crate::structured::MAX_DIMS;
use serde::{Deserialize, Serialize};

/// The 6 bytes every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// numpy's `ARRAY_ALIGN`: the data offset is a multiple of this.
pub const ARRAY_ALIGN: usize = 64;

/// numpy's `GROWTH_AXIS_MAX_DIGITS`.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Memory order of the array data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Order {
    /// Row-major (`fortran_order: False`).
    C,
    /// Column-major (`fortran_order: True`).
    Fortran,
}

/// The header of a `.npy` file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Whether the data is in column-major order.
    pub fortran_order: bool,
    /// Array shape (empty for 0-d arrays).
    pub shape: Vec<usize>,
}

/// A `.npy` format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Version {
    /// 1.0: latin-1 header, 2-byte length.
    V1,
    /// 2.0: latin-1 header, 4-byte length.
    V2,
    /// 3.0: utf-8 header, 4-byte length.
    V3,
}

impl Version {
    fn len_bytes(self) -> usize {
        match self {
            Version::V1 => 2,
            _ => 4,
        }
    }
    fn bytes(self) -> [u8; 2] {
        match self {
            Version::V1 => [1, 0],
            Version::V2 => [2, 0],
            Version::V3 => [3, 0],
        }
    }
}

impl NpyHeader {
    /// A C-order header.
    pub fn new(dtype: DType, shape: Vec<usize>) -> NpyHeader {
        NpyHeader {
            dtype,
            fortran_order: false,
            shape,
        }
    }

    /// Memory order as an enum.
    pub fn order(&self) -> Order {
        if self.fortran_order {
            Order::Fortran
        } else {
            Order::C
        }
    }

    /// Number of elements, overflow-checked.
    ///
    /// # Errors
    /// [`CodecError::Overflow`] if the shape product overflows `usize`.
    pub fn num_elements(&self) -> Result<usize> {
        shape_len(&self.shape)
    }

    /// Bytes of array data: itemsize × product(shape), overflow-checked.
    /// numpy's own limit applies: the product of the non-zero dimensions
    /// times the itemsize must fit an `isize` even when another dimension is
    /// zero (numpy refuses `(0, 2**62)` of `<f8` as "array is too big", so a
    /// header it could not load is never accepted or written here, and
    /// `ndarray`, which has the same rule, can always build the array).
    ///
    /// # Errors
    /// [`CodecError::Overflow`] on overflow.
    pub fn data_len(&self) -> Result<usize> {
        let overflow = CodecError::Overflow { what: "data size" };
        let mut nbytes = self.dtype.itemsize();
        for &d in self.shape.iter().filter(|&&d| d != 0) {
            nbytes = nbytes.checked_mul(d).ok_or(overflow.clone())?;
        }
        if isize::try_from(nbytes).is_err()
            || self.shape.iter().any(|&d| isize::try_from(d).is_err())
        {
            return Err(overflow);
        }
        let n = shape_len(&self.shape)?;
        n.checked_mul(self.dtype.itemsize())
            .filter(|&b| isize::try_from(b).is_ok())
            .ok_or(overflow)
    }

    /// The header dict text numpy writes, before padding.
    fn dict_text(&self) -> String {
        let mut h = String::from("{'descr': ");
        h.push_str(&self.dtype.to_descr());
        h.push_str(", 'fortran_order': ");
        h.push_str(if self.fortran_order { "True" } else { "False" });
        h.push_str(", 'shape': ");
        write_shape(&self.shape, &mut h);
        h.push_str(", }");
        let growth_axis = if self.fortran_order {
            self.shape.last()
        } else {
            self.shape.first()
        };
        if let Some(d) = growth_axis {
            let digits = d.to_string().len();
            h.extend(std::iter::repeat_n(
                ' ',
                GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
            ));
        }
        h
    }

    /// The version numpy would choose and the encoded dict text.
    fn encode_dict(&self) -> Result<(Version, Vec<u8>)> {
        self.data_len()?;
        if self.shape.len() > MAX_DIMS {
            return Err(CodecError::BadHeader {
                reason: format!("{} dimensions (max {MAX_DIMS})", self.shape.len()),
            });
        }
        let text = self.dict_text();
        let latin1: Option<Vec<u8>> = text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect();
        Ok(match latin1 {
            Some(bytes) => {
                if padded_total(bytes.len(), Version::V1) - 10 <= usize::from(u16::MAX) {
                    (Version::V1, bytes)
                } else {
                    (Version::V2, bytes)
                }
            }
            None => (Version::V3, text.into_bytes()),
        })
    }

    /// The version [`NpyHeader::to_bytes`] writes (the lowest that fits).
    ///
    /// # Errors
    /// As [`NpyHeader::to_bytes`].
    pub fn version(&self) -> Result<Version> {
        self.encode_dict().map(|(v, _)| v)
    }

    /// Magic, version, length and padded header dict: the bytes before the
    /// array data, `len() % 64 == 0`.
    ///
    /// ```
    /// use npshmex_codec::{DType, NpyHeader};
    /// let h = NpyHeader::new(DType::parse_descr("<f8")?, vec![3]);
    /// let bytes = h.to_bytes()?;
    /// assert_eq!(bytes.len(), 128);
    /// assert_eq!(NpyHeader::read(&bytes)?, (h, 128));
    /// # Ok::<(), npshmex_codec::CodecError>(())
    /// ```
    ///
    /// # Errors
    /// [`CodecError::Overflow`] when the data size overflows,
    /// [`CodecError::HeaderTooLong`] beyond 4 GiB of header.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (version, dict) = self.encode_dict()?;
        let total = padded_total(dict.len(), version);
        let prefix = MAGIC.len() + 2 + version.len_bytes();
        let hlen = total - prefix;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.bytes());
        match version {
            Version::V1 => {
                let n = u16::try_from(hlen).map_err(|_| CodecError::HeaderTooLong { len: hlen })?;
                out.extend_from_slice(&n.to_le_bytes());
            }
            _ => {
                let n = u32::try_from(hlen).map_err(|_| CodecError::HeaderTooLong { len: hlen })?;
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out.extend_from_slice(&dict);
        out.resize(total - 1, b' ');
        out.push(b'\n');
        debug_assert_eq!(out.len() % ARRAY_ALIGN, 0);
        Ok(out)
    }

    /// `to_bytes().len()` without building the bytes' padding.
    ///
    /// # Errors
    /// As [`NpyHeader::to_bytes`].
    pub fn encoded_len(&self) -> Result<usize> {
        let (version, dict) = self.encode_dict()?;
        Ok(padded_total(dict.len(), version))
    }

    /// Parses the header at the start of `bytes` (which may hold more: the
    /// data) and returns it with the offset of the array data.
    ///
    /// # Errors
    /// [`CodecError::BadMagic`], [`CodecError::UnsupportedVersion`],
    /// [`CodecError::Truncated`] when the header is cut short,
    /// [`CodecError::HeaderEncoding`], syntax and descr errors with the byte
    /// offset of the fault in `bytes`, [`CodecError::BadHeader`] for wrong
    /// keys or value types, [`CodecError::Overflow`] when the data size
    /// overflows.
    pub fn read(bytes: &[u8]) -> Result<(NpyHeader, usize)> {
        let truncated = |needed: usize| CodecError::Truncated {
            needed: needed as u64,
            available: bytes.len() as u64,
        };
        let Some(magic) = bytes.get(..MAGIC.len()) else {
            return Err(if MAGIC.starts_with(bytes) {
                truncated(MAGIC.len() + 2)
            } else {
                CodecError::BadMagic
            });
        };
        if magic != MAGIC {
            return Err(CodecError::BadMagic);
        }
        let (major, minor) = match bytes.get(6..8) {
            Some(&[a, b]) => (a, b),
            _ => return Err(truncated(8)),
        };
        let version = match (major, minor) {
            (1, 0) => Version::V1,
            (2, 0) => Version::V2,
            (3, 0) => Version::V3,
            _ => return Err(CodecError::UnsupportedVersion { major, minor }),
        };
        let len_end = 8 + version.len_bytes();
        let len_bytes = bytes.get(8..len_end).ok_or_else(|| truncated(len_end))?;
        let hlen = match *len_bytes {
            [a, b] => usize::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u32::from_le_bytes([a, b, c, d]) as usize,
            _ => return Err(truncated(len_end)),
        };
        let end = len_end.checked_add(hlen).ok_or(CodecError::Overflow {
            what: "header length",
        })?;
        let raw = bytes.get(len_end..end).ok_or_else(|| truncated(end))?;
        // The header is a pure function of these bytes: a stream of arrays
        // of one shape (a pool's tasks) parses its header once per thread.
        let whole = &bytes[..end];
        if let Some(header) = recent::find(whole) {
            return Ok((header, end));
        }
        let text: String = match version {
            Version::V3 => std::str::from_utf8(raw)
                .map_err(|e| CodecError::HeaderEncoding {
                    encoding: "utf-8",
                    pos: len_end + e.valid_up_to(),
                })?
                .to_owned(),
            _ => raw.iter().map(|&b| char::from(b)).collect(),
        };
        let long = if version == Version::V3 {
            LongSuffix::Reject
        } else {
            LongSuffix::Accept
        };
        // Positions in errors become offsets in `bytes`: the parser counts
        // UTF-8 bytes of the decoded text, latin-1 has one byte per char.
        let header = Self::from_dict_text(&text, long).map_err(|e| {
            e.map_pos(|pos| {
                let in_raw = match version {
                    Version::V3 => pos,
                    _ => text.get(..pos).map_or(pos, |t| t.chars().count()),
                };
                len_end + in_raw
            })
        })?;
        recent::keep(whole, &header);
        Ok((header, end))
    }

    fn from_dict_text(text: &str, long: LongSuffix) -> Result<NpyHeader> {
        let lit = literal::parse(text, long)?;
        let LitKind::Dict(items) = &lit.kind else {
            return Err(CodecError::BadHeader {
                reason: format!("header is {}, not a dict", lit.kind.type_name()),
            });
        };
        let mut descr = None;
        let mut fortran = None;
        let mut shape = None;
        for (k, v) in items {
            let key = match &k.kind {
                LitKind::Str(s) => s.as_str(),
                other => {
                    return Err(CodecError::BadHeader {
                        reason: format!("header key is {}, not a str", other.type_name()),
                    })
                }
            };
            let slot = match key {
                "descr" => &mut descr,
                "fortran_order" => &mut fortran,
                "shape" => &mut shape,
                other => {
                    return Err(CodecError::BadHeader {
                        reason: format!("unexpected header key {other:?}"),
                    })
                }
            };
            // Python dict literals keep the last value of a repeated key.
            *slot = Some(v);
        }
        let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
            return Err(CodecError::BadHeader {
                reason: "header needs the keys 'descr', 'fortran_order' and 'shape'".into(),
            });
        };
        let dtype = crate::descr::from_lit(descr)?;
        let fortran_order = match fortran.kind {
            LitKind::Bool(b) => b,
            _ => {
                return Err(CodecError::BadHeader {
                    reason: format!(
                        "'fortran_order' is {}, not a bool",
                        fortran.kind.type_name()
                    ),
                })
            }
        };
        let shape = shape_of(shape)?;
        let h = NpyHeader {
            dtype,
            fortran_order,
            shape,
        };
        h.data_len()?;
        Ok(h)
    }
}

fn shape_of(lit: &Lit) -> Result<Vec<usize>> {
    let LitKind::Tuple(items) = &lit.kind else {
        return Err(CodecError::BadHeader {
            reason: format!("'shape' is {}, not a tuple", lit.kind.type_name()),
        });
    };
    if items.len() > MAX_DIMS {
        return Err(CodecError::BadHeader {
            reason: format!("{} dimensions (max {MAX_DIMS})", items.len()),
        });
    }
    items
        .iter()
        .map(|d| match d.kind {
            LitKind::Int(n) => usize::try_from(n).map_err(|_| {
                if n < 0 {
                    CodecError::BadHeader {
                        reason: format!("negative dimension {n}"),
                    }
                } else {
                    CodecError::IntOutOfRange { pos: d.pos }
                }
            }),
            _ => Err(CodecError::BadHeader {
                reason: format!("a dimension is {}, not an int", d.kind.type_name()),
            }),
        })
        .collect()
}

/// Total bytes before the data for a dict text of `dict_len` bytes: numpy's
/// `_wrap_header` adds 1 to 64 bytes of padding (spaces and a final `\n`).
fn padded_total(dict_len: usize, version: Version) -> usize {
    let prefix = MAGIC.len() + 2 + version.len_bytes();
    let hlen = dict_len + 1;
    let padlen = ARRAY_ALIGN - (prefix + hlen) % ARRAY_ALIGN;
    prefix + hlen + padlen
}

/// The headers this thread parsed last, by their exact bytes.
mod recent {
    use super::NpyHeader;
    use std::cell::RefCell;

    /// Headers kept per thread.
    const KEPT: usize = 8;
    /// Longer headers (large structured dtypes) are parsed every time.
    const MAX_BYTES: usize = 1024;

    thread_local! {
        static RECENT: RefCell<Vec<(Box<[u8]>, NpyHeader)>> = const { RefCell::new(Vec::new()) };
    }

    /// The header parsed from exactly `bytes` earlier on this thread.
    pub(super) fn find(bytes: &[u8]) -> Option<NpyHeader> {
        if bytes.len() > MAX_BYTES {
            return None;
        }
        RECENT
            .try_with(|r| {
                let r = r.borrow();
                r.iter()
                    .find(|(k, _)| **k == *bytes)
                    .map(|(_, h)| h.clone())
            })
            .ok()
            .flatten()
    }

    /// Keeps `header`, parsed from `bytes`, evicting the oldest.
    pub(super) fn keep(bytes: &[u8], header: &NpyHeader) {
        if bytes.len() > MAX_BYTES {
            return;
        }
        let _ = RECENT.try_with(|r| {
            let mut r = r.borrow_mut();
            if r.len() >= KEPT {
                r.remove(0);
            }
            r.push((bytes.into(), header.clone()));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_seen_before_reads_the_same_and_one_byte_apart_does_not() -> Result<()> {
        let f8 = DType::parse_descr("<f8")?;
        let a = NpyHeader::new(f8.clone(), vec![12345]).to_bytes()?;
        let b = NpyHeader::new(f8, vec![12346]).to_bytes()?;
        assert_eq!(a.len(), b.len());
        for _ in 0..3 {
            assert_eq!(NpyHeader::read(&a)?.0.shape, [12345]);
            assert_eq!(NpyHeader::read(&b)?.0.shape, [12346]);
        }
        // Bytes past the header (the data) are not part of what is kept.
        let mut with_data = a.clone();
        with_data.extend_from_slice(&[7; 16]);
        assert_eq!(NpyHeader::read(&with_data)?, NpyHeader::read(&a)?);
        // A header cut short is an error, however often its whole form was read.
        assert!(NpyHeader::read(&a[..a.len() - 1]).is_err());
        Ok(())
    }

    #[test]
    fn numpy_bytes_for_a_simple_array() {
        // np.save(f, np.zeros(3)) with numpy 2.x
        let h = NpyHeader::new(DType::parse_descr("<f8").unwrap(), vec![3]);
        let b = h.to_bytes().unwrap();
        let text = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
        let mut expect = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expect.extend_from_slice(text.as_bytes());
        expect.resize(127, b' ');
        expect.push(b'\n');
        assert_eq!(b, expect);
        assert_eq!(h.encoded_len().unwrap(), 128);
    }

    #[test]
    fn versions() {
        let h = NpyHeader::new(DType::parse_descr("[('é', '<f8')]").unwrap(), vec![]);
        assert_eq!(h.version().unwrap(), Version::V1);
        let h = NpyHeader::new(DType::parse_descr("[('名', '<f8')]").unwrap(), vec![]);
        assert_eq!(h.version().unwrap(), Version::V3);
        let b = h.to_bytes().unwrap();
        assert_eq!(&b[6..8], &[3, 0]);
        assert_eq!(NpyHeader::read(&b).unwrap().0, h);
        let many: Vec<String> = (0..5000).map(|i| format!("('f{i}', '<f8')")).collect();
        let dt = DType::parse_descr(&format!("[{}]", many.join(", "))).unwrap();
        let h = NpyHeader::new(dt, vec![1]);
        assert_eq!(h.version().unwrap(), Version::V2);
        let b = h.to_bytes().unwrap();
        assert_eq!(b.len() % 64, 0);
        assert_eq!(NpyHeader::read(&b).unwrap(), (h, b.len()));
    }

    #[test]
    fn refusals() {
        let wrap = |dict: &str| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            b.extend_from_slice(dict.as_bytes());
            b
        };
        assert_eq!(
            NpyHeader::read(b"\x93NUMPX\x01\x00"),
            Err(CodecError::BadMagic)
        );
        assert!(matches!(
            NpyHeader::read(b"\x93NU"),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            NpyHeader::read(b"\x93NUMPY\x04\x00\x00\x00"),
            Err(CodecError::UnsupportedVersion { major: 4, minor: 0 })
        ));
        let ok = "{'descr': '<f8', 'fortran_order': False, 'shape': (3L,), }\n";
        assert_eq!(NpyHeader::read(&wrap(ok)).unwrap().0.shape, [3]);
        let over = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
        assert!(matches!(
            NpyHeader::read(&wrap(over)),
            Err(CodecError::Overflow { .. })
        ));
        // numpy: "array is too big" / "Maximum allowed dimension exceeded"
        // although the array is empty.
        for shape in ["(0, 4611686018427387904)", "(0, 18446744073709551615)"] {
            let d = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
            assert!(matches!(
                NpyHeader::read(&wrap(&d)),
                Err(CodecError::Overflow { .. })
            ));
        }
        // ...and accepts these (numpy 2.2 loads both).
        for (descr, shape) in [
            ("<f8", "(0, 1152921504606846975)"),
            ("|V0", "(9223372036854775807,)"),
        ] {
            let d = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
            assert_eq!(NpyHeader::read(&wrap(&d)).unwrap().0.data_len(), Ok(0));
        }
        let obj = "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }";
        assert!(matches!(
            NpyHeader::read(&wrap(obj)),
            Err(CodecError::Unsupported { .. })
        ));
        let not_dict = "['descr', '<f8']";
        assert!(matches!(
            NpyHeader::read(&wrap(not_dict)),
            Err(CodecError::BadHeader { .. })
        ));
        let code = "{'descr': __import__('os'), 'fortran_order': False, 'shape': (3,)}";
        assert!(matches!(
            NpyHeader::read(&wrap(code)),
            Err(CodecError::Syntax { pos: 20, .. })
        ));
        let missing = "{'descr': '<f8', 'shape': (3,)}";
        assert!(matches!(
            NpyHeader::read(&wrap(missing)),
            Err(CodecError::BadHeader { .. })
        ));
        // Positions are file offsets, latin-1 names counted one byte a char.
        let latin = "{'descr': [('\u{e9}', '<f8')], 'fortran_order': Fals, 'shape': ()}";
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        let raw: Vec<u8> = latin.chars().map(|c| c as u8).collect();
        file.extend_from_slice(&(raw.len() as u16).to_le_bytes());
        file.extend_from_slice(&raw);
        let at = 10 + raw.iter().position(|&b| b == b'F').unwrap();
        assert_eq!(
            NpyHeader::read(&file),
            Err(CodecError::Syntax {
                pos: at,
                reason: "a name is not a literal"
            })
        );
        let mut cut = wrap(ok);
        cut.truncate(30);
        assert!(matches!(
            NpyHeader::read(&cut),
            Err(CodecError::Truncated { .. })
        ));
    }
}
