//! Structural checks of untrusted IPC metadata, for the cases where arrow-ipc
//! 57 would panic instead of returning an error: a schema flatbuffer with
//! impossible types (`fb_to_schema` unwraps and panics), validity bitmaps
//! shorter than their array, union type ids or offsets shorter than the
//! union. The walk over field nodes and buffers mirrors arrow-ipc's
//! `RecordBatchDecoder::create_array`; where it cannot follow (counts run
//! out), it stops and leaves the error to arrow.

use crate::error::{ArrowShmError, Result};
use arrow_ipc::{DateUnit, IntervalUnit, Precision, TimeUnit, Type};
use arrow_schema::{DataType, UnionMode};

fn malformed(reason: &'static str) -> ArrowShmError {
    ArrowShmError::Malformed { reason }
}

/// Deepest nesting accepted (the flatbuffer verifier allows 64 tables).
const MAX_DEPTH: usize = 64;

/// Checks every field of a schema flatbuffer.
pub(crate) fn schema(fb: arrow_ipc::Schema<'_>) -> Result<()> {
    let fields = fb.fields().ok_or(malformed("schema has no field list"))?;
    for f in fields {
        field(f, 0)?;
    }
    Ok(())
}

fn int_width(bits: i32) -> Result<()> {
    match bits {
        8 | 16 | 32 | 64 => Ok(()),
        _ => Err(malformed("integer type with an unsupported bit width")),
    }
}

fn field(f: arrow_ipc::Field<'_>, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(malformed("schema nested too deeply"));
    }
    if let Some(d) = f.dictionary() {
        let index = d
            .indexType()
            .ok_or(malformed("dictionary without an index type"))?;
        int_width(index.bitWidth())?;
    }
    let children = f.children().map(|c| c.len()).unwrap_or(0);
    let bad = |reason| Err(malformed(reason));
    match f.type_type() {
        Type::Null
        | Type::Bool
        | Type::Binary
        | Type::BinaryView
        | Type::LargeBinary
        | Type::Utf8
        | Type::Utf8View
        | Type::LargeUtf8
        | Type::Struct_ => {}
        Type::Int => int_width(
            f.type_as_int()
                .ok_or(malformed("Int type without parameters"))?
                .bitWidth(),
        )?,
        Type::FixedSizeBinary => {
            let t = f
                .type_as_fixed_size_binary()
                .ok_or(malformed("FixedSizeBinary without a width"))?;
            if t.byteWidth() < 0 {
                return bad("negative fixed-size binary width");
            }
        }
        Type::FloatingPoint => {
            let t = f
                .type_as_floating_point()
                .ok_or(malformed("FloatingPoint without a precision"))?;
            if !matches!(
                t.precision(),
                Precision::HALF | Precision::SINGLE | Precision::DOUBLE
            ) {
                return bad("unknown floating-point precision");
            }
        }
        Type::Date => {
            let t = f.type_as_date().ok_or(malformed("Date without a unit"))?;
            if !matches!(t.unit(), DateUnit::DAY | DateUnit::MILLISECOND) {
                return bad("unknown date unit");
            }
        }
        Type::Time => {
            let t = f.type_as_time().ok_or(malformed("Time without a unit"))?;
            if !matches!(
                (t.bitWidth(), t.unit()),
                (32, TimeUnit::SECOND | TimeUnit::MILLISECOND)
                    | (64, TimeUnit::MICROSECOND | TimeUnit::NANOSECOND)
            ) {
                return bad("unsupported time unit and width");
            }
        }
        Type::Timestamp => {
            let t = f
                .type_as_timestamp()
                .ok_or(malformed("Timestamp without a unit"))?;
            time_unit(t.unit())?;
        }
        Type::Duration => {
            let t = f
                .type_as_duration()
                .ok_or(malformed("Duration without a unit"))?;
            time_unit(t.unit())?;
        }
        Type::Interval => {
            let t = f
                .type_as_interval()
                .ok_or(malformed("Interval without a unit"))?;
            if !matches!(
                t.unit(),
                IntervalUnit::YEAR_MONTH | IntervalUnit::DAY_TIME | IntervalUnit::MONTH_DAY_NANO
            ) {
                return bad("unknown interval unit");
            }
        }
        Type::List | Type::LargeList | Type::ListView | Type::LargeListView => {
            if children != 1 {
                return bad("list type without exactly one child");
            }
        }
        Type::FixedSizeList => {
            let t = f
                .type_as_fixed_size_list()
                .ok_or(malformed("FixedSizeList without a size"))?;
            if children != 1 || t.listSize() < 0 {
                return bad("fixed-size list with a bad size or child count");
            }
        }
        Type::Map => {
            f.type_as_map().ok_or(malformed("Map without parameters"))?;
            let entries = f.children().and_then(|c| (c.len() == 1).then(|| c.get(0)));
            let ok = entries.is_some_and(|e| {
                e.type_type() == Type::Struct_ && e.children().is_some_and(|c| c.len() == 2)
            });
            if !ok {
                return bad("map without a two-field entries struct");
            }
        }
        Type::RunEndEncoded => {
            let ends = f.children().and_then(|c| (c.len() == 2).then(|| c.get(0)));
            let ok = ends.is_some_and(|e| {
                e.dictionary().is_none()
                    && e.type_as_int()
                        .is_some_and(|i| i.is_signed() && matches!(i.bitWidth(), 16 | 32 | 64))
            });
            if !ok {
                return bad("run-end encoded type without Int16/32/64 run ends and values");
            }
        }
        Type::Decimal => {
            let t = f
                .type_as_decimal()
                .ok_or(malformed("Decimal without parameters"))?;
            if u8::try_from(t.precision()).is_err() || i8::try_from(t.scale()).is_err() {
                return bad("decimal precision or scale out of range");
            }
            if !matches!(t.bitWidth(), 32 | 64 | 128 | 256) {
                return bad("decimal with an unsupported bit width");
            }
        }
        Type::Union => {
            let t = f
                .type_as_union()
                .ok_or(malformed("Union without parameters"))?;
            if !matches!(
                t.mode(),
                arrow_ipc::UnionMode::Dense | arrow_ipc::UnionMode::Sparse
            ) {
                return bad("unknown union mode");
            }
            match t.typeIds() {
                None if children > 128 => return bad("union with more than 128 children"),
                None => {}
                Some(ids) => {
                    let mut seen = [false; 128];
                    if ids.len() != children {
                        return bad("union type ids do not match its children");
                    }
                    for id in ids {
                        let i = usize::try_from(id)
                            .ok()
                            .filter(|&i| i < 128)
                            .ok_or(malformed("union type id out of range"))?;
                        if std::mem::replace(&mut seen[i], true) {
                            return bad("repeated union type id");
                        }
                    }
                }
            }
        }
        _ => return bad("unsupported type"),
    }
    if let Some(cs) = f.children() {
        for c in cs {
            field(c, depth + 1)?;
        }
    }
    Ok(())
}

