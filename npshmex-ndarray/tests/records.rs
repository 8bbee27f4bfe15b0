//! Issue 16.1: every constructor and every write path of `ShmArray` (and
//! of the paths that copy arrays into shared memory: keys, `via_shm`),
//! against records with padding bytes, at the end and inside, and a dense
//! record. Each result must hold the values and, byte for byte, what numpy
//! stores: the values in the array's memory order with every padding byte
//! zero, also in a reused segment whose old bytes were not.
//!
//! A test binary of its own: the reused-segment checks need the
//! process-wide segment cache to themselves (the leak check's lock keeps
//! this binary's tests apart).

mod common;

use common::Padded;

use ndarray::{s, Array1, Array2, ArrayView, Axis, Dimension, Ix1, Ix2, ShapeBuilder, Slice};
use npshmex_codec::{to_bytes, NpyHeader};
use npshmex_ndarray::{
    record, shm_pop, shm_put, shm_put_as, Element, FixedBytes, Keep, NdarrayError, Shm, ShmArg,
    ShmArray, ShmArray1, ShmArray2, Transfer,
};
use npshmex_testkit::oob_roundtrip;
use std::fmt::Debug;

npshmex_pool::test_support!();

record! {
    /// Padding inside (after `ok`) and at the end, a validated `bool`, and
    /// an `S3` string.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Gapped {
        /// A field.
        pub ok: bool,
        /// A field.
        pub v: f64,
        /// A field.
        pub tag: FixedBytes<3>,
    }
}

record! {
    /// No padding: typed mutable views work.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Dense {
        /// A field.
        pub id: i64,
        /// A field.
        pub x: f32,
        /// A field.
        pub tag: [u8; 4],
    }
}

/// A record type the suite runs on: distinct values per index, and a
/// change to them.
trait Sample: Element + PartialEq + Debug {
    fn at(i: usize) -> Self;
    fn bump(self) -> Self;
}

impl Sample for Padded {
    fn at(i: usize) -> Self {
        Padded {
            id: i as i64 - 3,
            x: i as f64 * 0.5,
            flag: (i % 251) as u8,
            name: [b'a' + (i % 26) as u8; 16],
        }
    }
    fn bump(self) -> Self {
        Padded {
            id: self.id + 1000,
            x: -self.x,
            ..self
        }
    }
}

impl Sample for Gapped {
    fn at(i: usize) -> Self {
        Gapped {
            ok: i.is_multiple_of(3),
            v: i as f64 - 0.25,
            tag: FixedBytes([b'x', (i % 256) as u8, 0]),
        }
    }
    fn bump(self) -> Self {
        Gapped {
            ok: !self.ok,
            v: self.v * 2.0,
            ..self
        }
    }
}

impl Sample for Dense {
    fn at(i: usize) -> Self {
        Dense {
            id: i as i64,
            x: i as f32 / 4.0,
            tag: (i as u32).to_le_bytes(),
        }
    }
    fn bump(self) -> Self {
        Dense {
            id: self.id * 3,
            ..self
        }
    }
}

#[test]
fn the_records_have_the_padding_they_are_meant_to() {
    assert_eq!(std::mem::size_of::<Padded>(), 40);
    assert!(!Padded::dtype().is_dense());
    assert_eq!(std::mem::size_of::<Gapped>(), 24);
    assert!(!Gapped::dtype().is_dense());
    assert_eq!(std::mem::size_of::<Dense>(), 16);
    assert!(Dense::dtype().is_dense());
}

/// The data bytes of `a` (after its `.npy` header).
fn data_bytes<T: Element, D: Dimension>(a: &ShmArray<T, D>) -> &[u8] {
    let (_, offset) = NpyHeader::read(a.as_npy_bytes()).expect("a valid .npy header");
    &a.as_npy_bytes()[offset..]
}

