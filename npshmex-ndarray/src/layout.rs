//! The `.npy` layout of an array segment: the header numpy writes, then the
//! data at a 64-byte aligned offset, so that the segment *is* a `.npy` file
//! (numpy opens it with `np.load(path, mmap_mode='r')`). Reading a layout
//! validates everything, because segments come from other processes.

use crate::error::{NdarrayError, Result};
use ndarray::{Dimension, ShapeBuilder, StrideShape};
use npshmex_codec::{DType, Element, NpyHeader};

/// Memory order of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemOrder {
    /// Row-major (C order), numpy's default.
    C,
    /// Column-major (Fortran order).
    F,
}

/// Where the data of an array lies in its segment, and how it is shaped.
#[derive(Clone, Debug)]
pub(crate) struct Layout<D> {
    pub dim: D,
    pub order: MemOrder,
    /// Offset of the data from the start of the segment (a multiple of 64
    /// for headers written here).
    pub offset: usize,
    /// Bytes of data: itemsize times the number of elements.
    pub data_len: usize,
    pub dtype: DType,
}

impl<D: Dimension> Layout<D> {
    /// The layout and header bytes of a new array of `A`.
    pub(crate) fn new<A: Element>(dim: D, order: MemOrder) -> Result<(Layout<D>, Vec<u8>)> {
        let shape: Vec<usize> = dim_to_vec(&dim);
        let dtype = A::dtype();
        let header = NpyHeader {
            dtype: dtype.clone(),
            fortran_order: order == MemOrder::F && dim.ndim() > 1,
            shape: shape.clone(),
        };
        let data_len = header.data_len().map_err(|_| NdarrayError::SizeOverflow {
            shape,
            itemsize: dtype.itemsize(),
        })?;
        let bytes = header.to_bytes()?;
        let layout = Layout {
            dim,
            order: if header.fortran_order {
                MemOrder::F
            } else {
                MemOrder::C
            },
            offset: bytes.len(),
            data_len,
            dtype,
        };
        Ok((layout, bytes))
    }

    /// Validates the `.npy` bytes of a segment (header, element type `A`,
    /// dimensionality `D`, size and alignment) and returns their layout.
    pub(crate) fn read<A: Element>(bytes: &[u8]) -> Result<Layout<D>> {
        // Everything but the length check is a pure function of the header
        // bytes, `A` and `D`: a stream of arrays of one shape (a pool's
        // tasks) validates its layout once per thread.
        if let Some(layout) = recent::find::<A, D>(bytes) {
            return layout.fits(bytes.len());
        }
        let layout = Self::parse::<A>(bytes)?;
        recent::keep::<A, D>(&bytes[..layout.offset], &layout);
        Ok(layout)
    }

    /// `self` if its header and data fit `len` bytes.
    fn fits(self, len: usize) -> Result<Layout<D>> {
        fits(self.total_len(), len)?;
        Ok(self)
    }

    /// [`Layout::read`] without the memo.
    fn parse<A: Element>(bytes: &[u8]) -> Result<Layout<D>> {
        let (header, offset) = NpyHeader::read(bytes)?;
        let expected = A::dtype();
        if !expected.same_layout(&header.dtype) {
            return Err(NdarrayError::dtype_mismatch(&expected, &header.dtype));
        }
        let dim = dim_from_shape::<D>(&header.shape)?;
        let data_len = header.data_len()?;
        let needed = offset
            .checked_add(data_len)
            .ok_or(NdarrayError::SizeOverflow {
                shape: header.shape.clone(),
                itemsize: expected.itemsize(),
            })?;
        fits(needed, bytes.len())?;
        let align = expected.alignment().max(1);
        if !offset.is_multiple_of(align) {
            return Err(NdarrayError::Misaligned { offset, align });
        }
        let order = if header.fortran_order && header.shape.len() > 1 {
            MemOrder::F
        } else {
            MemOrder::C
        };
        Ok(Layout {
            dim,
            order,
            offset,
            data_len,
            dtype: header.dtype,
        })
    }

    /// Total bytes of header and data.
    pub(crate) fn total_len(&self) -> usize {
        // Both summands were computed without overflow and fit one segment.
        self.offset + self.data_len
    }

    pub(crate) fn data_range(&self) -> std::ops::Range<usize> {
        self.offset..self.total_len()
    }

    /// The data bytes that lie before byte `end` of the segment.
    pub(crate) fn data_before(&self, end: usize) -> std::ops::Range<usize> {
        self.offset..self.total_len().min(end).max(self.offset)
    }

    /// The shape with strides for ndarray's view constructors.
    pub(crate) fn stride_shape(&self) -> StrideShape<D> {
        self.dim.clone().set_f(self.order == MemOrder::F).into()
    }
}

