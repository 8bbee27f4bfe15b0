//! The `arrow-interop` step of `cargo xtask test`: `npshmex-arrow` against
//! real pyarrow, both ways, and the `.arrow` handler of `cargo xtask
//! roundtrip`.
//!
//! 1. Rust puts IPC files of a table with every type family
//!    (`npshmex_arrow::sample::every_type`: whole, sliced, two batches,
//!    empty) under names in `/dev/shm`, and writes them (and the table
//!    repeated to 1000 rows) LZ4- and ZSTD-compressed to disk with
//!    `write_ipc_file`; pyarrow opens each with
//!    `pa.ipc.open_file(pa.memory_map(path))` and compares it with the same
//!    table built in Python (`xtask/py/arrow_interop.py`).
//! 2. pyarrow writes the same variants (also with metadata V4, and LZ4- and
//!    ZSTD-compressed, and a `pyarrow.feather.write_feather` file with its
//!    defaults) into `/dev/shm`; Rust pops each (an uncompressed and a
//!    compressed one also inside a pool worker), compares it with the Rust
//!    table and checks it was read zero-copy (except buffers of 16-byte
//!    elements, decimals and views: pyarrow aligns buffers to 8 bytes only,
//!    arrow-rs copies those) and that compressed ones were decompressed into
//!    a sealed segment; the bad files (truncated, garbage) must be refused
//!    with the typed error.
//! 3. pyarrow writes the files into a directory, `roundtrip` sends each
//!    through a worker into another directory, and pyarrow checks the output
//!    equals the input (compressed inputs come out uncompressed).
//!
//! Every file is removed whatever happens. Without Python the step is
//! skipped loudly, never failed.

use crate::python::{self, Venv};
use crate::roundtrip::FileOutcome;
use anyhow::{bail, ensure, Context, Result};
use arrow_array::RecordBatch;
use npshmex_arrow::{
    sample, write_ipc_file, ArrowShmError, IpcCompression, Keep, ReadPath, ShmBatch, WriteOptions,
};
use npshmex_shm::Segment;
use serde_json::{json, Value};
use std::path::Path;

/// Result of the step.
pub enum Interop {
    /// Everything checked.
    Checked {
        /// Files Rust wrote and pyarrow verified.
        put: usize,
        /// pyarrow files Rust read (good) or refused (bad).
        popped: usize,
        /// Files sent through `roundtrip` and verified by pyarrow.
        roundtrip: usize,
    },
    /// Python is not available: what was not checked and why.
    Skipped(String),
}

/// The batches of a variant (the same as `variant()` in the Python script).
fn variant(name: &str) -> Result<Vec<RecordBatch>> {
    let t = sample::every_type()?;
    Ok(match name {
        "full" => vec![t],
        "sliced" => vec![t.slice(1, 3)],
        "batches" => vec![t.clone(), t.slice(2, 3)],
        "empty" => vec![t.slice(0, 0)],
        // 1000 rows, one batch: long enough buffers that both codecs
        // really compress them (5-row buffers are stored uncompressed)
        "repeated" => vec![arrow_select::concat::concat_batches(
            &t.schema(),
            &vec![t.clone(); 200],
        )?],
        // pyarrow aligns to 8 bytes; buffers of 16-byte elements (decimals,
        // views) need 16 in arrow-rs and are copied
        "no-16-byte" => {
            let keep: Vec<usize> = (0..t.num_columns())
                .filter(|&i| {
                    let name = t.schema().field(i).name().clone();
                    !name.starts_with("decimal") && !name.ends_with("_view")
                })
                .collect();
            vec![t.project(&keep)?]
        }
        // pyarrow's V4 unions and run-end encoded arrays lack the validity
        // buffer V4 has (arrow-rs expects it): left out of the V4 file
        "v4" => {
            let keep: Vec<usize> = (0..t.num_columns())
                .filter(|&i| {
                    let name = t.schema().field(i).name().clone();
                    !name.ends_with("_union") && name != "run_end_encoded"
                })
                .collect();
            vec![t.project(&keep)?]
        }
        other => bail!("unknown variant {other}"),
    })
}

/// Same data, ignoring how many zero-row batches carry it.
fn same_rows(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    let rows = |v: &[RecordBatch]| -> Vec<RecordBatch> {
        v.iter().filter(|b| b.num_rows() > 0).cloned().collect()
    };
    let schema_a = a.first().map(|b| b.schema());
    let schema_b = b.first().map(|b| b.schema());
    (schema_a.is_none() || schema_b.is_none() || schema_a == schema_b)
        && sample::same_batches(&rows(a), &rows(b))
}

/// Removes every file with the step's prefix on drop, whatever happened.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        crate::util::remove_shm_entries(&self.prefix);
    }
}

