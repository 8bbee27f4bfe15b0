//! Shared by the integration tests: arbitrary schemas and batches for
//! proptest (leak checks and the serde round trip are npshmex-testkit's).
#![allow(dead_code)] // each test binary uses a different subset

use arrow_array::{make_array, new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_buffer::{i256, Buffer, IntervalMonthDayNano, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_data::ArrayDataBuilder;
use arrow_schema::{
    DataType, Field, Fields, IntervalUnit, Schema, TimeUnit, UnionFields, UnionMode,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn leaf() -> impl Strategy<Value = DataType> {
    prop_oneof![
        Just(DataType::Null),
        Just(DataType::Boolean),
        Just(DataType::Int8),
        Just(DataType::Int16),
        Just(DataType::Int32),
        Just(DataType::Int64),
        Just(DataType::UInt8),
        Just(DataType::UInt32),
        Just(DataType::UInt64),
        Just(DataType::Float16),
        Just(DataType::Float32),
        Just(DataType::Float64),
        Just(DataType::Utf8),
        Just(DataType::LargeUtf8),
        Just(DataType::Utf8View),
        Just(DataType::Binary),
        Just(DataType::LargeBinary),
        Just(DataType::BinaryView),
        Just(DataType::FixedSizeBinary(3)),
        Just(DataType::Decimal128(10, 2)),
        Just(DataType::Decimal256(40, 5)),
        Just(DataType::Date32),
        Just(DataType::Date64),
        Just(DataType::Time32(TimeUnit::Millisecond)),
        Just(DataType::Time64(TimeUnit::Nanosecond)),
        Just(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("Europe/Paris".into())
        )),
        Just(DataType::Timestamp(TimeUnit::Second, None)),
        Just(DataType::Duration(TimeUnit::Millisecond)),
        Just(DataType::Interval(IntervalUnit::YearMonth)),
        Just(DataType::Interval(IntervalUnit::DayTime)),
        Just(DataType::Interval(IntervalUnit::MonthDayNano)),
        Just(dict(DataType::Int32, DataType::Utf8)),
        Just(dict(DataType::Int8, DataType::LargeBinary)),
    ]
}

fn dict(key: DataType, value: DataType) -> DataType {
    DataType::Dictionary(Box::new(key), Box::new(value))
}

fn fields(types: Vec<DataType>) -> Fields {
    types
        .into_iter()
        .enumerate()
        .map(|(i, t)| Field::new(format!("f{i}"), t, true))
        .collect()
}

fn has_dictionary(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, _) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fs) => fs.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fs, _) => fs.iter().any(|(_, f)| has_dictionary(f.data_type())),
        _ => false,
    }
}

/// Arbitrary types nested up to depth 3, with dictionaries at any level
/// (also inside dictionary values: nested dictionaries).
pub fn data_type() -> impl Strategy<Value = DataType> {
    leaf().prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|t| DataType::List(Arc::new(Field::new_list_field(t, true)))),
            inner
                .clone()
                .prop_map(|t| DataType::LargeList(Arc::new(Field::new_list_field(t, true)))),
            // arrow-rs 57 cannot read dictionaries below list views
            inner
                .clone()
                .prop_filter_map("dictionary in a list view", |t| {
                    (!has_dictionary(&t))
                        .then(|| DataType::ListView(Arc::new(Field::new_list_field(t, true))))
                }),
            inner
                .clone()
                .prop_filter_map("dictionary in a list view", |t| {
                    (!has_dictionary(&t))
                        .then(|| DataType::LargeListView(Arc::new(Field::new_list_field(t, true))))
                }),
            inner
                .clone()
                .prop_map(|t| DataType::FixedSizeList(Arc::new(Field::new_list_field(t, true)), 2)),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|ts| DataType::Struct(fields(ts))),
            inner.clone().prop_map(|t| {
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", t, true),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }),
            (prop::collection::vec(inner.clone(), 1..3), any::<bool>()).prop_map(|(ts, dense)| {
                let n = ts.len() as i8;
                let union =
                    UnionFields::try_new(0..n, fields(ts).iter().cloned()).expect("distinct ids");
                DataType::Union(
                    union,
                    if dense {
                        UnionMode::Dense
                    } else {
                        UnionMode::Sparse
                    },
                )
            }),
            inner.prop_filter_map("dictionary values cannot be dictionaries", |t| {
                (!matches!(t, DataType::Dictionary(_, _))).then(|| dict(DataType::UInt16, t))
            }),
        ]
    })
}

