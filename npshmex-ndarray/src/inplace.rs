//! In-place writes that work for every element type, records with padding
//! bytes included: [`ShmArray::set`], [`ShmArray::map_inplace`] and
//! [`ShmArray::indexed_map_inplace`].
//!
//! [`ShmArray::view_mut`] refuses padded records: through a typed `&mut`
//! view safe code could store a value whose padding bytes are
//! uninitialised into a segment that numpy and other processes read as
//! bytes. These methods never hand out a reference into the segment: the
//! closure gets a copy of the element, and what it leaves there is written
//! back through the codec's byte encoding (field bytes from the value,
//! padding zero, as numpy stores it), a bounded chunk at a time. Dense
//! types take the typed view directly, so generic code can use these
//! methods for any element type at no cost. Rejected alternative: a guard
//! (`RefMut`-like) that writes a record back when dropped, which a
//! `mem::forget` turns into a silently lost write.

use crate::array::{dense, ShmArray};
use crate::encode::update_encoded;
use crate::error::{NdarrayError, Result};
use crate::layout::{MemOrder, MemoryOrderIndices};
use ndarray::{ArrayView, Dimension, NdIndex, ShapeBuilder};
use npshmex_codec::{cast_slice_mut, to_bytes, Element};

impl<A: Element, D: Dimension> ShmArray<A, D> {
    /// Stores `value` at `index` (any ndarray index: `[i, j]`, `(i, j)`,
    /// `i` for one axis). Records with padding bytes are stored as numpy
    /// stores them, with the padding zeroed, which is why this works where
    /// [`ShmArray::view_mut`] refuses. Each call encodes one record (a few
    /// microseconds for a record type); to change many, use
    /// [`ShmArray::indexed_map_inplace`], which encodes a chunk at a time.
    ///
    /// ```
    /// use npshmex_ndarray::{record, ShmArray1};
    /// record! {
    ///     #[repr(C)]
    ///     #[derive(Clone, Copy, Debug, PartialEq)]
    ///     struct Hit { id: i64, flag: u8 } // 7 bytes of padding
    /// }
    /// let mut hits = ShmArray1::<Hit>::zeros(3)?;
    /// hits.set(1, Hit { id: 7, flag: 1 })?;
    /// assert_eq!(hits.view()[1], Hit { id: 7, flag: 1 });
    /// assert!(hits.set(3, Hit { id: 0, flag: 0 }).is_err());
    /// # Ok::<(), npshmex_ndarray::NdarrayError>(())
    /// ```
    ///
    /// # Errors
    /// [`NdarrayError::OutOfBounds`] for an index outside the shape;
    /// [`NdarrayError::ReadOnly`] as [`ShmArray::view_mut`].
    pub fn set<I: NdIndex<D> + Clone>(&mut self, index: I, value: A) -> Result<()> {
        let size = std::mem::size_of::<A>();
        let Some(offset) = self.byte_offset(index.clone()) else {
            return Err(NdarrayError::OutOfBounds {
                index: format!("{index:?}"),
                shape: self.shape().to_vec(),
            });
        };
        let dtype = self.layout.dtype.clone();
        let bytes = &mut self.data_bytes_mut()?[offset..offset + size];
        if dense::<A>() {
            cast_slice_mut::<A>(&dtype, bytes)?[0] = value;
        } else {
            bytes.copy_from_slice(&to_bytes(std::slice::from_ref(&value)));
        }
        Ok(())
    }

    /// Changes every element in place with `f`, in memory order (ndarray's
    /// `map_inplace`, for every element type). For records with padding
    /// bytes `f` gets a copy of each element, written back with the
    /// padding zeroed, as numpy stores it.
    ///
    /// ```
    /// use npshmex_ndarray::{record, FixedBytes, ShmArray1};
    /// record! {
    ///     #[repr(C)]
    ///     #[derive(Clone, Copy, Debug, PartialEq)]
    ///     struct Row { x: f64, name: FixedBytes<5> } // 3 bytes of padding
    /// }
    /// let mut rows = ShmArray1::from_shape_fn(4, |i| Row { x: i as f64, name: FixedBytes(*b"row  ") })?;
    /// rows.map_inplace(|r| r.x *= 10.0)?;
    /// assert_eq!(rows.view()[3].x, 30.0);
    /// # Ok::<(), npshmex_ndarray::NdarrayError>(())
    /// ```
    ///
    /// # Errors
    /// [`NdarrayError::ReadOnly`] as [`ShmArray::view_mut`].
    pub fn map_inplace<F: FnMut(&mut A)>(&mut self, mut f: F) -> Result<()> {
        self.update_memory_order(|chunk| chunk.iter_mut().for_each(&mut f))
    }

    /// Changes every element in place with `f(index, &mut element)`, in
    /// memory order (the index as a tuple for fixed dimensions, as in
    /// [`ShmArray::from_shape_fn`]); for records with padding bytes as
    /// [`ShmArray::map_inplace`].
    ///
    /// ```
    /// use npshmex_ndarray::ShmArray2;
    /// let mut a = ShmArray2::<i32>::zeros((2, 3))?;
    /// a.indexed_map_inplace(|(i, j), x| *x = (i * 10 + j) as i32)?;
    /// assert_eq!(a.view(), ndarray::arr2(&[[0, 1, 2], [10, 11, 12]]));
    /// # Ok::<(), npshmex_ndarray::NdarrayError>(())
    /// ```
    ///
    /// # Errors
    /// [`NdarrayError::ReadOnly`] as [`ShmArray::view_mut`].
    pub fn indexed_map_inplace<F: FnMut(D::Pattern, &mut A)>(&mut self, mut f: F) -> Result<()> {
        let mut indices = MemoryOrderIndices::new(self.raw_dim(), self.layout.order);
        self.update_memory_order(|chunk| {
            // Chunks come in memory order and cover the data exactly, so
            // there is an index for every element.
            for (x, i) in chunk.iter_mut().zip(indices.by_ref()) {
                f(i.into_pattern(), x);
            }
        })
    }

    /// Where the element at `index` starts in the data, in bytes; `None`
    /// outside the shape. Indexes a view of the data's bytes whose strides
    /// are the elements' scaled to bytes, so it neither views nor
    /// validates the elements (which is O(n) for records with `bool`
    /// fields).
    fn byte_offset<I: NdIndex<D>>(&self, index: I) -> Option<usize> {
        let data = &self.segment().as_slice()[self.layout.data_range()];
        let dim = self.raw_dim();
        let n = dim.ndim();
        let mut strides = D::zeros(n);
        let mut step = std::mem::size_of::<A>();
        for k in 0..n {
            let axis = match self.layout.order {
                MemOrder::C => n - 1 - k,
                MemOrder::F => k,
            };
            strides[axis] = step;
            // Bounded by the data's length, which fits; saturate anyway.
            step = step.saturating_mul(dim[axis]);
        }
        let bytes = ArrayView::from_shape(dim.strides(strides), data).ok()?;
        let first = bytes.get(index)?;
        Some(std::ptr::from_ref(first).addr() - data.as_ptr().addr())
    }

    /// Lets `f` change the elements, slice by slice in memory order: the
    /// typed data itself for dense types, encoded copies of bounded chunks
    /// for records with padding.
    fn update_memory_order(&mut self, mut f: impl FnMut(&mut [A])) -> Result<()> {
        let dtype = self.layout.dtype.clone();
        let data = self.data_bytes_mut()?;
        if dense::<A>() {
            f(cast_slice_mut::<A>(&dtype, data)?);
        } else {
            update_encoded(&dtype, data, f)?;
        }
        Ok(())
    }
}