/// `expect`'s elements in the memory order of an array that is Fortran
/// ordered or not, as numpy stores them: padding zero.
fn numpy_bytes<T: Element, D: Dimension>(expect: &ArrayView<'_, T, D>, fortran: bool) -> Vec<u8> {
    let ordered: Vec<T> = if fortran {
        expect.t().iter().copied().collect()
    } else {
        expect.iter().copied().collect()
    };
    to_bytes(&ordered)
}

/// `a` holds `expect`, and its bytes are exactly numpy's.
fn assert_stored<T: Element + PartialEq + Debug, D: Dimension>(
    a: &ShmArray<T, D>,
    expect: &ArrayView<'_, T, D>,
) {
    assert_eq!(&a.view(), expect);
    assert_eq!(
        data_bytes(a),
        &numpy_bytes(expect, a.is_fortran_order())[..],
        "bytes differ from numpy's (padding not zero?)"
    );
}

fn c_and_f<T: Sample>() -> [Array2<T>; 2] {
    [
        Array2::from_shape_fn((7, 5), |(i, j)| T::at(i * 5 + j)),
        Array2::from_shape_fn((7, 5).f(), |(i, j)| T::at(i * 5 + j)),
    ]
}

fn constructors<T: Sample>() {
    let leaks = common::leak_check();
    for src in c_and_f::<T>() {
        let fortran = !src.is_standard_layout();
        let order = if fortran {
            ndarray::Order::ColumnMajor
        } else {
            ndarray::Order::RowMajor
        };

        let z = ShmArray2::<T>::zeros(((7, 5), order)).unwrap();
        assert_eq!(z.is_fortran_order(), fortran);
        assert!(data_bytes(&z).iter().all(|&b| b == 0));

        let e = ShmArray2::from_elem(((7, 5), order), T::at(9)).unwrap();
        assert_stored(&e, &Array2::from_elem((7, 5), T::at(9)).view());

        let mut calls = Vec::new();
        let f = ShmArray2::from_shape_fn(((7, 5), order), |(i, j)| {
            calls.push((i, j));
            T::at(i * 5 + j)
        })
        .unwrap();
        assert_eq!(f.is_fortran_order(), fortran);
        assert_stored(&f, &src.view());
        let mut ndarray_calls = Vec::new();
        let _ = Array2::from_shape_fn((7, 5).set_f(fortran), |(i, j)| ndarray_calls.push((i, j)));
        assert_eq!(calls, ndarray_calls, "f is called in ndarray's order");

        let a = ShmArray2::from_array(&src).unwrap();
        assert_eq!(a.is_fortran_order(), fortran);
        assert_stored(&a, &src.view());
        let stepped = src.slice_axis(Axis(0), Slice::new(0, None, 2));
        assert_stored(&ShmArray2::from_array(&stepped).unwrap(), &stepped);

        let m = a.map(|r| r.bump()).unwrap();
        assert_eq!(m.is_fortran_order(), fortran);
        assert_stored(&m, &src.mapv(T::bump).view());
        let to_rec = ShmArray2::from_array(&src.mapv(|_| 5u32))
            .unwrap()
            .map(|&k| T::at(k as usize))
            .unwrap();
        assert_stored(&to_rec, &Array2::from_elem((7, 5), T::at(5)).view());
        let from_rec = a.map(|r| format!("{r:?}").len() as u64).unwrap();
        assert_eq!(
            from_rec.to_owned(),
            src.map(|r| format!("{r:?}").len() as u64)
        );

        let deep = a.try_clone().unwrap();
        assert_stored(&deep, &src.view());
        let cow = a.share_copy_on_write().unwrap();
        assert_stored(&cow, &src.view());
        let frozen = a.into_read_only().unwrap();
        assert_stored(&frozen, &src.view());
        assert_stored(&frozen.try_clone().unwrap(), &src.view());
        assert_eq!(frozen.to_owned(), src);
    }
    let empty = ShmArray2::<T>::from_shape_fn((0, 3), |_| T::at(0)).unwrap();
    assert!(empty.is_empty());
    let scalar = ShmArray::<T, ndarray::Ix0>::from_shape_fn((), |()| T::at(4)).unwrap();
    assert_eq!(scalar.view()[()], T::at(4));
    drop((empty, scalar));
    leaks.finish();
}

