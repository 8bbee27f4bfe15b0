//! Typed views of raw bytes: the [`Element`] trait for Rust types with a
//! numpy dtype, and [`cast_slice`]/[`cast_slice_mut`], which check dtype,
//! length, alignment and (for `bool`) every byte before making a view.
//!
//! This is the only module of the crate with `unsafe` code. Rejected
//! alternative: depending on `bytemuck`; its `Pod` cannot express "valid only
//! after checking each byte" (bool) nor compare against a runtime dtype.

use crate::dtype::{ByteOrder, ComplexWidth, DType, FloatWidth, IntWidth};
use crate::error::{CodecError, Result};
use num_complex::Complex;

/// A Rust type whose values are exactly the bytes of a numpy dtype in native
/// byte order.
///
/// # Safety
/// Implementors guarantee that
/// - `size_of::<Self>() == Self::dtype().itemsize()`,
/// - every byte of the type is described by `dtype()` at the same offset with
///   the same meaning (fields of records at their `offset_of!`),
/// - every bit pattern is a valid value, except where
///   [`Element::validate`] is overridden to reject the invalid ones.
pub unsafe trait Element: Copy + 'static {
    /// The dtype of one value.
    fn dtype() -> DType;

    /// Checks that `bytes` (a whole number of elements) holds only valid
    /// values; the default accepts everything.
    ///
    /// # Errors
    /// The first invalid value, e.g. [`CodecError::InvalidBool`].
    fn validate(bytes: &[u8]) -> Result<()> {
        let _ = bytes;
        Ok(())
    }
}

macro_rules! scalar {
    ($t:ty, $dt:expr) => {
        // SAFETY: a primitive of exactly this size; every bit pattern is valid
        // and the dtype has the native byte order.
        unsafe impl Element for $t {
            fn dtype() -> DType {
                $dt
            }
        }
    };
}

const N: ByteOrder = ByteOrder::NATIVE;
scalar!(
    i8,
    DType::Int {
        width: IntWidth::W1,
        order: ByteOrder::NotApplicable
    }
);
scalar!(
    i16,
    DType::Int {
        width: IntWidth::W2,
        order: N
    }
);
scalar!(
    i32,
    DType::Int {
        width: IntWidth::W4,
        order: N
    }
);
scalar!(
    i64,
    DType::Int {
        width: IntWidth::W8,
        order: N
    }
);
scalar!(
    u8,
    DType::UInt {
        width: IntWidth::W1,
        order: ByteOrder::NotApplicable
    }
);
scalar!(
    u16,
    DType::UInt {
        width: IntWidth::W2,
        order: N
    }
);
scalar!(
    u32,
    DType::UInt {
        width: IntWidth::W4,
        order: N
    }
);
scalar!(
    u64,
    DType::UInt {
        width: IntWidth::W8,
        order: N
    }
);
scalar!(
    half::f16,
    DType::Float {
        width: FloatWidth::F2,
        order: N
    }
);
scalar!(
    f32,
    DType::Float {
        width: FloatWidth::F4,
        order: N
    }
);
scalar!(
    f64,
    DType::Float {
        width: FloatWidth::F8,
        order: N
    }
);
scalar!(
    Complex<f32>,
    DType::Complex {
        width: ComplexWidth::C8,
        order: N
    }
);
scalar!(
    Complex<f64>,
    DType::Complex {
        width: ComplexWidth::C16,
        order: N
    }
);

// SAFETY: `bool` is one byte; the values 0 and 1 are the only valid ones and
// `validate` rejects every other byte before a view is made.
unsafe impl Element for bool {
    fn dtype() -> DType {
        DType::Bool
    }

    fn validate(bytes: &[u8]) -> Result<()> {
        match bytes.iter().position(|&b| b > 1) {
            Some(index) => Err(CodecError::InvalidBool {
                index,
                value: bytes[index],
            }),
            None => Ok(()),
        }
    }
}

// SAFETY: an array of `T` has no padding between elements, so its bytes are
// the concatenation of `N` elements: the subarray dtype of shape `(N,)`
// (nested arrays merge into one shape, the layout numpy gives `(T, (3, 2))`;
// `same_layout` also matches the nested spelling).
unsafe impl<T: Element, const LEN: usize> Element for [T; LEN] {
    fn dtype() -> DType {
        // An overflow would need an array larger than memory, which cannot
        // be a type; fall back to a void of the same size to stay total.
        crate::structured::SubArrayType::build_flat(T::dtype(), vec![LEN]).unwrap_or(DType::Void {
            len: std::mem::size_of::<Self>(),
        })
    }

