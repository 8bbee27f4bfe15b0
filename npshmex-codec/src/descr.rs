//! numpy `descr` strings: parsing (from the literal tree of [`crate::literal`])
//! and writing, byte for byte as `numpy.lib.format.dtype_to_descr` and
//! `repr` produce them.
//!
//! Writing mirrors numpy's `_array_descr`: scalars as `dtype.str`
//! (`'<f8'`), structs as a list of `(name, descr[, shape])` tuples with
//! `('', '|V<n>')` entries for gaps and trailing padding, titles as
//! `(('title', 'name'), descr)`. Reading mirrors `descr_to_dtype`: padding
//! entries are dropped, offsets are the running sum of item sizes; the dict
//! form (`{'names': .., 'formats': .., 'offsets': .., 'itemsize': ..}`) of
//! `repr(dtype)` is read too.

use crate::dtype::{ByteOrder, ComplexWidth, DType, DateUnit, FloatWidth, IntWidth, TimeUnit};
use crate::error::{CodecError, Result};
use crate::literal::{self, Lit, LitKind, LongSuffix};
use crate::pyrepr::{write_py_str, write_shape};
use crate::structured::{checked_product, round_up, Field, StructAlign, StructType, MAX_DIMS};
use std::fmt::Write as _;

/// Largest itemsize accepted from text: numpy stores element sizes in a C `int`.
const MAX_ITEMSIZE: u64 = i32::MAX as u64;

impl DType {
    /// Parses a numpy descr: a type string (`'<f8'` written without the
    /// quotes is accepted too), a list of fields, a `(descr, shape)` tuple or
    /// the dict form.
    ///
    /// ```
    /// use npshmex_codec::DType;
    /// let dt = DType::parse_descr("[('a', '<f8'), ('b', '<i4', (3,))]")?;
    /// assert_eq!(dt.itemsize(), 20);
    /// assert_eq!(dt.to_descr(), "[('a', '<f8'), ('b', '<i4', (3,))]");
    /// assert_eq!(DType::parse_descr(">u2")?.to_descr(), "'>u2'");
    /// # Ok::<(), npshmex_codec::CodecError>(())
    /// ```
    ///
    /// # Errors
    /// [`CodecError::Syntax`]/[`CodecError::TooDeep`] for text that is not a
    /// literal, [`CodecError::BadDescr`] for literals that are not descrs,
    /// [`CodecError::Unsupported`] for object and long-double types,
    /// [`CodecError::BadStruct`] for inconsistent fields.
    pub fn parse_descr(s: &str) -> Result<DType> {
        let trimmed = s.trim();
        // A bare `dtype.str` such as `<f8` (no quotes, no brackets).
        let bare = !trimmed.is_empty()
            && !trimmed.contains(['\'', '"', '(', '[', '{'])
            && !trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
        if bare {
            let offset = s.len() - s.trim_start().len();
            return parse_type_str(trimmed, offset);
        }
        let lit = literal::parse(s, LongSuffix::Reject)?;
        from_lit(&lit)
    }

    /// The descr numpy writes into a `.npy` header for this dtype, as Python
    /// source (`'<f8'` with its quotes, or a list).
    pub fn to_descr(&self) -> String {
        let mut out = String::new();
        match self {
            DType::SubArray(s) => {
                out.push('(');
                write_descr(s.base(), &mut out);
                out.push_str(", ");
                write_shape(s.shape(), &mut out);
                out.push(')');
            }
            _ => write_descr(self, &mut out),
        }
        out
    }

    /// numpy's `dtype.str` for non-structured types (`<f8`, `|S5`, `<M8[ns]`),
    /// without quotes; `|V<itemsize>` for structs and subarrays.
    pub fn type_str(&self) -> String {
        let o = |order: ByteOrder| order.char();
        match self {
            DType::Bool => "|b1".into(),
            DType::Int { width, order } => int_str('i', *width, *order),
            DType::UInt { width, order } => int_str('u', *width, *order),
            DType::Float { width, order } => format!("{}f{}", o(*order), width.bytes()),
            DType::Complex { width, order } => format!("{}c{}", o(*order), width.bytes()),
            DType::Bytes { len } => format!("|S{len}"),
            DType::Unicode { chars, order } => format!("{}U{chars}", o(*order)),
            DType::Void { len } => format!("|V{len}"),
            DType::DateTime { unit, order } => format!("{}M8{}", o(*order), unit_str(*unit)),
            DType::TimeDelta { unit, order } => format!("{}m8{}", o(*order), unit_str(*unit)),
            DType::Struct(_) | DType::SubArray(_) => format!("|V{}", self.itemsize()),
        }
    }
}

