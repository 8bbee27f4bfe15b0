//! Structured dtypes and subarrays: the two dtype kinds with invariants
//! (ordered, non-overlapping, uniquely named fields; overflow-free
//! shapes), so their fields are private and every constructor,
//! `serde` deserialization included, checks them.

use crate::dtype::DType;
use crate::error::{CodecError, Result};
use serde::{Deserialize, Serialize};

/// A field of a structured dtype.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// numpy's optional title (an alias name).
    pub title: Option<String>,
    /// The field type.
    pub dtype: DType,
    /// Byte offset inside the record.
    pub offset: usize,
}

impl Field {
    /// A field without title.
    pub fn new(name: impl Into<String>, dtype: DType, offset: usize) -> Field {
        Field {
            name: name.into(),
            title: None,
            dtype,
            offset,
        }
    }
}

/// Whether a structured dtype follows C alignment rules (numpy `align=True`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StructAlign {
    /// Offsets as given; the dtype's alignment is 1.
    Unaligned,
    /// Every offset is a multiple of its field's alignment and the itemsize
    /// of the largest; the dtype's alignment is that largest alignment.
    /// `.npy` headers cannot express this flag, so it is lost in files.
    Aligned,
}

/// A structured dtype: named fields at increasing, non-overlapping offsets
/// inside `itemsize` bytes (gaps and trailing padding allowed).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawStruct", into = "RawStruct")]
pub struct StructType {
    fields: Vec<Field>,
    itemsize: usize,
    align: StructAlign,
}

#[derive(Serialize, Deserialize)]
struct RawStruct {
    fields: Vec<Field>,
    itemsize: usize,
    align: StructAlign,
}

impl TryFrom<RawStruct> for StructType {
    type Error = CodecError;
    fn try_from(r: RawStruct) -> Result<StructType> {
        StructType::new(r.fields, r.itemsize, r.align)
    }
}

impl From<StructType> for RawStruct {
    fn from(s: StructType) -> RawStruct {
        RawStruct {
            fields: s.fields,
            itemsize: s.itemsize,
            align: s.align,
        }
    }
}

fn bad_struct(reason: impl Into<String>) -> CodecError {
    CodecError::BadStruct {
        reason: reason.into(),
    }
}

impl StructType {
    /// A structured dtype from fields with explicit offsets.
    ///
    /// # Errors
    /// [`CodecError::BadStruct`] when names repeat, an unnamed field is a void
    /// or subarray (that is padding in numpy's descr), titles
    /// collide with names, offsets decrease or fields overlap, a field ends
    /// after `itemsize`, or (for [`StructAlign::Aligned`]) an offset or the
    /// itemsize is not a multiple of the alignment.
    pub fn new(fields: Vec<Field>, itemsize: usize, align: StructAlign) -> Result<StructType> {
        let mut end = 0usize;
        let mut seen = std::collections::HashSet::new();
        let mut max_align = 1;
        for f in &fields {
            // numpy allows an empty name, but an unnamed void or subarray
            // field is what descr_to_dtype reads as padding: refuse it so
            // every struct survives a trip through a `.npy` header.
            if f.name.is_empty()
                && f.title.is_none()
                && matches!(f.dtype, DType::Void { .. } | DType::SubArray(_))
            {
                return Err(bad_struct("an unnamed void or subarray field is padding"));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(bad_struct(format!("duplicate field name {:?}", f.name)));
            }
            if f.offset < end {
                return Err(bad_struct(format!(
                    "field {:?} at offset {} overlaps or precedes the previous field (ends at {end})",
                    f.name, f.offset
                )));
            }
            end = f
                .offset
                .checked_add(f.dtype.itemsize())
                .ok_or(CodecError::Overflow { what: "field end" })?;
            if align == StructAlign::Aligned {
                let a = f.dtype.alignment();
                if !f.offset.is_multiple_of(a) {
                    return Err(bad_struct(format!(
                        "aligned struct: field {:?} at offset {} is not a multiple of {a}",
                        f.name, f.offset
                    )));
                }
                max_align = max_align.max(a);
            }
        }
        for f in &fields {
            if let Some(t) = &f.title {
                if !seen.insert(t.as_str()) {
                    return Err(bad_struct(format!(
                        "title {t:?} repeats a field name or title"
                    )));
                }
            }
        }
        if end > itemsize {
            return Err(bad_struct(format!(
                "fields end at byte {end}, after the itemsize {itemsize}"
            )));
        }
        if align == StructAlign::Aligned && !itemsize.is_multiple_of(max_align) {
            return Err(bad_struct(format!(
                "aligned struct: itemsize {itemsize} is not a multiple of {max_align}"
            )));
        }
        Ok(StructType {
            fields,
            itemsize,
            align,
        })
    }

