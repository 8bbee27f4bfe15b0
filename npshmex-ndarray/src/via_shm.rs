//! The drop-in path: plain `ndarray` arrays that travel through shared
//! memory with one copy in and one copy out, as npshmex does for numpy.
//!
//! Use `#[serde(with = "npshmex_ndarray::via_shm")]` on array fields of your
//! own types, or wrap a bare array argument or result in [`Shm`] (owned) or
//! [`ShmArg`] (lent).
//!
//! # Lending arrays in fields
//! A task argument is serialized inside `submit`, before it returns, so it
//! may borrow the caller's arrays: the caller keeps them, nothing is cloned.
//! What arrives is always owned, so a field has to be able to hold both:
//! - `CowArray<'a, A, D>` with the attribute (ndarray's borrowed-or-owned
//!   array: `CowArray::from(&a)` or `CowArray::from(a.view())` to lend,
//!   owned on arrival, [`ArrayField`]);
//! - or `ShmArg<'a, A, D>` without it (it is a serde type itself).
//!
//! An `ArrayView<'a, A, D>` field cannot be used: serialization would work,
//! but deserialization must produce the field's value from the received
//! bytes, and a view needs an owner to borrow from that does not exist on
//! the receiving side (serde's zero-copy borrowing lends only from the input
//! bytes, which hold no aligned array and are gone after decoding).
//! `CowArray` is the view that can also own.
//!
//! ```
//! use ndarray::{Array1, Array2, CowArray, Ix1, Ix2};
//! use npshmex_ndarray::ShmArg;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Job<'a> {
//!     #[serde(with = "npshmex_ndarray::via_shm")]
//!     x: CowArray<'a, f64, Ix2>,
//!     weights: ShmArg<'a, f32, Ix1>,
//!     #[serde(with = "npshmex_ndarray::via_shm")]
//!     owned: Array1<u8>,
//!     label: String,
//! }
//!
//! fn run(job: Job<'_>) -> f64 {
//!     job.x.sum() + f64::from(job.weights.view().sum()) + job.owned.len() as f64
//! }
//!
//! let x = Array2::<f64>::ones((300, 300));
//! let w = Array1::<f32>::ones(4);
//! let job = Job { x: CowArray::from(&x), weights: ShmArg::from(&w), owned: Array1::zeros(2), label: "j".into() };
//! // pool.submit(run, job) in a program with a pool; here through serde:
//! let bytes = postcard::to_allocvec(&job)?;
//! let back: Job<'static> = postcard::from_bytes(&bytes)?;
//! assert!(back.x.is_owned());
//! assert_eq!(run(back), 90_000.0 + 4.0 + 2.0);
//! assert_eq!(x.sum(), 90_000.0, "the caller keeps its array");
//! # Ok::<(), postcard::Error>(())
//! ```
//!
//! Inside a pool task, an array of at least [`INLINE_MAX`] bytes is copied
//! into a segment (a reused, already-faulted one when the cache has a free
//! one; see [`crate::cache`]) whose descriptor is sent; the receiver copies
//! it out into an owned array and unmaps it at once, which is what lets the
//! sender reuse that segment for its next transfer. Smaller arrays, and every
//! array serialized outside a pool (to JSON, to a file), go inline as the
//! bytes of a `.npy` file, so the same types also serialize anywhere.

