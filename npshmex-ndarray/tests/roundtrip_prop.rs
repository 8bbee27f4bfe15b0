//! Property test: arrays of arbitrary shape (0-d, empty axes, up to 5-D),
//! order (C, Fortran, non-contiguous views copied in), dtype and values go
//! through a worker and back bit-identically, in every receive mode and on
//! the drop-in path. Cases are few (a worker round trip costs ~1 ms each).

mod common;

use half::f16;
use ndarray::{ArrayD, Axis, IxDyn, ShapeBuilder, Slice};
use npshmex_ndarray::{record, Element, Shm, ShmArg, ShmArrayD};
use npshmex_pool::ProcessPoolExecutor;
use num_complex::Complex;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::fmt::Debug;

npshmex_pool::test_support!();

record! {
    /// A structured dtype with a nested subarray.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Pair {
        /// A field.
        pub a: i32,
        /// A field.
        pub b: [u16; 2],
    }
}

fn echo<T>(x: T) -> T {
    x
}

fn echo_lent(x: ShmArg<'_, f64, IxDyn>) -> Shm<ArrayD<f64>> {
    Shm(x.into_owned())
}

/// How the array to send is obtained from the generated one.
#[derive(Clone, Copy, Debug)]
enum Shape {
    C,
    Fortran,
    /// Every other element along axis 0 (non-contiguous).
    Stepped,
    /// Axis 0 reversed (negative stride).
    Inverted,
    /// Axes reversed: a Fortran-contiguous view of a C array.
    Transposed,
}

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..5, 0..=5).prop_filter("at most 400 elements", |s| {
        s.iter().product::<usize>() <= 400
    })
}

fn layouts() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::C),
        Just(Shape::Fortran),
        Just(Shape::Stepped),
        Just(Shape::Inverted),
        Just(Shape::Transposed),
    ]
}

fn bits<T: Element>(x: &T) -> Vec<u8> {
    npshmex_codec::as_bytes(std::slice::from_ref(x))
        .expect("dense element types only")
        .to_vec()
}

fn same_bits<T: Element>(
    got: ndarray::ArrayViewD<'_, T>,
    want: &ndarray::ArrayViewD<'_, T>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape());
    for (g, w) in got.iter().zip(want.iter()) {
        prop_assert_eq!(bits(g), bits(w));
    }
    Ok(())
}

/// Sends `view` to a worker in every mode and checks what comes back.
fn check_modes<T>(
    pool: &ProcessPoolExecutor,
    view: ndarray::ArrayViewD<'_, T>,
) -> Result<(), TestCaseError>
where
    T: Element + Debug + Send,
{
    let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
    // moved
    let s = ShmArrayD::from_array(&view).map_err(|e| fail(&e))?;
    let sent_npy = s.as_npy_bytes().to_vec();
    let back = pool
        .submit(echo::<ShmArrayD<T>>, s)
        .map_err(|e| fail(&e))?
        .result()
        .map_err(|e| fail(&e))?;
    prop_assert_eq!(back.as_npy_bytes(), &sent_npy[..]);
    same_bits(back.view(), &view)?;
    // shared read-only
    let ro = back.into_read_only().map_err(|e| fail(&e))?;
    let back = pool
        .submit(echo::<ShmArrayD<T>>, ro.try_clone().map_err(|e| fail(&e))?)
        .map_err(|e| fail(&e))?
        .result()
        .map_err(|e| fail(&e))?;
    prop_assert!(!back.is_writable());
    prop_assert_eq!(back.as_npy_bytes(), &sent_npy[..]);
    // copy-on-write
    let cow = ro.share_copy_on_write().map_err(|e| fail(&e))?;
    let back = pool
        .submit(echo::<ShmArrayD<T>>, cow)
        .map_err(|e| fail(&e))?
        .result()
        .map_err(|e| fail(&e))?;
    prop_assert_eq!(back.as_npy_bytes(), &sent_npy[..]);
    // drop-in, owned
    let back = pool
        .submit(echo::<Shm<ArrayD<T>>>, Shm(view.to_owned()))
        .map_err(|e| fail(&e))?
        .result()
        .map_err(|e| fail(&e))?;
    same_bits(back.0.view(), &view)?;
    Ok(())
}

fn arranged<T: Clone>(shape: &[usize], values: &[T], how: Shape) -> ArrayD<T> {
    let n: usize = shape.iter().product();
    let vals: Vec<T> = values.iter().cycle().take(n).cloned().collect();
    match how {
        Shape::Fortran => ArrayD::from_shape_vec(IxDyn(shape).f(), vals).expect("sizes match"),
        _ => ArrayD::from_shape_vec(IxDyn(shape), vals).expect("sizes match"),
    }
}

fn view_of<T>(a: &ArrayD<T>, how: Shape) -> ndarray::ArrayViewD<'_, T> {
    let mut v = a.view();
    match how {
        Shape::Stepped if v.ndim() > 0 => v.slice_axis_inplace(Axis(0), Slice::new(0, None, 2)),
        Shape::Inverted if v.ndim() > 0 => v.invert_axis(Axis(0)),
        Shape::Transposed => v = v.reversed_axes(),
        _ => {}
    }
    v
}

fn run<T, S>(values: S)
where
    T: Element + Debug + Send,
    S: Strategy<Value = T>,
{
    let leaks = common::leak_check();
    let pool = common::pool();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (shapes(), prop::collection::vec(values, 1..50), layouts());
    let result = runner.run(&strategy, |(shape, vals, how)| {
        let a = arranged(&shape, &vals, how);
        check_modes(&pool, view_of(&a, how))
    });
    drop(pool);
    if let Err(e) = result {
        panic!("{e}");
    }
    leaks.finish();
}

#[test]
fn f64_any_bits() {
    run::<f64, _>(any::<u64>().prop_map(f64::from_bits));
}

#[test]
fn i32_values() {
    run::<i32, _>(any::<i32>());
}

#[test]
fn bools() {
    run::<bool, _>(any::<bool>());
}

#[test]
fn u8_values() {
    run::<u8, _>(any::<u8>());
}

#[test]
fn f16_and_complex() {
    run::<f16, _>(any::<u16>().prop_map(f16::from_bits));
    run::<Complex<f32>, _>(
        (any::<u32>(), any::<u32>())
            .prop_map(|(r, i)| Complex::new(f32::from_bits(r), f32::from_bits(i))),
    );
}

#[test]
fn records() {
    run::<Pair, _>((any::<i32>(), any::<[u16; 2]>()).prop_map(|(a, b)| Pair { a, b }));
}

#[test]
fn large_arrays_every_mode_and_lent() {
    // Past the inline threshold of the drop-in path and the cache's minimum.
    let leaks = common::leak_check();
    let pool = common::pool();
    let a = ArrayD::from_shape_fn(IxDyn(&[300, 500]).f(), |ix| (ix[0] * 1000 + ix[1]) as f64);
    check_modes(&pool, a.view()).unwrap();
    let back = pool
        .submit(echo_lent, ShmArg::from(&a))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back.0, a);
    assert_eq!(back.0.strides(), a.strides(), "Fortran order kept");
    drop(pool);
    leaks.finish();
}