/// `TooSmall` unless `needed` bytes fit in `len`.
fn fits(needed: usize, len: usize) -> Result<()> {
    if needed > len {
        return Err(NdarrayError::TooSmall {
            needed: needed as u64,
            actual: len as u64,
        });
    }
    Ok(())
}

/// The layouts this thread read last, by the exact bytes of their header
/// and the array type they were read as.
mod recent {
    use super::{dim_from_shape, Layout, MemOrder};
    use ndarray::Dimension;
    use npshmex_codec::DType;
    use std::any::TypeId;
    use std::cell::RefCell;

    /// Layouts kept per thread.
    const KEPT: usize = 8;
    /// Longer headers (large structured dtypes) are validated every time.
    const MAX_BYTES: usize = 1024;

    /// A validated layout, for the element type `elem` and a dimension
    /// type of `ndim` axes (`None`: any).
    struct Entry {
        elem: TypeId,
        ndim: Option<usize>,
        header: Box<[u8]>,
        shape: Box<[usize]>,
        order: MemOrder,
        offset: usize,
        data_len: usize,
        dtype: DType,
    }

    thread_local! {
        static RECENT: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }

    /// The layout of `bytes` read as `(A, D)` earlier on this thread: one
    /// whose header `bytes` starts with (the header's length is part of
    /// those bytes, so the same prefix is the same header).
    pub(super) fn find<A: 'static, D: Dimension>(bytes: &[u8]) -> Option<Layout<D>> {
        let elem = TypeId::of::<A>();
        RECENT
            .try_with(|r| {
                let r = r.borrow();
                let e = r.iter().find(|e| {
                    e.elem == elem && e.ndim == D::NDIM && bytes.starts_with(&e.header)
                })?;
                Some(Layout {
                    // Checked against `D` when the entry was made.
                    dim: dim_from_shape::<D>(&e.shape).ok()?,
                    order: e.order,
                    offset: e.offset,
                    data_len: e.data_len,
                    dtype: e.dtype.clone(),
                })
            })
            .ok()
            .flatten()
    }

    /// Keeps `layout`, read as `(A, D)` from a header of exactly `header`.
    pub(super) fn keep<A: 'static, D: Dimension>(header: &[u8], layout: &Layout<D>) {
        if header.len() > MAX_BYTES {
            return;
        }
        let entry = Entry {
            elem: TypeId::of::<A>(),
            ndim: D::NDIM,
            header: header.into(),
            shape: layout.dim.slice().into(),
            order: layout.order,
            offset: layout.offset,
            data_len: layout.data_len,
            dtype: layout.dtype.clone(),
        };
        let _ = RECENT.try_with(|r| {
            let mut r = r.borrow_mut();
            if r.len() >= KEPT {
                r.remove(0);
            }
            r.push(entry);
        });
    }
}

/// The indices of an array of shape `dim`, in the order its elements lie
/// in memory: the last axis varies fastest in C order, the first in Fortran
/// order (the order ndarray's `from_shape_fn` calls its closure in).
pub(crate) struct MemoryOrderIndices<D> {
    dim: D,
    order: MemOrder,
    next: Option<D>,
}

impl<D: Dimension> MemoryOrderIndices<D> {
    pub(crate) fn new(dim: D, order: MemOrder) -> MemoryOrderIndices<D> {
        let next = (dim.size() > 0).then(|| D::zeros(dim.ndim()));
        MemoryOrderIndices { dim, order, next }
    }
}

impl<D: Dimension> Iterator for MemoryOrderIndices<D> {
    type Item = D;

    fn next(&mut self) -> Option<D> {
        let current = self.next.take()?;
        let mut index = current.clone();
        let n = self.dim.ndim();
        for k in 0..n {
            let axis = match self.order {
                MemOrder::C => n - 1 - k,
                MemOrder::F => k,
            };
            index[axis] += 1;
            if index[axis] < self.dim[axis] {
                self.next = Some(index);
                break;
            }
            index[axis] = 0;
        }
        Some(current)
    }
}

pub(crate) fn dim_to_vec<D: Dimension>(dim: &D) -> Vec<usize> {
    (0..dim.ndim()).map(|i| dim[i]).collect()
}

/// The dimension `D` with the axis lengths of `shape`, if `D` has that many axes.
pub(crate) fn dim_from_shape<D: Dimension>(shape: &[usize]) -> Result<D> {
    if let Some(n) = D::NDIM {
        if n != shape.len() {
            return Err(NdarrayError::DimMismatch {
                expected: n,
                found: shape.to_vec(),
            });
        }
    }
    // `zeros(n)` cannot panic: for a fixed `D` n was checked above, `IxDyn`
    // takes any n.
    let mut dim = D::zeros(shape.len());
    for (i, &len) in shape.iter().enumerate() {
        dim[i] = len;
    }
    Ok(dim)
}

