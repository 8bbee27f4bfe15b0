//! Persistent keys, the original npshmex's `shm_put` / `shm_pop` / `shm_del`
//! / `shm_clear`: an array stored under a name in `/dev/shm` that outlives
//! tasks, whose small [`ShmKey`] is what tasks pass around.
//!
//! Each key is a `.npy` file: numpy reads it with
//! `np.load('/dev/shm/<name>', mmap_mode='r')`, and a `.npy` file numpy
//! writes into `/dev/shm` is popped here without a copy, after its header is
//! validated against the element type and dimensionality asked for.
//!
//! Unlike the segments of transfers (memfds, freed by the kernel with their
//! last user), named segments stay until removed: [`shm_pop`] without
//! [`Keep::Yes`], [`shm_del`], [`shm_clear`] (this process's keys) or
//! `npshmex_shm::clear_stale` (keys of dead processes).

use crate::array::ShmArray;
use crate::cache::Slot;
use crate::error::Result;
use crate::layout::{order_of, Layout};
use ndarray::{ArrayBase, Data, Dimension};
use npshmex_codec::Element;
use npshmex_shm::{Access, Segment, ShmError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

/// The name of an array stored in `/dev/shm` (a small value: pass it to
/// tasks instead of the array).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShmKey {
    name: String,
}

impl ShmKey {
    /// A key for an existing or future segment `name` (for example a `.npy`
    /// file numpy wrote into `/dev/shm`).
    ///
    /// # Errors
    /// [`crate::NdarrayError::Shm`] (`InvalidName`) for names with `/`, NUL,
    /// control characters, `.`/`..`, empty or longer than 200 bytes.
    pub fn new(name: impl Into<String>) -> Result<ShmKey> {
        let name = name.into();
        npshmex_shm::validate_name(&name)?;
        Ok(ShmKey { name })
    }

    /// The segment's name in `/dev/shm`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's path, `/dev/shm/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.name)
    }
}

impl std::fmt::Display for ShmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Whether [`shm_pop`] leaves the key in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Remove the key: the popped array is the last user of the data.
    No,
    /// Leave the key for other readers (the original's `keep=True`).
    Yes,
}

/// Names put by this process and not yet removed, for [`shm_clear`].
static PUT_HERE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn put_here() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    // Every mutation is a single insert/remove: a poisoned set is consistent.
    PUT_HERE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stores a copy of `array` under a new unique key
/// (`npshmex-<pid>-<starttime>-<random>`).
///
/// ```
/// use npshmex_ndarray::{shm_pop, shm_put, Keep};
/// let key = shm_put(&ndarray::arr1(&[1u32, 2, 3]))?;
/// let a = shm_pop::<u32, ndarray::Ix1>(&key, Keep::No)?;
/// assert_eq!(a.view(), ndarray::aview1(&[1u32, 2, 3]));
/// # Ok::<(), npshmex_ndarray::NdarrayError>(())
/// ```
///
/// # Errors
/// [`crate::NdarrayError::Shm`] when the segment cannot be created (no space).
pub fn shm_put<A, S, D>(array: &ArrayBase<S, D>) -> Result<ShmKey>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    put_with(array, Segment::create_named_unique)
}

/// Stores a copy of `array` under the key `name` (which must not exist).
///
/// # Errors
/// [`crate::NdarrayError::Shm`]: `InvalidName`, `Exists`, `NoSpace`.
pub fn shm_put_as<A, S, D>(name: &str, array: &ArrayBase<S, D>) -> Result<ShmKey>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    put_with(array, |len| Segment::create_named(name, len))
}

fn put_with<A, S, D>(
    array: &ArrayBase<S, D>,
    create: impl FnOnce(usize) -> npshmex_shm::Result<Segment>,
) -> Result<ShmKey>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    let (layout, header) = Layout::<D>::new::<A>(array.raw_dim(), order_of(array))?;
    let seg = create(layout.total_len())?;
    let name = seg.name().unwrap_or_default().to_string();
    let written = (|| -> Result<()> {
        let mut seg = seg;
        seg.as_mut_slice()?[..header.len()].copy_from_slice(&header);
        let mut a = ShmArray::<A, D>::from_parts(Slot::uncached(seg)?, layout);
        a.write_from(array)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = npshmex_shm::remove(&name);
        return Err(e);
    }
    put_here().insert(name.clone());
    Ok(ShmKey { name })
}

