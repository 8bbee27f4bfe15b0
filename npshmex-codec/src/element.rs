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
use std::mem::MaybeUninit;

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

/// Appends `n` values to `v` whose bytes `write` puts in place: it gets the
/// `n * size_of::<T>()` bytes of `v`'s spare capacity, uninitialised, and
/// returns them initialised (as `npshmex_shm::copy::copy_to_uninit` does).
/// The values are checked as [`cast_slice`] checks them (`bool`) before
/// they join `v`, so no writer can put an invalid value in it. This is how a
/// large array is copied into a new `Vec` without zeroing it first (which
/// would touch every fresh page twice).
///
/// ```
/// use npshmex_codec::extend_with_bytes;
/// let mut v: Vec<u32> = vec![7];
/// // A writer that hands back other bytes than the spare capacity it was
/// // given is refused, and nothing is appended.
/// let r = extend_with_bytes(&mut v, 2, |_spare| Box::leak(vec![0u8; 8].into_boxed_slice()));
/// assert!(r.is_err());
/// assert_eq!(v, [7]);
/// ```
///
/// # Errors
/// Nothing is appended on error: [`CodecError::Length`] when `write`
/// returns any other slice than the one it was given (`write` is not called
/// when `n` is 0), or `T` is zero-sized;
/// [`CodecError::InvalidBool`] for an invalid value;
/// [`CodecError::Overflow`] when the bytes would not fit in memory.
pub fn extend_with_bytes<T: Element>(
    v: &mut Vec<T>,
    n: usize,
    write: impl FnOnce(&mut [MaybeUninit<u8>]) -> &mut [u8],
) -> Result<()> {
    let size = std::mem::size_of::<T>();
    let overflow = CodecError::Overflow {
        what: "a vector's capacity",
    };
    let len = n.checked_mul(size).ok_or(overflow.clone())?;
    if size == 0 {
        return Err(CodecError::Length { len, itemsize: 0 });
    }
    if n == 0 {
        return Ok(());
    }
    v.try_reserve(n).map_err(|_| overflow)?;
    let spare = &mut v.spare_capacity_mut()[..n];
    // SAFETY: the `n` spare elements are `len` bytes of one allocation,
    // exclusively borrowed for as long as the byte view; `MaybeUninit<u8>`
    // may hold any byte (or none) and has alignment 1.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<MaybeUninit<u8>>(), len)
    };
    let start = bytes.as_ptr().cast::<u8>();
    let written = write(bytes);
    if written.as_ptr() != start || written.len() != len {
        return Err(CodecError::Length {
            len: written.len(),
            itemsize: size,
        });
    }
    // Alignment and dtype hold by construction; this validates the values.
    check::<T>(&T::dtype(), written)?;
    // SAFETY: `written` is an initialised `&mut [u8]` over exactly the bytes
    // of the `n` spare elements (same start, same length), and `check`
    // found every value valid (the `Element` contract for the rest), so
    // the first `v.len() + n` elements are initialised values of `T`; the
    // capacity was reserved above.
    unsafe { v.set_len(v.len() + n) };
    Ok(())
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

    /// Writes `src` into `spare` and hands it back initialised.
    fn write_all<'a>(spare: &'a mut [MaybeUninit<u8>], src: &[u8]) -> &'a mut [u8] {
        assert_eq!(spare.len(), src.len());
        for (d, s) in spare.iter_mut().zip(src) {
            d.write(*s);
        }
        // SAFETY: every byte was written just above; same layout as `u8`.
        unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<u8>]>(spare) as *mut [u8]) }
    }

    #[test]
    fn extend_with_bytes_appends_checked_values() {
        let src = [1.5f64, -2.0, 1e300];
        let mut v = vec![0.25f64];
        extend_with_bytes(&mut v, 3, |spare| write_all(spare, as_bytes(&src).unwrap())).unwrap();
        assert_eq!(v, [0.25, 1.5, -2.0, 1e300]);

        // An invalid bool is refused and nothing is appended.
        let mut b = vec![true];
        let r = extend_with_bytes(&mut b, 3, |spare| write_all(spare, &[0, 1, 2]));
        assert!(matches!(
            r,
            Err(CodecError::InvalidBool { index: 2, value: 2 })
        ));
        assert_eq!(b, [true]);
        extend_with_bytes(&mut b, 2, |spare| write_all(spare, &[0, 1])).unwrap();
        assert_eq!(b, [true, false, true]);

        // A short slice of the right memory is refused too.
        let r = extend_with_bytes(&mut b, 2, |spare| {
            let (head, _) = spare.split_at_mut(1);
            write_all(head, &[1])
        });
        assert!(matches!(r, Err(CodecError::Length { len: 1, .. })));
        assert_eq!(b.len(), 3);

        // Zero-sized elements have no bytes to check: refused.
        let mut z: Vec<[u8; 0]> = Vec::new();
        assert!(extend_with_bytes(&mut z, 4, |spare| write_all(spare, &[])).is_err());
        assert!(z.is_empty());
    }

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
