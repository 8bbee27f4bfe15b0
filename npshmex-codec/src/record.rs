//! Rust structs as numpy records: the [`Record`] marker and the
//! [`record!`](crate::record) macro that implements it with a dtype built
//! from the struct's real layout.
//!
//! The macro reads every field's offset with `core::mem::offset_of!` and the
//! struct's size with `size_of`, and every field type must itself be an
//! [`Element`]; the dtype therefore describes the layout the compiler chose,
//! by construction, and cannot drift from the struct. Rejected alternative: a
//! proc-macro derive in an extra crate (a `syn` build for every user) for no
//! extra checking power.

use crate::dtype::DType;
use crate::element::Element;
use crate::structured::{Field, StructAlign, StructType};

/// A `#[repr(C)]` struct whose fields are [`Element`]s, usable as a numpy
/// record. Implement it with [`record!`](crate::record), which also
/// implements [`Element`] (so [`cast_slice`](crate::cast_slice) works).
///
/// # Safety
/// As for [`Element`]: `Self::dtype()` describes every field at its real
/// offset, and `size_of::<Self>()` is its itemsize. The macro guarantees it.
pub unsafe trait Record: Element {}

/// `(name, offset, dtype)` of one record field, as the macro collects it.
#[doc(hidden)]
pub type FieldSpec = (&'static str, usize, fn() -> DType);

/// Builds the dtype of a record from its size and a [`FieldSpec`] per
/// field. Used by [`record!`](crate::record); not a stable API.
#[doc(hidden)]
pub fn record_dtype(size: usize, fields: &[FieldSpec]) -> DType {
    let mut fs: Vec<Field> = fields
        .iter()
        .map(|&(name, offset, dt)| Field::new(name, dt(), offset))
        .collect();
    fs.sort_by_key(|f| f.offset);
    // A repr(C) struct satisfies numpy's aligned rules; a packed one does not.
    let st = StructType::new(fs.clone(), size, StructAlign::Aligned)
        .or_else(|_| StructType::new(fs, size, StructAlign::Unaligned));
    match st {
        Ok(s) => DType::Struct(s),
        // Unreachable for a real struct (names are distinct, fields do not
        // overlap and lie inside the struct); an opaque void of the right
        // size keeps the function total and matches no record dtype.
        Err(_) => DType::Void { len: size },
    }
}

/// Declares a struct and implements [`Element`] and [`Record`] for it, with
/// the dtype taken from the compiler's layout.
///
/// Write the struct as usual, including `#[repr(C)]` (recommended: a stable
/// layout that matches numpy's `align=True`) and `#[derive(Clone, Copy)]`
/// (required). Every field type must implement [`Element`]: scalars,
/// arrays of elements (subarrays), other records, and numpy's inline
/// strings [`FixedBytes<N>`](crate::FixedBytes) (`'S<N>'`) and
/// [`FixedUnicode<N>`](crate::FixedUnicode) (`'U<N>'`); a `[u8; N]` field
/// is numpy's `('|u1', (N,))`, not a string.
///
/// # Records with padding bytes
/// `#[repr(C)]` aligns every field, so a record such as
/// `{ id: i64, x: f64, flag: u8, name: [u8; 16] }` has padding bytes (7
/// here, after `name`), exactly as numpy's `align=True` lays it out. Such
/// records are read through typed views ([`cast_slice`](crate::cast_slice))
/// like any other, but have no mutable typed view
/// ([`cast_slice_mut`](crate::cast_slice_mut) and
/// [`as_bytes`](crate::as_bytes) refuse them with
/// [`CodecError::Padding`](crate::CodecError::Padding)): a value written
/// through a `&mut` may leave its padding bytes uninitialised, and those
/// bytes would then be read as data by numpy or another process. Write
/// them with [`to_bytes`](crate::to_bytes), which stores every field byte
/// and zeroes the padding, as numpy does. In `npshmex-ndarray`, every
/// `ShmArray` constructor takes them, `ShmArray::view_mut` refuses them,
/// and `ShmArray::set`, `ShmArray::map_inplace` and
/// `ShmArray::indexed_map_inplace` change them in place through that
/// encoding.
///
/// ```
/// use npshmex_codec::{cast_slice, record, DType, Element};
///
/// record! {
///     #[repr(C)]
///     #[derive(Clone, Copy, Debug, PartialEq)]
///     pub struct Point {
///         pub x: f64,
///         pub tag: [u8; 4],
///         pub id: i32,
///     }
/// }
///
/// assert_eq!(
///     Point::dtype().to_descr(),
///     "[('x', '<f8'), ('tag', '|u1', (4,)), ('id', '<i4')]"
/// );
/// let file_dtype = DType::parse_descr("[('x', '<f8'), ('tag', '|u1', (4,)), ('id', '<i4')]")?;
/// let data = [Point { x: 1.0, tag: *b"abcd", id: 7 }];
/// let bytes = npshmex_codec::as_bytes(&data)?;
/// assert_eq!(cast_slice::<Point>(&file_dtype, bytes)?, &data);
/// # Ok::<(), npshmex_codec::CodecError>(())
/// ```
#[macro_export]
macro_rules! record {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field : $ty ),*
        }

        // SAFETY: the dtype is built from `size_of::<Self>()` and each field's
        // `offset_of!`, with each field's own `Element` dtype, so it describes
        // every field byte; bytes outside fields are padding, which may hold
        // anything; `validate` delegates to each field's `validate`.
        unsafe impl $crate::Element for $name {
            fn dtype() -> $crate::DType {
                $crate::__record_dtype(
                    ::core::mem::size_of::<$name>(),
                    &[$((
                        ::core::stringify!($field),
                        ::core::mem::offset_of!($name, $field),
                        <$ty as $crate::Element>::dtype as fn() -> $crate::DType,
                    )),*],
                )
            }

            fn validate(bytes: &[u8]) -> $crate::Result<()> {
                let size = ::core::mem::size_of::<$name>();
                if size == 0 {
                    return Ok(());
                }
                for elem in bytes.chunks(size) {
                    $(
                        let off = ::core::mem::offset_of!($name, $field);
                        let len = ::core::mem::size_of::<$ty>();
                        if let Some(b) = elem.get(off..off + len) {
                            <$ty as $crate::Element>::validate(b)?;
                        }
                    )*
                    let _ = elem;
                }
                Ok(())
            }
        }

        // SAFETY: see the `Element` impl above.
        unsafe impl $crate::Record for $name {}
    };
}