/// A schema (0..5 columns), a row count (0..12) and a seed for the values.
pub fn schema_rows_seed() -> impl Strategy<Value = (Vec<DataType>, usize, u64)> {
    (
        prop::collection::vec(data_type(), 0..5),
        0usize..12,
        any::<u64>(),
    )
}

/// A batch of `rows` rows with columns of `types`, values from `seed`,
/// about a quarter of them null where the type allows.
pub fn batch(types: &[DataType], rows: usize, seed: u64) -> RecordBatch {
    let mut rng = StdRng::seed_from_u64(seed);
    let schema = Arc::new(Schema::new(fields(types.to_vec())));
    let columns = types.iter().map(|t| array(t, rows, &mut rng)).collect();
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .expect("generated columns match the schema")
}

fn validity(len: usize, rng: &mut StdRng) -> Option<NullBuffer> {
    if rng.gen_bool(0.3) {
        return None;
    }
    Some(NullBuffer::from(
        (0..len).map(|_| rng.gen_bool(0.75)).collect::<Vec<_>>(),
    ))
}

fn bytes_of(len: usize, width: usize, rng: &mut StdRng) -> Buffer {
    Buffer::from(
        (0..len * width)
            .map(|_| rng.gen::<u8>())
            .collect::<Vec<u8>>()
            .as_slice(),
    )
}

fn primitive(t: &DataType, len: usize, width: usize, rng: &mut StdRng) -> ArrayRef {
    let nulls = validity(len, rng);
    let values = match t {
        // keep decimals within their precision and floats finite
        DataType::Decimal128(_, _) => Buffer::from_vec(
            (0..len)
                .map(|_| rng.gen_range(-99_999_999i128..99_999_999))
                .collect::<Vec<_>>(),
        ),
        DataType::Decimal256(_, _) => Buffer::from_vec(
            (0..len)
                .map(|_| i256::from_i128(rng.gen_range(-10i128.pow(30)..10i128.pow(30))))
                .collect::<Vec<_>>(),
        ),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let mut v = Vec::with_capacity(len * width);
            for _ in 0..len {
                let x: f64 = rng.gen_range(-1e3..1e3);
                match width {
                    2 => v.extend_from_slice(&half::f16::from_f64(x).to_le_bytes()),
                    4 => v.extend_from_slice(&(x as f32).to_le_bytes()),
                    _ => v.extend_from_slice(&x.to_le_bytes()),
                }
            }
            Buffer::from(v.as_slice())
        }
        DataType::Time32(_) => Buffer::from_vec(
            (0..len)
                .map(|_| rng.gen_range(0..86_400_000i32))
                .collect::<Vec<_>>(),
        ),
        DataType::Time64(_) => Buffer::from_vec(
            (0..len)
                .map(|_| rng.gen_range(0..86_400_000_000_000i64))
                .collect::<Vec<_>>(),
        ),
        DataType::Interval(IntervalUnit::MonthDayNano) => Buffer::from_vec(
            (0..len)
                .map(|_| IntervalMonthDayNano::new(rng.gen(), rng.gen(), rng.gen()))
                .collect::<Vec<_>>(),
        ),
        _ => bytes_of(len, width, rng),
    };
    let data = ArrayDataBuilder::new(t.clone())
        .len(len)
        .nulls(nulls)
        .add_buffer(values)
        .build()
        .expect("valid primitive");
    make_array(data)
}

fn offsets(len: usize, nulls: &Option<NullBuffer>, max: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut o = vec![0usize];
    for i in 0..len {
        let null = nulls.as_ref().is_some_and(|n| n.is_null(i));
        let l = if null { 0 } else { rng.gen_range(0..=max) };
        o.push(o[i] + l);
    }
    o
}

