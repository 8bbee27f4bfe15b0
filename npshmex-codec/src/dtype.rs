//! The numpy dtype model: scalars, flexible types, datetimes, structured
//! records and subarrays, with itemsize and alignment computed as numpy does.
//!
//! Simple types are plain enum variants with public fields whose values are
//! always valid (widths are enums, not integers). Structured dtypes and
//! subarrays carry invariants (ordered, non-overlapping fields; flattened,
//! overflow-free shapes) and therefore have private fields and checked
//! constructors; `serde` deserialization goes through the same checks, so a
//! descriptor received from another process cannot break them.
//! Rejected alternative: one open `DType { kind, size, order, .. }` record,
//! which would let `'<i3'` or overlapping fields exist and push validation into
//! every consumer.

use crate::error::{CodecError, Result};
use serde::{Deserialize, Serialize};

/// Byte order of a dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ByteOrder {
    /// `<`
    Little,
    /// `>`
    Big,
    /// `|`: single-byte and unswappable types. On a multi-byte type it is
    /// read as the native order (numpy accepts `'|i4'` the same way).
    NotApplicable,
}

impl ByteOrder {
    /// The byte order of this machine.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "little") {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    };

    /// The order a multi-byte type with this marker really has.
    pub fn resolve(self) -> ByteOrder {
        match self {
            ByteOrder::NotApplicable => ByteOrder::NATIVE,
            o => o,
        }
    }

    pub(crate) fn char(self) -> char {
        match self.resolve() {
            ByteOrder::Little => '<',
            _ => '>',
        }
    }
}

/// Width of an integer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntWidth {
    /// 1 byte.
    W1,
    /// 2 bytes.
    W2,
    /// 4 bytes.
    W4,
    /// 8 bytes.
    W8,
}

impl IntWidth {
    /// Size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            IntWidth::W1 => 1,
            IntWidth::W2 => 2,
            IntWidth::W4 => 4,
            IntWidth::W8 => 8,
        }
    }
    pub(crate) fn from_bytes(n: u64) -> Option<IntWidth> {
        Some(match n {
            1 => IntWidth::W1,
            2 => IntWidth::W2,
            4 => IntWidth::W4,
            8 => IntWidth::W8,
            _ => return None,
        })
    }
}

/// Width of a floating point type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FloatWidth {
    /// IEEE binary16 (`f2`, `half::f16`).
    F2,
    /// IEEE binary32 (`f4`).
    F4,
    /// IEEE binary64 (`f8`).
    F8,
}

impl FloatWidth {
    /// Size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            FloatWidth::F2 => 2,
            FloatWidth::F4 => 4,
            FloatWidth::F8 => 8,
        }
    }
}

/// Width of a complex type (both parts together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ComplexWidth {
    /// Two `f4` (`c8`).
    C8,
    /// Two `f8` (`c16`).
    C16,
}

impl ComplexWidth {
    /// Size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            ComplexWidth::C8 => 8,
            ComplexWidth::C16 => 16,
        }
    }
}

/// The unit of a datetime64/timedelta64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeUnit {
    /// No unit (`'<M8'`).
    Generic,
    /// `Y`
    Years,
    /// `M`
    Months,
    /// `W`
    Weeks,
    /// `D`
    Days,
    /// `h`
    Hours,
    /// `m`
    Minutes,
    /// `s`
    Seconds,
    /// `ms`
    Milliseconds,
    /// `us`
    Microseconds,
    /// `ns`
    Nanoseconds,
    /// `ps`
    Picoseconds,
    /// `fs`
    Femtoseconds,
    /// `as`
    Attoseconds,
}

impl TimeUnit {
    /// Every unit, `Generic` first.
    pub const ALL: [TimeUnit; 14] = [
        TimeUnit::Generic,
        TimeUnit::Years,
        TimeUnit::Months,
        TimeUnit::Weeks,
        TimeUnit::Days,
        TimeUnit::Hours,
        TimeUnit::Minutes,
        TimeUnit::Seconds,
        TimeUnit::Milliseconds,
        TimeUnit::Microseconds,
        TimeUnit::Nanoseconds,
        TimeUnit::Picoseconds,
        TimeUnit::Femtoseconds,
        TimeUnit::Attoseconds,
    ];

    /// numpy's abbreviation (`""` for generic).
    pub fn abbrev(self) -> &'static str {
        match self {
            TimeUnit::Generic => "",
            TimeUnit::Years => "Y",
            TimeUnit::Months => "M",
            TimeUnit::Weeks => "W",
            TimeUnit::Days => "D",
            TimeUnit::Hours => "h",
            TimeUnit::Minutes => "m",
            TimeUnit::Seconds => "s",
            TimeUnit::Milliseconds => "ms",
            TimeUnit::Microseconds => "us",
            TimeUnit::Nanoseconds => "ns",
            TimeUnit::Picoseconds => "ps",
            TimeUnit::Femtoseconds => "fs",
            TimeUnit::Attoseconds => "as",
        }
    }

    pub(crate) fn from_abbrev(s: &str) -> Option<TimeUnit> {
        if s == "\u{3bc}s" {
            return Some(TimeUnit::Microseconds);
        }
        TimeUnit::ALL.into_iter().skip(1).find(|u| u.abbrev() == s)
    }
}