fn time_unit(u: TimeUnit) -> Result<()> {
    match u {
        TimeUnit::SECOND | TimeUnit::MILLISECOND | TimeUnit::MICROSECOND | TimeUnit::NANOSECOND => {
            Ok(())
        }
        _ => Err(malformed("unknown time unit")),
    }
}

/// Walks the field nodes and buffers of one record batch (or dictionary
/// batch) message of `types`, as arrow-ipc's decoder consumes them.
pub(crate) struct Walk<'a> {
    nodes: flatbuffers::VectorIter<'a, arrow_ipc::FieldNode>,
    buffers: flatbuffers::VectorIter<'a, arrow_ipc::Buffer>,
    variadic: Option<flatbuffers::VectorIter<'a, i64>>,
    v5: bool,
}

/// `Ok(false)`: the walk ran out of nodes or buffers; arrow reports that.
type Step = Result<bool>;

impl<'a> Walk<'a> {
    pub(crate) fn new(
        batch: arrow_ipc::RecordBatch<'a>,
        version: arrow_ipc::MetadataVersion,
    ) -> Option<Walk<'a>> {
        Some(Walk {
            nodes: batch.nodes()?.iter(),
            buffers: batch.buffers()?.iter(),
            variadic: batch.variadicBufferCounts().map(|v| v.iter()),
            v5: version >= arrow_ipc::MetadataVersion::V5,
        })
    }

    /// Checks the columns of `types`.
    pub(crate) fn columns<'t>(
        mut self,
        types: impl IntoIterator<Item = &'t DataType>,
    ) -> Result<()> {
        for t in types {
            if !self.array(t, 0)? {
                break;
            }
        }
        Ok(())
    }

    fn node(&mut self) -> Option<(usize, usize)> {
        let n = self.nodes.next()?;
        // non-negative: checked with the message
        Some((n.length() as usize, n.null_count() as usize))
    }

    fn buffer_len(&mut self) -> Option<usize> {
        // non-negative: checked with the message
        self.buffers.next().map(|b| b.length() as usize)
    }

    /// The validity buffer of a node of `len` values, `nulls` of them null.
    fn validity(&mut self, len: usize, nulls: usize) -> Step {
        let Some(bytes) = self.buffer_len() else {
            return Ok(false);
        };
        if nulls > 0 && bytes.saturating_mul(8) < len {
            return Err(malformed("validity bitmap shorter than its array"));
        }
        Ok(true)
    }

    /// A buffer of `width`-byte elements: arrow reinterprets it as a slice
    /// of them and panics unless its length is a multiple of `width`.
    fn typed(&mut self, width: usize) -> Step {
        let Some(bytes) = self.buffer_len() else {
            return Ok(false);
        };
        if width > 1 && bytes % width != 0 {
            return Err(malformed(
                "buffer length not a multiple of its element size",
            ));
        }
        Ok(true)
    }

    fn skip(&mut self, n: usize) -> bool {
        (0..n).all(|_| self.buffer_len().is_some())
    }

    fn array(&mut self, t: &DataType, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return Err(malformed("data nested too deeply"));
        }
        let Some((len, nulls)) = self.node() else {
            return Ok(false);
        };
        match t {
            DataType::Null => Ok(true),
            DataType::Union(fields, mode) => {
                if !self.v5 && !self.skip(1) {
                    return Ok(false);
                }
                let Some(ids) = self.buffer_len() else {
                    return Ok(false);
                };
                if ids < len {
                    return Err(malformed("union type ids shorter than the union"));
                }
                if *mode == UnionMode::Dense {
                    let Some(offsets) = self.buffer_len() else {
                        return Ok(false);
                    };
                    if offsets < len.saturating_mul(4) || offsets % 4 != 0 {
                        return Err(malformed("union offsets shorter than the union"));
                    }
                }
                for (_, f) in fields.iter() {
                    if !self.array(f.data_type(), depth + 1)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            DataType::RunEndEncoded(ends, values) => Ok(self.array(ends.data_type(), depth + 1)?
                && self.array(values.data_type(), depth + 1)?),
            DataType::Struct(fields) => {
                if !self.validity(len, nulls)? {
                    return Ok(false);
                }
                for f in fields {
                    if !self.array(f.data_type(), depth + 1)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            DataType::List(f) | DataType::Map(f, _) => Ok(self.validity(len, nulls)?
                && self.typed(4)?
                && self.array(f.data_type(), depth + 1)?),
            DataType::LargeList(f) => Ok(self.validity(len, nulls)?
                && self.typed(8)?
                && self.array(f.data_type(), depth + 1)?),
            DataType::ListView(f) => Ok(self.validity(len, nulls)?
                && self.typed(4)?
                && self.typed(4)?
                && self.array(f.data_type(), depth + 1)?),
            DataType::LargeListView(f) => Ok(self.validity(len, nulls)?
                && self.typed(8)?
                && self.typed(8)?
                && self.array(f.data_type(), depth + 1)?),
            DataType::FixedSizeList(f, size) => {
                // arrow-data multiplies the two and panics on overflow.
                let size = usize::try_from(*size)
                    .map_err(|_| malformed("FixedSizeList with a negative size"))?;
                if len.checked_mul(size).is_none_or(|n| n > i64::MAX as usize) {
                    return Err(malformed("FixedSizeList length times size overflows"));
                }
                Ok(self.validity(len, nulls)? && self.array(f.data_type(), depth + 1)?)
            }
            DataType::Utf8 | DataType::Binary => {
                Ok(self.validity(len, nulls)? && self.typed(4)? && self.skip(1))
            }
            DataType::LargeUtf8 | DataType::LargeBinary => {
                Ok(self.validity(len, nulls)? && self.typed(8)? && self.skip(1))
            }
            DataType::Utf8View | DataType::BinaryView => {
                let Some(count) = self.variadic.as_mut().and_then(|v| v.next()) else {
                    return Ok(false);
                };
                // non-negative and bounded by the buffer count: checked with the message
                // The views: arrow reinterprets them as u128 and panics on a
                // length that is not a multiple of 16.
                Ok(self.validity(len, nulls)? && self.typed(16)? && self.skip(count as usize))
            }
            DataType::Dictionary(key, _) => {
                Ok(self.validity(len, nulls)? && self.typed(key.primitive_width().unwrap_or(1))?)
            }
            // booleans, fixed-size binary and every fixed-width type
            _ => Ok(self.validity(len, nulls)? && self.typed(t.primitive_width().unwrap_or(1))?),
        }
    }
}
