//! Serde helpers so that plain Arrow fields of user structs travel through
//! shared memory: `#[serde(with = "npshmex_arrow::via_shm")]` on a
//! `RecordBatch` field, `#[serde(with = "npshmex_arrow::via_shm::array")]` on
//! an `ArrayRef` field.
//!
//! Serializing writes the value into a fresh anonymous segment
//! ([`ShmBatch::from_batch`], one copy, frozen) and sends the segment's fd;
//! deserializing reads it in place (validated, zero-copy). Like [`ShmBatch`], this only works inside a pool
//! task (an fd collector); elsewhere it is a serde error, checked before
//! anything is written.
//!
//! ```
//! use arrow_array::{ArrayRef, RecordBatch};
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Task {
//!     #[serde(with = "npshmex_arrow::via_shm")]
//!     table: RecordBatch,
//!     #[serde(with = "npshmex_arrow::via_shm::array")]
//!     weights: ArrayRef,
//!     label: String,
//! }
//! ```

use crate::batch::ShmBatch;
use crate::error::ArrowShmError;
use arrow_array::RecordBatch;
use npshmex_shm::oob;
use serde::{ser, Deserialize, Deserializer, Serialize, Serializer};

fn no_collector<E: ser::Error>() -> E {
    oob::ser_error(ArrowShmError::NoCollector)
}

fn ser_err<E: ser::Error>(e: ArrowShmError) -> E {
    oob::ser_error(e)
}

fn de_err<E: serde::de::Error>(e: ArrowShmError) -> E {
    oob::de_error(e)
}

/// Serializes a `RecordBatch` field through a shared-memory segment.
///
/// # Errors
/// Outside a pool task, or when the segment cannot be created.
pub fn serialize<S: Serializer>(batch: &RecordBatch, serializer: S) -> Result<S::Ok, S::Error> {
    if !oob::is_collecting() {
        return Err(no_collector());
    }
    let shm = ShmBatch::from_batch(batch).map_err(ser_err)?;
    shm.serialize(serializer)
}

/// Deserializes a `RecordBatch` field sent with [`serialize`].
///
/// # Errors
/// When the received segment is not a valid IPC file with exactly one batch.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RecordBatch, D::Error> {
    let shm = ShmBatch::deserialize(deserializer)?;
    shm.into_batch().map_err(de_err)
}

/// The same for `ArrayRef` fields: the array travels as a one-column batch.
pub mod array {
    use super::*;
    use arrow_array::ArrayRef;
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    /// Serializes an `ArrayRef` field through a shared-memory segment.
    ///
    /// # Errors
    /// Outside a pool task, or when the segment cannot be created.
    pub fn serialize<S: Serializer>(array: &ArrayRef, serializer: S) -> Result<S::Ok, S::Error> {
        if !oob::is_collecting() {
            return Err(no_collector());
        }
        let field = Field::new("item", array.data_type().clone(), true);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array.clone()])
            .map_err(|source| ser_err::<S::Error>(ArrowShmError::Encode { source }))?;
        super::serialize(&batch, serializer)
    }

    /// Deserializes an `ArrayRef` field sent with [`serialize`].
    ///
    /// # Errors
    /// When the received segment is not a valid IPC file with one batch of
    /// one column.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ArrayRef, D::Error> {
        let batch = super::deserialize(deserializer)?;
        match batch.columns() {
            [a] => Ok(a.clone()),
            other => Err(de_err(ArrowShmError::NotOneColumn {
                columns: other.len(),
            })),
        }
    }
}

/// A bare `RecordBatch` or `ArrayRef` argument or result that travels
/// through shared memory like a [`serialize`]d field: `Shm(batch)`.
///
/// ```
/// use arrow_array::{ArrayRef, RecordBatch};
/// use npshmex_arrow::Shm;
///
/// // worker functions for `ProcessPoolExecutor::submit`
/// fn rows(b: Shm<RecordBatch>) -> usize {
///     b.num_rows()
/// }
/// fn reversed(a: Shm<ArrayRef>) -> Shm<ArrayRef> {
///     let indices = arrow_array::UInt32Array::from_iter_values((0..a.len() as u32).rev());
///     Shm(arrow_select::take::take(a.as_ref(), &indices, None).expect("in range"))
/// }
/// # let _ = (rows, reversed);
/// ```
#[derive(Clone, Debug, PartialEq)]
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

impl Serialize for Shm<RecordBatch> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Shm<RecordBatch> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(Shm)
    }
}

impl Serialize for Shm<arrow_array::ArrayRef> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        array::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Shm<arrow_array::ArrayRef> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        array::deserialize(deserializer).map(Shm)
    }
}