fn int_str(kind: char, width: IntWidth, order: ByteOrder) -> String {
    if width == IntWidth::W1 {
        format!("|{kind}1")
    } else {
        format!("{}{kind}{}", order.char(), width.bytes())
    }
}

fn unit_str(u: DateUnit) -> String {
    match (u.unit, u.count) {
        (TimeUnit::Generic, _) => String::new(),
        (unit, 0 | 1) => format!("[{}]", unit.abbrev()),
        (unit, n) => format!("[{n}{}]", unit.abbrev()),
    }
}

fn write_descr(dt: &DType, out: &mut String) {
    match dt {
        DType::Struct(s) => write_struct(s, out),
        // A subarray as a whole (only reached through nesting numpy cannot
        // produce): the tuple form numpy's descr_to_dtype reads.
        DType::SubArray(_) => out.push_str(&dt.to_descr()),
        _ => write_py_str(&dt.type_str(), out),
    }
}

fn write_struct(s: &StructType, out: &mut String) {
    out.push('[');
    let mut first = true;
    let mut offset = 0usize;
    let mut sep = |out: &mut String| {
        if !first {
            out.push_str(", ");
        }
        first = false;
    };
    for f in s.fields() {
        if f.offset > offset {
            sep(out);
            let _ = write!(out, "('', '|V{}')", f.offset - offset);
        }
        sep(out);
        out.push('(');
        match &f.title {
            Some(t) => {
                out.push('(');
                write_py_str(t, out);
                out.push_str(", ");
                write_py_str(&f.name, out);
                out.push(')');
            }
            None => write_py_str(&f.name, out),
        }
        out.push_str(", ");
        match &f.dtype {
            DType::SubArray(sa) => {
                write_descr(sa.base(), out);
                out.push_str(", ");
                write_shape(sa.shape(), out);
            }
            other => write_descr(other, out),
        }
        out.push(')');
        offset = f.offset + f.dtype.itemsize();
    }
    if s.itemsize() > offset {
        sep(out);
        let _ = write!(out, "('', '|V{}')", s.itemsize() - offset);
    }
    out.push(']');
}

fn bad(pos: usize, reason: impl Into<String>) -> CodecError {
    CodecError::BadDescr {
        pos,
        reason: reason.into(),
    }
}

/// Converts a parsed literal to a dtype.
pub(crate) fn from_lit(lit: &Lit) -> Result<DType> {
    match &lit.kind {
        LitKind::Str(s) => parse_type_str(s, lit.pos + 1),
        LitKind::List(items) => from_field_list(items).map(DType::Struct),
        LitKind::Tuple(items) => match items.as_slice() {
            [base, shape] => DType::subarray(from_lit(base)?, shape_from_lit(shape)?),
            _ => Err(bad(lit.pos, "a descr tuple must be (descr, shape)")),
        },
        LitKind::Dict(items) => from_dict(lit.pos, items),
        other => Err(bad(
            lit.pos,
            format!(
                "a descr is a str, list, tuple or dict, not {}",
                other.type_name()
            ),
        )),
    }
}

fn shape_from_lit(lit: &Lit) -> Result<Vec<usize>> {
    match &lit.kind {
        LitKind::Int(_) => Ok(vec![dim(lit)?]),
        LitKind::Tuple(items) => {
            if items.len() > MAX_DIMS {
                return Err(bad(lit.pos, format!("more than {MAX_DIMS} dimensions")));
            }
            items.iter().map(dim).collect()
        }
        other => Err(bad(
            lit.pos,
            format!("a shape is a tuple of ints, not {}", other.type_name()),
        )),
    }
}