use crate::array::ShmArray;
use crate::encode::encode_into;
use crate::error::{NdarrayError, Result};
use crate::layout::{order_of, Layout, MemOrder};
use ndarray::{ArcArray, Array, ArrayBase, ArrayView, ArrayViewMut, CowArray, Data, Dimension};
use npshmex_codec::{cast_slice, cast_slice_mut, Element};
use npshmex_shm::oob::{self, SegmentRef};
use npshmex_shm::{Carried, CarriedBuf, Transfer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Arrays whose `.npy` form (header and data) is smaller than this go inline
/// in the serialized bytes even inside a pool: below it, passing a segment
/// costs more than copying. From this size on the segment cache keeps
/// segments for reuse ([`npshmex_shm::cache::MIN_CACHED`]), so the segments
/// of the drop-in path are reused from call to call.
pub const INLINE_MAX: usize = npshmex_shm::cache::MIN_CACHED;

/// Serializes any ndarray array or view via shared memory (in a pool) or
/// inline (elsewhere or when small). For `#[serde(with = "...")]`.
///
/// # Errors
/// A serde error when the segment cannot be created or passed; the typed
/// cause is recorded in the encoding scope (`npshmex_shm::oob::ser_error`).
pub fn serialize<A, S, D, Ser>(
    array: &ArrayBase<S, D>,
    serializer: Ser,
) -> Result<Ser::Ok, Ser::Error>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
    Ser: Serializer,
{
    let (layout, header) =
        Layout::<D>::new::<A>(array.raw_dim(), order_of(array)).map_err(oob::ser_error)?;
    let total = layout.total_len();
    if total < INLINE_MAX || !oob::is_collecting() {
        let npy = inline_npy(array, &layout, &header).map_err(oob::ser_error)?;
        return Carried::Inline(npy.bytes()).serialize(serializer);
    }
    let copy = ShmArray::<A, D>::from_array(array).map_err(oob::ser_error)?;
    let r =
        oob::send(&copy.slot, Transfer::Move).map_err(|e| oob::ser_error(NdarrayError::from(e)))?;
    // The collector holds the copy's last reference once it is dropped:
    // it moves to the receiver, and comes back to the cache when the
    // receiver has unmapped it (see `npshmex_shm::cache`).
    drop(copy);
    Carried::Segment(r).serialize(serializer)
}

/// Deserializes an array written by [`serialize`] into an owned field
/// type ([`ArrayField`]: `Array`, `ArcArray`, `CowArray`), validating
/// everything (dtype, dimensionality, size). For `#[serde(with = "...")]`.
///
/// # Errors
/// A serde error on any mismatch; the typed cause is recorded in the
/// decoding scope (`npshmex_shm::oob::de_error`).
pub fn deserialize<'de, T, De>(deserializer: De) -> Result<T, De::Error>
where
    T: ArrayField,
    De: Deserializer<'de>,
{
    let array = match CarriedBuf::deserialize(deserializer)? {
        CarriedBuf::Inline(bytes) => from_inline(&bytes).map_err(oob::de_error)?,
        CarriedBuf::Segment(r) => {
            if !oob::is_receiving() {
                return Err(oob::de_error(NdarrayError::NoCollector));
            }
            from_segment(r).map_err(oob::de_error)?
        }
    };
    Ok(T::from_array(array))
}

/// A field type that `#[serde(with = "npshmex_ndarray::via_shm")]`
/// deserializes into: ndarray's owning array types, and `CowArray`, whose
/// sender may lend a view (see the module docs).
pub trait ArrayField: Sized {
    /// The element type.
    type Elem: Element;
    /// The dimension type.
    type Dim: Dimension;
    /// The field's value holding `array`.
    fn from_array(array: Array<Self::Elem, Self::Dim>) -> Self;
}

impl<A: Element, D: Dimension> ArrayField for Array<A, D> {
    type Elem = A;
    type Dim = D;
    fn from_array(array: Array<A, D>) -> Self {
        array
    }
}

impl<A: Element, D: Dimension> ArrayField for ArcArray<A, D> {
    type Elem = A;
    type Dim = D;
    fn from_array(array: Array<A, D>) -> Self {
        array.into_shared()
    }
}

impl<A: Element, D: Dimension> ArrayField for CowArray<'_, A, D> {
    type Elem = A;
    type Dim = D;
    fn from_array(array: Array<A, D>) -> Self {
        CowArray::from(array)
    }
}

/// Copies a received segment out (into heap memory advised for huge pages)
/// and unmaps it at once (never cached: the sender wants it back).
fn from_segment<A: Element, D: Dimension>(r: SegmentRef) -> Result<Array<A, D>> {
    // Read-only is all a copy-out needs; the segment's seals are checked by
    // `oob::receive` for the mode asked.
    let slot = oob::receive(r)?;
    let layout = Layout::<D>::read::<A>(slot.segment().as_slice())?;
    let a = ShmArray::<A, D>::from_parts(slot, layout);
    a.try_to_owned()
}

/// A scratch buffer whose byte at `start` is 64-byte aligned, so typed views
/// of `.npy` data can be made in ordinary memory without `unsafe`.
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + 64];
        let start = buf.as_ptr().align_offset(64).min(64);
        Aligned { buf, start, len }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

fn inline_npy<A, S, D>(
    array: &ArrayBase<S, D>,
    layout: &Layout<D>,
    header: &[u8],
) -> Result<Aligned>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    let mut out = Aligned::new(layout.total_len());
    out.bytes_mut()[..header.len()].copy_from_slice(header);
    let range = layout.data_range();
    if crate::array::dense::<A>() {
        let data = cast_slice_mut::<A>(&layout.dtype, &mut out.bytes_mut()[range])?;
        ArrayViewMut::from_shape(layout.stride_shape(), data)?.assign(array);
    } else {
        // Records with padding: the codec's byte encoding, in memory order.
        let data = &mut out.bytes_mut()[range];
        match layout.order {
            MemOrder::C => encode_into(array.iter().copied(), data),
            MemOrder::F => encode_into(array.t().iter().copied(), data),
        };
    }
    Ok(out)
}