    /// Fields one after the other without gaps (numpy's default for a list of
    /// `(name, dtype)`).
    ///
    /// # Errors
    /// As [`StructType::new`].
    pub fn packed<N: Into<String>>(
        fields: impl IntoIterator<Item = (N, DType)>,
    ) -> Result<StructType> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        for (name, dtype) in fields {
            let size = dtype.itemsize();
            out.push(Field::new(name, dtype, offset));
            offset = offset.checked_add(size).ok_or(CodecError::Overflow {
                what: "struct itemsize",
            })?;
        }
        StructType::new(out, offset, StructAlign::Unaligned)
    }

    /// Fields laid out as a C compiler would (numpy `align=True`).
    ///
    /// # Errors
    /// As [`StructType::new`].
    pub fn aligned<N: Into<String>>(
        fields: impl IntoIterator<Item = (N, DType)>,
    ) -> Result<StructType> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        let mut max_align = 1;
        for (name, dtype) in fields {
            let a = dtype.alignment();
            max_align = max_align.max(a);
            offset = round_up(offset, a)?;
            let size = dtype.itemsize();
            out.push(Field::new(name, dtype, offset));
            offset = offset.checked_add(size).ok_or(CodecError::Overflow {
                what: "struct itemsize",
            })?;
        }
        let itemsize = round_up(offset, max_align)?;
        StructType::new(out, itemsize, StructAlign::Aligned)
    }

    /// The fields in offset order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Size of one record in bytes.
    pub fn itemsize(&self) -> usize {
        self.itemsize
    }

    /// The alignment flag.
    pub fn align(&self) -> StructAlign {
        self.align
    }

    /// The field called `name` (or titled `name`).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name == name || f.title.as_deref() == Some(name))
    }

    /// The same struct with the other alignment flag, unchecked against the
    /// stricter aligned rules (used to compare layouts).
    pub(crate) fn with_align_unchecked(&self, align: StructAlign) -> StructType {
        StructType {
            fields: self.fields.clone(),
            itemsize: self.itemsize,
            align,
        }
    }

    pub(crate) fn map_fields(&self, f: impl Fn(&DType) -> DType) -> StructType {
        StructType {
            fields: self
                .fields
                .iter()
                .map(|x| Field {
                    dtype: f(&x.dtype),
                    ..x.clone()
                })
                .collect(),
            itemsize: self.itemsize,
            align: self.align,
        }
    }
}

pub(crate) fn round_up(n: usize, a: usize) -> Result<usize> {
    let a = a.max(1);
    n.checked_add(a - 1)
        .map(|x| x / a * a)
        .ok_or(CodecError::Overflow { what: "alignment" })
}

/// A subarray dtype: `shape` copies of `base`, e.g. `('<f8', (2, 3))`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSubArray", into = "RawSubArray")]
pub struct SubArrayType {
    base: Box<DType>,
    shape: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
struct RawSubArray {
    base: Box<DType>,
    shape: Vec<usize>,
}

impl TryFrom<RawSubArray> for SubArrayType {
    type Error = CodecError;
    fn try_from(r: RawSubArray) -> Result<SubArrayType> {
        match DType::subarray(*r.base, r.shape)? {
            DType::SubArray(s) => Ok(s),
            _ => Err(bad_struct("subarray with an empty shape")),
        }
    }
}

impl From<SubArrayType> for RawSubArray {
    fn from(s: SubArrayType) -> RawSubArray {
        RawSubArray {
            base: s.base,
            shape: s.shape,
        }
    }
}

/// Maximum number of dimensions (numpy 2's `NPY_MAXDIMS`).
pub const MAX_DIMS: usize = 64;

impl SubArrayType {
    /// `shape` copies of `base`. An empty shape gives `base` itself (as
    /// numpy's `np.dtype((base, ()))` does); a subarray of a subarray stays
    /// nested (numpy 2 keeps `(('<i4', (2,)), (3,))` apart from
    /// `('<i4', (3, 2))`: different descr, unequal dtypes).
    ///
    /// # Errors
    /// [`CodecError::Overflow`] when the itemsize overflows,
    /// [`CodecError::BadStruct`] for more than [`MAX_DIMS`] dimensions in
    /// one level.
    pub(crate) fn build(base: DType, shape: Vec<usize>) -> Result<DType> {
        if shape.is_empty() {
            return Ok(base);
        }
        if shape.len() > MAX_DIMS {
            return Err(bad_struct(format!(
                "subarray of {} dimensions (max {MAX_DIMS})",
                shape.len()
            )));
        }
        let count = checked_product(&shape).ok_or(CodecError::Overflow {
            what: "subarray size",
        })?;
        count
            .checked_mul(base.itemsize())
            .ok_or(CodecError::Overflow {
                what: "subarray itemsize",
            })?;
        Ok(DType::SubArray(SubArrayType {
            base: Box::new(base),
            shape,
        }))
    }

    /// `shape` copies of `base` with nested subarrays merged into one shape
    /// (`[[T; 2]; 3]` is `('<T', (3, 2))`, the layout numpy gives the
    /// same declaration).
    ///
    /// # Errors
    /// As [`SubArrayType::build`].
    pub(crate) fn build_flat(base: DType, shape: Vec<usize>) -> Result<DType> {
        match base {
            DType::SubArray(inner) if !shape.is_empty() => {
                let mut s = shape;
                s.extend_from_slice(&inner.shape);
                Self::build(*inner.base, s)
            }
            b => Self::build(b, shape),
        }
    }