fn dim(lit: &Lit) -> Result<usize> {
    match lit.kind {
        LitKind::Int(n) => usize::try_from(n).map_err(|_| {
            if n < 0 {
                bad(lit.pos, "negative dimension")
            } else {
                CodecError::IntOutOfRange { pos: lit.pos }
            }
        }),
        _ => Err(bad(
            lit.pos,
            format!("a dimension is an int, not {}", lit.kind.type_name()),
        )),
    }
}

fn from_field_list(items: &[Lit]) -> Result<StructType> {
    let mut fields = Vec::new();
    let mut offset = 0usize;
    for item in items {
        let LitKind::Tuple(parts) = &item.kind else {
            return Err(bad(item.pos, "a field is a (name, descr[, shape]) tuple"));
        };
        let (name_lit, dt) = match parts.as_slice() {
            [n, d] => (n, from_lit(d)?),
            [n, d, s] => (n, DType::subarray(from_lit(d)?, shape_from_lit(s)?)?),
            _ => return Err(bad(item.pos, "a field is a (name, descr[, shape]) tuple")),
        };
        let (title, name) = match &name_lit.kind {
            LitKind::Str(n) => (None, n.clone()),
            LitKind::Tuple(tn) => match tn.as_slice() {
                [Lit {
                    kind: LitKind::Str(t),
                    ..
                }, Lit {
                    kind: LitKind::Str(n),
                    ..
                }] => (Some(t.clone()), n.clone()),
                _ => {
                    return Err(bad(
                        name_lit.pos,
                        "a titled name is a (title, name) str pair",
                    ))
                }
            },
            _ => return Err(bad(name_lit.pos, "a field name is a str")),
        };
        let size = dt.itemsize();
        // numpy's descr_to_dtype drops unnamed void entries: they are padding.
        let is_pad = title.is_none()
            && name.is_empty()
            && matches!(dt, DType::Void { .. } | DType::SubArray(_));
        if !is_pad {
            fields.push(Field {
                name,
                title,
                dtype: dt,
                offset,
            });
        }
        offset = offset.checked_add(size).ok_or(CodecError::Overflow {
            what: "struct itemsize",
        })?;
        if offset as u64 > MAX_ITEMSIZE {
            return Err(bad(item.pos, "struct itemsize too large"));
        }
    }
    StructType::new(fields, offset, StructAlign::Unaligned)
}

fn from_dict(pos: usize, items: &[(Lit, Lit)]) -> Result<DType> {
    let mut names = None;
    let mut formats = None;
    let mut offsets = None;
    let mut titles = None;
    let mut itemsize = None;
    let mut aligned = false;
    for (k, v) in items {
        let LitKind::Str(key) = &k.kind else {
            return Err(bad(k.pos, "dict descr keys are strs"));
        };
        let seq = |v: &Lit| match &v.kind {
            LitKind::List(x) | LitKind::Tuple(x) => Ok(x.clone()),
            _ => Err(bad(v.pos, format!("{key:?} must be a list"))),
        };
        match key.as_str() {
            "names" => names = Some(seq(v)?),
            "formats" => formats = Some(seq(v)?),
            "offsets" => offsets = Some(seq(v)?),
            "titles" => titles = Some(seq(v)?),
            "itemsize" => itemsize = Some(dim(v)?),
            "aligned" => match v.kind {
                LitKind::Bool(b) => aligned = b,
                _ => return Err(bad(v.pos, "'aligned' must be True or False")),
            },
            _ => return Err(bad(k.pos, format!("unknown dict descr key {key:?}"))),
        }
    }
    let (Some(names), Some(formats)) = (names, formats) else {
        return Err(bad(pos, "a dict descr needs 'names' and 'formats'"));
    };
    let n = names.len();
    if formats.len() != n
        || offsets.as_ref().is_some_and(|o| o.len() != n)
        || titles.as_ref().is_some_and(|t| t.len() != n)
    {
        return Err(bad(
            pos,
            "'names', 'formats', 'offsets', 'titles' differ in length",
        ));
    }
    let mut fields = Vec::with_capacity(n);
    let mut running = 0usize;
    let mut max_align = 1;
    for i in 0..n {
        let name = match &names[i].kind {
            LitKind::Str(s) => s.clone(),
            _ => return Err(bad(names[i].pos, "a field name is a str")),
        };
        let dtype = from_lit(&formats[i])?;
        let title = match titles.as_ref().map(|t| &t[i]) {
            None
            | Some(Lit {
                kind: LitKind::None,
                ..
            }) => None,
            Some(Lit {
                kind: LitKind::Str(t),
                ..
            }) => Some(t.clone()),
            Some(l) => return Err(bad(l.pos, "a title is a str or None")),
        };
        let a = dtype.alignment();
        max_align = max_align.max(a);
        let offset = match &offsets {
            Some(o) => dim(&o[i])?,
            None if aligned => round_up(running, a)?,
            None => running,
        };
        running = offset
            .checked_add(dtype.itemsize())
            .ok_or(CodecError::Overflow {
                what: "struct itemsize",
            })?;
        fields.push(Field {
            name,
            title,
            dtype,
            offset,
        });
    }
    // numpy accepts any field order in this form; ours keeps offset order.
    fields.sort_by_key(|f| f.offset);
    let end = fields
        .iter()
        .map(|f| f.offset + f.dtype.itemsize())
        .max()
        .unwrap_or(0);
    let itemsize = match itemsize {
        Some(s) => s,
        None if aligned => round_up(end, max_align)?,
        None => end,
    };
    if itemsize as u64 > MAX_ITEMSIZE {
        return Err(bad(pos, "struct itemsize too large"));
    }
    let align = if aligned {
        StructAlign::Aligned
    } else {
        StructAlign::Unaligned
    };
    StructType::new(fields, itemsize, align).map(DType::Struct)
}