#[cfg(test)]
mod tests {
    use crate::{cast_slice, cast_slice_mut, CodecError, DType, Element};

    record! {
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        struct Inner {
            flag: bool,
            v: f32,
        }
    }

    record! {
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        struct Outer {
            a: u8,
            inner: Inner,
            m: [[i16; 3]; 2],
            c: num_complex::Complex<f64>,
        }
    }

    record! {
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        struct Dense {
            a: f64,
            b: [u8; 8],
        }
    }

    #[test]
    fn layout_matches_numpy_align_true() {
        // np.dtype([('a','u1'),('inner',[('flag','?'),('v','<f4')],),('m','<i2',(2,3)),('c','<c16')], align=True)
        assert_eq!(
            Outer::dtype().to_descr(),
            "[('a', '|u1'), ('', '|V3'), ('inner', [('flag', '|b1'), ('', '|V3'), ('v', '<f4')]), \
             ('m', '<i2', (2, 3)), ('c', '<c16')]"
        );
        assert_eq!(Outer::dtype().itemsize(), std::mem::size_of::<Outer>());
        assert_eq!(Outer::dtype().alignment(), std::mem::align_of::<Outer>());
    }

    #[test]
    fn views_check_bools_and_padding() {
        let dt = DType::parse_descr("[('flag', '|b1'), ('', '|V3'), ('v', '<f4')]").unwrap();
        let mut store = [0u64; 2];
        {
            let bytes = bytes_of(&mut store);
            bytes[0] = 1;
            bytes[8] = 2;
            assert!(matches!(
                cast_slice::<Inner>(&dt, &bytes[..8]).map(|v| v[0].flag),
                Ok(true)
            ));
            assert!(matches!(
                cast_slice::<Inner>(&dt, bytes),
                Err(CodecError::InvalidBool { index: 0, value: 2 })
            ));
            assert!(matches!(
                cast_slice_mut::<Inner>(&dt, &mut bytes[..8]),
                Err(CodecError::Padding { .. })
            ));
        }
        let ddt = Dense::dtype();
        let bytes = bytes_of(&mut store);
        let v = cast_slice_mut::<Dense>(&ddt, bytes).unwrap();
        v[0].a = 2.0;
        v[0].b = *b"12345678";
        let bytes = bytes_of(&mut store);
        assert_eq!(&bytes[8..16], b"12345678");
    }

    #[test]
    fn padded_records_copy_with_zero_padding() {
        let v = [
            Inner { flag: true, v: 1.5 },
            Inner {
                flag: false,
                v: -2.0,
            },
        ];
        assert!(matches!(
            crate::as_bytes(&v),
            Err(CodecError::Padding { .. })
        ));
        let b = crate::to_bytes(&v);
        let mut expect = vec![1u8, 0, 0, 0];
        expect.extend_from_slice(&1.5f32.to_ne_bytes());
        expect.extend_from_slice(&[0, 0, 0, 0]);
        expect.extend_from_slice(&(-2.0f32).to_ne_bytes());
        assert_eq!(b, expect);
        let o = [Outer {
            a: 7,
            inner: v[0],
            m: [[1, 2, 3], [4, 5, 6]],
            c: num_complex::Complex::new(1.0, 2.0),
        }];
        let ob = crate::to_bytes(&o);
        assert_eq!(ob.len(), std::mem::size_of::<Outer>());
        assert_eq!(&ob[..8], &[7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            cast_slice::<Outer>(&Outer::dtype(), &ob).map(|x| x[0].m),
            Ok([[1, 2, 3], [4, 5, 6]])
        );
    }

    fn bytes_of(v: &mut [u64; 2]) -> &mut [u8] {
        // SAFETY: u64 has no padding; 16 initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), 16) }
    }
}
