//! Persistent keys, the original npshmex's `shm_put` / `shm_pop` / `shm_del`
//! / `shm_clear`: an array stored under a name in `/dev/shm` that outlives
//! tasks, whose small [`ShmKey`] is what tasks pass around.
//!
//! Each key is a `.npy` file: numpy reads it with
//! `np.load('/dev/shm/<name>', mmap_mode='r')`, and a `.npy` file numpy
//! writes into `/dev/shm` is popped here after its header is validated
//! against the element type and dimensionality asked for.
//!
//! A named file is writable by every process of the user, so it is never
//! viewed in place by safe code: [`shm_put`] writes the array into it and
//! [`shm_pop`] copies it into a segment this process owns (one copy, then
//! zero-copy through pools as any [`ShmArray`]). [`shm_pop_mapped`] maps it
//! without copying, under an `unsafe` promise that nobody writes or
//! truncates the file meanwhile.
//!
//! A key made inside a pool task belongs to the program the pool serves,
//! not to the worker that made it (workers are replaced at any moment):
//! its name carries the owning program's pid, so `clear_stale` keeps it
//! while that program lives.
//!
//! Unlike the segments of transfers (memfds, freed by the kernel with their
//! last user), named segments stay until removed: [`shm_pop`] without
//! [`Keep::Yes`], [`shm_del`], [`shm_clear`] (this process's keys) or
//! `npshmex_shm::clear_stale` (keys of dead processes).

use crate::array::ShmArray;
use crate::encode::encoded_chunks;
use crate::error::Result;
use crate::layout::{order_of, Layout, MemOrder};
use ndarray::{ArrayBase, Data, Dimension};
use npshmex_codec::{as_bytes, Element};
use npshmex_shm::cache::{self, Slot};
use npshmex_shm::{Access, NamedSegment, Segment, ShmError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

/// Whether [`shm_pop`] leaves the key in place (shared by the adapters).
pub use npshmex_shm::Keep;

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
    put_with(array, NamedSegment::create_unique)
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
    put_with(array, |len| NamedSegment::create(name, len))
}

fn put_with<A, S, D>(
    array: &ArrayBase<S, D>,
    create: impl FnOnce(usize) -> npshmex_shm::Result<NamedSegment>,
) -> Result<ShmKey>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    let (layout, header) = Layout::<D>::new::<A>(array.raw_dim(), order_of(array))?;
    let seg = create(layout.total_len())?;
    let written = write_npy(&seg, array, &layout, &header);
    if let Err(e) = written {
        let _ = seg.unlink();
        return Err(e);
    }
    let name = seg.name().to_owned();
    put_here().insert(name.clone());
    Ok(ShmKey { name })
}

/// Writes the header and the data of `array` (in the layout's memory order)
/// into the named file, with `pwrite`.
fn write_npy<A, S, D>(
    seg: &NamedSegment,
    array: &ArrayBase<S, D>,
    layout: &Layout<D>,
    header: &[u8],
) -> Result<()>
where
    A: Element,
    S: Data<Elem = A>,
    D: Dimension,
{
    seg.write_at(0, header)?;
    let start = layout.data_range().start as u64;
    // Contiguous in the layout's order and without padding: the bytes as
    // they are; otherwise the elements in memory order, encoded.
    let view = match layout.order {
        MemOrder::C => array.view(),
        MemOrder::F => array.view().reversed_axes(),
    };
    if let Some(bytes) = view.as_slice().and_then(|s| as_bytes(s).ok()) {
        seg.write_at(start, bytes)?;
    } else {
        let mut at = start;
        for bytes in encoded_chunks(view.iter().copied()) {
            seg.write_at(at, &bytes)?;
            at += bytes.len() as u64;
        }
    }
    Ok(())
}

/// Copies the array stored under `key` into a segment this process owns,
/// validated as `A` with dimension `D` (read-write); removes the key unless
/// `keep` is [`Keep::Yes`]. One copy: the file is writable by any process
/// of the user, so a safe view of it in place could change under its
/// borrow; see [`shm_pop_mapped`] for the zero-copy form.
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
/// [`crate::NdarrayError::Shm`] (`NotFound`, `TooSmall` if the file shrank
/// while read, ...), and on a file that is not a `.npy` of `A` and `D`:
/// [`crate::NdarrayError::Codec`], [`crate::NdarrayError::DTypeMismatch`],
/// [`crate::NdarrayError::DimMismatch`], [`crate::NdarrayError::TooSmall`].
/// The key is left in place on error.
pub fn shm_pop<A: Element, D: Dimension>(key: &ShmKey, keep: Keep) -> Result<ShmArray<A, D>> {
    let array = npshmex_shm::pop_with(&key.name, keep, |named| {
        let size = named.current_len()?;
        let len = usize::try_from(size).map_err(|_| ShmError::SizeOverflow { len: size })?;
        let mut slot = cache::alloc(len)?;
        named.read_at(0, slot.prefix_mut(len)?)?;
        ShmArray::from_received(slot, len)
    })?;
    forget_popped(key, keep);
    Ok(array)
}

/// A key popped with [`Keep::No`] is gone: no longer this process's to remove.
fn forget_popped(key: &ShmKey, keep: Keep) {
    if keep == Keep::No {
        put_here().remove(&key.name);
    }
}

/// Maps the array stored under `key` in place, without copying, validated
/// as `A` with dimension `D`, read-only; removes the key unless `keep` is
/// [`Keep::Yes`] (the data stays valid for the returned array either way).
/// Sent through a pool, it travels as a copy.
///
/// # Safety
/// While the returned array (or anything viewing it) lives, no process may
/// write the file or shrink it: a named segment cannot be sealed, so the
/// kernel does not enforce this. A write would change data under a view
/// (undefined behaviour, and invalid values for types such as `bool`); a
/// truncation would turn a read into SIGBUS. Prefer [`shm_pop`].
///
/// # Errors
/// As [`shm_pop`].
#[allow(unsafe_code)]
pub unsafe fn shm_pop_mapped<A: Element, D: Dimension>(
    key: &ShmKey,
    keep: Keep,
) -> Result<ShmArray<A, D>> {
    let array = npshmex_shm::pop_with(&key.name, keep, |named| {
        let fd = named.try_clone_fd()?;
        // SAFETY: the caller promises that nobody writes or truncates the
        // file while the array lives (this function's contract).
        let seg = unsafe { Segment::from_fd_unchecked(fd, Access::ReadOnly, 0)? };
        let len = seg.len();
        ShmArray::from_received(Slot::uncached(seg)?, len)
    })?;
    forget_popped(key, keep);
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
        // A popped array is a copy this process owns: sent on, it moves.
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
        // SAFETY: nobody else knows this key's name; nothing writes it.
        #[allow(unsafe_code)]
        let mapped = unsafe { shm_pop_mapped::<f64, Ix1>(&k2, Keep::Yes) }.unwrap();
        assert_eq!(mapped.view(), ndarray::aview1(&[0.0, 0.0, 0.0]));
        assert!(!mapped.is_writable());
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