/// Parses a type string such as `<f8`, `|S5`, `>M8[10ms]`; `pos` is the
/// offset of its first byte in the surrounding text.
pub(crate) fn parse_type_str(s: &str, pos: usize) -> Result<DType> {
    if let Some(dt) = named_type(s, pos) {
        return dt;
    }
    let b = s.as_bytes();
    let (order, rest) = match b.first() {
        Some(b'<') => (ByteOrder::Little, 1),
        Some(b'>' | b'!') => (ByteOrder::Big, 1),
        Some(b'|') => (ByteOrder::NotApplicable, 1),
        Some(b'=') => (ByteOrder::NATIVE, 1),
        _ => (ByteOrder::NATIVE, 0),
    };
    let Some(&kind) = b.get(rest) else {
        return Err(bad(pos + rest, "missing type character"));
    };
    let Some(tail) = s.get(rest + 1..).filter(|_| kind.is_ascii()) else {
        return Err(bad(pos + rest, "unknown type character"));
    };
    let tail_pos = pos + rest + 1;
    // Digits, then for datetimes an optional [unit].
    let ndigits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let (num, after) = tail.split_at(ndigits);
    let size: Option<u64> = if num.is_empty() {
        None
    } else {
        Some(
            num.parse::<u64>()
                .map_err(|_| CodecError::IntOutOfRange { pos: tail_pos })?,
        )
    };
    let after_pos = tail_pos + ndigits;
    let unsupported = |reason| {
        Err(CodecError::Unsupported {
            descr: s.to_string(),
            reason,
        })
    };
    if matches!(kind, b'M' | b'm') {
        if size.is_some_and(|n| n != 8) {
            return Err(bad(tail_pos, "datetime64/timedelta64 have 8 bytes"));
        }
        let unit = parse_unit(after, after_pos)?;
        let order = order.resolve();
        return Ok(if kind == b'M' {
            DType::DateTime { unit, order }
        } else {
            DType::TimeDelta { unit, order }
        });
    }
    if !after.is_empty() {
        return Err(bad(after_pos, "unexpected text after the type"));
    }
    let need = |size: Option<u64>| size.ok_or_else(|| bad(tail_pos, "missing item size"));
    let multi = order.resolve();
    if size.is_none() {
        // numpy's one-character type codes (`np.dtype('<i')` is `<i4`, `'b'`
        // is int8 while `'b1'` is bool, `'c'` is `S1`), as np.load accepts
        // them in a header; C types as on 64-bit Linux.
        let int = |width| DType::Int {
            width,
            order: if width == IntWidth::W1 {
                ByteOrder::NotApplicable
            } else {
                multi
            },
        };
        let uint = |width| DType::UInt {
            width,
            order: if width == IntWidth::W1 {
                ByteOrder::NotApplicable
            } else {
                multi
            },
        };
        let float = |width| DType::Float {
            width,
            order: multi,
        };
        let complex = |width| DType::Complex {
            width,
            order: multi,
        };
        let alias = match kind {
            b'b' => Some(int(IntWidth::W1)),
            b'B' => Some(uint(IntWidth::W1)),
            b'h' => Some(int(IntWidth::W2)),
            b'H' => Some(uint(IntWidth::W2)),
            b'i' => Some(int(IntWidth::W4)),
            b'I' => Some(uint(IntWidth::W4)),
            b'l' | b'q' | b'p' => Some(int(IntWidth::W8)),
            b'L' | b'Q' | b'P' => Some(uint(IntWidth::W8)),
            b'e' => Some(float(FloatWidth::F2)),
            b'f' => Some(float(FloatWidth::F4)),
            b'd' => Some(float(FloatWidth::F8)),
            b'F' => Some(complex(ComplexWidth::C8)),
            b'D' => Some(complex(ComplexWidth::C16)),
            b'c' => Some(DType::Bytes { len: 1 }),
            b'g' => return unsupported("long double has a platform-dependent layout"),
            b'G' => return unsupported("complex long double has a platform-dependent layout"),
            _ => None,
        };
        if let Some(dt) = alias {
            return Ok(dt);
        }
    }
    match kind {
        b'b' | b'?' => match size {
            // `b` alone is int8 (handled above); `b1` and `?` are bool.
            Some(1) | None => Ok(DType::Bool),
            _ => Err(bad(tail_pos, "bool has 1 byte")),
        },
        b'i' | b'u' => {
            let width = IntWidth::from_bytes(need(size)?)
                .ok_or_else(|| bad(tail_pos, "integers have 1, 2, 4 or 8 bytes"))?;
            let order = if width == IntWidth::W1 {
                ByteOrder::NotApplicable
            } else {
                multi
            };
            Ok(if kind == b'i' {
                DType::Int { width, order }
            } else {
                DType::UInt { width, order }
            })
        }
        b'f' => {
            let width = match need(size)? {
                2 => FloatWidth::F2,
                4 => FloatWidth::F4,
                8 => FloatWidth::F8,
                10 | 12 | 16 => return unsupported("long double has a platform-dependent layout"),
                _ => return Err(bad(tail_pos, "floats have 2, 4 or 8 bytes")),
            };
            Ok(DType::Float {
                width,
                order: multi,
            })
        }
        b'c' => {
            let width = match need(size)? {
                8 => ComplexWidth::C8,
                16 => ComplexWidth::C16,
                20 | 24 | 32 => {
                    return unsupported("complex long double has a platform-dependent layout")
                }
                _ => return Err(bad(tail_pos, "complex numbers have 8 or 16 bytes")),
            };
            Ok(DType::Complex {
                width,
                order: multi,
            })
        }
        b'S' | b'a' | b'V' | b'U' => {
            let n = size.unwrap_or(0);
            let itemsize = if kind == b'U' {
                n.checked_mul(4)
            } else {
                Some(n)
            };
            let len = itemsize
                .filter(|&s| s <= MAX_ITEMSIZE)
                .and_then(|_| usize::try_from(n).ok())
                .ok_or(CodecError::Overflow { what: "itemsize" })?;
            Ok(match kind {
                b'U' => DType::Unicode {
                    chars: len,
                    order: multi,
                },
                b'V' => DType::Void { len },
                _ => DType::Bytes { len },
            })
        }
        b'O' => unsupported("object arrays hold pointers"),
        b'T' => unsupported("variable-width strings hold pointers"),
        b'g' | b'G' => unsupported("long double has a platform-dependent layout"),
        _ => Err(bad(pos + rest, "unknown type character")),
    }
}