#[test]
fn every_constructor_stores_padded_records_as_numpy_does() {
    constructors::<Padded>();
    constructors::<Gapped>();
}

#[test]
fn every_constructor_stores_dense_records_as_numpy_does() {
    constructors::<Dense>();
}

fn in_place<T: Sample>() {
    let leaks = common::leak_check();
    for src in c_and_f::<T>() {
        let mut a = ShmArray2::from_array(&src).unwrap();
        let mut expect = src.clone();

        a.set([2, 3], T::at(100)).unwrap();
        a.set((0, 4), T::at(101)).unwrap();
        expect[[2, 3]] = T::at(100);
        expect[[0, 4]] = T::at(101);
        assert_stored(&a, &expect.view());
        assert!(matches!(
            a.set([7, 0], T::at(0)),
            Err(NdarrayError::OutOfBounds { ref shape, .. }) if shape == &[7, 5]
        ));

        a.map_inplace(|r| *r = r.bump()).unwrap();
        expect.mapv_inplace(T::bump);
        assert_stored(&a, &expect.view());

        let mut order = Vec::new();
        a.indexed_map_inplace(|(i, j), r| {
            order.push((i, j));
            if (i + j).is_multiple_of(2) {
                *r = T::at(i * 100 + j);
            }
        })
        .unwrap();
        for ((i, j), r) in expect.indexed_iter_mut() {
            if (i + j).is_multiple_of(2) {
                *r = T::at(i * 100 + j);
            }
        }
        assert_stored(&a, &expect.view());
        let mut memory_order = Vec::new();
        let _ = Array2::from_shape_fn(src.raw_dim().set_f(a.is_fortran_order()), |ij| {
            memory_order.push(ij);
        });
        assert_eq!(order, memory_order, "elements are visited in memory order");

        // Through the transfer modes: a moved array and a copy-on-write
        // one may be changed in place, a read-only one may not.
        let mut moved = oob_roundtrip(a).unwrap();
        assert_eq!(moved.transfer(), Transfer::Move);
        moved.set([1, 1], T::at(7)).unwrap();
        expect[[1, 1]] = T::at(7);
        assert_stored(&moved, &expect.view());
        let frozen = moved.into_read_only().unwrap();
        let mut cow = oob_roundtrip(frozen.share_copy_on_write().unwrap()).unwrap();
        cow.map_inplace(|r| *r = T::at(1)).unwrap();
        assert_stored(&cow, &Array2::from_elem((7, 5), T::at(1)).view());
        assert_stored(&frozen, &expect.view());
        let mut ro = oob_roundtrip(frozen.try_clone().unwrap()).unwrap();
        assert!(matches!(
            ro.set([0, 0], T::at(0)),
            Err(NdarrayError::ReadOnly)
        ));
        assert!(matches!(
            ro.map_inplace(|_| ()),
            Err(NdarrayError::ReadOnly)
        ));
        assert!(matches!(
            ro.indexed_map_inplace(|_, _| ()),
            Err(NdarrayError::ReadOnly)
        ));
        assert_stored(&ro, &expect.view());
    }
    // One axis, indexed by a plain usize, and a dynamic dimension.
    let mut one = ShmArray1::from_shape_fn(4, T::at).unwrap();
    one.set(3, T::at(30)).unwrap();
    assert_eq!(one.view()[3], T::at(30));
    let mut dynamic =
        ShmArray::<T, ndarray::IxDyn>::from_elem(ndarray::IxDyn(&[2, 2, 2]), T::at(0)).unwrap();
    dynamic.set(ndarray::IxDyn(&[1, 0, 1]), T::at(5)).unwrap();
    dynamic.set(&[0usize, 1, 1][..], T::at(6)).unwrap();
    assert_eq!(dynamic.view()[[1, 0, 1]], T::at(5));
    assert_eq!(dynamic.view()[[0, 1, 1]], T::at(6));
    assert!(matches!(
        dynamic.set(&[0usize, 1][..], T::at(6)),
        Err(NdarrayError::OutOfBounds { .. })
    ));
    drop((one, dynamic));
    leaks.finish();
}

