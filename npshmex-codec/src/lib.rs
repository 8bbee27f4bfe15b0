//! The numpy dtype model, numpy `descr` strings and `.npy` headers.
//!
//! This crate is the contract between Rust and numpy: a [`DType`] describes
//! every numpy dtype with a fixed, pointer-free layout (scalars, byte and
//! UCS-4 strings, void, datetimes, structured records with offsets, titles,
//! nesting and subarrays); [`DType::parse_descr`] and [`DType::to_descr`]
//! read and write numpy's `descr` text byte for byte; [`NpyHeader`] reads and
//! writes `.npy` headers exactly as numpy 2 does. Typed views of raw bytes
//! ([`cast_slice`]) exist only for Rust types whose layout is checked against
//! the dtype ([`Element`], [`Record`]). Everything read is untrusted: the
//! header is parsed as data, never evaluated, and every size is checked.
//!
//! ```
//! use npshmex_codec::{cast_slice, DType, NpyHeader};
//! let mut file = NpyHeader::new(DType::parse_descr("<i4")?, vec![2]).to_bytes()?;
//! file.extend_from_slice(&7i32.to_le_bytes());
//! file.extend_from_slice(&9i32.to_le_bytes());
//! let (header, offset) = NpyHeader::read(&file)?;
//! assert_eq!(header.shape, [2]);
//! assert_eq!(offset % 64, 0);
//! let values = npshmex_codec::to_native(&header.dtype, file[offset..].to_vec())?;
//! # let _ = values;
//! # Ok::<(), npshmex_codec::CodecError>(())
//! ```

mod descr;
mod dtype;
mod element;
mod error;
mod header;
mod literal;
mod printable;
mod pyrepr;
mod record;
mod strings;
mod structured;
mod swap;

pub use dtype::{ByteOrder, ComplexWidth, DType, DateUnit, FloatWidth, IntWidth, TimeUnit};
pub use element::{as_bytes, cast_slice, cast_slice_mut, extend_with_bytes, to_bytes, Element};
pub use error::{CodecError, Result};
pub use header::{NpyHeader, Order, Version, ARRAY_ALIGN, MAGIC};
pub use literal::MAX_DEPTH;
#[doc(hidden)]
pub use record::record_dtype as __record_dtype;
pub use record::Record;
pub use strings::{FixedBytes, FixedUnicode};
pub use structured::{Field, StructAlign, StructType, SubArrayType, MAX_DIMS};
pub use swap::{convert_byte_order, from_native, to_native};