/// A datetime unit with its multiple, e.g. `10ms` (`count` 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DateUnit {
    /// The base unit.
    pub unit: TimeUnit,
    /// The multiple; numpy writes it only when it is not 1. Values below 1
    /// are read as 1; generic units always have 1.
    pub count: u32,
}

impl DateUnit {
    /// A unit with multiple 1.
    pub fn new(unit: TimeUnit) -> DateUnit {
        DateUnit { unit, count: 1 }
    }
}

/// A numpy dtype with a fixed, pointer-free layout.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// `|b1`: one byte, 0 or 1.
    Bool,
    /// Signed integer `i1`..`i8`.
    Int {
        /// Width.
        width: IntWidth,
        /// Byte order.
        order: ByteOrder,
    },
    /// Unsigned integer `u1`..`u8`.
    UInt {
        /// Width.
        width: IntWidth,
        /// Byte order.
        order: ByteOrder,
    },
    /// IEEE float `f2`, `f4`, `f8`.
    Float {
        /// Width.
        width: FloatWidth,
        /// Byte order.
        order: ByteOrder,
    },
    /// Complex `c8`, `c16`.
    Complex {
        /// Width.
        width: ComplexWidth,
        /// Byte order.
        order: ByteOrder,
    },
    /// `S<n>`: zero-padded bytes.
    Bytes {
        /// Length in bytes.
        len: usize,
    },
    /// `U<n>`: UCS-4 code points.
    Unicode {
        /// Length in code points (itemsize is 4 × chars).
        chars: usize,
        /// Byte order of each code point.
        order: ByteOrder,
    },
    /// `V<n>`: opaque bytes.
    Void {
        /// Length in bytes.
        len: usize,
    },
    /// `M8[unit]`: datetime64.
    DateTime {
        /// Unit.
        unit: DateUnit,
        /// Byte order.
        order: ByteOrder,
    },
    /// `m8[unit]`: timedelta64.
    TimeDelta {
        /// Unit.
        unit: DateUnit,
        /// Byte order.
        order: ByteOrder,
    },
    /// A structured (record) dtype.
    Struct(StructType),
    /// A fixed-shape array of another dtype (only as a field, or the top
    /// level of a descr tuple).
    SubArray(SubArrayType),
}

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
    /// `shape` copies of `base`, normalised as numpy does: an empty shape
    /// gives `base` itself, and a subarray of a subarray is flattened into
    /// one (`(('<f8', (2,)), (3,))` is `('<f8', (3, 2))`).
    ///
    /// # Errors
    /// [`CodecError::Overflow`] when the itemsize overflows,
    /// [`CodecError::BadStruct`] for more than [`MAX_DIMS`] dimensions.
    fn build(base: DType, shape: Vec<usize>) -> Result<DType> {
        if shape.is_empty() {
            return Ok(base);
        }
        let (base, shape) = match base {
            DType::SubArray(inner) => {
                let mut s = shape;
                s.extend_from_slice(&inner.shape);
                (*inner.base, s)
            }
            b => (b, shape),
        };
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

    /// The element type (never itself a subarray).
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

impl DType {
    /// `shape` copies of `base` ([`DType::SubArray`]), normalised as numpy
    /// does: an empty shape gives `base` itself, and a subarray of a subarray
    /// is flattened into one (`(('<f8', (2,)), (3,))` is `('<f8', (3, 2))`).
    ///
    /// # Errors
    /// [`CodecError::Overflow`] when the itemsize overflows,
    /// [`CodecError::BadStruct`] for more than [`MAX_DIMS`] dimensions.
    pub fn subarray(base: DType, shape: Vec<usize>) -> Result<DType> {
        SubArrayType::build(base, shape)
    }

    /// Size of one element in bytes, as numpy's `dtype.itemsize`.
    pub fn itemsize(&self) -> usize {
        match self {
            DType::Bool => 1,
            DType::Int { width, .. } | DType::UInt { width, .. } => width.bytes(),
            DType::Float { width, .. } => width.bytes(),
            DType::Complex { width, .. } => width.bytes(),
            DType::Bytes { len } | DType::Void { len } => *len,
            DType::Unicode { chars, .. } => chars.saturating_mul(4),
            DType::DateTime { .. } | DType::TimeDelta { .. } => 8,
            DType::Struct(s) => s.itemsize,
            DType::SubArray(s) => s.count().saturating_mul(s.base.itemsize()),
        }
    }

    /// Required alignment in bytes, as numpy's `dtype.alignment` on a 64-bit
    /// Linux machine (complex aligns as its parts; unaligned structs are 1).
    pub fn alignment(&self) -> usize {
        match self {
            DType::Bool | DType::Bytes { .. } | DType::Void { .. } => 1,
            DType::Int { width, .. } | DType::UInt { width, .. } => width.bytes(),
            DType::Float { width, .. } => width.bytes(),
            DType::Complex { width, .. } => width.bytes() / 2,
            DType::Unicode { .. } => 4,
            DType::DateTime { .. } | DType::TimeDelta { .. } => 8,
            DType::Struct(s) => match s.align {
                StructAlign::Unaligned => 1,
                StructAlign::Aligned => s
                    .fields
                    .iter()
                    .map(|f| f.dtype.alignment())
                    .max()
                    .unwrap_or(1),
            },
            DType::SubArray(s) => s.base.alignment(),
        }
    }

    /// The byte order of a scalar type (`NotApplicable` for single-byte,
    /// byte-string, void, struct and subarray types).
    pub fn byte_order(&self) -> ByteOrder {
        match self {
            DType::Int { width, order } | DType::UInt { width, order } => {
                if *width == IntWidth::W1 {
                    ByteOrder::NotApplicable
                } else {
                    order.resolve()
                }
            }
            DType::Float { order, .. }
            | DType::Complex { order, .. }
            | DType::Unicode { order, .. }
            | DType::DateTime { order, .. }
            | DType::TimeDelta { order, .. } => order.resolve(),
            _ => ByteOrder::NotApplicable,
        }
    }

    /// The canonical form: single-byte types get `|`, multi-byte `|` becomes
    /// the native order, datetime multiples below 1 become 1. Two dtypes with
    /// equal canonical forms have the same descr string.
    pub fn canonical(&self) -> DType {
        match self {
            DType::Int { width, .. } => DType::Int {
                width: *width,
                order: self.byte_order(),
            },
            DType::UInt { width, .. } => DType::UInt {
                width: *width,
                order: self.byte_order(),
            },
            DType::Float { width, .. } => DType::Float {
                width: *width,
                order: self.byte_order(),
            },
            DType::Complex { width, .. } => DType::Complex {
                width: *width,
                order: self.byte_order(),
            },
            DType::Unicode { chars, .. } => DType::Unicode {
                chars: *chars,
                order: self.byte_order(),
            },
            DType::DateTime { unit, .. } => DType::DateTime {
                unit: canonical_unit(*unit),
                order: self.byte_order(),
            },
            DType::TimeDelta { unit, .. } => DType::TimeDelta {
                unit: canonical_unit(*unit),
                order: self.byte_order(),
            },
            DType::Struct(s) => DType::Struct(s.map_fields(DType::canonical)),
            DType::SubArray(s) => DType::SubArray(s.map_base(DType::canonical)),
            other => other.clone(),
        }
    }

    /// Whether two dtypes describe the same bytes with the same names:
    /// equal canonical forms, ignoring the [`StructAlign`] flag (which only
    /// changes the reported alignment, never a byte offset).
    pub fn same_layout(&self, other: &DType) -> bool {
        self.canonical().without_align_flags() == other.canonical().without_align_flags()
    }

    fn without_align_flags(&self) -> DType {
        match self {
            DType::Struct(s) => DType::Struct(
                s.map_fields(DType::without_align_flags)
                    .with_align_unchecked(StructAlign::Unaligned),
            ),
            DType::SubArray(s) => DType::SubArray(s.map_base(DType::without_align_flags)),
            other => other.clone(),
        }
    }

    /// Whether every byte of an element belongs to some value: no struct
    /// gaps or trailing padding anywhere inside.
    pub fn is_dense(&self) -> bool {
        match self {
            DType::Struct(s) => {
                let mut end = 0;
                for f in &s.fields {
                    if f.offset != end || !f.dtype.is_dense() {
                        return false;
                    }
                    end = f.offset + f.dtype.itemsize();
                }
                end == s.itemsize
            }
            DType::SubArray(s) => s.base.is_dense(),
            _ => true,
        }
    }

    /// A structured dtype, if this is one.
    pub fn as_struct(&self) -> Option<&StructType> {
        match self {
            DType::Struct(s) => Some(s),
            _ => None,
        }
    }
}

fn canonical_unit(u: DateUnit) -> DateUnit {
    if u.unit == TimeUnit::Generic {
        DateUnit::new(TimeUnit::Generic)
    } else {
        DateUnit {
            unit: u.unit,
            count: u.count.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn subarrays_flatten_and_check_overflow() {
        let inner = DType::subarray(f8(), vec![2]).unwrap();
        let outer = DType::subarray(inner, vec![3]).unwrap();
        match &outer {
            DType::SubArray(s) => {
                assert_eq!(s.shape(), [3, 2]);
                assert_eq!(s.base(), &f8());
            }
            other => panic!("not a subarray: {other:?}"),
        }
        assert_eq!(outer.itemsize(), 48);
        assert_eq!(DType::subarray(f8(), vec![]).unwrap(), f8());
        assert!(matches!(
            DType::subarray(f8(), vec![usize::MAX / 4, 3]),
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