#[test]
fn padded_records_change_in_place_through_the_encoding() {
    in_place::<Padded>();
    in_place::<Gapped>();
}

#[test]
fn dense_records_change_in_place_through_the_same_methods() {
    in_place::<Dense>();
}

#[test]
fn view_mut_refuses_padded_records_and_serves_dense_ones() {
    let leaks = common::leak_check();
    let mut p = ShmArray1::from_shape_fn(3, Padded::at).unwrap();
    assert!(matches!(
        p.view_mut(),
        Err(NdarrayError::Codec(
            npshmex_codec::CodecError::Padding { .. }
        ))
    ));
    let mut d = ShmArray1::from_shape_fn(3, Dense::at).unwrap();
    d.view_mut().unwrap()[0] = Dense::at(9);
    assert_eq!(d.view()[0], Dense::at(9));
    drop((p, d));
    leaks.finish();
}

/// Fills a reusable segment a little larger than `bytes` of data need
/// with 0xff and drops it into the otherwise empty cache; returns its
/// file's inode.
fn dirty_segment(bytes: usize) -> u64 {
    npshmex_ndarray::cache::clear();
    // Room for a longer header than a `u8` array's.
    let junk = ShmArray1::<u8>::from_elem(bytes + 4096, 0xff).unwrap();
    let ino = junk.segment().file_key().unwrap().ino;
    drop(junk);
    ino
}

fn reused<T: Sample>() {
    let leaks = common::leak_check();
    // Large enough to be cached (1 MiB for the 16-byte record), C and
    // Fortran.
    let (rows, cols) = (400, 200);
    let bytes = rows * cols * std::mem::size_of::<T>();
    let expect = Array2::from_shape_fn((rows, cols), |(i, j)| T::at(i * cols + j));
    for order in [ndarray::Order::RowMajor, ndarray::Order::ColumnMajor] {
        let ino = dirty_segment(bytes);
        let a =
            ShmArray2::from_shape_fn(((rows, cols), order), |(i, j)| T::at(i * cols + j)).unwrap();
        assert_eq!(a.segment().file_key().unwrap().ino, ino, "not reused");
        assert_stored(&a, &expect.view());

        let ino = dirty_segment(bytes);
        let e = ShmArray2::from_elem(((rows, cols), order), T::at(3)).unwrap();
        assert_eq!(e.segment().file_key().unwrap().ino, ino, "not reused");
        assert_stored(&e, &Array2::from_elem((rows, cols), T::at(3)).view());

        let ino = dirty_segment(bytes);
        let src = if order == ndarray::Order::RowMajor {
            expect.clone()
        } else {
            let mut f = Array2::from_elem((rows, cols).f(), T::at(0));
            f.assign(&expect);
            f
        };
        let c = ShmArray2::from_array(&src).unwrap();
        assert_eq!(c.segment().file_key().unwrap().ino, ino, "not reused");
        assert_stored(&c, &src.view());

        let ino = dirty_segment(bytes);
        let m = c.map(|r| r.bump()).unwrap();
        assert_eq!(m.segment().file_key().unwrap().ino, ino, "not reused");
        assert_stored(&m, &src.mapv(T::bump).view());

        let ino = dirty_segment(bytes);
        let z = ShmArray2::<T>::zeros(((rows, cols), order)).unwrap();
        assert_eq!(z.segment().file_key().unwrap().ino, ino, "not reused");
        assert!(data_bytes(&z).iter().all(|&b| b == 0));
    }
    leaks.finish();
}

