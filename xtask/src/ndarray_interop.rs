//! The `ndarray-interop` step of `cargo xtask test`: persistent keys of
//! `npshmex-ndarray` against real numpy, both ways.
//!
//! 1. Rust puts arrays (every kind of element incl. structured records,
//!    C and Fortran order, 0-d, empty axes) under keys in `/dev/shm`; numpy
//!    opens each with `np.load(path, mmap_mode='r')` and checks dtype,
//!    shape, order and values (`xtask/py/ndarray_interop.py check`).
//! 2. numpy writes `.npy` files into `/dev/shm`; Rust pops each without a
//!    copy (one of them inside a pool worker) and checks the same, and
//!    refuses the deliberately bad ones (truncated, big-endian, wrong
//!    dimensionality, not a `.npy`, invalid bools) with the typed error.
//!
//! Every file is removed whatever happens. Without Python the step is
//! skipped loudly, never failed.

use crate::python::{self, Venv};
use anyhow::{bail, ensure, Context, Result};
use half::f16;
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use npshmex_ndarray::{shm_del, shm_pop, shm_put, Element, Keep, NdarrayError, ShmKey};
use num_complex::Complex;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::Path;

npshmex_ndarray::record! {
    /// The structured dtype `[('id', '<i8'), ('x', '<f8'), ('tag', 'u1', (8,))]`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Rec {
        /// Flat index.
        pub id: i64,
        /// Flat index / 4.
        pub x: f64,
        /// Flat index + 0..8, mod 256.
        pub tag: [u8; 8],
    }
}

npshmex_ndarray::record! {
    /// A record with padding after `flag` (numpy's `align=True` layout).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Padded {
        /// Flat index.
        pub id: i64,
        /// Flat index / 4.
        pub x: f64,
        /// Flat index mod 3.
        pub flag: u8,
        /// `b'a' + index mod 26`, 16 times.
        pub name: [u8; 16],
    }
}

/// Result of the step.
pub enum Interop {
    /// Everything checked.
    Checked {
        /// Arrays Rust put and numpy verified.
        put: usize,
        /// numpy files Rust popped (good) or refused (bad).
        popped: usize,
    },
    /// Python is not available: what was not checked and why.
    Skipped(String),
}

/// Element kinds shared with the Python script (same names, same formulas
/// of the C-order flat index).
trait Kind: Element + PartialEq + std::fmt::Debug {
    const NAME: &'static str;
    fn value(i: usize) -> Self;
}

impl Kind for f64 {
    const NAME: &'static str = "f8";
    fn value(i: usize) -> f64 {
        i as f64 * 0.5 - 3.0
    }
}
impl Kind for i32 {
    const NAME: &'static str = "i4";
    fn value(i: usize) -> i32 {
        i as i32 * 7 - 100
    }
}
impl Kind for bool {
    const NAME: &'static str = "b1";
    fn value(i: usize) -> bool {
        i.is_multiple_of(3)
    }
}
impl Kind for u8 {
    const NAME: &'static str = "u1";
    fn value(i: usize) -> u8 {
        (i % 251) as u8
    }
}
impl Kind for Complex<f64> {
    const NAME: &'static str = "c16";
    fn value(i: usize) -> Complex<f64> {
        Complex::new(i as f64, -(i as f64))
    }
}
impl Kind for f16 {
    const NAME: &'static str = "f2";
    fn value(i: usize) -> f16 {
        f16::from_f64((i % 100) as f64 * 0.25)
    }
}
impl Kind for Rec {
    const NAME: &'static str = "rec";
    fn value(i: usize) -> Rec {
        Rec {
            id: i as i64,
            x: i as f64 / 4.0,
            tag: std::array::from_fn(|k| ((i + k) % 256) as u8),
        }
    }
}

impl Kind for Padded {
    const NAME: &'static str = "padded";
    fn value(i: usize) -> Padded {
        Padded {
            id: i as i64,
            x: i as f64 * 0.25,
            flag: (i % 3) as u8,
            name: [b'a' + (i % 26) as u8; 16],
        }
    }
}

