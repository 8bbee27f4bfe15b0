//! A record batch with a column of every type family the Arrow IPC format
//! carries, for tests, examples and the pyarrow interop check
//! (`xtask/py/arrow_interop.py` builds the same table in Python).

use arrow_array::builder::{Int64Builder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::types::{Int16Type, Int32Type, Int8Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, Date32Array, Date64Array,
    Decimal128Array, Decimal256Array, DictionaryArray, DurationMillisecondArray,
    DurationNanosecondArray, FixedSizeBinaryArray, FixedSizeListArray, Float16Array, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, IntervalMonthDayNanoArray,
    LargeBinaryArray, LargeListArray, LargeStringArray, ListArray, ListViewArray, NullArray,
    RecordBatch, RunArray, StringArray, StringViewArray, StructArray, Time32MillisecondArray,
    Time32SecondArray, Time64MicrosecondArray, Time64NanosecondArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt16Array,
    UInt32Array, UInt64Array, UInt8Array, UnionArray,
};
use arrow_buffer::{i256, IntervalMonthDayNano, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, Fields, UnionFields};
use std::sync::Arc;

/// Number of rows of [`every_type`].
pub const ROWS: usize = 5;

/// Five rows, one column per type family: null, boolean, every integer and
/// float width, utf8/binary and their large and view variants, fixed-size
/// binary, decimals, dates, times, timestamps with and without zones,
/// durations, month-day-nano intervals, lists, large lists, list views,
/// fixed-size lists, a struct, a map, dense and sparse unions, a dictionary,
/// a list of dictionaries (a nested dictionary) and a run-end encoded column.
/// Row 2 is null wherever the type allows nulls.
///
/// # Errors
/// Only if arrow rejects one of the fixed arrays (a bug).
pub fn every_type() -> Result<RecordBatch, ArrowError> {
    let strs = [
        Some("a"),
        Some("héllo"),
        None,
        Some(""),
        Some("a string longer than twelve bytes"),
    ];
    let bins: [Option<&[u8]>; ROWS] = [
        Some(b"\x00\x01"),
        Some(b""),
        None,
        Some(b"abc"),
        Some(b"0123456789abcdefXYZ"),
    ];
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("null", Arc::new(NullArray::new(ROWS))),
        (
            "bool",
            Arc::new(BooleanArray::from(null_row_2([true, false, true, false]))),
        ),
        (
            "int8",
            Arc::new(Int8Array::from(null_row_2([i8::MIN, 1, 3, i8::MAX]))),
        ),
        (
            "int16",
            Arc::new(Int16Array::from(null_row_2([i16::MIN, 1, 3, i16::MAX]))),
        ),
        (
            "int32",
            Arc::new(Int32Array::from(null_row_2([i32::MIN, 1, 3, i32::MAX]))),
        ),
        (
            "int64",
            Arc::new(Int64Array::from(null_row_2([i64::MIN, 1, 3, i64::MAX]))),
        ),
        (
            "uint8",
            Arc::new(UInt8Array::from(null_row_2([0, 1, 3, u8::MAX]))),
        ),
        (
            "uint16",
            Arc::new(UInt16Array::from(null_row_2([0, 1, 3, u16::MAX]))),
        ),
        (
            "uint32",
            Arc::new(UInt32Array::from(null_row_2([0, 1, 3, u32::MAX]))),
        ),
        (
            "uint64",
            Arc::new(UInt64Array::from(null_row_2([0, 1, 3, u64::MAX]))),
        ),
        (
            "float16",
            Arc::new(Float16Array::from(
                null_row_2([0.5f32, 1.5, -2.0, 4.0])
                    .into_iter()
                    .map(|v| v.map(half::f16::from_f32))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "float32",
            Arc::new(Float32Array::from(null_row_2([0.5, 1.5, -2.0, f32::MAX]))),
        ),
        (
            "float64",
            Arc::new(Float64Array::from(null_row_2([
                0.5,
                1.5,
                -2.0,
                f64::INFINITY,
            ]))),
        ),
        ("utf8", Arc::new(StringArray::from(strs.to_vec()))),
        (
            "large_utf8",
            Arc::new(LargeStringArray::from(strs.to_vec())),
        ),
        ("utf8_view", Arc::new(StringViewArray::from(strs.to_vec()))),
        ("binary", Arc::new(BinaryArray::from(bins.to_vec()))),
        (
            "large_binary",
            Arc::new(LargeBinaryArray::from(bins.to_vec())),
        ),
        (
            "binary_view",
            Arc::new(BinaryViewArray::from(bins.to_vec())),
        ),
        (
            "fixed_size_binary",
            Arc::new(FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                [
                    Some(b"abc"),
                    Some(b"def"),
                    None,
                    Some(b"\x00\x01\x02"),
                    Some(b"xyz"),
                ]
                .into_iter(),
                3,
            )?),
        ),
        (
            "decimal128",
            Arc::new(
                Decimal128Array::from(null_row_2([12345, -1, 0, 9_999_999_999]))
                    .with_precision_and_scale(10, 2)?,
            ),
        ),
        (
            "decimal256",
            Arc::new(
                Decimal256Array::from(null_row_2([
                    i256::from_i128(1),
                    i256::from_i128(-100_000),
                    i256::ZERO,
                    i256::from_i128(10i128.pow(35)),
                ]))
                .with_precision_and_scale(40, 5)?,
            ),
        ),
        (
            "date32",
            Arc::new(Date32Array::from(null_row_2([0, 19_000, -1, 1]))),
        ),
        (
            "date64",
            Arc::new(Date64Array::from(null_row_2([
                0,
                86_400_000,
                -86_400_000,
                1_641_600_000_000,
            ]))),
        ),
        (
            "time32_s",
            Arc::new(Time32SecondArray::from(null_row_2([0, 1, 3600, 86_399]))),
        ),
        (
            "time32_ms",
            Arc::new(Time32MillisecondArray::from(null_row_2([
                0, 1, 3_600_000, 86_399_999,
            ]))),
        ),
        (
            "time64_us",
            Arc::new(Time64MicrosecondArray::from(null_row_2([
                0,
                1,
                3_600_000_000,
                86_399_999_999,
            ]))),
        ),
        (
            "time64_ns",
            Arc::new(Time64NanosecondArray::from(null_row_2([
                0,
                1,
                3_600_000_000_000,
                86_399_999_999_999,
            ]))),
        ),
        (
            "timestamp_s",
            Arc::new(TimestampSecondArray::from(null_row_2([
                0,
                1,
                -1,
                1_700_000_000,
            ]))),
        ),
        (
            "timestamp_ms_utc",
            Arc::new(
                TimestampMillisecondArray::from(null_row_2([0, 1, -1, 1_700_000_000_000]))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "timestamp_us_offset",
            Arc::new(
                TimestampMicrosecondArray::from(null_row_2([0, 1, -1, 1_700_000_000_000_000]))
                    .with_timezone("+05:30"),
            ),
        ),
        (
            "timestamp_ns_zone",
            Arc::new(
                TimestampNanosecondArray::from(null_row_2([0, 1, -1, 1_700_000_000_000_000_000]))
                    .with_timezone("America/New_York"),
            ),
        ),
        (
            "duration_ms",
            Arc::new(DurationMillisecondArray::from(null_row_2([
                0,
                -1,
                1000,
                i64::MAX,
            ]))),
        ),
        (
            "duration_ns",
            Arc::new(DurationNanosecondArray::from(null_row_2([
                0,
                -1,
                1000,
                i64::MIN,
            ]))),
        ),
        (
            "interval_mdn",
            Arc::new(IntervalMonthDayNanoArray::from(null_row_2([
                IntervalMonthDayNano::new(1, 2, 3),
                IntervalMonthDayNano::new(-1, 0, 0),
                IntervalMonthDayNano::new(0, 0, 0),
                IntervalMonthDayNano::new(12, 31, 1_000_000_000),
            ]))),
        ),
    ];

    let item32 = Arc::new(Field::new_list_field(DataType::Int32, true));
    cols.push((
        "list_int32",
        Arc::new(ListArray::try_new(
            item32.clone(),
            OffsetBuffer::new(ScalarBuffer::from(vec![0, 2, 2, 2, 4, 5])),
            Arc::new(Int32Array::from(vec![
                Some(1),
                Some(2),
                Some(3),
                None,
                Some(4),
            ])),
            Some(NullBuffer::from(vec![true, true, false, true, true])),
        )?),
    ));
    cols.push((
        "large_list_utf8",
        Arc::new(LargeListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            OffsetBuffer::new(ScalarBuffer::from(vec![0i64, 1, 1, 1, 3, 4])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("b"),
                Some("c"),
                None,
            ])),
            Some(NullBuffer::from(vec![true, false, true, true, true])),
        )?),
    ));
    cols.push((
        "list_view_int32",
        Arc::new(ListViewArray::try_new(
            item32.clone(),
            ScalarBuffer::from(vec![3, 0, 0, 1, 0]),
            ScalarBuffer::from(vec![2, 0, 0, 2, 1]),
            Arc::new(Int32Array::from(vec![
                Some(1),
                Some(2),
                Some(3),
                None,
                Some(4),
            ])),
            Some(NullBuffer::from(vec![true, true, false, true, true])),
        )?),
    ));
    cols.push((
        "fixed_size_list_f32",
        Arc::new(FixedSizeListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            2,
            Arc::new(Float32Array::from(vec![
                Some(1.0),
                Some(2.0),
                Some(3.0),
                Some(4.0),
                None,
                None,
                Some(5.0),
                None,
                Some(7.0),
                Some(8.0),
            ])),
            Some(NullBuffer::from(vec![true, true, false, true, true])),
        )?),
    ));
    cols.push((
        "struct",
        Arc::new(StructArray::try_new(
            Fields::from(vec![
                Field::new("a", DataType::Int32, true),
                Field::new("b", DataType::Utf8, true),
            ]),
            vec![
                Arc::new(Int32Array::from(null_row_2([1, 2, 4, 5]))),
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    None,
                    None,
                    Some("w"),
                    Some("v"),
                ])),
            ],
            Some(NullBuffer::from(vec![true, true, false, true, true])),
        )?),
    ));
    cols.push(("map", Arc::new(map_column()?)));

    let union_fields = UnionFields::try_new(
        vec![0, 1],
        vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ],
    )?;
    cols.push((
        "dense_union",
        Arc::new(UnionArray::try_new(
            union_fields.clone(),
            ScalarBuffer::from(vec![0i8, 1, 0, 1, 0]),
            Some(ScalarBuffer::from(vec![0i32, 0, 1, 1, 2])),
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("a"), Some("bb")])),
            ],
        )?),
    ));
    cols.push((
        "sparse_union",
        Arc::new(UnionArray::try_new(
            union_fields,
            ScalarBuffer::from(vec![0i8, 1, 0, 1, 0]),
            None,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None, None, None, Some(5)])),
                Arc::new(StringArray::from(vec![
                    None,
                    Some("b"),
                    None,
                    Some("d"),
                    None,
                ])),
            ],
        )?),
    ));

    let dict_values: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
    cols.push((
        "dictionary",
        Arc::new(DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(null_row_2([0, 1, 0, 2])),
            dict_values.clone(),
        )?),
    ));
    let inner = DictionaryArray::<Int16Type>::try_new(
        Int16Array::from(vec![Some(0), Some(1), Some(1), None, Some(2)]),
        dict_values,
    )?;
    cols.push((
        "list_dictionary",
        Arc::new(ListArray::try_new(
            Arc::new(Field::new_list_field(inner.data_type().clone(), true)),
            OffsetBuffer::new(ScalarBuffer::from(vec![0, 2, 2, 2, 4, 5])),
            Arc::new(inner),
            Some(NullBuffer::from(vec![true, true, false, true, true])),
        )?),
    ));
    cols.push((
        "dictionary_int8_large_utf8",
        Arc::new(DictionaryArray::<Int8Type>::try_new(
            Int8Array::from(null_row_2([1, 0, 1, 1])),
            Arc::new(LargeStringArray::from(vec!["x", "yy"])),
        )?),
    ));
    cols.push((
        "run_end_encoded",
        Arc::new(RunArray::<Int32Type>::try_new(
            &Int32Array::from(vec![2, 3, 5]),
            &StringArray::from(vec![Some("a"), None, Some("b")]),
        )?),
    ));

    // every field nullable, as pyarrow makes them
    RecordBatch::try_from_iter_with_nullable(cols.into_iter().map(|(n, a)| (n, a, true)))
}