#[test]
fn reused_segments_hold_no_old_bytes_in_padding() {
    reused::<Padded>();
    reused::<Gapped>();
    reused::<Dense>();
}

/// Where an array's data starts in the bytes of a key (the `.npy` file).
fn key_data(bytes: &[u8]) -> &[u8] {
    let (_, offset) = NpyHeader::read(bytes).expect("a valid .npy header");
    &bytes[offset..]
}

fn keys<T: Sample>() {
    let leaks = common::leak_check();
    for src in c_and_f::<T>() {
        let fortran = !src.is_standard_layout();
        let key = shm_put(&src).unwrap();
        let file = std::fs::read(key.path()).unwrap();
        assert_eq!(key_data(&file), &numpy_bytes(&src.view(), fortran)[..]);
        let popped = shm_pop::<T, Ix2>(&key, Keep::No).unwrap();
        assert_stored(&popped, &src.view());

        let stepped = src.slice(s![..;2, 1..]);
        let name = format!("npshmex-test-records-{}", std::process::id());
        let key = shm_put_as(&name, &stepped).unwrap();
        let file = std::fs::read(key.path()).unwrap();
        assert_eq!(key_data(&file), &numpy_bytes(&stepped, false)[..]);
        let mut popped = shm_pop::<T, Ix2>(&key, Keep::No).unwrap();
        popped.set([0, 0], T::at(77)).unwrap();
        let mut expect = stepped.to_owned();
        expect[[0, 0]] = T::at(77);
        assert_stored(&popped, &expect.view());
    }
    leaks.finish();
}

#[test]
fn keys_store_records_as_numpy_does() {
    keys::<Padded>();
    keys::<Gapped>();
    keys::<Dense>();
}

/// A `.npy` file as numpy may leave it after `np.empty`: padding bytes
/// that are not zero. Popped and changed in place, the rewritten records
/// get zero padding.
#[test]
fn padding_left_dirty_by_another_writer_is_zeroed_by_in_place_writes() {
    let leaks = common::leak_check();
    let src = Array1::from_shape_fn(1000, Padded::at);
    let key = shm_put(&src).unwrap();
    let mut file = std::fs::read(key.path()).unwrap();
    npshmex_ndarray::shm_del(&key).unwrap();
    let (_, offset) = NpyHeader::read(&file).unwrap();
    for rec in file[offset..].chunks_mut(40) {
        rec[33..].fill(0xab);
    }
    let name = format!("npshmex-test-dirty-{}", std::process::id());
    let seg = npshmex_shm::NamedSegment::create(&name, file.len()).unwrap();
    seg.write_at(0, &file).unwrap();
    drop(seg);
    let key = npshmex_ndarray::ShmKey::new(name).unwrap();
    let mut a = shm_pop::<Padded, Ix1>(&key, Keep::No).unwrap();
    assert_eq!(a.view(), src.view(), "dirty padding is still readable");
    assert_ne!(data_bytes(&a), &to_bytes(src.as_slice().unwrap())[..]);
    a.map_inplace(|_| ()).unwrap();
    assert_stored(&a, &src.view());
    drop(a);
    leaks.finish();
}

fn drop_in<T: Sample>() {
    let leaks = common::leak_check();
    for src in c_and_f::<T>() {
        let fortran = !src.is_standard_layout();
        // Small: inline `.npy` bytes, outside a pool and in one.
        let bytes = postcard::to_allocvec(&Shm(src.view())).unwrap();
        assert!(
            bytes.ends_with(&numpy_bytes(&src.view(), fortran)),
            "the inline .npy data is not numpy's"
        );
        let back: Shm<Array2<T>> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.0, src);
        assert_eq!(oob_roundtrip(Shm(src.clone())).unwrap().0, src);
        assert_eq!(oob_roundtrip(ShmArg::from(&src)).unwrap().into_owned(), src);
    }
    // Large: through a segment.
    let big = Array2::from_shape_fn((100, 100).f(), |(i, j)| T::at(i * 100 + j));
    assert_eq!(oob_roundtrip(Shm(big.clone())).unwrap().0, big);
    let back = oob_roundtrip(ShmArg::from(&big)).unwrap().into_owned();
    assert_eq!(back, big);
    assert_eq!(back.strides(), big.strides());
    leaks.finish();
}

