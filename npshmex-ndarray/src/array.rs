//! [`ShmArray`]: an n-dimensional array whose data lives in a shared-memory
//! segment laid out as a `.npy` file.
//!
//! The segment is owned through a reference-counted handle so that frozen
//! (read-only) arrays can be cloned for free; a writable array never shares
//! its handle (only while it is being sent, which `view_mut` refuses), and
//! its segment never hands out a writable fd, which is what makes `view_mut`
//! and `view` sound (see the safety model of `npshmex_shm`).

use crate::encode::encode_into;
use crate::error::{NdarrayError, Result};
use crate::layout::{order_of, Layout, MemOrder, MemoryOrderIndices};
use crate::transfer::Transfer;
use ndarray::{
    Array, ArrayBase, ArrayView, ArrayViewMut, Data, Dimension, Ix0, Ix1, Ix2, Ix3, Ix4, Ix5, Ix6,
    IxDyn, Order, ShapeArg, ShapeBuilder, Zip,
};
use npshmex_codec::{as_bytes, cast_slice, cast_slice_mut, extend_with_bytes, DType, Element};
use npshmex_shm::cache::{self, Origin, Slot};
use npshmex_shm::{Access, Seals, Segment};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// An n-dimensional array of `A` in shared memory, passed to and from pool
/// workers by file descriptor instead of by copy.
///
/// The segment is a valid `.npy` file (header, then the data at a 64-byte
/// aligned offset): numpy can open a named one with `np.load(path,
/// mmap_mode='r')`.
///
/// # Receive modes
/// How the receiver of a sent array may use it is chosen by the sender (see
/// [`Transfer`]):
/// - a writable array is *moved* ([`Transfer::Move`]): the pool consumes the
///   value, the receiver maps the segment read-write and owns it;
/// - a frozen array ([`ShmArray::into_read_only`]) is *shared read-only*:
///   the segment is sealed against writes, every clone and every receiver maps
///   it read-only, and [`ShmArray::view_mut`] returns
///   [`NdarrayError::ReadOnly`];
/// - [`ShmArray::share_copy_on_write`] makes a handle whose receiver maps the
///   segment `MAP_PRIVATE`: it may write, the sender never sees those writes,
///   only touched pages are copied.
///
/// ```
/// use npshmex_ndarray::ShmArray;
/// let mut a = ShmArray::<f64, _>::zeros((2, 3))?;
/// a.view_mut()?.fill(1.5);
/// assert_eq!(a.view().sum(), 9.0);
/// let frozen = a.into_read_only()?;
/// assert!(frozen.try_clone()?.view_mut().is_err());
/// assert_eq!(frozen.to_owned(), ndarray::Array2::from_elem((2, 3), 1.5));
/// # Ok::<(), npshmex_ndarray::NdarrayError>(())
/// ```
pub struct ShmArray<A, D> {
    pub(crate) slot: Arc<Slot>,
    pub(crate) layout: Layout<D>,
    pub(crate) transfer: Transfer,
    pub(crate) _elem: PhantomData<A>,
}

/// A 0-dimensional [`ShmArray`].
pub type ShmArray0<A> = ShmArray<A, Ix0>;
/// A 1-dimensional [`ShmArray`].
pub type ShmArray1<A> = ShmArray<A, Ix1>;
/// A 2-dimensional [`ShmArray`].
pub type ShmArray2<A> = ShmArray<A, Ix2>;
/// A 3-dimensional [`ShmArray`].
pub type ShmArray3<A> = ShmArray<A, Ix3>;
/// A 4-dimensional [`ShmArray`].
pub type ShmArray4<A> = ShmArray<A, Ix4>;
/// A 5-dimensional [`ShmArray`].
pub type ShmArray5<A> = ShmArray<A, Ix5>;
/// A 6-dimensional [`ShmArray`].
pub type ShmArray6<A> = ShmArray<A, Ix6>;
/// A dynamic-dimensional [`ShmArray`].
pub type ShmArrayD<A> = ShmArray<A, IxDyn>;

fn mem_order(order: Option<Order>) -> MemOrder {
    match order {
        Some(Order::ColumnMajor) => MemOrder::F,
        _ => MemOrder::C,
    }
}

