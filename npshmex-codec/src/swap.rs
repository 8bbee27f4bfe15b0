//! Byte-order conversion of array data, so foreign-order files (`'>f8'` on
//! a little-endian machine) can be viewed with native Rust types.
//!
//! A dtype is compiled once into runs of equal-width values to reverse
//! (`(offset, width, count)` inside one element), then the runs are applied
//! to every element; complex numbers swap each part, UCS-4 strings each code
//! point, records each field.

use crate::dtype::{ByteOrder, DType};
use crate::error::{CodecError, Result};
use crate::structured::{StructType, SubArrayType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    offset: usize,
    width: usize,
    count: usize,
}

impl DType {
    /// The same dtype with every multi-byte part in byte order `order`
    /// (`NotApplicable` means native).
    pub fn with_byte_order(&self, order: ByteOrder) -> DType {
        let order = order.resolve();
        match self {
            DType::Int { width, .. } => DType::Int {
                width: *width,
                order,
            },
            DType::UInt { width, .. } => DType::UInt {
                width: *width,
                order,
            },
            DType::Float { width, .. } => DType::Float {
                width: *width,
                order,
            },
            DType::Complex { width, .. } => DType::Complex {
                width: *width,
                order,
            },
            DType::Unicode { chars, .. } => DType::Unicode {
                chars: *chars,
                order,
            },
            DType::DateTime { unit, .. } => DType::DateTime { unit: *unit, order },
            DType::TimeDelta { unit, .. } => DType::TimeDelta { unit: *unit, order },
            DType::Struct(s) => DType::Struct(s.map_fields(|d| d.with_byte_order(order))),
            DType::SubArray(s) => DType::SubArray(s.map_base(|d| d.with_byte_order(order))),
            other => other.clone(),
        }
        .canonical()
    }

    /// Whether every part of the dtype is in native byte order (or has none).
    pub fn is_native_order(&self) -> bool {
        self.canonical() == self.with_byte_order(ByteOrder::NATIVE)
    }
}

fn runs(dt: &DType, target: ByteOrder, base: usize, out: &mut Vec<Run>) {
    let swaps = |o: ByteOrder| o.resolve() != target;
    match dt {
        DType::Int { width, order } | DType::UInt { width, order } => {
            if width.bytes() > 1 && swaps(*order) {
                out.push(Run {
                    offset: base,
                    width: width.bytes(),
                    count: 1,
                });
            }
        }
        DType::Float { width, order } => {
            if swaps(*order) {
                out.push(Run {
                    offset: base,
                    width: width.bytes(),
                    count: 1,
                });
            }
        }
        DType::Complex { width, order } => {
            if swaps(*order) {
                out.push(Run {
                    offset: base,
                    width: width.bytes() / 2,
                    count: 2,
                });
            }
        }
        DType::Unicode { chars, order } => {
            if swaps(*order) && *chars > 0 {
                out.push(Run {
                    offset: base,
                    width: 4,
                    count: *chars,
                });
            }
        }
        DType::DateTime { order, .. } | DType::TimeDelta { order, .. } => {
            if swaps(*order) {
                out.push(Run {
                    offset: base,
                    width: 8,
                    count: 1,
                });
            }
        }
        DType::Struct(s) => struct_runs(s, target, base, out),
        DType::SubArray(s) => subarray_runs(s, target, base, out),
        DType::Bool | DType::Bytes { .. } | DType::Void { .. } => {}
    }
}

fn struct_runs(s: &StructType, target: ByteOrder, base: usize, out: &mut Vec<Run>) {
    for f in s.fields() {
        runs(&f.dtype, target, base + f.offset, out);
    }
}

fn subarray_runs(s: &SubArrayType, target: ByteOrder, base: usize, out: &mut Vec<Run>) {
    let mut inner = Vec::new();
    runs(s.base(), target, 0, &mut inner);
    let stride = s.base().itemsize();
    // A scalar base whose single run covers the element: one long run.
    if let [r] = inner.as_slice() {
        if r.offset == 0 && r.width * r.count == stride {
            out.push(Run {
                offset: base,
                width: r.width,
                count: r.count * s.count(),
            });
            return;
        }
    }
    if inner.is_empty() {
        return;
    }
    for i in 0..s.count() {
        out.extend(inner.iter().map(|r| Run {
            offset: base + i * stride + r.offset,
            ..*r
        }));
    }
}

/// Most runs [`convert_byte_order`] materialises for one element.
const MAX_RUNS: usize = 1 << 16;