fn c_index(ix: &IxDyn, shape: &[usize]) -> usize {
    let mut flat = 0;
    for (k, &len) in shape.iter().enumerate() {
        flat = flat * len + ix[k];
    }
    flat
}

fn expected<T: Kind>(shape: &[usize], fortran: bool) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(shape).set_f(fortran), |ix| {
        T::value(c_index(&ix, shape))
    })
}

/// Removes every listed key and numpy file on drop, whatever happened.
struct Cleanup {
    keys: Vec<ShmKey>,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for k in &self.keys {
            let _ = shm_del(k);
        }
        crate::util::remove_shm_entries(&self.prefix);
    }
}

fn put<T: Kind>(
    c: &mut Cleanup,
    manifest: &mut Vec<Value>,
    shape: &[usize],
    fortran: bool,
) -> Result<()> {
    let a = expected::<T>(shape, fortran);
    let key = shm_put(&a).with_context(|| format!("shm_put {} {shape:?}", T::NAME))?;
    c.keys.push(key.clone());
    manifest.push(json!({"name": key.name(), "kind": T::NAME, "shape": shape, "fortran": fortran}));
    Ok(())
}

fn pop_check<T: Kind>(name: &str, shape: &[usize], fortran: bool) -> Result<()> {
    let key = ShmKey::new(name)?;
    let a = shm_pop::<T, IxDyn>(&key, Keep::No).with_context(|| format!("shm_pop {name}"))?;
    ensure!(
        !key.path().exists(),
        "{name}: pop without keep left the file"
    );
    ensure!(
        a.shape() == shape,
        "{name}: shape {:?} != {shape:?}",
        a.shape()
    );
    let f = fortran && shape.len() > 1 && shape.iter().product::<usize>() > 1;
    ensure!(a.is_fortran_order() == f, "{name}: order");
    let want = expected::<T>(shape, fortran);
    ensure!(a.view() == want, "{name}: values differ");
    Ok(())
}