impl<A: Element, D: Dimension> ShmArray<A, D> {
    /// Allocates a segment for an array of `dim` in `order` and writes its
    /// header; also returns how many bytes from the segment's start may
    /// hold old values (0 for a new segment; a reused one is zero past what
    /// its earlier users wrote).
    fn alloc(dim: D, order: MemOrder) -> Result<(Self, usize)> {
        let (layout, header) = Layout::new::<A>(dim, order)?;
        let mut slot = cache::alloc(layout.total_len())?;
        let dirty = slot.dirty_len();
        // Writes stay within the header and the data (here and through the
        // array's views): a reuse of the segment then clears no more.
        let bytes = slot.prefix_mut(layout.total_len())?;
        bytes[..header.len()].copy_from_slice(&header);
        let old = &mut bytes[layout.data_before(dirty)];
        if A::validate(old).is_err() {
            // Old bytes of a reused segment that are no valid `A` (bool):
            // typed views refuse them, so start from zeros.
            old.fill(0);
        }
        Ok((ShmArray::from_parts(slot, layout), dirty))
    }

    pub(crate) fn from_parts(slot: Slot, layout: Layout<D>) -> Self {
        let transfer = match slot.segment().access() {
            Access::ReadOnly => Transfer::ReadOnly,
            Access::ReadWrite | Access::CopyOnWrite => Transfer::Move,
        };
        ShmArray {
            slot: Arc::new(slot),
            layout,
            transfer,
            _elem: PhantomData,
        }
    }

    /// A new array of zeros (all bytes zero) in shared memory. `shape` is
    /// anything ndarray takes as a shape, optionally with an order:
    /// `zeros((3, 4))`, `zeros(((3, 4), Order::ColumnMajor))`.
    ///
    /// A fresh segment is zero already and is not written (its pages are only
    /// touched when used); a reused one is cleared as far as it was written.
    ///
    /// # Errors
    /// [`NdarrayError::Shm`] when the segment cannot be created (no space),
    /// [`NdarrayError::SizeOverflow`] for a shape too large to address.
    pub fn zeros<Sh: ShapeArg<Dim = D>>(shape: Sh) -> Result<Self> {
        let (dim, order) = shape.into_shape_and_order();
        let (mut a, dirty) = Self::alloc(dim, mem_order(order))?;
        // Past what earlier users of a reused segment wrote it is zero.
        let old = a.layout.data_before(dirty);
        if !old.is_empty() {
            a.bytes_mut()?[old].fill(0);
        }
        Ok(a)
    }

    /// A new array in shared memory whose every element is `elem`.
    ///
    /// # Errors
    /// As [`ShmArray::zeros`].
    pub fn from_elem<Sh: ShapeArg<Dim = D>>(shape: Sh, elem: A) -> Result<Self> {
        let (dim, order) = shape.into_shape_and_order();
        let (mut a, _) = Self::alloc(dim, mem_order(order))?;
        if dense::<A>() {
            a.view_mut()?.fill(elem);
        } else {
            let n = a.len();
            a.write_memory_order(std::iter::repeat_n(elem, n))?;
        }
        Ok(a)
    }

    /// A new array in shared memory whose element at each index is `f(index)`
    /// (the index as a tuple for fixed dimensions, as ndarray's
    /// `Array::from_shape_fn`). As ndarray does, `f` is called in memory
    /// order: the last axis fastest, the first for Fortran order.
    ///
    /// Works for every element type, records with padding bytes included:
    /// those are encoded as numpy stores them (padding zeroed), a bounded
    /// chunk at a time, straight into the segment.
    ///
    /// ```
    /// use ndarray::Order;
    /// use npshmex_ndarray::ShmArray2;
    /// let mut calls = Vec::new();
    /// let f = ShmArray2::<u32>::from_shape_fn(((2, 3), Order::ColumnMajor), |(i, j)| {
    ///     calls.push((i, j));
    ///     (i * 10 + j) as u32
    /// })?;
    /// assert_eq!(f.view(), ndarray::arr2(&[[0, 1, 2], [10, 11, 12]]));
    /// assert!(f.is_fortran_order());
    /// assert_eq!(calls[..3], [(0, 0), (1, 0), (0, 1)]);
    /// # Ok::<(), npshmex_ndarray::NdarrayError>(())
    /// ```
    ///
    /// # Errors
    /// As [`ShmArray::zeros`].
    pub fn from_shape_fn<Sh, F>(shape: Sh, mut f: F) -> Result<Self>
    where
        Sh: ShapeArg<Dim = D>,
        F: FnMut(D::Pattern) -> A,
    {
        let (dim, order) = shape.into_shape_and_order();
        let (mut a, _) = Self::alloc(dim, mem_order(order))?;
        let indices = MemoryOrderIndices::new(a.raw_dim(), a.layout.order);
        a.write_memory_order(indices.map(|i| f(i.into_pattern())))?;
        Ok(a)
    }

