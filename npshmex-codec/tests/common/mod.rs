//! proptest strategies shared by the property tests: arbitrary canonical
//! dtypes (what a `.npy` header can express), shapes and data.

#![allow(dead_code)]

use npshmex_codec::{
    ByteOrder, ComplexWidth, DType, DateUnit, Field, FloatWidth, IntWidth, StructAlign, StructType,
    TimeUnit,
};
use proptest::prelude::*;

fn order() -> impl Strategy<Value = ByteOrder> {
    prop_oneof![Just(ByteOrder::Little), Just(ByteOrder::Big)]
}

fn int_width() -> impl Strategy<Value = IntWidth> {
    prop_oneof![
        Just(IntWidth::W1),
        Just(IntWidth::W2),
        Just(IntWidth::W4),
        Just(IntWidth::W8)
    ]
}

fn date_unit() -> impl Strategy<Value = DateUnit> {
    (proptest::sample::select(TimeUnit::ALL.to_vec()), 1u32..2000).prop_map(|(unit, count)| {
        if unit == TimeUnit::Generic {
            DateUnit::new(unit)
        } else {
            DateUnit { unit, count }
        }
    })
}

/// Scalar and flexible dtypes in canonical form.
pub fn leaf() -> impl Strategy<Value = DType> {
    prop_oneof![
        Just(DType::Bool),
        (int_width(), order()).prop_map(|(width, order)| DType::Int {
            width,
            order: if width == IntWidth::W1 {
                ByteOrder::NotApplicable
            } else {
                order
            }
        }),
        (int_width(), order()).prop_map(|(width, order)| DType::UInt {
            width,
            order: if width == IntWidth::W1 {
                ByteOrder::NotApplicable
            } else {
                order
            }
        }),
        (
            prop_oneof![
                Just(FloatWidth::F2),
                Just(FloatWidth::F4),
                Just(FloatWidth::F8)
            ],
            order()
        )
            .prop_map(|(width, order)| DType::Float { width, order }),
        (
            prop_oneof![Just(ComplexWidth::C8), Just(ComplexWidth::C16)],
            order()
        )
            .prop_map(|(width, order)| DType::Complex { width, order }),
        (0usize..12).prop_map(|len| DType::Bytes { len }),
        (0usize..4, order()).prop_map(|(chars, order)| DType::Unicode { chars, order }),
        (0usize..12).prop_map(|len| DType::Void { len }),
        (date_unit(), order()).prop_map(|(unit, order)| DType::DateTime { unit, order }),
        (date_unit(), order()).prop_map(|(unit, order)| DType::TimeDelta { unit, order }),
    ]
}

/// Names with quotes, backslashes, controls and non-ASCII characters.
fn name_text() -> impl Strategy<Value = String> {
    "[a-z'\" \\\\\n\té名😀\u{a0}]{0,4}"
}

fn shape(max_dims: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..=max_dim, 1..=max_dims)
}

/// Arbitrary canonical dtypes, nested structs with gaps, titles and
/// subarrays included (never the `Aligned` flag, which `.npy` cannot carry).
pub fn dtype() -> impl Strategy<Value = DType> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            (inner.clone(), shape(3, 3))
                .prop_filter_map("subarray", |(b, s)| DType::subarray(b, s).ok()),
            (
                proptest::collection::vec(
                    (
                        name_text(),
                        proptest::option::of(name_text()),
                        inner,
                        0usize..5
                    ),
                    0..5
                ),
                0usize..5
            )
                .prop_filter_map("struct", |(fields, tail)| {
                    let mut out = Vec::new();
                    let mut offset = 0;
                    for (i, (name, title, dtype, gap)) in fields.into_iter().enumerate() {
                        offset += gap;
                        let size = dtype.itemsize();
                        out.push(Field {
                            name: format!("{i}{name}"),
                            title: title.map(|t| format!("t{i}{t}")),
                            dtype,
                            offset,
                        });
                        offset += size;
                    }
                    StructType::new(out, offset + tail, StructAlign::Unaligned)
                        .ok()
                        .map(DType::Struct)
                }),
        ]
    })
}

/// Deterministic filler bytes.
pub fn bytes_from_seed(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