/// How many runs `runs` would produce (saturating), without producing them.
fn run_count(dt: &DType, target: ByteOrder) -> usize {
    match dt {
        DType::Struct(s) => s
            .fields()
            .iter()
            .fold(0usize, |n, f| n.saturating_add(run_count(&f.dtype, target))),
        DType::SubArray(s) => {
            let inner = run_count(s.base(), target);
            let covering = inner == 1
                && {
                    let mut one = Vec::with_capacity(1);
                    runs(s.base(), target, 0, &mut one);
                    matches!(one.as_slice(), [r] if r.offset == 0 && r.width * r.count == s.base().itemsize())
                };
            if covering {
                1
            } else {
                inner.saturating_mul(s.count())
            }
        }
        other => {
            let mut one = Vec::with_capacity(1);
            runs(other, target, 0, &mut one);
            one.len()
        }
    }
}

/// Swaps the parts of one element `elem` of `dt` whose order is not
/// `target`, walking the dtype (no run list).
fn swap_in_place(dt: &DType, target: ByteOrder, elem: &mut [u8]) {
    match dt {
        DType::Struct(s) => {
            for f in s.fields() {
                // Fields lie inside the itemsize (a StructType invariant).
                if let Some(part) = elem.get_mut(f.offset..f.offset + f.dtype.itemsize()) {
                    swap_in_place(&f.dtype, target, part);
                }
            }
        }
        DType::SubArray(s) => {
            let stride = s.base().itemsize();
            if stride == 0 {
                return;
            }
            for part in elem.chunks_exact_mut(stride).take(s.count()) {
                swap_in_place(s.base(), target, part);
            }
        }
        scalar => {
            let mut one = Vec::with_capacity(1);
            runs(scalar, target, 0, &mut one);
            for r in one {
                if let Some(part) = elem.get_mut(r.offset..r.offset + r.width * r.count) {
                    for v in part.chunks_exact_mut(r.width) {
                        v.reverse();
                    }
                }
            }
        }
    }
}

/// Converts `bytes` (whole elements of `dtype`) in place to byte order
/// `target` and returns the dtype that now describes them.
///
/// # Errors
/// [`CodecError::Length`] when `bytes` is not a whole number of elements.
pub fn convert_byte_order(dtype: &DType, bytes: &mut [u8], target: ByteOrder) -> Result<DType> {
    let target = target.resolve();
    let itemsize = dtype.itemsize();
    let new = dtype.with_byte_order(target);
    if itemsize == 0 {
        return if bytes.is_empty() {
            Ok(new)
        } else {
            Err(CodecError::Length {
                len: bytes.len(),
                itemsize,
            })
        };
    }
    if !bytes.len().is_multiple_of(itemsize) {
        return Err(CodecError::Length {
            len: bytes.len(),
            itemsize,
        });
    }
    if bytes.is_empty() {
        return Ok(new);
    }
    // The flat list of runs is fastest, but its length grows with the
    // subarray counts of the dtype, which come from an untrusted header
    // (`[('a', [('x', '>i4'), ('y', '<i4')], (2**27,))]` of shape `(0,)`
    // would ask for 2**27 runs, 3 GiB): past MAX_RUNS, walk the dtype per element
    // instead, which costs time in proportion to the data only.
    if run_count(dtype, target) > MAX_RUNS {
        for elem in bytes.chunks_exact_mut(itemsize) {
            swap_in_place(dtype, target, elem);
        }
        return Ok(new);
    }
    let mut rs = Vec::new();
    runs(dtype, target, 0, &mut rs);
    if rs.is_empty() {
        return Ok(new);
    }
    for elem in bytes.chunks_exact_mut(itemsize) {
        for r in &rs {
            let end = r.offset + r.width * r.count;
            for v in elem[r.offset..end].chunks_exact_mut(r.width) {
                v.reverse();
            }
        }
    }
    Ok(new)
}

/// Converts owned data to native byte order; returns the native dtype and
/// the data (unchanged when it already was native).
///
/// # Errors
/// [`CodecError::Length`] when `bytes` is not a whole number of elements.
pub fn to_native(dtype: &DType, mut bytes: Vec<u8>) -> Result<(DType, Vec<u8>)> {
    let dt = convert_byte_order(dtype, &mut bytes, ByteOrder::NATIVE)?;
    Ok((dt, bytes))
}