    /// Copies any ndarray array or view into a new shared-memory array,
    /// keeping its order when it is contiguous in C or Fortran order
    /// (non-contiguous views are copied into C order).
    ///
    /// # Errors
    /// As [`ShmArray::zeros`].
    pub fn from_array<S: Data<Elem = A>>(array: &ArrayBase<S, D>) -> Result<Self> {
        let (mut a, _) = Self::alloc(array.raw_dim(), order_of(array))?;
        a.write_from(array)?;
        Ok(a)
    }

    /// Writes `src` (of this array's shape) into the data. Typed views
    /// cannot write records with padding bytes, so those go through the
    /// codec's byte encoding (padding zeroed, as numpy stores it).
    pub(crate) fn write_from<S: Data<Elem = A>>(&mut self, src: &ArrayBase<S, D>) -> Result<()> {
        if dense::<A>() {
            // The same memory order on both sides: one flat copy (on
            // several threads when large, see `npshmex_shm::copy`).
            let order = self.layout.order;
            if let Some(bytes) = memory_order_slice(src, order).and_then(|v| as_bytes(v).ok()) {
                let dst = self.data_bytes_mut()?;
                if dst.len() == bytes.len() {
                    npshmex_shm::copy::copy(dst, bytes);
                    return Ok(());
                }
            }
            self.view_mut()?.assign(src);
            return Ok(());
        }
        // Elements in this array's memory order: the C order of the array,
        // or of its transpose for Fortran order.
        match self.layout.order {
            MemOrder::C => self.write_memory_order(src.iter().copied()),
            MemOrder::F => self.write_memory_order(src.t().iter().copied()),
        }
    }

    /// Writes `values` (one per element, in memory order) into the data:
    /// through a typed view for dense types, encoded chunk by chunk for
    /// records with padding (see `crate::encode`).
    pub(crate) fn write_memory_order(&mut self, values: impl IntoIterator<Item = A>) -> Result<()> {
        let expected = self.len();
        let dtype = self.layout.dtype.clone();
        let data = self.data_bytes_mut()?;
        let written = if dense::<A>() {
            let slice = cast_slice_mut::<A>(&dtype, data)?;
            let mut n = 0;
            for (dst, v) in slice.iter_mut().zip(values) {
                *dst = v;
                n += 1;
            }
            n
        } else {
            encode_into(values, data)
        };
        // Callers pass exactly one value per element.
        debug_assert_eq!(written, expected);
        Ok(())
    }

    /// The data bytes, for writing.
    pub(crate) fn data_bytes_mut(&mut self) -> Result<&mut [u8]> {
        let range = self.layout.data_range();
        Ok(&mut self.bytes_mut()?[range])
    }

    /// A new shared-memory array of `f` applied to every element of this
    /// one, in the same shape and order (ndarray's `map`, allocated in shm:
    /// what a worker uses to build a result that is sent back without copy).
    ///
    /// # Errors
    /// As [`ShmArray::zeros`].
    pub fn map<B: Element, F: FnMut(&A) -> B>(&self, f: F) -> Result<ShmArray<B, D>> {
        map_into(&self.view(), f)
    }

