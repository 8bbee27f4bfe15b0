//! The numpy interop check of `cargo xtask test` (step `numpy-interop`):
//! numpy writes a corpus of `.npy` files (`xtask/py/npy_corpus.py`), Rust
//! reads and rewrites each one ([`crate::roundtrip`], in process), numpy
//! checks dtype, shape, order and bytes and `cmp`s the files; then Rust
//! writes files of its own and numpy loads them, checks the values and that
//! `np.save` of those values gives the very same bytes.
//!
//! Everything lives under `<target>/interop/npy/`. Without Python the step is
//! skipped loudly, never failed.

use crate::python::{self, Venv};
use crate::roundtrip::{self, FileOutcome};
use anyhow::{bail, Context, Result};
use npshmex_codec::{
    convert_byte_order, record, to_bytes, ByteOrder, DType, Element, FixedBytes, FixedUnicode,
    NpyHeader, StructType, TimeUnit,
};
use num_complex::Complex;
use serde_json::{json, Value};
use std::path::Path;

/// Result of the step.
pub enum Interop {
    /// Every file behaved; how many were checked.
    Checked {
        /// numpy-written files read and rewritten (good ones) or refused (bad ones).
        corpus: usize,
        /// Rust-written files numpy verified.
        written: usize,
    },
    /// Python is not available: what was not checked and why.
    Skipped(String),
}

fn py(venv: &Venv, args: &[&Path]) -> Result<()> {
    venv.run_script("npy_corpus.py", args)
}

/// Runs the whole check.
pub fn run() -> Result<Interop> {
    let venv = match python::venv(&[python::NUMPY])? {
        Ok(v) => v,
        Err(why) => {
            return Ok(Interop::Skipped(format!(
                "numpy interop of .npy files NOT checked: {why}"
            )))
        }
    };
    let root = crate::util::target_dir().join("interop").join("npy");
    let corpus = root.join("numpy-written");
    let rewritten = root.join("rust-rewritten");
    let written = root.join("rust-written");
    for d in [&rewritten, &written] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
        }
    }

    py(&venv, &[Path::new("generate"), &corpus])?;
    let n_corpus = check_corpus(&corpus, &rewritten)?;
    py(&venv, &[Path::new("check"), &corpus, &rewritten])?;

    let n_written = write_rust_files(&written)?;
    py(&venv, &[Path::new("verify"), &written])?;
    eprintln!(
        "numpy-interop: {n_corpus} numpy-written files round-tripped or refused, \
         {n_written} Rust-written files verified by numpy ({} in all)",
        n_corpus + n_written
    );
    Ok(Interop::Checked {
        corpus: n_corpus,
        written: n_written,
    })
}

/// Rust reads and rewrites the corpus and checks the outcome each file
/// expects: `ok` (and, for `identical`, the same bytes: the `cmp` check) or
/// `refused`.
fn check_corpus(corpus: &Path, out: &Path) -> Result<usize> {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(corpus.join("manifest.json")).context("reading the corpus manifest")?,
    )
    .context("parsing the corpus manifest")?;
    let Some(entries) = manifest.as_array() else {
        bail!("corpus manifest is not a list");
    };
    let results = roundtrip::run_dir(corpus, out)?;
    let mut problems = Vec::new();
    for e in entries {
        let (Some(name), Some(expect)) = (e["name"].as_str(), e["expect"].as_str()) else {
            bail!("bad manifest entry {e}");
        };
        let Some((_, outcome)) = results.iter().find(|(n, _)| n == name) else {
            problems.push(format!("{name}: not handled"));
            continue;
        };
        match (expect, outcome) {
            ("ok", FileOutcome::Ok) => {
                if e["identical"].as_bool() == Some(true) {
                    let a = std::fs::read(corpus.join(name))?;
                    let b = std::fs::read(out.join(name))?;
                    if a != b {
                        problems.push(format!("{name}: rewritten file differs (cmp)"));
                    }
                }
            }
            ("refused", FileOutcome::Refused(_)) => {}
            ("ok", FileOutcome::Refused(why)) => {
                problems.push(format!("{name}: refused a good file: {why}"));
            }
            (_, FileOutcome::Ok) => problems.push(format!("{name}: accepted a bad file")),
            (other, _) => problems.push(format!("{name}: unknown expectation {other:?}")),
        }
    }
    if entries.len() < 40 {
        problems.push(format!("only {} corpus files (need >= 40)", entries.len()));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(entries.len())
}