#[test]
fn the_drop_in_path_carries_records() {
    drop_in::<Padded>();
    drop_in::<Gapped>();
    drop_in::<Dense>();
}

fn build_in_worker(n: usize) -> Result<ShmArray1<Padded>, String> {
    let mut a = ShmArray1::from_shape_fn(n, Padded::at).map_err(|e| e.to_string())?;
    a.set(0, Padded::at(1_000)).map_err(|e| e.to_string())?;
    Ok(a)
}

fn bump_in_worker(mut a: ShmArray1<Padded>) -> Result<ShmArray1<Padded>, String> {
    a.map_inplace(|r| *r = r.bump())
        .map_err(|e| e.to_string())?;
    Ok(a)
}

#[test]
fn padded_records_are_built_and_changed_in_a_worker() {
    let leaks = common::leak_check();
    let pool = common::pool();
    let n = 30_000;
    let mut expect = Array1::from_shape_fn(n, Padded::at);
    expect[0] = Padded::at(1_000);
    let a = pool
        .submit(build_in_worker, n)
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_stored(&a, &expect.view());
    let b = pool
        .submit(bump_in_worker, a)
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_stored(&b, &expect.mapv(Padded::bump).view());
    drop((b, pool));
    leaks.finish();
}

record! {
    /// A small padded record (16 bytes, 7 of padding after `flag`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Gap {
        /// A field.
        pub flag: bool,
        /// A field.
        pub v: f64,
    }
}

#[test]
fn indices_outside_the_shape_are_typed_errors() {
    let leaks = common::leak_check();
    let g = Gap { flag: true, v: 1.0 };
    let mut empty = ShmArray1::<Gap>::zeros(0).unwrap();
    let e = empty.set(0, g).unwrap_err();
    assert!(matches!(&e, NdarrayError::OutOfBounds { shape, .. } if shape == &[0]));
    assert_eq!(e.to_string(), "index 0 is out of bounds for shape [0]");
    let mut a = ShmArray2::<Gap>::zeros((2, 2)).unwrap();
    let e = a.set([1, 2], g).unwrap_err();
    assert_eq!(
        e.to_string(),
        "index [1, 2] is out of bounds for shape [2, 2]"
    );
    assert!(a.view().iter().all(|g| !g.flag), "nothing was written");
    let mut frozen = a.into_read_only().unwrap();
    assert!(matches!(frozen.set([0, 0], g), Err(NdarrayError::ReadOnly)));
    drop((empty, frozen));
    leaks.finish();
}

#[test]
fn closures_see_every_element_once_in_memory_order_across_chunks() {
    let leaks = common::leak_check();
    // Several 64 KiB encoding chunks of 16-byte records, and a partial one.
    let n = 3 * (64 * 1024 / 16) + 5;
    let mut a = ShmArray1::from_shape_fn(n, |i| Gap {
        flag: false,
        v: i as f64,
    })
    .unwrap();
    let mut seen = Vec::new();
    a.indexed_map_inplace(|i, g| {
        seen.push(i);
        g.flag = i % 2 == 1;
    })
    .unwrap();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    let mut count = 0;
    a.map_inplace(|g| {
        count += 1;
        g.v += 1.0;
    })
    .unwrap();
    assert_eq!(count, n);
    let expect = Array1::from_shape_fn(n, |i| Gap {
        flag: i % 2 == 1,
        v: i as f64 + 1.0,
    });
    assert_stored(&a, &expect.view());
    drop(a);
    leaks.finish();
}