    /// A read-only view of the data.
    ///
    /// # Panics
    /// Only if another process broke the transfer protocol by writing an
    /// invalid value (a `bool` byte other than 0 or 1) into a segment it
    /// gave away after this array was validated; [`ShmArray::try_view`]
    /// reports that as an error instead. Element types without invalid bit
    /// patterns (all numbers) never panic here.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        // Invariant: `layout` was validated against this segment and `A` when
        // the array was made (dtype, length, alignment of the page-aligned
        // mapping plus a multiple-of-alignment offset, valid values), and
        // neither the mapping nor the layout changes afterwards.
        self.try_view()
            .expect("array data validated when the array was made")
    }

    /// A read-only view of the data, re-validating the values of element
    /// types that have invalid bit patterns (`bool`).
    ///
    /// # Errors
    /// [`NdarrayError::Codec`] (`InvalidBool`) if the data holds invalid values.
    pub fn try_view(&self) -> Result<ArrayView<'_, A, D>> {
        let bytes = &self.slot.segment().as_slice()[self.layout.data_range()];
        let slice = cast_slice::<A>(&self.layout.dtype, bytes)?;
        Ok(ArrayView::from_shape(self.layout.stride_shape(), slice)?)
    }

    /// A mutable view of the data.
    ///
    /// Records with padding bytes (a `u8` field followed by an `f64`, the
    /// layout `#[repr(C)]` and numpy's `align=True` give) have no mutable
    /// view: through a `&mut` record safe code could store a value whose
    /// padding bytes are uninitialised into shared memory that numpy and
    /// other processes read as bytes. Change them in place with
    /// [`ShmArray::set`], [`ShmArray::map_inplace`] or
    /// [`ShmArray::indexed_map_inplace`], which write through the codec's
    /// byte encoding with the padding zeroed, as numpy stores it (and work
    /// for every element type):
    ///
    /// ```
    /// use npshmex_ndarray::{record, NdarrayError, ShmArray1};
    /// record! {
    ///     #[repr(C)]
    ///     #[derive(Clone, Copy, Debug, PartialEq)]
    ///     struct Hit { id: i64, flag: u8 } // 7 bytes of padding
    /// }
    /// let mut hits = ShmArray1::from_shape_fn(3, |i| Hit { id: i as i64, flag: 0 })?;
    /// assert!(matches!(hits.view_mut(), Err(NdarrayError::Codec(_))));
    /// hits.map_inplace(|h| h.flag = (h.id % 2) as u8)?;
    /// hits.set(0, Hit { id: -1, flag: 9 })?;
    /// assert_eq!(hits.view()[1], Hit { id: 1, flag: 1 });
    /// assert_eq!(hits.view()[0], Hit { id: -1, flag: 9 });
    /// # Ok::<(), npshmex_ndarray::NdarrayError>(())
    /// ```
    ///
    /// # Errors
    /// [`NdarrayError::ReadOnly`] for a frozen array, one received in shared
    /// read-only mode, or a copy-on-write share handle;
    /// [`NdarrayError::Codec`] (`Padding`) for record types with padding
    /// bytes, which cannot be written through a typed view.
    pub fn view_mut(&mut self) -> Result<ArrayViewMut<'_, A, D>> {
        let shape = self.layout.stride_shape();
        let dtype = self.layout.dtype.clone();
        let slice = cast_slice_mut::<A>(&dtype, self.data_bytes_mut()?)?;
        Ok(ArrayViewMut::from_shape(shape, slice)?)
    }

    /// The header and data bytes, for writing.
    fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        if self.slot.segment().access() == Access::ReadOnly {
            return Err(NdarrayError::ReadOnly);
        }
        // A writable handle is never shared (only read-only ones are cloned),
        // so this is `Some` whenever the mapping is writable, except while a
        // serialization of this very array is being sent.
        let slot = Arc::get_mut(&mut self.slot).ok_or(NdarrayError::ReadOnly)?;
        Ok(slot.prefix_mut(self.layout.total_len())?)
    }

    /// Copies the data out into an ordinary owned ndarray array (same order).
    /// A large array is copied into heap memory advised for huge pages (see
    /// [`npshmex_shm::hugepage`]).
    pub fn to_owned(&self) -> Array<A, D> {
        owned_copy(self.view())
    }

    /// [`ShmArray::to_owned`] that re-validates the values first (see
    /// [`ShmArray::try_view`]): for segments received from another process.
    pub(crate) fn try_to_owned(&self) -> Result<Array<A, D>> {
        Ok(owned_copy(self.try_view()?))
    }

    /// Copies the data out into an ordinary owned ndarray array and releases
    /// the segment.
    pub fn into_array(self) -> Array<A, D> {
        self.to_owned()
    }

    /// Freezes the array: the segment is sealed against writes (by anyone,
    /// in any process) and mapped read-only. The result is sent in shared
    /// read-only mode and [`ShmArray::try_clone`] shares it for free.
    ///
    /// When another process still maps the segment writable (a sender that
    /// keeps segments in its cache, or a peer sharing it) the kernel refuses
    /// the seal; the data is then copied into a new segment that is frozen.
    ///
    /// # Errors
    /// [`NdarrayError::NamedNotSealable`] for an array in a named segment
    /// (a popped key), [`NdarrayError::Shm`] if sealing fails.
    pub fn into_read_only(self) -> Result<Self> {
        let seg = self.slot.segment();
        if seg.access() == Access::ReadOnly && seg.seals()?.contains(Seals::WRITE) {
            let mut a = self;
            a.transfer = Transfer::ReadOnly;
            return Ok(a);
        }
        if seg.access() != Access::ReadWrite || !seg.is_exclusive() {
            // A private (copy-on-write) mapping, whose writes live only
            // here, a segment an `unsafe` constructor vouched for, or a
            // read-only one that is not sealed: freeze a copy.
            return self.deep_copy()?.into_read_only();
        }
        let ShmArray { slot, layout, .. } = self;
        let slot = match Arc::try_unwrap(slot) {
            Ok(slot) => slot,
            // Only read-only handles are shared, and those returned above.
            Err(_) => return Err(NdarrayError::ReadOnly),
        };
        // Sealing fails while another writable mapping exists (a peer, or a
        // worker's cache keeping a segment that circulates): then the data
        // is frozen in a copy.
        let slot = slot.freeze(layout.total_len())?;
        let mut a = ShmArray::from_parts(slot, layout);
        a.transfer = Transfer::ReadOnly;
        Ok(a)
    }

    /// A handle sent in copy-on-write mode: a snapshot of the data now,
    /// which its receiver maps privately (`MAP_PRIVATE`): it may write, and
    /// nobody else ever sees those writes. The handle itself is read-only.
    ///
    /// The snapshot is a write-sealed segment, so later writes to this
    /// array never reach it. A frozen array ([`ShmArray::into_read_only`])
    /// is its own snapshot and is shared for free; a writable one is copied
    /// once here (freeze it first to avoid the copy).
    ///
    /// # Errors
    /// [`NdarrayError::Shm`] when the snapshot cannot be made (no space).
    pub fn share_copy_on_write(&self) -> Result<Self> {
        let seg = self.slot.segment();
        let slot = if seg.access() == Access::ReadOnly && seg.seals()?.contains(Seals::WRITE) {
            Arc::clone(&self.slot)
        } else {
            let n = self.layout.total_len();
            Arc::new(self.slot.copy_to_new(n)?.freeze(n)?)
        };
        Ok(ShmArray {
            slot,
            layout: self.layout.clone(),
            transfer: Transfer::CopyOnWrite,
            _elem: PhantomData,
        })
    }

    /// A second handle: free for a read-only array (both map the same sealed
    /// segment), a deep copy into a new segment otherwise.
    ///
    /// # Errors
    /// As [`ShmArray::zeros`] when a copy is made.
    pub fn try_clone(&self) -> Result<Self> {
        if self.slot.segment().access() == Access::ReadOnly {
            return Ok(ShmArray {
                slot: Arc::clone(&self.slot),
                layout: self.layout.clone(),
                transfer: self.transfer,
                _elem: PhantomData,
            });
        }
        self.deep_copy()
    }

    /// A copy of the whole `.npy` content in a new writable segment.
    pub(crate) fn deep_copy(&self) -> Result<Self> {
        let slot = self.slot.copy_to_new(self.layout.total_len())?;
        Ok(ShmArray::from_parts(slot, self.layout.clone()))
    }

    /// How a receiver of this array gets it when it is sent.
    pub fn transfer(&self) -> Transfer {
        self.transfer
    }

    /// How this handle maps its segment: read-write (owned or moved here),
    /// read-only (frozen or received shared read-only) or copy-on-write
    /// (received in that mode: writes are private to this process).
    pub fn access(&self) -> Access {
        self.slot.segment().access()
    }

    /// Whether this handle can be written through.
    pub fn is_writable(&self) -> bool {
        self.slot.segment().access() != Access::ReadOnly
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.layout.dim.slice_as()
    }

    /// The shape as ndarray's dimension type.
    pub fn raw_dim(&self) -> D {
        self.layout.dim.clone()
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.layout.dim.ndim()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.layout.dim.size()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The numpy dtype of the elements.
    pub fn dtype(&self) -> &DType {
        &self.layout.dtype
    }

    /// Whether the data is in Fortran (column-major) order.
    pub fn is_fortran_order(&self) -> bool {
        self.layout.order == MemOrder::F
    }

    /// The segment: its bytes are the `.npy` file. Its safe operations
    /// cannot alias this array's views: it hands out no fd while the array
    /// owns it exclusively, and maps itself again only once frozen.
    pub fn segment(&self) -> &Segment {
        self.slot.segment()
    }

    /// The `.npy` bytes (header and data) of the array.
    pub fn as_npy_bytes(&self) -> &[u8] {
        &self.slot.segment().as_slice()[..self.layout.total_len()]
    }

    /// Whether the segment was allocated by this process (for tests of the
    /// transfer protocol).
    #[doc(hidden)]
    pub fn is_own_segment(&self) -> bool {
        self.slot.origin() == Origin::Own
    }
}

