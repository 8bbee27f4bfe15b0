//! The numpy dtype model: scalars, flexible types, datetimes, structured
//! records and subarrays, with itemsize and alignment computed as numpy does.
//!
//! Simple types are plain enum variants with public fields whose values are
//! always valid (widths are enums, not integers). Structured dtypes and
//! subarrays carry invariants (ordered, non-overlapping fields;
//! overflow-free shapes) and therefore have private fields and checked
//! constructors; `serde` deserialization goes through the same checks, so a
//! descriptor received from another process cannot break them.
//! Rejected alternative: one open `DType { kind, size, order, .. }` record,
//! which would let `'<i3'` or overlapping fields exist and push validation into
//! every consumer.

use crate::error::Result;
use crate::structured::{StructAlign, StructType, SubArrayType};
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

impl DType {
    /// `shape` copies of `base` ([`DType::SubArray`]) as numpy builds it: an
    /// empty shape gives `base` itself, and a subarray of a subarray stays
    /// nested (`(('<f8', (2,)), (3,))` is not numpy's `('<f8', (3, 2))`,
    /// though [`DType::same_layout`] treats the two as one layout).
    ///
    /// # Errors
    /// [`CodecError::Overflow`](crate::CodecError::Overflow) when the itemsize overflows,
    /// [`CodecError::BadStruct`](crate::CodecError::BadStruct) for more than [`MAX_DIMS`](crate::MAX_DIMS) dimensions.
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
            DType::Struct(s) => s.itemsize(),
            DType::SubArray(s) => s.count().saturating_mul(s.base().itemsize()),
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
            DType::Struct(s) => match s.align() {
                StructAlign::Unaligned => 1,
                StructAlign::Aligned => s
                    .fields()
                    .iter()
                    .map(|f| f.dtype.alignment())
                    .max()
                    .unwrap_or(1),
            },
            DType::SubArray(s) => s.base().alignment(),
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
    /// changes the reported alignment, never a byte offset) and how nested
    /// subarrays split their shape.
    pub fn same_layout(&self, other: &DType) -> bool {
        self == other
            || self.canonical().without_align_flags() == other.canonical().without_align_flags()
    }

    fn without_align_flags(&self) -> DType {
        match self {
            DType::Struct(s) => DType::Struct(
                s.map_fields(DType::without_align_flags)
                    .with_align_unchecked(StructAlign::Unaligned),
            ),
            DType::SubArray(s) => {
                DType::SubArray(s.flattened().map_base(DType::without_align_flags))
            }
            other => other.clone(),
        }
    }

    /// Whether every byte of an element belongs to some value: no struct
    /// gaps or trailing padding anywhere inside.
    pub fn is_dense(&self) -> bool {
        match self {
            DType::Struct(s) => {
                let mut end = 0;
                for f in s.fields() {
                    if f.offset != end || !f.dtype.is_dense() {
                        return false;
                    }
                    end = f.offset + f.dtype.itemsize();
                }
                end == s.itemsize()
            }
            DType::SubArray(s) => s.base().is_dense(),
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