/// numpy's dtype names that np.load also accepts as a descr (`'float64'`,
/// `'int32'`, `'datetime64[ns]'`; never with a byte-order prefix), in the
/// native order as numpy gives them.
fn named_type(s: &str, pos: usize) -> Option<Result<DType>> {
    let native = ByteOrder::NATIVE;
    let int = |width| {
        let order = if width == IntWidth::W1 {
            ByteOrder::NotApplicable
        } else {
            native
        };
        DType::Int { width, order }
    };
    let uint = |width| {
        let order = if width == IntWidth::W1 {
            ByteOrder::NotApplicable
        } else {
            native
        };
        DType::UInt { width, order }
    };
    let float = |width| DType::Float {
        width,
        order: native,
    };
    let complex = |width| DType::Complex {
        width,
        order: native,
    };
    for (name, time) in [("datetime64", true), ("timedelta64", false)] {
        if let Some(unit) = s.strip_prefix(name) {
            return Some(parse_unit(unit, pos + name.len()).map(|unit| {
                if time {
                    DType::DateTime {
                        unit,
                        order: native,
                    }
                } else {
                    DType::TimeDelta {
                        unit,
                        order: native,
                    }
                }
            }));
        }
    }
    Some(Ok(match s {
        "bool" | "bool_" => DType::Bool,
        "int8" | "byte" => int(IntWidth::W1),
        "int16" | "short" => int(IntWidth::W2),
        "int32" | "intc" => int(IntWidth::W4),
        "int64" | "int" | "intp" | "long" | "longlong" => int(IntWidth::W8),
        "uint8" | "ubyte" => uint(IntWidth::W1),
        "uint16" | "ushort" => uint(IntWidth::W2),
        "uint32" | "uintc" => uint(IntWidth::W4),
        "uint64" | "uint" | "uintp" | "ulong" | "ulonglong" => uint(IntWidth::W8),
        "float16" | "half" => float(FloatWidth::F2),
        "float32" | "single" => float(FloatWidth::F4),
        "float64" | "float" | "double" => float(FloatWidth::F8),
        "complex64" | "csingle" => complex(ComplexWidth::C8),
        "complex128" | "complex" | "cdouble" => complex(ComplexWidth::C16),
        "bytes" => DType::Bytes { len: 0 },
        "str" => DType::Unicode {
            chars: 0,
            order: native,
        },
        "void" => DType::Void { len: 0 },
        _ => return None,
    }))
}