/// Allocates an array of `f` over `src` in shm, in `src`'s memory order.
pub(crate) fn map_into<A, B, S, D, F>(src: &ArrayBase<S, D>, mut f: F) -> Result<ShmArray<B, D>>
where
    A: Element,
    B: Element,
    S: Data<Elem = A>,
    D: Dimension,
    F: FnMut(&A) -> B,
{
    let (mut out, _) = ShmArray::<B, D>::alloc(src.raw_dim(), order_of(src))?;
    if dense::<B>() {
        Zip::from(&mut out.view_mut()?)
            .and(src)
            .for_each(|o, x| *o = f(x));
    } else {
        match out.layout.order {
            MemOrder::C => out.write_memory_order(src.iter().map(f))?,
            MemOrder::F => out.write_memory_order(src.t().iter().map(f))?,
        }
    }
    Ok(out)
}

/// An owned copy of `view` in the same memory order. When the view is
/// contiguous in C or Fortran order (a segment's data always is) it is one
/// copy into a buffer advised for huge pages before its first touch: into
/// fresh 4 KiB pages the copy costs several times a `memcpy` in page faults.
pub(crate) fn owned_copy<A: Element, D: Dimension>(view: ArrayView<'_, A, D>) -> Array<A, D> {
    let fortran = !view.is_standard_layout() && view.t().is_standard_layout();
    let order = if fortran { MemOrder::F } else { MemOrder::C };
    let Some(data) = memory_order_slice(&view, order) else {
        // Not contiguous, or contiguous in some other axis order: ndarray
        // keeps its strides.
        return view.to_owned();
    };
    let mut buf = npshmex_shm::hugepage::vec_with_capacity(data.len());
    // Dense elements are copied as bytes, on several threads when large;
    // records with padding (no byte view) one by one. Nothing is appended
    // when the byte copy is refused.
    let by_bytes = as_bytes(data).is_ok_and(|bytes| {
        extend_with_bytes(&mut buf, data.len(), |spare| {
            npshmex_shm::copy::copy_to_uninit(spare, bytes)
        })
        .is_ok()
    });
    if !by_bytes {
        buf.extend_from_slice(data);
    }
    match Array::from_shape_vec(view.raw_dim().set_f(fortran), buf) {
        Ok(a) => a,
        // Unreachable: the buffer holds exactly the view's elements in the
        // memory order of that shape.
        Err(_) => view.to_owned(),
    }
}