fn map_column() -> Result<arrow_array::MapArray, ArrowError> {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), Int64Builder::new());
    b.keys().append_value("a");
    b.values().append_value(1);
    b.append(true)?;
    b.append(true)?;
    b.append(false)?;
    b.keys().append_value("b");
    b.values().append_value(2);
    b.keys().append_value("c");
    b.values().append_null();
    b.append(true)?;
    b.keys().append_value("d");
    b.values().append_value(4);
    b.append(true)?;
    Ok(b.finish())
}

/// Whether two lists of batches hold the same data: `==` on every batch,
/// except that run-end encoded columns are compared by their logical values
/// (arrow-rs implements `==` on run arrays only when neither is sliced, and
/// reading a sliced one from a file yields an unsliced one).
pub fn same_batches(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.schema() == y.schema()
                && x.num_rows() == y.num_rows()
                && x.columns()
                    .iter()
                    .zip(y.columns())
                    .all(|(c, d)| same_array(c, d))
        })
}

fn same_array(a: &ArrayRef, b: &ArrayRef) -> bool {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int16Type, Int64Type};
    fn runs<R: arrow_array::types::RunEndIndexType>(a: &ArrayRef, b: &ArrayRef) -> bool {
        let (x, y) = (a.as_run::<R>(), b.as_run::<R>());
        x.len() == y.len()
            && (0..x.len()).all(|i| {
                let (p, q) = (x.get_physical_index(i), y.get_physical_index(i));
                x.values().slice(p, 1).to_data() == y.values().slice(q, 1).to_data()
            })
    }
    match a.data_type() {
        DataType::RunEndEncoded(k, _) if a.data_type() == b.data_type() => match k.data_type() {
            DataType::Int16 => runs::<Int16Type>(a, b),
            DataType::Int32 => runs::<Int32Type>(a, b),
            _ => runs::<Int64Type>(a, b),
        },
        _ => a == b,
    }
}

/// `[r0, r1, r3, r4]` as five rows with row 2 null (the null row of
/// [`every_type`], in its columns and in the keys of its dictionaries).
fn null_row_2<T>([r0, r1, r3, r4]: [T; 4]) -> Vec<Option<T>> {
    vec![Some(r0), Some(r1), None, Some(r3), Some(r4)]
}