/// The inverse of [`to_native`]: turns `bytes`, holding elements of
/// `dtype.with_byte_order(NATIVE)`, into elements of `dtype` itself, each
/// part in its own byte order (records may mix orders).
///
/// # Errors
/// [`CodecError::Length`] when `bytes` is not a whole number of elements.
pub fn from_native(dtype: &DType, bytes: &mut [u8]) -> Result<()> {
    // Swapping is an involution over the same runs: the parts of `dtype`
    // that are not native are exactly those to swap in either direction.
    convert_byte_order(dtype, bytes, ByteOrder::NATIVE).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_scalars_records_and_strings() {
        let dt = DType::parse_descr(
            "[('a', '>i4'), ('b', '>c8'), ('s', '>U2'), ('t', '|S2'), ('x', '>u2', (2,))]",
        )
        .unwrap();
        let mut data = Vec::new();
        data.extend_from_slice(&7i32.to_be_bytes());
        data.extend_from_slice(&1.5f32.to_be_bytes());
        data.extend_from_slice(&(-2.0f32).to_be_bytes());
        data.extend_from_slice(&u32::from('h').to_be_bytes());
        data.extend_from_slice(&u32::from('é').to_be_bytes());
        data.extend_from_slice(b"ab");
        data.extend_from_slice(&0x0102u16.to_be_bytes());
        data.extend_from_slice(&0x0304u16.to_be_bytes());
        let (ndt, out) = to_native(&dt, data.clone()).unwrap();
        assert!(ndt.is_native_order());
        let mut expect = Vec::new();
        expect.extend_from_slice(&7i32.to_ne_bytes());
        expect.extend_from_slice(&1.5f32.to_ne_bytes());
        expect.extend_from_slice(&(-2.0f32).to_ne_bytes());
        expect.extend_from_slice(&u32::from('h').to_ne_bytes());
        expect.extend_from_slice(&u32::from('é').to_ne_bytes());
        expect.extend_from_slice(b"ab");
        expect.extend_from_slice(&0x0102u16.to_ne_bytes());
        expect.extend_from_slice(&0x0304u16.to_ne_bytes());
        assert_eq!(out, expect);
        let mut back = out;
        let bdt = convert_byte_order(&ndt, &mut back, ByteOrder::Big).unwrap();
        assert_eq!(bdt, dt);
        assert_eq!(back, data);
        let mixed = DType::parse_descr("[('a', '<i4'), ('b', '>i4')]").unwrap();
        let raw = vec![1, 0, 0, 0, 0, 0, 0, 2];
        let (ndt, mut nat) = to_native(&mixed, raw.clone()).unwrap();
        assert!(ndt.is_native_order());
        from_native(&mixed, &mut nat).unwrap();
        assert_eq!(nat, raw);
        assert!(matches!(
            to_native(&dt, vec![0; 5]),
            Err(CodecError::Length { .. })
        ));
    }

    #[test]
    fn huge_subarrays_of_records_cost_no_memory_per_dtype() {
        // 2**27 mixed-order records in one field (1 GiB, under numpy's
        // 2 GiB itemsize limit): the header is tiny and the array empty,
        // so converting must not build 2**27 runs.
        let dt = DType::parse_descr("[('a', [('x', '>i4'), ('y', '<i4')], (134217728,))]").unwrap();
        let (ndt, out) = to_native(&dt, Vec::new()).unwrap();
        assert!(ndt.is_native_order() && out.is_empty());
        // Past the run limit, the per-element walk gives the same bytes as
        // the run list.
        let big = DType::parse_descr("[('a', [('x', '>i2'), ('y', '<i4')], (70000,))]").unwrap();
        let small = DType::parse_descr("[('a', [('x', '>i2'), ('y', '<i4')], (7,))]").unwrap();
        assert!(run_count(&big, ByteOrder::Little) > MAX_RUNS);
        let data: Vec<u8> = (0..big.itemsize()).map(|i| (i * 31 % 251) as u8).collect();
        let (_, swapped) = to_native(&big, data.clone()).unwrap();
        let (_, head) = to_native(&small, data[..small.itemsize()].to_vec()).unwrap();
        assert_eq!(&swapped[..small.itemsize()], &head[..]);
        let mut back = swapped;
        from_native(&big, &mut back).unwrap();
        assert_eq!(back, data);
        // A big-endian scalar base stays one long run.
        let flat = DType::parse_descr("[('a', '>f8', (134217728,))]").unwrap();
        assert_eq!(run_count(&flat, ByteOrder::Little), 1);
    }
}