fn py(venv: &Venv, args: &[&str]) -> Result<()> {
    venv.run_script("arrow_interop.py", args)
}

/// Runs in a pool worker: a file pyarrow wrote, read in another process.
fn pop_in_worker(name: String) -> Result<(usize, bool), String> {
    let b = ShmBatch::pop(&name, Keep::Yes).map_err(|e| e.to_string())?;
    Ok((b.num_rows(), b.read_path() == Some(ReadPath::ZeroCopy)))
}

/// The two codecs, with the names pyarrow and the manifests use.
const CODECS: [(IpcCompression, &str); 2] = [
    (IpcCompression::Lz4Frame, "lz4"),
    (IpcCompression::Zstd, "zstd"),
];

/// Runs the whole check.
pub fn run() -> Result<Interop> {
    let venv = match python::venv(&[python::PYARROW, python::NUMPY])? {
        Ok(v) => v,
        Err(why) => {
            return Ok(Interop::Skipped(format!(
                "pyarrow interop of Arrow IPC segments NOT checked: {why}"
            )))
        }
    };
    let dir = crate::util::target_dir().join("interop").join("arrow");
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("npshmex-arrowinterop-{}", std::process::id());
    let c = Cleanup {
        prefix: prefix.clone(),
    };

    // 1. Rust puts, pyarrow checks.
    let mut manifest = Vec::new();
    let mut kept = Vec::new();
    for var in ["full", "sliced", "batches", "empty"] {
        let batches = variant(var)?;
        let name = format!("{prefix}-rust-{var}.arrow");
        let b = ShmBatch::put_batches(&name, batches[0].schema(), &batches)
            .with_context(|| format!("put {name}"))?;
        manifest.push(json!({"path": format!("/dev/shm/{name}"), "variant": var}));
        kept.push(b);
    }
    for (codec, codec_name) in CODECS {
        for var in ["full", "sliced", "batches", "empty", "repeated"] {
            let batches = variant(var)?;
            let path = dir.join(format!("rust-{codec_name}-{var}.arrow"));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let options = WriteOptions::default().with_compression(codec);
            write_ipc_file(
                std::io::BufWriter::new(file),
                &batches[0].schema(),
                &batches,
                &options,
            )
            .with_context(|| format!("writing {}", path.display()))?;
            manifest.push(json!({
                "path": path_str(&path)?,
                "variant": var,
                "compression": codec_name,
            }));
        }
    }
    let put_manifest = dir.join("rust-put.json");
    std::fs::write(&put_manifest, serde_json::to_vec_pretty(&manifest)?)?;
    py(&venv, &["check", path_str(&put_manifest)?])?;
    for b in kept {
        if let Some(name) = b.name() {
            npshmex_shm::remove(name).with_context(|| format!("removing {name}"))?;
        }
    }

    // 2. pyarrow writes, Rust pops.
    let written = dir.join("pyarrow-written.json");
    py(&venv, &["write", &prefix, path_str(&written)?])?;
    let m: Value = serde_json::from_slice(&std::fs::read(&written)?)?;
    let good = m["good"].as_array().context("manifest: good")?;
    let bad = m["bad"].as_array().context("manifest: bad")?;
    let pool = npshmex_pool::ProcessPoolExecutor::new(1)?;
    let mut popped = 0;
    let first_compressed = good
        .iter()
        .position(|e| e.get("compression").is_some())
        .context("manifest: no compressed file")?;
    for (i, e) in good.iter().enumerate() {
        let name = shm_name(e)?;
        let var = e["variant"].as_str().context("manifest: variant")?;
        let compressed = e.get("compression").is_some();
        if i == 0 || i == first_compressed {
            let (rows, zero_copy) = pool
                .submit(pop_in_worker, name.to_owned())?
                .result()?
                .map_err(anyhow::Error::msg)?;
            let want: usize = variant(var)?.iter().map(RecordBatch::num_rows).sum();
            ensure!(
                rows == want,
                "{name}: the worker read {rows} rows, not {want}"
            );
            ensure!(zero_copy, "{name}: the worker did not read it in place");
            eprintln!("rust ok {name} in a worker, zero-copy");
        }
        let b = ShmBatch::pop(name, Keep::No).with_context(|| format!("reading {name}"))?;
        ensure!(
            same_rows(b.batches(), &variant(var)?),
            "{name}: differs from the Rust table {var}"
        );
        if var == "no-16-byte" || var == "empty" || compressed {
            // decompressed buffers are 64-byte aligned: all read in place
            ensure!(
                b.read_path() == Some(ReadPath::ZeroCopy),
                "{name}: read path {:?}",
                b.read_path()
            );
        }
        ensure!(
            b.segment().seals()?.contains(npshmex_shm::Seals::WRITE),
            "{name}: read from a segment that is not write-sealed"
        );
        eprintln!("rust ok {name} {var}: read path {:?}", b.read_path());
        popped += 1;
    }
    drop(pool);
    for e in bad {
        let name = shm_name(e)?;
        let error = e["error"].as_str().context("manifest: error")?;
        match ShmBatch::pop(name, Keep::No) {
            Ok(_) => bail!("{name}: read, but pyarrow wrote it to be refused ({error})"),
            Err(err) => {
                ensure!(
                    format!("{err:?}").starts_with(error),
                    "{name}: refused with {err:?}, expected {error}"
                );
                eprintln!("rust refused {name}: {err}");
            }
        }
        popped += 1;
    }

    // 3. `cargo xtask roundtrip` on pyarrow's files, checked by pyarrow.
    let input = dir.join("roundtrip-in");
    let output = dir.join("roundtrip-out");
    for d in [&input, &output] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    let files = dir.join("roundtrip.json");
    py(&venv, &["write-dir", path_str(&input)?, path_str(&files)?])?;
    let results = crate::roundtrip::run_dir(&input, &output)?;
    let m: Value = serde_json::from_slice(&std::fs::read(&files)?)?;
    let mut roundtrip = 0;
    for (list, want_ok) in [("good", true), ("bad", false)] {
        for e in m[list].as_array().context("manifest: files")? {
            let path = e["path"].as_str().context("manifest: path")?;
            let name = Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .context("manifest: file name")?;
            let outcome = results
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, o)| o)
                .with_context(|| format!("roundtrip did not handle {name}"))?;
            ensure!(
                matches!(outcome, FileOutcome::Ok) == want_ok,
                "roundtrip {name}: {outcome:?}"
            );
            roundtrip += 1;
        }
    }
    py(
        &venv,
        &[
            "compare",
            path_str(&input)?,
            path_str(&output)?,
            path_str(&files)?,
        ],
    )?;

    // Nothing of ours may remain.
    drop(c);
    let left = npshmex_testkit::shm_entries(&prefix);
    ensure!(left.is_empty(), "left in /dev/shm: {left:?}");
    Ok(Interop::Checked {
        put: manifest.len(),
        popped,
        roundtrip,
    })
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("non-UTF-8 path {}", p.display()))
}