fn parse_unit(s: &str, pos: usize) -> Result<DateUnit> {
    if s.is_empty() {
        return Ok(DateUnit::new(TimeUnit::Generic));
    }
    let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) else {
        return Err(bad(pos, "a datetime unit is written [unit]"));
    };
    let ndigits = inner.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = inner.split_at(ndigits);
    let count = if num.is_empty() {
        1
    } else {
        num.parse::<u32>()
            .ok()
            .filter(|&n| n > 0 && n <= i32::MAX as u32)
            .ok_or_else(|| bad(pos + 1, "bad datetime unit multiple"))?
    };
    let unit = TimeUnit::from_abbrev(unit)
        .ok_or_else(|| bad(pos + 1 + ndigits, "unknown datetime unit"))?;
    Ok(DateUnit { unit, count })
}

/// Product of a shape, overflow-checked.
pub(crate) fn shape_len(shape: &[usize]) -> Result<usize> {
    checked_product(shape).ok_or(CodecError::Overflow {
        what: "shape product",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> String {
        DType::parse_descr(s).unwrap().to_descr()
    }

    #[test]
    fn numpy_aliases_np_load_accepts() {
        // np.dtype(x).str for each x (numpy 2.2, x86_64 Linux).
        for (alias, str) in [
            ("'<i'", "'<i4'"),
            ("'>h'", "'>i2'"),
            ("'|b'", "'|i1'"),
            ("'b'", "'|i1'"),
            ("'b1'", "'|b1'"),
            ("'?'", "'|b1'"),
            ("'B'", "'|u1'"),
            ("'>H'", "'>u2'"),
            ("'=I'", "'<u4'"),
            ("'l'", "'<i8'"),
            ("'>Q'", "'>u8'"),
            ("'p'", "'<i8'"),
            ("'e'", "'<f2'"),
            ("'>f'", "'>f4'"),
            ("'d'", "'<f8'"),
            ("'F'", "'<c8'"),
            ("'>D'", "'>c16'"),
            ("'c'", "'|S1'"),
            ("'float64'", "'<f8'"),
            ("'int'", "'<i8'"),
            ("'uint8'", "'|u1'"),
            ("'complex'", "'<c16'"),
            ("'bool'", "'|b1'"),
            ("'str'", "'<U0'"),
            ("'datetime64[ns]'", "'<M8[ns]'"),
            ("'timedelta64[10ms]'", "'<m8[10ms]'"),
            (
                "[('a', 'd'), ('b', 'int16', (2,))]",
                "[('a', '<f8'), ('b', '<i2', (2,))]",
            ),
        ] {
            assert_eq!(rt(alias), str, "{alias}");
        }
        assert!(matches!(
            DType::parse_descr("'g'"),
            Err(CodecError::Unsupported { .. })
        ));
        assert!(DType::parse_descr("'<float64'").is_err());
        assert!(DType::parse_descr("'u'").is_err());
    }

    #[test]
    fn scalars_round_trip() {
        for s in [
            "'<f8'",
            "'>f4'",
            "'<f2'",
            "'|b1'",
            "'|i1'",
            "'|u1'",
            "'>i8'",
            "'<u2'",
            "'<c8'",
            "'>c16'",
            "'|S5'",
            "'<U3'",
            "'>U0'",
            "'|V16'",
            "'<M8[ns]'",
            "'>m8[10ms]'",
            "'<M8'",
            "'<m8[Y]'",
        ] {
            assert_eq!(rt(s), s);
        }
        assert_eq!(rt("'<i1'"), "'|i1'");
        assert_eq!(rt("'=b1'"), "'|b1'");
        assert_eq!(rt("'<M8[\u{3bc}s]'"), "'<M8[us]'");
    }

    #[test]
    fn structs_round_trip() {
        for s in [
            "[('a', '<f8'), ('b', '<i4', (3,))]",
            "[('a', '|u1'), ('', '|V7'), ('b', '<f8'), ('', '|V4')]",
            "[(('my title', 'x'), '<f8'), ('n', [('p', '>i2'), ('q', '|S3')], (2, 2))]",
            "[(\"it's\", '<f8')]",
            "[]",
        ] {
            assert_eq!(rt(s), s);
        }
        let d =
            "{'names': ['a', 'b'], 'formats': ['<f8', '<i4'], 'offsets': [8, 0], 'itemsize': 24}";
        assert_eq!(
            rt(d),
            "[('b', '<i4'), ('', '|V4'), ('a', '<f8'), ('', '|V8')]"
        );
        let al =
            DType::parse_descr("{'names': ['a', 'b'], 'formats': ['u1', '<f8'], 'aligned': True}")
                .unwrap();
        assert_eq!(al.itemsize(), 16);
        assert_eq!(al.alignment(), 8);
        assert_eq!(al.to_descr(), "[('a', '|u1'), ('', '|V7'), ('b', '<f8')]");
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            DType::parse_descr("'|O'"),
            Err(CodecError::Unsupported { .. })
        ));
        assert!(matches!(
            DType::parse_descr("[('a', '<f8'), ('o', '|O')]"),
            Err(CodecError::Unsupported { .. })
        ));
        assert!(matches!(
            DType::parse_descr("'<f16'"),
            Err(CodecError::Unsupported { .. })
        ));
        assert_eq!(
            DType::parse_descr("'<i3'"),
            Err(CodecError::BadDescr {
                pos: 3,
                reason: "integers have 1, 2, 4 or 8 bytes".into()
            })
        );
        assert!(matches!(
            DType::parse_descr("[('a', '<f8'), ('a', '<f8')]"),
            Err(CodecError::BadStruct { .. })
        ));
        assert!(matches!(
            DType::parse_descr("'<M8[fortnight]'"),
            Err(CodecError::BadDescr { .. })
        ));
        assert!(matches!(
            DType::parse_descr("'|S99999999999'"),
            Err(CodecError::Overflow { .. })
        ));
        assert!(matches!(
            DType::parse_descr("42"),
            Err(CodecError::BadDescr { pos: 0, .. })
        ));
    }
}
