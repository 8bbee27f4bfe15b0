//! `cargo xtask roundtrip IN OUT`: every array file in IN is read, decoded
//! into the in-memory model and written to OUT under the same name; one line
//! per file, `ok NAME` or `refused NAME: reason`.
//!
//! Files are dispatched on their extension ([`handler`]: `.npy`, and
//! `.arrow` / `.feather` for Arrow IPC files, compressed or not), so further
//! formats and further legs of the trip (through a pool worker) plug in as
//! one more handler or one more step inside a handler. A refusal is a clean
//! outcome (the input was bad and the codec said why); only an I/O failure
//! makes the command fail.

use anyhow::{Context, Result};
use npshmex_codec::{from_native, to_native, ByteOrder, CodecError, NpyHeader};
use std::path::Path;

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Read, decoded and written back.
    Ok,
    /// Cleanly refused, with the reason.
    Refused(String),
}

/// A per-format round trip: read `input`, write `output`.
type Handler = fn(&Path, &Path) -> Result<FileOutcome>;

/// The handler for a file name, by extension; `None` for files to skip.
pub fn handler(path: &Path) -> Option<Handler> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Some(npy),
        // feather V2 files are Arrow IPC files (LZ4-compressed by default)
        Some("arrow" | "feather") => Some(crate::arrow_interop::roundtrip_file),
        _ => None,
    }
}

/// Round-trips every handled file of `input` into `output` (created if
/// needed), in name order, printing one line per file.
pub fn run_dir(input: &Path, output: &Path) -> Result<Vec<(String, FileOutcome)>> {
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let mut entries: Vec<_> = std::fs::read_dir(input)
        .with_context(|| format!("reading directory {}", input.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", input.display()))?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for e in entries {
        let path = e.path();
        let Some(h) = handler(&path) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        let outcome = h(&path, &output.join(e.file_name()))?;
        match &outcome {
            FileOutcome::Ok => println!("ok {name}"),
            FileOutcome::Refused(why) => println!("refused {name}: {why}"),
        }
        out.push((name, outcome));
    }
    Ok(out)
}

/// The subcommand.
pub fn run(input: &Path, output: &Path) -> Result<()> {
    let results = run_dir(input, output)?;
    let refused = results
        .iter()
        .filter(|(_, o)| matches!(o, FileOutcome::Refused(_)))
        .count();
    eprintln!(
        "roundtrip: {} file(s) handled, {} ok, {refused} refused",
        results.len(),
        results.len() - refused
    );
    Ok(())
}

/// A decoded `.npy` file: the header and the element bytes in the file's
/// byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyArray {
    /// dtype, order and shape.
    pub header: NpyHeader,
    /// Exactly `header.data_len()` bytes.
    pub data: Vec<u8>,
}

/// Parses a whole `.npy` file: the header and exactly the data it announces.
pub fn decode_npy(bytes: &[u8]) -> Result<NpyArray, CodecError> {
    let (header, offset) = NpyHeader::read(bytes)?;
    let len = header.data_len()?;
    let data = &bytes[offset..];
    if data.len() < len {
        return Err(CodecError::Truncated {
            needed: (offset as u64).saturating_add(len as u64),
            available: bytes.len() as u64,
        });
    }
    if data.len() > len {
        return Err(CodecError::TrailingBytes {
            extra: (data.len() - len) as u64,
        });
    }
    Ok(NpyArray {
        header,
        data: data.to_vec(),
    })
}

/// Writes a `.npy` file as numpy 2 would.
pub fn encode_npy(a: &NpyArray) -> Result<Vec<u8>, CodecError> {
    let mut out = a.header.to_bytes()?;
    out.extend_from_slice(&a.data);
    Ok(out)
}

/// The in-memory leg: the data goes to native byte order (as a consumer
/// that computes on it would hold it) and back to the file's orders.
fn through_model(a: NpyArray) -> Result<NpyArray, CodecError> {
    let (native, mut data) = to_native(&a.header.dtype, a.data)?;
    if !native.is_native_order()
        || !native.same_layout(&a.header.dtype.with_byte_order(ByteOrder::NATIVE))
    {
        return Err(CodecError::DTypeMismatch {
            expected: a.header.dtype.to_descr(),
            actual: native.to_descr(),
        });
    }
    from_native(&a.header.dtype, &mut data)?;
    Ok(NpyArray {
        header: a.header,
        data,
    })
}

fn npy(input: &Path, output: &Path) -> Result<FileOutcome> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let encoded = decode_npy(&bytes)
        .and_then(through_model)
        .and_then(|a| encode_npy(&a));
    match encoded {
        Ok(out) => {
            std::fs::write(output, out).with_context(|| format!("writing {}", output.display()))?;
            Ok(FileOutcome::Ok)
        }
        Err(e) => {
            // A stale output from an earlier run would look like a success.
            match std::fs::remove_file(output) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("removing {}", output.display()))
                }
            }
            Ok(FileOutcome::Refused(e.to_string()))
        }
    }
}