/// The memory order an array is copied in with: its own when it is
/// contiguous in C or Fortran order, C otherwise.
pub(crate) fn order_of<S, D>(a: &ndarray::ArrayBase<S, D>) -> MemOrder
where
    S: ndarray::RawData,
    D: Dimension,
{
    if a.ndim() > 1 && !is_c_contiguous(a.shape(), a.strides()) {
        let rev_shape: Vec<usize> = a.shape().iter().rev().copied().collect();
        let rev_strides: Vec<isize> = a.strides().iter().rev().copied().collect();
        if is_c_contiguous(&rev_shape, &rev_strides) {
            return MemOrder::F;
        }
    }
    MemOrder::C
}

fn is_c_contiguous(shape: &[usize], strides: &[isize]) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut expect: isize = 1;
    for (&len, &stride) in shape.iter().zip(strides).rev() {
        if len != 1 && stride != expect {
            return false;
        }
        expect = expect.saturating_mul(len as isize);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Ix0, Ix1, Ix3, IxDyn};

    /// The indices ndarray's `from_shape_fn` visits, in the order it calls
    /// its closure.
    fn ndarray_order<D: Dimension>(dim: D, order: MemOrder) -> Vec<D::Pattern> {
        let mut seen = Vec::new();
        let _ = Array::from_shape_fn(dim.set_f(order == MemOrder::F), |i: D::Pattern| {
            seen.push(i.clone());
        });
        seen
    }

    fn ours<D: Dimension>(dim: D, order: MemOrder) -> Vec<D::Pattern> {
        MemoryOrderIndices::new(dim, order)
            .map(Dimension::into_pattern)
            .collect()
    }

    #[test]
    fn memory_order_indices_match_ndarray() {
        for order in [MemOrder::C, MemOrder::F] {
            let d3 = Ix3(2, 3, 4);
            assert_eq!(ours(d3, order), ndarray_order(d3, order));
            assert_eq!(ours(Ix1(5), order), ndarray_order(Ix1(5), order));
            assert_eq!(ours(Ix0(), order), vec![()]);
            assert!(ours(Ix3(2, 0, 4), order).is_empty());
            let dyn5 = IxDyn(&[2, 1, 3, 2, 2]);
            assert_eq!(ours(dyn5.clone(), order), ndarray_order(dyn5, order));
        }
        let f: Vec<_> = ours(ndarray::Ix2(2, 2), MemOrder::F);
        assert_eq!(f, vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
    }

    /// Header and data of a new array of `A` with `len` elements.
    fn segment<A: Element>(len: usize) -> Vec<u8> {
        let (layout, mut bytes) = Layout::<Ix1>::new::<A>(Ix1(len), MemOrder::C).unwrap();
        bytes.resize(layout.total_len(), 0);
        bytes
    }

    #[test]
    fn a_remembered_layout_is_checked_as_a_new_one() {
        let f8 = segment::<f64>(7);
        for _ in 0..3 {
            // Read, then read again from the memo: the same layout.
            let a = Layout::<Ix1>::read::<f64>(&f8).unwrap();
            assert_eq!((a.dim, a.offset, a.data_len), (Ix1(7), f8.len() - 56, 56));
            // Too short for its data, however often its header was seen.
            assert!(matches!(
                Layout::<Ix1>::read::<f64>(&f8[..f8.len() - 1]),
                Err(NdarrayError::TooSmall { .. })
            ));
            // Another element type or dimensionality refuses it.
            assert!(matches!(
                Layout::<Ix1>::read::<u64>(&f8),
                Err(NdarrayError::DTypeMismatch { .. })
            ));
            assert!(matches!(
                Layout::<ndarray::Ix2>::read::<f64>(&f8),
                Err(NdarrayError::DimMismatch { .. })
            ));
            let any = Layout::<IxDyn>::read::<f64>(&f8).unwrap();
            assert_eq!(any.dim, IxDyn(&[7]));
            // One byte apart in the shape: another layout.
            let f8_8 = segment::<f64>(8);
            assert_eq!(f8_8.len(), f8.len() + 8);
            assert_eq!(Layout::<Ix1>::read::<f64>(&f8_8).unwrap().dim, Ix1(8));
            // A header cut short is an error.
            assert!(Layout::<Ix1>::read::<f64>(&f8[..20]).is_err());
        }
    }
}
