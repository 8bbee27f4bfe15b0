//! ndarray arrays (dense and structured) through worker processes via
//! shared memory: everything the Python npshmex does for numpy, zero-copy
//! where the sender allows it.
//!
//! - [`ShmArray`]: an n-dimensional array whose data lives in a segment laid
//!   out as a `.npy` file. Inside any argument or result of a pool task
//!   (alone, in a tuple, a `Vec`, a `HashMap`, your own struct) it travels as
//!   a file descriptor, never by copy, in the receive mode its sender chose:
//!   moved, shared read-only (sealed) or copy-on-write ([`Transfer`]).
//! - The drop-in path for plain `ndarray::Array`s: [`via_shm`] for fields
//!   (`#[serde(with = "npshmex_ndarray::via_shm")]`) and [`Shm`] for bare
//!   arguments and results: one copy in, one copy out, as npshmex does.
//! - Persistent keys, the original's `shm_put` / `shm_pop` / `shm_del` /
//!   `shm_clear`: arrays in named `/dev/shm` segments that numpy opens with
//!   `np.load(path, mmap_mode='r')`, and `.npy` files numpy wrote there popped
//!   without a copy.
//! - [`cache`]: the per-process cache of already-faulted segments and live
//!   mappings that makes repeated transfers cost no page faults, with the
//!   file-lock protocol that keeps reuse safe across processes.
//!
//! Element types are the codec's [`Element`]s: numbers, `bool`, `f16`,
//! complex, fixed-size arrays and `#[repr(C)]` record structs (structured
//! dtypes). A segment received from another process is untrusted: its header
//! is validated against the element type and dimensionality expected.
//!
//! ```
//! use npshmex_ndarray::ShmArray;
//! let a = ShmArray::<f64, _>::from_shape_fn((2, 2), |(i, j)| (i * 2 + j) as f64)?;
//! let b = a.map(|x| x + 1.0)?; // allocated in shared memory too
//! assert_eq!(b.into_array(), ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]]));
//! # Ok::<(), npshmex_ndarray::NdarrayError>(())
//! ```
#![forbid(unsafe_code)]

mod array;
pub mod cache;
mod error;
mod keys;
mod layout;
mod transfer;
pub mod via_shm;

pub use array::{
    ShmArray, ShmArray0, ShmArray1, ShmArray2, ShmArray3, ShmArray4, ShmArray5, ShmArray6,
    ShmArrayD,
};
pub use error::{NdarrayError, Result};
pub use keys::{shm_clear, shm_del, shm_pop, shm_put, shm_put_as, Keep, ShmKey};
pub use npshmex_codec::record;
pub use npshmex_codec::{DType, Element};
pub use npshmex_shm::Access;
pub use transfer::{take_last_error, Transfer};
pub use via_shm::{Shm, ShmArg};

#[cfg(test)]
pub(crate) mod test_util {
    use serde::{de::DeserializeOwned, Serialize};

    /// Sends `v` through serde and the fd collector within this process, as
    /// the pool does between processes (the value is dropped after encoding).
    pub fn roundtrip<T: Serialize + DeserializeOwned>(v: T) -> Result<T, postcard::Error> {
        let (bytes, fds) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&v));
        drop(v);
        let bytes = bytes?;
        npshmex_shm::oob::with_received(fds, || postcard::from_bytes(&bytes))
    }
}