fn from_inline<A: Element, D: Dimension>(npy: &[u8]) -> Result<Array<A, D>> {
    let mut buf = Aligned::new(npy.len());
    buf.bytes_mut().copy_from_slice(npy);
    let layout = Layout::<D>::read::<A>(buf.bytes())?;
    let data = cast_slice::<A>(&layout.dtype, &buf.bytes()[layout.data_range()])?;
    Ok(ndarray::ArrayView::from_shape(layout.stride_shape(), data)?.to_owned())
}

/// A plain ndarray array as a bare task argument or result that travels via
/// shared memory (see the module docs); derefs to the array.
///
/// ```
/// use npshmex_ndarray::Shm;
/// let a = Shm(ndarray::arr1(&[1.0, 2.0]));
/// // Outside a pool it serializes inline, so it round-trips through any format.
/// let bytes = postcard::to_allocvec(&a)?;
/// let b: Shm<ndarray::Array1<f64>> = postcard::from_bytes(&bytes)?;
/// assert_eq!(a, b);
/// # Ok::<(), postcard::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Shm<T>(pub T);

impl<T> Shm<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Shm<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Shm<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<A, S, D> Serialize for Shm<ArrayBase<S, D>>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        serialize(&self.0, s)
    }
}

impl<'de, A: Element, D: Dimension> Deserialize<'de> for Shm<Array<A, D>> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        deserialize(d).map(Shm)
    }
}

/// An array argument, bare or in a field of one, that the caller lends
/// instead of giving up: it serializes from a borrowed view (the caller
/// keeps its array, no clone) and always deserializes as an owned array.
/// The drop-in path of npshmex, where the caller passes `x` and still has
/// it afterwards. As a field it needs no `#[serde(with)]` (see the module
/// docs, which also show `CowArray` fields).
///
/// ```
/// use npshmex_ndarray::via_shm::ShmArg;
/// fn add_one(x: ShmArg<'_, f64, ndarray::Ix1>) -> npshmex_ndarray::Shm<ndarray::Array1<f64>> {
///     npshmex_ndarray::Shm(x.into_owned() + 1.0)
/// }
/// let x = ndarray::arr1(&[1.0, 2.0]);
/// // pool.submit(add_one, ShmArg::from(&x)) in a program with a pool; here directly:
/// assert_eq!(add_one(ShmArg::from(&x)).0, ndarray::arr1(&[2.0, 3.0]));
/// ```
#[derive(Debug)]
pub enum ShmArg<'a, A, D: Dimension> {
    /// A view of the caller's array (the sending side).
    Borrowed(ArrayView<'a, A, D>),
    /// An owned array (the receiving side, or a caller that gives it up).
    Owned(Array<A, D>),
}

impl<'a, A: Element, D: Dimension> ShmArg<'a, A, D> {
    /// A view of the array.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        match self {
            ShmArg::Borrowed(v) => v.view(),
            ShmArg::Owned(a) => a.view(),
        }
    }

    /// The owned array (copied if this is a borrowed view).
    pub fn into_owned(self) -> Array<A, D> {
        match self {
            ShmArg::Borrowed(v) => crate::array::owned_copy(v),
            ShmArg::Owned(a) => a,
        }
    }
}

impl<'a, A, S, D> From<&'a ArrayBase<S, D>> for ShmArg<'a, A, D>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    fn from(a: &'a ArrayBase<S, D>) -> Self {
        ShmArg::Borrowed(a.view())
    }
}

impl<A: Element, D: Dimension> From<Array<A, D>> for ShmArg<'_, A, D> {
    fn from(a: Array<A, D>) -> Self {
        ShmArg::Owned(a)
    }
}

impl<A: Element, D: Dimension> Serialize for ShmArg<'_, A, D> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        match self {
            ShmArg::Borrowed(v) => serialize(v, s),
            ShmArg::Owned(a) => serialize(a, s),
        }
    }
}