/// The `/dev/shm` name of a manifest entry.
fn shm_name(e: &Value) -> Result<&str> {
    let path = e["path"].as_str().context("manifest: path")?;
    path.strip_prefix("/dev/shm/")
        .with_context(|| format!("{path} is not in /dev/shm"))
}

/// Runs in a pool worker: reads the batches it was sent (in place) and
/// writes them into a new segment of its own, which goes back by fd.
fn reencode(b: ShmBatch) -> Result<ShmBatch, String> {
    ShmBatch::from_batches(b.schema().clone(), b.batches()).map_err(|e| e.to_string())
}

/// The `.arrow` / `.feather` handler of `cargo xtask roundtrip`: the file is
/// read like data from outside (validated, into shared memory; a compressed
/// one is decompressed on the way in), written again by `npshmex-arrow`,
/// sent through a pool worker that decodes it and encodes it once more, and
/// the worker's (uncompressed) file is written to `output`.
pub fn roundtrip_file(input: &Path, output: &Path) -> Result<FileOutcome> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let shm = match into_shm(&bytes) {
        Ok(b) => b,
        Err(e) => return refused(output, &chain(&e)),
    };
    let pool = npshmex_pool::ProcessPoolExecutor::new(1)?;
    let back = pool
        .submit(reencode, shm)?
        .result()
        .map_err(anyhow::Error::msg)?;
    drop(pool);
    let back = match back {
        Ok(b) => b,
        Err(why) => return refused(output, &why),
    };
    let file = &back.segment().as_slice()[..back.file_len()];
    std::fs::write(output, file).with_context(|| format!("writing {}", output.display()))?;
    Ok(FileOutcome::Ok)
}

fn into_shm(bytes: &[u8]) -> Result<ShmBatch, ArrowShmError> {
    let mut seg = Segment::anonymous(bytes.len()).map_err(|source| ArrowShmError::Shm {
        op: "create segment",
        source,
    })?;
    seg.as_mut_slice()
        .map_err(|source| ArrowShmError::Shm {
            op: "write segment",
            source,
        })?
        .copy_from_slice(bytes);
    let seg = seg.freeze().map_err(|source| ArrowShmError::Shm {
        op: "freeze segment",
        source,
    })?;
    let read = ShmBatch::open(seg)?;
    ShmBatch::from_batches(read.schema().clone(), read.batches())
}

/// The error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn refused(output: &Path, why: &dyn std::fmt::Display) -> Result<FileOutcome> {
    // A stale output from an earlier run would look like a success.
    match std::fs::remove_file(output) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", output.display())),
    }
    Ok(FileOutcome::Refused(why.to_string()))
}