fn bytes_array(t: &DataType, len: usize, rng: &mut StdRng) -> ArrayRef {
    let nulls = validity(len, rng);
    let o = offsets(len, &nulls, 20, rng);
    let total = o[len];
    let text = matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let values: Vec<u8> = (0..total)
        .map(|_| {
            if text {
                rng.gen_range(b'a'..=b'z')
            } else {
                rng.gen()
            }
        })
        .collect();
    let strings: Vec<Option<&[u8]>> = (0..len)
        .map(|i| (!nulls.as_ref().is_some_and(|n| n.is_null(i))).then(|| &values[o[i]..o[i + 1]]))
        .collect();
    fn as_str<'a>(s: &Option<&'a [u8]>) -> Option<&'a str> {
        s.map(|b| std::str::from_utf8(b).expect("ascii"))
    }
    match t {
        DataType::Utf8 => Arc::new(arrow_array::StringArray::from(
            strings.iter().map(as_str).collect::<Vec<_>>(),
        )),
        DataType::LargeUtf8 => Arc::new(arrow_array::LargeStringArray::from(
            strings.iter().map(as_str).collect::<Vec<_>>(),
        )),
        DataType::Utf8View => Arc::new(arrow_array::StringViewArray::from(
            strings.iter().map(as_str).collect::<Vec<_>>(),
        )),
        DataType::Binary => Arc::new(arrow_array::BinaryArray::from(strings)),
        DataType::LargeBinary => Arc::new(arrow_array::LargeBinaryArray::from(strings)),
        _ => Arc::new(arrow_array::BinaryViewArray::from(strings)),
    }
}

