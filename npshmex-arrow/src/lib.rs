//! Arrow arrays and record batches through shared memory in the Arrow IPC
//! file format.
#![forbid(unsafe_code)]

mod decode;
mod encode;
mod error;
pub mod sample;

pub use decode::ReadPath;
pub use error::{ArrowShmError, Result};

#[cfg(test)]
mod tests;