fn pop_refused<T: Kind>(name: &str, ndim: u64, error: &str) -> Result<()> {
    let key = ShmKey::new(name)?;
    let r = if ndim == 1 {
        shm_pop::<T, ndarray::Ix1>(&key, Keep::No).map(drop)
    } else {
        shm_pop::<T, IxDyn>(&key, Keep::No).map(drop)
    };
    let kind = match &r {
        Ok(()) => bail!("{name}: popped, but numpy made it to be refused ({error})"),
        Err(NdarrayError::TooSmall { .. }) => "TooSmall",
        Err(NdarrayError::DTypeMismatch { .. }) => "DTypeMismatch",
        Err(NdarrayError::DimMismatch { .. }) => "DimMismatch",
        Err(NdarrayError::Codec(_)) => "Codec",
        Err(e) => bail!("{name}: unexpected error {e}"),
    };
    ensure!(
        kind == error,
        "{name}: refused with {kind}, expected {error}"
    );
    ensure!(
        key.path().exists(),
        "{name}: a refused pop must leave the key"
    );
    shm_del(&key)?;
    eprintln!(
        "rust refused {name}: {}",
        r.err().map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}

/// Runs in a pool worker: a key numpy wrote, popped in another process.
fn pop_in_worker(key: ShmKey) -> Result<f64, String> {
    let a = shm_pop::<f64, IxDyn>(&key, Keep::Yes).map_err(|e| e.to_string())?;
    Ok(a.view().sum())
}

fn py(venv: &Venv, args: &[&str], manifest: &Path) -> Result<()> {
    let args = args.iter().map(OsStr::new).chain([manifest.as_os_str()]);
    venv.run_script("ndarray_interop.py", args)
}

/// Runs the whole check.
pub fn run() -> Result<Interop> {
    let venv = match python::venv(&[python::NUMPY])? {
        Ok(v) => v,
        Err(why) => {
            return Ok(Interop::Skipped(format!(
                "numpy interop of ShmArray keys NOT checked: {why}"
            )))
        }
    };
    let dir = crate::util::target_dir().join("interop").join("ndarray");
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("npshmex-interop-{}", std::process::id());
    let mut c = Cleanup {
        keys: Vec::new(),
        prefix: prefix.clone(),
    };

    // 1. Rust puts, numpy checks.
    let mut manifest = Vec::new();
    put::<f64>(&mut c, &mut manifest, &[3, 4], false)?;
    put::<f64>(&mut c, &mut manifest, &[2, 3, 4], true)?;
    put::<f64>(&mut c, &mut manifest, &[1000, 300], false)?;
    put::<i32>(&mut c, &mut manifest, &[5], false)?;
    put::<i32>(&mut c, &mut manifest, &[4, 0, 2], false)?;
    put::<bool>(&mut c, &mut manifest, &[7, 3], true)?;
    put::<u8>(&mut c, &mut manifest, &[], false)?;
    put::<Complex<f64>>(&mut c, &mut manifest, &[6], false)?;
    put::<f16>(&mut c, &mut manifest, &[2, 5], false)?;
    put::<Rec>(&mut c, &mut manifest, &[10], false)?;
    put::<Rec>(&mut c, &mut manifest, &[3, 2], true)?;
    put::<Padded>(&mut c, &mut manifest, &[5, 2], true)?;
    let put_manifest = dir.join("rust-put.json");
    std::fs::write(&put_manifest, serde_json::to_vec_pretty(&manifest)?)?;
    py(&venv, &["check"], &put_manifest)?;
    let put_count = manifest.len();

    // 2. numpy writes, Rust pops.
    let written = dir.join("numpy-written.json");
    py(&venv, &["write", &prefix], &written)?;
    let m: Value = serde_json::from_slice(&std::fs::read(&written)?)?;
    let good = m["good"].as_array().context("manifest: good")?;
    let bad = m["bad"].as_array().context("manifest: bad")?;
    let pool = npshmex_pool::ProcessPoolExecutor::new(1)?;
    let mut popped = 0;
    for e in good {
        let name = e["name"].as_str().context("manifest: name")?;
        let shape: Vec<usize> = serde_json::from_value(e["shape"].clone())?;
        let fortran = e["fortran"].as_bool().context("manifest: fortran")?;
        let kind = e["kind"].as_str().context("manifest: kind")?;
        if kind == "f8" && shape.len() == 2 && shape[0] >= 1000 {
            let key = ShmKey::new(name)?;
            let sum = pool
                .submit(pop_in_worker, key)?
                .result()?
                .map_err(anyhow::Error::msg)?;
            let want: f64 = expected::<f64>(&shape, fortran).sum();
            ensure!(sum == want, "{name}: the worker's sum {sum} != {want}");
        }
        match kind {
            "f8" => pop_check::<f64>(name, &shape, fortran)?,
            "i4" => pop_check::<i32>(name, &shape, fortran)?,
            "b1" => pop_check::<bool>(name, &shape, fortran)?,
            "u1" => pop_check::<u8>(name, &shape, fortran)?,
            "c16" => pop_check::<Complex<f64>>(name, &shape, fortran)?,
            "f2" => pop_check::<f16>(name, &shape, fortran)?,
            "rec" => pop_check::<Rec>(name, &shape, fortran)?,
            "padded" => pop_check::<Padded>(name, &shape, fortran)?,
            other => bail!("manifest: unknown kind {other}"),
        }
        eprintln!("rust ok {name} {kind} {shape:?}");
        popped += 1;
    }
    drop(pool);
    for e in bad {
        let name = e["name"].as_str().context("manifest: name")?;
        let ndim = e["ndim"].as_u64().context("manifest: ndim")?;
        let error = e["error"].as_str().context("manifest: error")?;
        match e["as"].as_str().context("manifest: as")? {
            "f8" => pop_refused::<f64>(name, ndim, error)?,
            "i4" => pop_refused::<i32>(name, ndim, error)?,
            "b1" => pop_refused::<bool>(name, ndim, error)?,
            other => bail!("manifest: unknown kind {other}"),
        }
        popped += 1;
    }

    // Nothing of ours may remain.
    drop(c);
    let left = npshmex_testkit::shm_entries(&prefix);
    ensure!(left.is_empty(), "left in /dev/shm: {left:?}");
    Ok(Interop::Checked {
        put: put_count,
        popped,
    })
}