record! {
    /// The record of the Rust-written structured file.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Rec {
        x: f64,
        id: i32,
        tag: [u8; 4],
    }
}

record! {
    /// A record of the fixed-width string elements.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Person {
        name: FixedUnicode<4>,
        code: FixedBytes<3>,
        age: u16,
    }
}

/// One Rust-written file and the formula numpy recomputes its values with.
struct Written {
    name: &'static str,
    formula: &'static str,
    header: NpyHeader,
    data: Vec<u8>,
}

fn typed<T: Element>(
    name: &'static str,
    formula: &'static str,
    shape: &[usize],
    f: impl Fn(usize) -> T,
) -> Result<Written> {
    let n: usize = shape.iter().product();
    let values: Vec<T> = (0..n).map(f).collect();
    Ok(Written {
        name,
        formula,
        header: NpyHeader::new(T::dtype(), shape.to_vec()),
        data: to_bytes(&values),
    })
}

fn big_endian(mut w: Written) -> Result<Written> {
    w.header.dtype = convert_byte_order(&w.header.dtype, &mut w.data, ByteOrder::Big)?;
    Ok(w)
}

fn raw(
    name: &'static str,
    formula: &'static str,
    dtype: DType,
    shape: &[usize],
    elem: impl Fn(usize, &mut Vec<u8>),
) -> Written {
    let n: usize = shape.iter().product();
    let mut data = Vec::new();
    for i in 0..n {
        elem(i, &mut data);
    }
    Written {
        name,
        formula,
        header: NpyHeader::new(dtype, shape.to_vec()),
        data,
    }
}