    fn validate(bytes: &[u8]) -> Result<()> {
        T::validate(bytes)
    }
}

fn check<T: Element>(dtype: &DType, bytes: &[u8]) -> Result<usize> {
    let expected = T::dtype();
    if !expected.same_layout(dtype) {
        return Err(CodecError::DTypeMismatch {
            expected: expected.to_descr(),
            actual: dtype.to_descr(),
        });
    }
    let size = std::mem::size_of::<T>();
    debug_assert_eq!(size, expected.itemsize());
    if size == 0 {
        return Err(CodecError::Length {
            len: bytes.len(),
            itemsize: 0,
        });
    }
    if !bytes.len().is_multiple_of(size) {
        return Err(CodecError::Length {
            len: bytes.len(),
            itemsize: size,
        });
    }
    let align = std::mem::align_of::<T>();
    let addr = bytes.as_ptr() as usize;
    if !addr.is_multiple_of(align) {
        return Err(CodecError::Misaligned { addr, align });
    }
    T::validate(bytes)?;
    Ok(bytes.len() / size)
}

/// Views `bytes` as a slice of `T` after checking that `dtype` has the layout
/// of `T` (same canonical dtype, byte order included), that the length is a
/// whole number of elements and the address is aligned for `T`, and that
/// every value is valid (`bool`).
///
/// ```
/// use npshmex_codec::{as_bytes, cast_slice, Element};
/// let data: Vec<u64> = vec![1, 2, 3];
/// let bytes: &[u8] = as_bytes(&data)?;
/// let view: &[u64] = cast_slice(&u64::dtype(), bytes)?;
/// assert_eq!(view, &[1, 2, 3]);
/// assert!(cast_slice::<i64>(&u64::dtype(), bytes).is_err());
/// # Ok::<(), npshmex_codec::CodecError>(())
/// ```
///
/// # Errors
/// [`CodecError::DTypeMismatch`], [`CodecError::Length`],
/// [`CodecError::Misaligned`], [`CodecError::InvalidBool`].
pub fn cast_slice<'a, T: Element>(dtype: &DType, bytes: &'a [u8]) -> Result<&'a [T]> {
    let n = check::<T>(dtype, bytes)?;
    // SAFETY: `check` verified that the pointer is aligned for `T`, that
    // `bytes` holds exactly `n` elements of `size_of::<T>()` bytes, and that
    // they are valid values of `T` (the `Element` contract plus `validate`).
    // The lifetime and immutability are those of `bytes`.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), n) })
}

/// Mutable version of [`cast_slice`]. Refused for types with padding bytes
/// (records with gaps): writing such values would leave those bytes
/// uninitialised inside `bytes`.
///
/// # Errors
/// As [`cast_slice`], plus [`CodecError::Padding`].
pub fn cast_slice_mut<'a, T: Element>(dtype: &DType, bytes: &'a mut [u8]) -> Result<&'a mut [T]> {
    let n = check::<T>(dtype, bytes)?;
    let own = T::dtype();
    if !own.is_dense() {
        return Err(CodecError::Padding {
            descr: own.to_descr(),
        });
    }
    // SAFETY: as in `cast_slice`; in addition `T` has no padding bytes, so
    // every value written through the view initialises all its bytes, and
    // every valid `T` is a valid sequence of `u8` once the view ends.
    Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), n) })
}

/// Views a slice of elements as its bytes (e.g. to write `.npy` data).
/// Records with padding are refused: their padding bytes may be
/// uninitialised; [`to_bytes`] copies them instead.
///
/// # Errors
/// [`CodecError::Padding`] when `T` has padding bytes.
pub fn as_bytes<T: Element>(values: &[T]) -> Result<&[u8]> {
    let own = T::dtype();
    if !own.is_dense() {
        return Err(CodecError::Padding {
            descr: own.to_descr(),
        });
    }
    let len = std::mem::size_of_val(values);
    // SAFETY: `T` has no padding (its dtype is dense: every byte belongs to a
    // value, per the `Element` contract), so all `len` bytes are initialised;
    // `u8` has alignment 1 and the lifetime is that of `values`.
    Ok(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), len) })
}