/// An array of type `t` and length `len`.
pub fn array(t: &DataType, len: usize, rng: &mut StdRng) -> ArrayRef {
    match t {
        DataType::Null => new_null_array(t, len),
        DataType::Boolean => {
            let nulls = validity(len, rng);
            let values: Vec<bool> = (0..len).map(|_| rng.gen()).collect();
            Arc::new(arrow_array::BooleanArray::new(values.into(), nulls))
        }
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => bytes_array(t, len, rng),
        DataType::FixedSizeBinary(w) => {
            let nulls = validity(len, rng);
            let w = *w as usize;
            Arc::new(arrow_array::FixedSizeBinaryArray::new(
                w as i32,
                bytes_of(len, w, rng),
                nulls,
            ))
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => {
            let nulls = validity(len, rng);
            let o = offsets(len, &nulls, 3, rng);
            let child = array(f.data_type(), o[len], rng);
            match t {
                DataType::List(_) => Arc::new(arrow_array::ListArray::new(
                    f.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(
                        o.iter().map(|&x| x as i32).collect::<Vec<_>>(),
                    )),
                    child,
                    nulls,
                )),
                DataType::LargeList(_) => Arc::new(arrow_array::LargeListArray::new(
                    f.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(
                        o.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                    )),
                    child,
                    nulls,
                )),
                _ => {
                    let entries = child
                        .as_any()
                        .downcast_ref::<arrow_array::StructArray>()
                        .expect("struct");
                    Arc::new(
                        arrow_array::MapArray::try_new(
                            f.clone(),
                            OffsetBuffer::new(ScalarBuffer::from(
                                o.iter().map(|&x| x as i32).collect::<Vec<_>>(),
                            )),
                            entries.clone(),
                            nulls,
                            false,
                        )
                        .expect("valid map"),
                    )
                }
            }
        }
        DataType::ListView(f) | DataType::LargeListView(f) => {
            // views in reverse order of their ranges: offsets need not grow
            let nulls = validity(len, rng);
            let o = offsets(len, &nulls, 3, rng);
            let child = array(f.data_type(), o[len], rng);
            let starts: Vec<usize> = (0..len).map(|i| o[i]).collect();
            let sizes: Vec<usize> = (0..len).map(|i| o[i + 1] - o[i]).collect();
            if matches!(t, DataType::ListView(_)) {
                Arc::new(arrow_array::ListViewArray::new(
                    f.clone(),
                    starts.iter().rev().map(|&x| x as i32).collect(),
                    sizes.iter().rev().map(|&x| x as i32).collect(),
                    child,
                    nulls,
                ))
            } else {
                Arc::new(arrow_array::LargeListViewArray::new(
                    f.clone(),
                    starts.iter().rev().map(|&x| x as i64).collect(),
                    sizes.iter().rev().map(|&x| x as i64).collect(),
                    child,
                    nulls,
                ))
            }
        }
        DataType::FixedSizeList(f, size) => {
            let nulls = validity(len, rng);
            let child = array(f.data_type(), len * *size as usize, rng);
            Arc::new(arrow_array::FixedSizeListArray::new(
                f.clone(),
                *size,
                child,
                nulls,
            ))
        }
        DataType::Struct(fs) => {
            // map entries: keys must not be null
            let entries = fs.len() == 2 && fs[0].name() == "key" && !fs[0].is_nullable();
            let children: Vec<ArrayRef> = fs
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if entries && i == 0 {
                        Arc::new(arrow_array::StringArray::from_iter_values(
                            (0..len).map(|j| format!("k{j}")),
                        )) as ArrayRef
                    } else {
                        array(f.data_type(), len, rng)
                    }
                })
                .collect();
            let nulls = if entries { None } else { validity(len, rng) };
            Arc::new(
                arrow_array::StructArray::try_new_with_length(fs.clone(), children, nulls, len)
                    .expect("valid struct"),
            )
        }
        DataType::Union(fs, mode) => {
            let ids: Vec<i8> = fs.iter().map(|(id, _)| id).collect();
            let type_ids: Vec<i8> = (0..len).map(|_| ids[rng.gen_range(0..ids.len())]).collect();
            match mode {
                UnionMode::Sparse => {
                    let children = fs
                        .iter()
                        .map(|(_, f)| array(f.data_type(), len, rng))
                        .collect();
                    Arc::new(
                        arrow_array::UnionArray::try_new(
                            fs.clone(),
                            type_ids.into(),
                            None,
                            children,
                        )
                        .expect("valid union"),
                    )
                }
                UnionMode::Dense => {
                    let mut counts = vec![0i32; ids.len()];
                    let offsets: Vec<i32> = type_ids
                        .iter()
                        .map(|id| {
                            let k = ids.iter().position(|x| x == id).expect("known id");
                            counts[k] += 1;
                            counts[k] - 1
                        })
                        .collect();
                    let children = fs
                        .iter()
                        .zip(&counts)
                        .map(|((_, f), &c)| array(f.data_type(), c as usize, rng))
                        .collect();
                    Arc::new(
                        arrow_array::UnionArray::try_new(
                            fs.clone(),
                            type_ids.into(),
                            Some(offsets.into()),
                            children,
                        )
                        .expect("valid union"),
                    )
                }
            }
        }
        DataType::Dictionary(k, v) => {
            let n_values = rng.gen_range(1..5);
            let values = array(v, n_values, rng);
            let nulls = validity(len, rng);
            let keys: Vec<u8> = (0..len).map(|_| rng.gen_range(0..n_values as u8)).collect();
            let width = k.primitive_width().expect("integer key");
            let mut key_bytes = Vec::with_capacity(len * width);
            for key in keys {
                key_bytes.push(key);
                key_bytes.extend(std::iter::repeat_n(0u8, width - 1));
            }
            let data = ArrayDataBuilder::new(t.clone())
                .len(len)
                .nulls(nulls)
                .add_buffer(Buffer::from(key_bytes.as_slice()))
                .add_child_data(values.to_data())
                .build()
                .expect("valid dictionary");
            make_array(data)
        }
        other => {
            let width = other.primitive_width().expect("fixed width leaf");
            primitive(other, len, width, rng)
        }
    }
}

/// `batch` cut in up to three slices (sliced arrays sharing dictionaries).
pub fn slices(batch: &RecordBatch, cut: usize) -> Vec<RecordBatch> {
    let n = batch.num_rows();
    if n < 2 {
        return vec![batch.clone()];
    }
    let a = cut % n;
    vec![batch.slice(0, a), batch.slice(a, n - a)]
}
