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
        if needed > bytes.len() {
            return Err(NdarrayError::TooSmall {
                needed: needed as u64,
                actual: bytes.len() as u64,
            });
        }
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

    /// The shape with strides for ndarray's view constructors.
    pub(crate) fn stride_shape(&self) -> StrideShape<D> {
        self.dim.clone().set_f(self.order == MemOrder::F).into()
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
}
