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
//!   (`#[serde(with = "npshmex_ndarray::via_shm")]`), [`Shm`] for bare
//!   arguments and results, [`ShmArg`] (or a `CowArray` field) to lend the
//!   caller's array instead of giving it up: one copy in, one copy out, as
//!   npshmex does.
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
//! # Records
//! A numpy structured dtype is a struct declared with [`record!`]; numpy's
//! inline strings are [`FixedBytes<N>`] (`'S<N>'`) and [`FixedUnicode<N>`]
//! (`'U<N>'`). `#[repr(C)]` lays a record out as numpy's `align=True`
//! does, usually with padding bytes; every constructor takes such records,
//! and [`ShmArray::set`], [`ShmArray::map_inplace`] and
//! [`ShmArray::indexed_map_inplace`] change them in place
//! ([`ShmArray::view_mut`] refuses them, and says why). Through a pool:
//!
//! ```
//! use npshmex_ndarray::{record, FixedBytes, ShmArray1};
//! use npshmex_pool::ProcessPoolExecutor;
//!
//! record! {
//!     /// numpy: `np.dtype([('id', '<i8'), ('x', '<f8'), ('flag', 'u1'),
//!     /// ('name', 'S16')], align=True)`, 40 bytes with 7 of padding.
//!     #[repr(C)]
//!     #[derive(Clone, Copy, Debug, PartialEq)]
//!     pub struct Particle {
//!         pub id: i64,
//!         pub x: f64,
//!         pub flag: u8,
//!         pub name: FixedBytes<16>,
//!     }
//! }
//!
//! /// Renames the fast particles, in place in the segment it was sent.
//! fn tag_fast(mut p: ShmArray1<Particle>) -> Result<ShmArray1<Particle>, String> {
//!     let fast = FixedBytes::new(b"fast").map_err(|e| e.to_string())?;
//!     p.map_inplace(|r| {
//!         if r.x > 1.0 {
//!             r.name = fast;
//!             r.flag = 1;
//!         }
//!     })
//!     .map_err(|e| e.to_string())?;
//!     Ok(p)
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     npshmex_pool::init(); // first line of main: workers stop here
//!     let pool = ProcessPoolExecutor::new(1)?;
//!     let slow = FixedBytes::new(b"slow")?;
//!     let particles = ShmArray1::from_shape_fn(1000, |i| Particle {
//!         id: i as i64,
//!         x: i as f64 / 500.0,
//!         flag: 0,
//!         name: slow,
//!     })?;
//!     assert_eq!(
//!         particles.dtype().to_descr(),
//!         "[('id', '<i8'), ('x', '<f8'), ('flag', '|u1'), ('name', '|S16'), ('', '|V7')]"
//!     );
//!     let tagged = pool.submit(tag_fast, particles)?.result()??;
//!     assert_eq!(tagged.view()[999].name.as_trimmed(), b"fast");
//!     assert_eq!(tagged.view()[10].name.as_trimmed(), b"slow");
//!     assert_eq!(tagged.view().iter().filter(|p| p.flag == 1).count(), 499);
//!     Ok(())
//! }
//! ```
//!
//! ```
//! use npshmex_ndarray::ShmArray;
//! let a = ShmArray::<f64, _>::from_shape_fn((2, 2), |(i, j)| (i * 2 + j) as f64)?;
//! let b = a.map(|x| x + 1.0)?; // allocated in shared memory too
//! assert_eq!(b.into_array(), ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0]]));
//! # Ok::<(), npshmex_ndarray::NdarrayError>(())
//! ```
//!
//! Through a pool (the worker runs the same executable, see `npshmex-pool`):
//!
//! ```no_run
//! use ndarray::{Array1, Ix1};
//! use npshmex_ndarray::{Shm, ShmArg, ShmArray1};
//! use npshmex_pool::ProcessPoolExecutor;
//!
//! // Zero-copy: the result is allocated in shared memory by the worker.
//! fn add_one(x: ShmArray1<f64>) -> Result<ShmArray1<f64>, String> {
//!     x.map(|v| v + 1.0).map_err(|e| e.to_string())
//! }
//!
//! // Drop-in: plain arrays, one copy in and one copy out.
//! fn add_one_plain(x: ShmArg<'_, f64, Ix1>) -> Shm<Array1<f64>> {
//!     Shm(x.into_owned() + 1.0)
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     npshmex_pool::init();
//!     let pool = ProcessPoolExecutor::new(1)?;
//!     let x = ShmArray1::from_shape_fn(1_000_000, |i| i as f64)?.into_read_only()?;
//!     let y = pool.submit(add_one, x.try_clone()?)?.result()??;
//!     assert_eq!(y.view()[3], 4.0);
//!     let plain = Array1::from_elem(1_000_000, 1.0);
//!     let z = pool.submit(add_one_plain, ShmArg::from(&plain))?.result()?;
//!     assert_eq!(z[0], 2.0);
//!     Ok(())
//! }
//! ```
#![deny(unsafe_code)]

mod array;
/// The per-process cache of already-faulted segments (`npshmex_shm`'s,
/// shared with every adapter): its limits and statistics.
pub mod cache {
    pub use npshmex_shm::cache::{clear, limits, set_limits, stats, CacheLimits, CacheStats};
}
mod encode;
mod error;
mod inplace;
mod keys;
mod layout;
mod transfer;
pub mod via_shm;

pub use array::{
    ShmArray, ShmArray0, ShmArray1, ShmArray2, ShmArray3, ShmArray4, ShmArray5, ShmArray6,
    ShmArrayD,
};
pub use error::{NdarrayError, Result};
pub use keys::{shm_clear, shm_del, shm_pop, shm_pop_mapped, shm_put, shm_put_as, Keep, ShmKey};
pub use npshmex_codec::record;
pub use npshmex_codec::{DType, Element, FixedBytes, FixedUnicode};
pub use npshmex_shm::Access;
pub use transfer::Transfer;
pub use via_shm::{Shm, ShmArg};

#[cfg(test)]
pub(crate) mod test_util {
    /// Sends a value through serde and the fd collector within this process,
    /// as the pool does between processes.
    pub use npshmex_testkit::oob_roundtrip as roundtrip;
}

/// The README's example, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