    /// This subarray with nested subarrays merged into one shape (both
    /// describe the same bytes).
    pub(crate) fn flattened(&self) -> SubArrayType {
        let mut shape = self.shape.clone();
        let mut base = &*self.base;
        while let DType::SubArray(inner) = base {
            shape.extend_from_slice(&inner.shape);
            base = &inner.base;
        }
        SubArrayType {
            base: Box::new(base.clone()),
            shape,
        }
    }

    /// The element type (itself a subarray for a nested subarray).
    pub fn base(&self) -> &DType {
        &self.base
    }

    /// The shape (never empty).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of base elements.
    pub fn count(&self) -> usize {
        // Checked not to overflow in `new`.
        self.shape.iter().product()
    }

    pub(crate) fn map_base(&self, f: impl Fn(&DType) -> DType) -> SubArrayType {
        SubArrayType {
            base: Box::new(f(&self.base)),
            shape: self.shape.clone(),
        }
    }
}

pub(crate) fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::{ByteOrder, FloatWidth, IntWidth};

    fn f8() -> DType {
        DType::Float {
            width: FloatWidth::F8,
            order: ByteOrder::Little,
        }
    }
    fn u1() -> DType {
        DType::UInt {
            width: IntWidth::W1,
            order: ByteOrder::NotApplicable,
        }
    }

    #[test]
    fn aligned_layout_matches_c() {
        let s = StructType::aligned([("a", u1()), ("b", f8()), ("c", u1())]).unwrap();
        let offs: Vec<_> = s.fields().iter().map(|f| f.offset).collect();
        assert_eq!(offs, [0, 8, 16]);
        assert_eq!(s.itemsize(), 24);
        assert_eq!(DType::Struct(s.clone()).alignment(), 8);
        let p = StructType::packed([("a", u1()), ("b", f8())]).unwrap();
        assert_eq!(p.itemsize(), 9);
        assert_eq!(DType::Struct(p).alignment(), 1);
    }

    #[test]
    fn struct_invariants_are_checked() {
        let overlap = StructType::new(
            vec![Field::new("a", f8(), 0), Field::new("b", f8(), 4)],
            16,
            StructAlign::Unaligned,
        );
        assert!(matches!(overlap, Err(CodecError::BadStruct { .. })));
        let dup = StructType::new(
            vec![Field::new("a", f8(), 0), Field::new("a", f8(), 8)],
            16,
            StructAlign::Unaligned,
        );
        assert!(matches!(dup, Err(CodecError::BadStruct { .. })));
        let past = StructType::new(vec![Field::new("a", f8(), 4)], 8, StructAlign::Unaligned);
        assert!(matches!(past, Err(CodecError::BadStruct { .. })));
        let misaligned = StructType::new(vec![Field::new("a", f8(), 4)], 16, StructAlign::Aligned);
        assert!(matches!(misaligned, Err(CodecError::BadStruct { .. })));
    }

    #[test]
    fn subarrays_stay_nested_and_check_overflow() {
        // numpy 2: np.dtype([('a', ('<f8', (2,)), (3,))]).descr keeps the
        // nesting, and the dtype differs from [('a', '<f8', (3, 2))].
        let inner = DType::subarray(f8(), vec![2]).unwrap();
        let outer = DType::subarray(inner.clone(), vec![3]).unwrap();
        match &outer {
            DType::SubArray(s) => {
                assert_eq!(s.shape(), [3]);
                assert_eq!(s.base(), &inner);
                assert_eq!(s.flattened().shape(), [3, 2]);
                assert_eq!(s.flattened().base(), &f8());
            }
            other => panic!("not a subarray: {other:?}"),
        }
        assert_eq!(outer.itemsize(), 48);
        let flat = DType::subarray(f8(), vec![3, 2]).unwrap();
        assert_ne!(outer, flat);
        assert!(outer.same_layout(&flat));
        assert_eq!(SubArrayType::build_flat(inner, vec![3]).unwrap(), flat);
        let descr = "[('a', ('<i4', (2,)), (3,))]";
        assert_eq!(DType::parse_descr(descr).unwrap().to_descr(), descr);
        assert_eq!(DType::subarray(f8(), vec![]).unwrap(), f8());
        assert!(matches!(
            DType::subarray(f8(), vec![usize::MAX / 4, 3]),
            Err(CodecError::Overflow { .. })
        ));
        let big = DType::subarray(f8(), vec![usize::MAX / 32]).unwrap();
        assert!(matches!(
            DType::subarray(big, vec![5]),
            Err(CodecError::Overflow { .. })
        ));
    }

    #[test]
    fn deserialization_revalidates() {
        let raw = RawStruct {
            fields: vec![Field::new("a", f8(), 0), Field::new("b", f8(), 4)],
            itemsize: 16,
            align: StructAlign::Unaligned,
        };
        let bytes = postcard::to_stdvec(&raw).unwrap();
        assert!(postcard::from_bytes::<StructType>(&bytes).is_err());
    }
}