impl<'de, A: Element, D: Dimension> Deserialize<'de> for ShmArg<'_, A, D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        deserialize(d).map(ShmArg::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::roundtrip;
    use ndarray::{arr1, Array1, Array2, Array3, Axis, Ix2, ShapeBuilder};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Job {
        #[serde(with = "crate::via_shm")]
        x: Array2<f64>,
        #[serde(with = "crate::via_shm")]
        y: Array1<i16>,
        label: String,
    }

    /// A struct that lends the caller's arrays (issue 16.6).
    #[derive(Serialize, Deserialize, Debug)]
    struct Lent<'a> {
        #[serde(with = "crate::via_shm")]
        x: ndarray::CowArray<'a, f64, Ix2>,
        #[serde(with = "crate::via_shm")]
        shared: ndarray::ArcArray<u16, ndarray::Ix1>,
        arg: ShmArg<'a, i32, ndarray::Ix1>,
        label: String,
    }

    #[test]
    fn a_lent_field_of_the_wrong_type_is_a_typed_error() {
        #[derive(Serialize, Deserialize, Debug)]
        struct Other {
            #[serde(with = "crate::via_shm")]
            x: ndarray::CowArray<'static, f32, Ix2>,
        }
        let x = Array2::<f64>::zeros((300, 100));
        let lent = Lent {
            x: ndarray::CowArray::from(&x),
            shared: Array1::zeros(1).into_shared(),
            arg: ShmArg::Owned(arr1(&[1])),
            label: String::new(),
        };
        let bytes = postcard::to_allocvec(&lent).unwrap();
        let (r, cause) =
            npshmex_shm::oob::with_received(Vec::new(), || postcard::from_bytes::<Other>(&bytes));
        assert!(r.is_err());
        assert!(cause.is_some_and(|c| matches!(
            c.downcast_ref::<NdarrayError>(),
            Some(NdarrayError::DTypeMismatch { .. })
        )));
    }

    #[test]
    fn small_arrays_go_inline_anywhere() {
        let job = Job {
            x: Array2::from_shape_fn((3, 2).f(), |(i, j)| (i * 2 + j) as f64),
            y: arr1(&[1, -2, 3]),
            label: "j".into(),
        };
        let bytes = postcard::to_allocvec(&job).unwrap();
        let back: Job = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, job);
        assert_eq!(back.x.strides(), job.x.strides(), "Fortran order kept");
        let (bytes, fds) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&job));
        assert!(fds.is_empty(), "small arrays need no segment");
        assert!(bytes.is_ok());
    }

    #[test]
    fn large_arrays_travel_by_segment_and_are_copied_out() {
        let x = Array2::from_shape_fn((300, 100), |(i, j)| (i * 100 + j) as f64);
        let job = Job {
            x: x.clone(),
            y: Array1::from_elem(40_000, 9),
            label: "big".into(),
        };
        let (bytes, fds) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&job));
        assert_eq!(fds.len(), 2);
        let bytes = bytes.unwrap();
        assert!(bytes.len() < 100);
        let (back, cause) =
            npshmex_shm::oob::with_received(fds.finish().unwrap().into_fds(), || {
                postcard::from_bytes::<Job>(&bytes)
            });
        assert!(cause.is_none());
        assert_eq!(back.unwrap(), job);
    }

    #[test]
    fn non_contiguous_views_serialize() {
        let a = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * 100 + j * 10 + k) as u32);
        let v = a.index_axis(Axis(1), 2);
        let bytes = postcard::to_allocvec(&Shm(v)).unwrap();
        let back: Shm<ndarray::Array<u32, Ix2>> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.0, v);
    }

    #[test]
    fn shm_newtype_and_typed_errors() {
        let a = Shm(Array1::from_shape_fn(20_000, |i| i as u64));
        let back = roundtrip(a.clone()).unwrap();
        assert_eq!(back, a);
        let bytes = postcard::to_allocvec(&a).unwrap();
        let (wrong, cause) = npshmex_shm::oob::with_received(Vec::new(), || {
            postcard::from_bytes::<Shm<Array1<i64>>>(&bytes)
        });
        assert!(wrong.is_err());
        assert!(cause.is_some_and(|c| matches!(
            c.downcast_ref::<NdarrayError>(),
            Some(NdarrayError::DTypeMismatch { .. })
        )));
        let mut corrupt = bytes.clone();
        let n = corrupt.len();
        corrupt[n / 2] ^= 0xff; // inside the data: still a valid array
        let _ = postcard::from_bytes::<Shm<Array1<u64>>>(&corrupt);
        corrupt[6] = b'X'; // inside the magic / header
        assert!(postcard::from_bytes::<Shm<Array1<u64>>>(&corrupt).is_err());
    }
}