/// Copies values into bytes as numpy stores them: every field byte from the
/// values, every padding byte zero (what `np.zeros` + field assignment
/// gives). Works for all `Element`s, records with padding included.
pub fn to_bytes<T: Element>(values: &[T]) -> Vec<u8> {
    let dtype = T::dtype();
    if let Ok(b) = as_bytes(values) {
        return b.to_vec();
    }
    let size = std::mem::size_of::<T>();
    let mut ranges = Vec::new();
    value_ranges(&dtype, 0, &mut ranges);
    let mut out = vec![0u8; std::mem::size_of_val(values)];
    for (v, dst) in values.iter().zip(out.chunks_exact_mut(size.max(1))) {
        let base = (v as *const T).cast::<u8>();
        for &(off, len) in &ranges {
            // Ranges come from the dtype, which by the `Element` contract
            // lies inside `size_of::<T>()`; stay safe if an impl is wrong.
            if off + len > size {
                continue;
            }
            // SAFETY: `off..off + len` is inside the value (checked above)
            // and covers only leaf fields (no padding: `value_ranges` skips
            // struct gaps), which are initialised bytes of a live `T`
            // borrowed for this loop.
            let src = unsafe { std::slice::from_raw_parts(base.add(off), len) };
            dst[off..off + len].copy_from_slice(src);
        }
    }
    out
}

/// Byte ranges of `dt` (at `base`) that hold values, not struct padding.
fn value_ranges(dt: &DType, base: usize, out: &mut Vec<(usize, usize)>) {
    match dt {
        DType::Struct(s) => {
            for f in s.fields() {
                value_ranges(&f.dtype, base + f.offset, out);
            }
        }
        DType::SubArray(s) if !s.base().is_dense() => {
            let stride = s.base().itemsize();
            for i in 0..s.count() {
                value_ranges(s.base(), base + i * stride, out);
            }
        }
        other => {
            let len = other.itemsize();
            match out.last_mut() {
                Some((o, l)) if *o + *l == base => *l += len,
                _ if len > 0 => out.push((base, len)),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_dtypes_match_sizes() {
        fn ok<T: Element>() {
            assert_eq!(std::mem::size_of::<T>(), T::dtype().itemsize());
            assert_eq!(std::mem::align_of::<T>(), T::dtype().alignment());
        }
        ok::<bool>();
        ok::<i8>();
        ok::<i16>();
        ok::<i32>();
        ok::<i64>();
        ok::<u8>();
        ok::<u16>();
        ok::<u32>();
        ok::<u64>();
        ok::<half::f16>();
        ok::<f32>();
        ok::<f64>();
        ok::<Complex<f32>>();
        ok::<Complex<f64>>();
        ok::<[f64; 3]>();
        assert_eq!(
            <[[f32; 3]; 2]>::dtype().to_descr(),
            <[f32; 6]>::dtype().to_descr().replace("6,", "2, 3")
        );
    }

    #[test]
    fn casts_check_everything() {
        let mut store = [0u64; 4];
        let bytes = as_bytes_mut(&mut store);
        let dt = f64::dtype();
        let v = cast_slice_mut::<f64>(&dt, bytes).unwrap();
        v[1] = 2.5;
        let bytes = as_bytes_mut(&mut store);
        assert_eq!(cast_slice::<f64>(&dt, bytes).unwrap()[1], 2.5);
        assert!(matches!(
            cast_slice::<f32>(&dt, bytes),
            Err(CodecError::DTypeMismatch { .. })
        ));
        assert!(matches!(
            cast_slice::<f64>(&dt, &bytes[..12]),
            Err(CodecError::Length {
                len: 12,
                itemsize: 8
            })
        ));
        assert!(matches!(
            cast_slice::<f64>(&dt, &bytes[4..20]),
            Err(CodecError::Misaligned { align: 8, .. })
        ));
        let foreign = DType::Float {
            width: FloatWidth::F8,
            order: if ByteOrder::NATIVE == ByteOrder::Little {
                ByteOrder::Big
            } else {
                ByteOrder::Little
            },
        };
        assert!(matches!(
            cast_slice::<f64>(&foreign, bytes),
            Err(CodecError::DTypeMismatch { .. })
        ));
    }

    #[test]
    fn bools_are_validated() {
        let bytes = [0u8, 1, 1, 0];
        assert_eq!(
            cast_slice::<bool>(&DType::Bool, &bytes).unwrap(),
            &[false, true, true, false]
        );
        let bad = [0u8, 1, 2];
        assert_eq!(
            cast_slice::<bool>(&DType::Bool, &bad),
            Err(CodecError::InvalidBool { index: 2, value: 2 })
        );
    }

    fn as_bytes_mut(v: &mut [u64]) -> &mut [u8] {
        let len = std::mem::size_of_val(v);
        // SAFETY: u64 has no padding and every byte pattern is a valid u64.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) }
    }
}