fn rust_files() -> Result<Vec<Written>> {
    let halves = |i: usize| i as f64 * 0.5 - 1.0;
    let mut v = vec![
        typed("r_i4_2x3.npy", "index", &[2, 3], |i| i as i32)?,
        big_endian(typed("r_i8_be.npy", "index", &[5], |i| i as i64)?)?,
        typed("r_u1.npy", "index", &[4], |i| i as u8)?,
        big_endian(typed("r_u2_be.npy", "index", &[4], |i| i as u16)?)?,
        typed("r_u8.npy", "index", &[3], |i| i as u64)?,
        typed("r_i1.npy", "index", &[3], |i| i as i8)?,
        typed("r_f8.npy", "half", &[7], halves)?,
        big_endian(typed("r_f4_be.npy", "half", &[7], |i| halves(i) as f32)?)?,
        typed("r_f2.npy", "half", &[5], |i| half::f16::from_f64(halves(i)))?,
        typed("r_c16.npy", "complex", &[4], |i| {
            Complex::new(i as f64, 0.0 - i as f64)
        })?,
        big_endian(typed("r_c8_be.npy", "complex", &[4], |i| {
            Complex::new(i as f32, 0.0 - i as f32)
        })?)?,
        typed("r_b1.npy", "bool", &[2, 4], |i| i % 3 == 1)?,
        typed("r_0d.npy", "half", &[], halves)?,
        typed("r_empty.npy", "index", &[0, 3], |i| i as f32)?,
        typed("r_5d.npy", "index", &[2, 1, 3, 1, 2], |i| i as i16)?,
        typed("r_record.npy", "record", &[2, 3], |i| Rec {
            x: i as f64 * 0.5,
            id: i as i32,
            tag: [0, 1, 2, 3].map(|j| ((i + j) % 256) as u8),
        })?,
        typed("r_strings_record.npy", "strings_record", &[3], |i| Person {
            name: FixedUnicode::new(&format!("n{i}é")).unwrap_or(FixedUnicode([0; 4])),
            code: FixedBytes::new(format!("c{i}").as_bytes()).unwrap_or(FixedBytes([0; 3])),
            age: i as u16,
        })?,
        raw(
            "r_S4.npy",
            "bytes",
            DType::Bytes { len: 4 },
            &[5],
            |i, d| {
                let mut s = format!("s{i}").into_bytes();
                s.resize(4, 0);
                d.extend_from_slice(&s);
            },
        ),
        raw(
            "r_U3_be.npy",
            "unicode",
            DType::Unicode {
                chars: 3,
                order: ByteOrder::Big,
            },
            &[4],
            |i, d| {
                for c in format!("u{i}é").chars() {
                    d.extend_from_slice(&u32::from(c).to_be_bytes());
                }
            },
        ),
        raw(
            "r_M8_ms.npy",
            "index",
            DType::DateTime {
                unit: npshmex_codec::DateUnit::new(TimeUnit::Milliseconds),
                order: ByteOrder::Little,
            },
            &[3],
            |i, d| d.extend_from_slice(&(i as i64).to_le_bytes()),
        ),
        raw(
            "r_m8_be_s.npy",
            "index",
            DType::TimeDelta {
                unit: npshmex_codec::DateUnit::new(TimeUnit::Seconds),
                order: ByteOrder::Big,
            },
            &[3],
            |i, d| d.extend_from_slice(&(i as i64).to_be_bytes()),
        ),
        raw(
            "r_titled_v3.npy",
            "titled",
            DType::parse_descr("[(('Alpha 名', 'a'), '<i4'), ('', '|V4'), ('b', '>f8')]")?,
            &[3],
            |i, d| {
                d.extend_from_slice(&(i as i32).to_le_bytes());
                d.extend_from_slice(&[0; 4]);
                d.extend_from_slice(&(i as f64 * 2.0).to_be_bytes());
            },
        ),
    ];
    // Fortran order: logical element (r, c) = r * 4 + c, stored column by column.
    let mut fortran = typed("r_f8_fortran.npy", "index", &[3, 4], |k| {
        let (c, r) = (k / 3, k % 3);
        (r * 4 + c) as f64
    })?;
    fortran.header.fortran_order = true;
    v.push(fortran);
    // A struct dtype built from parts rather than parsed or derived.
    let packed = StructType::packed([("a", i32::dtype()), ("b", f64::dtype())])?;
    v.push(raw(
        "r_titled_packed.npy",
        "titled",
        DType::Struct(packed),
        &[2],
        |i, d| {
            d.extend_from_slice(&(i as i32).to_ne_bytes());
            d.extend_from_slice(&(i as f64 * 2.0).to_ne_bytes());
        },
    ));
    Ok(v)
}

/// Writes the Rust files and their manifest; returns how many.
fn write_rust_files(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let files = rust_files()?;
    let mut manifest = Vec::new();
    for w in &files {
        let mut bytes = w.header.to_bytes()?;
        bytes.extend_from_slice(&w.data);
        if w.data.len() != w.header.data_len()? {
            bail!(
                "{}: generator wrote {} bytes, header says {}",
                w.name,
                w.data.len(),
                w.header.data_len()?
            );
        }
        std::fs::write(dir.join(w.name), bytes)?;
        manifest.push(json!({
            "name": w.name,
            "descr": w.header.dtype.to_descr(),
            "shape": w.header.shape,
            "fortran": w.header.fortran_order,
            "formula": w.formula,
        }));
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust-written files are valid `.npy` files whose data length
    /// matches their header, and they go through the round trip unchanged
    /// (the numpy side of the check needs Python; this part does not).
    #[test]
    fn rust_written_files_round_trip() {
        let dir = crate::util::target_dir()
            .join("interop")
            .join("npy")
            .join("rust-written-unit");
        let _ = std::fs::remove_dir_all(&dir);
        let n = write_rust_files(&dir).unwrap();
        assert!(n >= 20);
        let out = dir.join("rewritten");
        let results = roundtrip::run_dir(&dir, &out).unwrap();
        assert_eq!(results.len(), n);
        for (name, outcome) in results {
            assert_eq!(outcome, FileOutcome::Ok, "{name}");
            let a = std::fs::read(dir.join(&name)).unwrap();
            let b = std::fs::read(out.join(&name)).unwrap();
            assert_eq!(a, b, "{name}");
        }
    }
}