/// Maps the array stored under `key` (no copy), validated as `A` with
/// dimension `D`, read-write; removes the key unless `keep` is [`Keep::Yes`].
/// The data stays valid for the returned array either way.
///
/// # Errors
/// [`crate::NdarrayError::Shm`] (`NotFound`, ...), and on a segment that is not
/// a `.npy` of `A` and `D`: [`crate::NdarrayError::Codec`],
/// [`crate::NdarrayError::DTypeMismatch`], [`crate::NdarrayError::DimMismatch`],
/// [`crate::NdarrayError::TooSmall`]. The key is left in place on error.
pub fn shm_pop<A: Element, D: Dimension>(key: &ShmKey, keep: Keep) -> Result<ShmArray<A, D>> {
    let seg = Segment::open_named(&key.name, Access::ReadWrite)?;
    let layout = Layout::<D>::read::<A>(seg.as_slice())?;
    let array = ShmArray::from_parts(Slot::uncached(seg)?, layout);
    array.try_view()?;
    if keep == Keep::No {
        shm_del(key)?;
    }
    Ok(array)
}

/// Removes the key (arrays already popped keep their data).
///
/// # Errors
/// [`crate::NdarrayError::Shm`] (`NotFound`, ...).
pub fn shm_del(key: &ShmKey) -> Result<()> {
    put_here().remove(&key.name);
    npshmex_shm::remove(&key.name)?;
    Ok(())
}

/// Removes every key this process put and has not removed, and every
/// managed segment whose name says this process owns it; returns how many
/// were removed.
///
/// # Errors
/// [`crate::NdarrayError::Shm`] if `/dev/shm` cannot be listed or a segment
/// cannot be removed (the others are still removed).
pub fn shm_clear() -> Result<usize> {
    let me = std::process::id();
    let mut names: BTreeSet<String> = std::mem::take(&mut *put_here());
    for info in npshmex_shm::list()? {
        if info.owner_pid == Some(me) {
            names.insert(info.name);
        }
    }
    let mut removed = 0;
    let mut first_err = None;
    for name in names {
        match npshmex_shm::remove(&name) {
            Ok(()) => removed += 1,
            Err(ShmError::NotFound { .. }) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NdarrayError;
    use ndarray::{arr2, Array1, Ix1, Ix2};

    fn exists(key: &ShmKey) -> bool {
        key.path().exists()
    }

    #[test]
    fn put_pop_keep_del_clear() {
        let a = arr2(&[[1i32, 2], [3, 4]]);
        let key = shm_put(&a).unwrap();
        assert!(key.name().starts_with("npshmex-"));
        let kept = shm_pop::<i32, Ix2>(&key, Keep::Yes).unwrap();
        assert_eq!(kept.view(), a);
        assert!(exists(&key), "keep leaves the key");
        let popped = shm_pop::<i32, Ix2>(&key, Keep::No).unwrap();
        assert!(!exists(&key), "pop without keep removes it");
        assert_eq!(popped.view(), a, "a popped array outlives its key");
        // Named segments cannot be sealed, so a popped array is sent on as
        // a sealed copy: the receiver gets the same values, and its writes
        // do not reach the key.
        let mut sent = crate::test_util::roundtrip(kept.try_clone().unwrap()).unwrap();
        assert_eq!(sent.view(), a);
        sent.view_mut().unwrap()[[0, 0]] = 100;
        assert_eq!(kept.view()[[0, 0]], 1);
        assert!(matches!(
            shm_pop::<i32, Ix2>(&key, Keep::No),
            Err(NdarrayError::Shm(npshmex_shm::ShmError::NotFound { .. }))
        ));

        let k2 = shm_put(&Array1::<f64>::zeros(3)).unwrap();
        assert!(matches!(
            shm_pop::<f32, Ix1>(&k2, Keep::No),
            Err(NdarrayError::DTypeMismatch { .. })
        ));
        assert!(exists(&k2), "a refused pop leaves the key");
        shm_del(&k2).unwrap();
        assert!(!exists(&k2));

        let name = format!("npshmex-test-user-key-{}", std::process::id());
        let k3 = shm_put_as(&name, &Array1::from_elem(4, 1u8)).unwrap();
        assert_eq!(k3.name(), name);
        assert!(matches!(
            shm_put_as(&name, &Array1::from_elem(4, 1u8)),
            Err(NdarrayError::Shm(npshmex_shm::ShmError::Exists { .. }))
        ));
        let k4 = shm_put(&Array1::from_elem(4, 2u8)).unwrap();
        assert!(shm_clear().unwrap() >= 2);
        assert!(!exists(&k3) && !exists(&k4));
        assert!(ShmKey::new("../etc").is_err());
    }
}