/// The elements of `src` as one slice in `order`, if they lie in memory
/// that way (C order: row-major; F order: column-major).
fn memory_order_slice<A, S, D>(src: &ArrayBase<S, D>, order: MemOrder) -> Option<&[A]>
where
    S: Data<Elem = A>,
    D: Dimension,
{
    let in_order = match order {
        MemOrder::C => src.is_standard_layout(),
        MemOrder::F => src.t().is_standard_layout(),
    };
    if in_order {
        src.as_slice_memory_order()
    } else {
        None
    }
}

/// Whether `A` has no padding bytes, so typed views can write it.
pub(crate) fn dense<A: Element>() -> bool {
    A::dtype().is_dense()
}

/// Shape as a slice for any dimension type (ndarray only exposes it through
/// `Dimension::as_array_view` or hidden methods).
trait DimSlice {
    fn slice_as(&self) -> &[usize];
}

impl<D: Dimension> DimSlice for D {
    fn slice_as(&self) -> &[usize] {
        // `as_array_view` of a dimension is a contiguous 1-D view of its
        // axis lengths.
        self.as_array_view()
            .to_slice()
            .expect("dimension views are contiguous")
    }
}

impl<A: Element + fmt::Debug, D: Dimension> fmt::Debug for ShmArray<A, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmArray")
            .field("dtype", &self.layout.dtype.to_descr())
            .field("shape", &self.shape())
            .field("transfer", &self.transfer)
            .field("data", &self.view())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, Array, Array1, Array2, Array3, Axis, IxDyn, ShapeBuilder, Slice};

    #[test]
    fn zeros_are_zero_and_keep_order() {
        let a = ShmArray::<f64, _>::zeros((3, 4)).unwrap();
        assert_eq!(a.shape(), &[3, 4]);
        assert_eq!(a.len(), 12);
        assert!(!a.is_fortran_order());
        assert!(a.view().iter().all(|&x| x == 0.0));
        let f = ShmArray::<i32, _>::zeros(((3, 4), Order::ColumnMajor)).unwrap();
        assert!(f.is_fortran_order());
        assert_eq!(f.view().strides(), &[1, 3]);
        let empty = ShmArray::<u8, _>::zeros((0, 5)).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.view().shape(), &[0, 5]);
        let scalar = ShmArray::<u16, _>::zeros(()).unwrap();
        assert_eq!(scalar.len(), 1);
        assert_eq!(scalar.view()[()], 0);
    }

    #[test]
    fn zeros_in_reused_segments_are_zero_whatever_was_written_before() {
        // Every size from one element to a full 32 KiB class, after arrays
        // of every other size filled the same size classes with ones (some
        // through views, some through their constructor), in both orders:
        // whichever reused segment comes back, its data reads all zeros.
        let lens = [1usize, 7, 100, 500, 511, 1000, 2000, 4000];
        for &dirty in &lens {
            let mut kept = Vec::new();
            for _ in 0..4 {
                let mut a = ShmArray::<f64, _>::from_elem(dirty, 1.0).unwrap();
                a.view_mut().unwrap().fill(-1.0);
                kept.push(a);
            }
            drop(kept);
            for &len in &lens {
                let z = ShmArray::<f64, _>::zeros(len).unwrap();
                assert!(z.view().iter().all(|&x| x == 0.0), "{len} after {dirty}");
                let seg = z.slot.segment().as_slice();
                assert!(seg[z.layout.data_range()].iter().all(|&b| b == 0));
                let b = ShmArray::<bool, _>::zeros(len).unwrap();
                assert!(b.view().iter().all(|&x| !x));
            }
        }
    }

    #[test]
    fn segment_is_a_npy_file() {
        let a = ShmArray::<f64, _>::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f64).unwrap();
        let (header, offset) = npshmex_codec::NpyHeader::read(a.as_npy_bytes()).unwrap();
        assert_eq!(header.shape, vec![2, 3]);
        assert_eq!(offset % 64, 0);
        assert_eq!(a.as_npy_bytes().len(), offset + 6 * 8);
        assert_eq!(a.to_owned(), arr2(&[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]));
    }

    #[test]
    fn from_array_keeps_c_and_fortran_and_copies_views() {
        let c: Array3<u32> =
            Array::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as u32);
        let sc = ShmArray::from_array(&c).unwrap();
        assert!(!sc.is_fortran_order());
        assert_eq!(sc.view(), c.view());

        let t = c.t(); // a Fortran-contiguous view of shape (4, 3, 2)
        let st = ShmArray::from_array(&t).unwrap();
        assert!(st.is_fortran_order());
        assert_eq!(st.view(), t);

        let view = c
            .slice_axis(Axis(1), Slice::new(0, None, 2))
            .slice_axis_move(Axis(2), Slice::from(1..));
        let sv = ShmArray::from_array(&view).unwrap();
        assert!(!sv.is_fortran_order());
        assert_eq!(sv.view(), view);
        assert_eq!(sv.into_array(), view.to_owned());
    }

    #[test]
    fn fortran_input_stays_fortran() {
        let f: Array2<f32> = Array::from_shape_fn((3, 5).f(), |(i, j)| (i * 5 + j) as f32);
        let s = ShmArray::from_array(&f).unwrap();
        assert!(s.is_fortran_order());
        let out = s.to_owned();
        assert_eq!(out, f);
        assert_eq!(out.strides(), f.strides());
    }

    #[test]
    fn large_copies_out_keep_order_values_and_strides() {
        // Past the huge-page threshold (4 MiB), C and Fortran order.
        let c: Array2<f64> = Array::from_shape_fn((700, 1000), |(i, j)| (i * 1000 + j) as f64);
        let f: Array2<f64> = Array::from_shape_fn((700, 1000).f(), |(i, j)| (i * 1000 + j) as f64);
        for src in [c, f] {
            let s = ShmArray::from_array(&src).unwrap();
            let out = s.to_owned();
            assert_eq!(out, src);
            assert_eq!(out.strides(), src.strides());
            let checked = s.try_to_owned().unwrap();
            assert_eq!(checked.strides(), src.strides());
            assert_eq!(checked, src);
        }
        // Views that are not C or F contiguous still copy right.
        let a = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * 100 + j * 10 + k) as u32);
        let permuted = a.view().permuted_axes([1, 0, 2]);
        assert_eq!(owned_copy(permuted), permuted);
        let strided = a.slice_axis(Axis(2), Slice::new(0, None, 2));
        assert_eq!(owned_copy(strided), strided);
        let empty = Array2::<u8>::zeros((0, 3));
        assert_eq!(owned_copy(empty.view()).shape(), &[0, 3]);
    }

    #[test]
    fn copies_split_across_threads_are_exact_in_every_layout() {
        // Past `npshmex_shm::copy::PARALLEL_FROM`: both the copy in and
        // the copy out run on several threads where the machine has them.
        let (rows, cols) = (1300, 2000);
        assert!(rows * cols * 8 >= npshmex_shm::copy::PARALLEL_FROM);
        let c: Array2<f64> = Array::from_shape_fn((rows, cols), |(i, j)| (i * cols + j) as f64);
        let f: Array2<f64> = Array::from_shape_fn((rows, cols).f(), |(i, j)| (i * cols + j) as f64);
        let wide: Array2<f64> =
            Array::from_shape_fn((rows, 2 * cols), |(i, j)| (i * cols + j / 2) as f64);
        let strided = wide.slice_axis(Axis(1), Slice::new(0, None, 2));
        let mut reversed = c.clone();
        reversed.invert_axis(Axis(0));
        for (name, src) in [
            ("C", c.view()),
            ("F", f.view()),
            ("strided", strided.view()),
            ("reversed", reversed.view()),
        ] {
            let s = ShmArray::from_array(&src).unwrap();
            assert_eq!(s.view(), src, "{name}: copy in");
            let out = s.try_to_owned().unwrap();
            assert_eq!(out, src, "{name}: copy out");
        }
        let bools = Array1::from_shape_fn(20 << 20, |i| i % 3 == 0);
        let s = ShmArray::from_array(&bools).unwrap();
        assert_eq!(s.try_to_owned().unwrap(), bools);
    }

    #[test]
    fn read_only_refuses_writes_and_clones_for_free() {
        let mut a = ShmArray::<i64, _>::from_elem(5, 7).unwrap();
        a.view_mut().unwrap()[2] = 9;
        let ro = a.into_read_only().unwrap();
        assert_eq!(ro.transfer(), Transfer::ReadOnly);
        assert!(!ro.is_writable());
        let mut clone = ro.try_clone().unwrap();
        assert!(matches!(clone.view_mut(), Err(NdarrayError::ReadOnly)));
        assert_eq!(clone.view(), ndarray::arr1(&[7, 7, 9, 7, 7]));
        assert!(Arc::ptr_eq(&clone.slot, &ro.slot));
        let seals = ro.segment().seals().unwrap();
        assert!(seals.contains(npshmex_shm::Seals::WRITE));
    }

    #[test]
    fn try_clone_of_writable_is_deep() {
        let mut a = ShmArray::<u8, _>::from_elem(4, 1).unwrap();
        let b = a.try_clone().unwrap();
        a.view_mut().unwrap().fill(2);
        assert_eq!(b.view(), ndarray::arr1(&[1u8, 1, 1, 1]));
    }

    #[test]
    fn map_allocates_in_shm_in_same_order() {
        let f: Array2<f64> = Array::from_shape_fn((2, 3).f(), |(i, j)| (i + j) as f64);
        let a = ShmArray::from_array(&f).unwrap();
        let b = a.map(|x| (x * 2.0) as i16).unwrap();
        assert!(b.is_fortran_order());
        assert_eq!(b.to_owned(), f.mapv(|x| (x * 2.0) as i16));
    }

    #[test]
    fn dynamic_dimension_and_debug() {
        let a = ShmArray::<bool, IxDyn>::from_elem(IxDyn(&[2, 1, 2]), true).unwrap();
        assert_eq!(a.ndim(), 3);
        let dbg = format!("{a:?}");
        assert!(dbg.contains("|b1"), "{dbg}");
    }

    #[test]
    fn padded_records_have_no_mutable_view_but_are_set() {
        crate::record! {
            #[repr(C)]
            #[derive(Clone, Copy, Debug, PartialEq)]
            struct Padded { a: u8, b: f64 }
        }
        let mut z = ShmArray::<Padded, _>::zeros(3).unwrap();
        assert_eq!(z.view()[1], Padded { a: 0, b: 0.0 });
        assert!(matches!(
            z.view_mut(),
            Err(NdarrayError::Codec(
                npshmex_codec::CodecError::Padding { .. }
            ))
        ));
        z.set(1, Padded { a: 1, b: 2.0 }).unwrap();
        assert_eq!(z.view()[1], Padded { a: 1, b: 2.0 });
        let f = ShmArray::<Padded, _>::from_shape_fn(2, |i| Padded { a: i as u8, b: 0.5 }).unwrap();
        assert_eq!(f.view()[1], Padded { a: 1, b: 0.5 });
    }
}
