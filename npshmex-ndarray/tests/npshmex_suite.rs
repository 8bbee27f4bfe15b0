//! The original npshmex test suite, ported, plus the receive-mode guarantees:
//! every test runs real tasks in a worker process and checks that no
//! segment, `/dev/shm` entry or worker outlives it.

mod common;

use common::{pool, Padded};
use ndarray::{arr1, Array1, Array2, CowArray, Ix1, Ix2, ShapeBuilder};
use npshmex_ndarray::Access;
use npshmex_ndarray::{
    record, shm_clear, shm_del, shm_pop, shm_put, via_shm, Keep, NdarrayError, Shm, ShmArg,
    ShmArray1, ShmArray2, ShmKey, Transfer,
};
use npshmex_pool::TaskError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

npshmex_pool::test_support!();

fn square(x: Shm<Array1<i64>>) -> Shm<Array1<i64>> {
    Shm(x.0.mapv(|v| v * v))
}

fn square_shm(x: ShmArray1<i64>) -> Result<ShmArray1<i64>, String> {
    x.map(|v| v * v).map_err(|e| e.to_string())
}

#[test]
fn square_of_arange_sums_to_285() {
    let leaks = common::leak_check();
    let pool = pool();
    let x = Array1::from_iter(0..10i64);
    let y = pool
        .submit(square, Shm(x.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(y.sum(), 285);
    let xs = ShmArray1::from_array(&x).unwrap();
    let ys = pool
        .submit(square_shm, xs)
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(ys.view().sum(), 285);
    // Large enough to travel by segment rather than inline.
    let big = Array1::from_iter(0..100_000i64);
    let yb = pool
        .submit(square, Shm(big.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(yb.0, big.mapv(|v| v * v));
    drop((ys, pool));
    leaks.finish();
}

fn add_one_lent(x: ShmArg<'_, f64, Ix2>) -> Shm<Array2<f64>> {
    Shm(x.into_owned() + 1.0)
}

fn add_one_in_place(mut x: ShmArray2<f64>) -> Result<ShmArray2<f64>, String> {
    let mut v = x.view_mut().map_err(|e| e.to_string())?;
    v += 1.0;
    Ok(x)
}

fn add_one_new(x: ShmArray2<f64>) -> Result<ShmArray2<f64>, String> {
    x.map(|v| v + 1.0).map_err(|e| e.to_string())
}

fn worker_held_segments(_: ()) -> usize {
    common::held_segment_count(())
}

#[test]
fn temporary_segments_never_survive_a_task() {
    let leaks = common::leak_check();
    let pool = pool();
    let worker_base = pool
        .submit(worker_held_segments, ())
        .unwrap()
        .result()
        .unwrap();
    let x = Array2::from_shape_fn((512, 600), |(i, j)| (i * 600 + j) as f64);
    for round in 0..3 {
        let y = pool
            .submit(add_one_lent, ShmArg::from(&x))
            .unwrap()
            .result()
            .unwrap();
        assert_eq!(y.0, &x + 1.0);
        let ro = ShmArray2::from_array(&x).unwrap().into_read_only().unwrap();
        let z = pool
            .submit(add_one_new, ro.try_clone().unwrap())
            .unwrap()
            .result()
            .unwrap()
            .unwrap();
        assert_eq!(z.to_owned(), &x + 1.0);
        let mut m = ShmArray2::from_array(&x).unwrap();
        for _ in 0..3 {
            m = pool
                .submit(add_one_in_place, m)
                .unwrap()
                .result()
                .unwrap()
                .unwrap();
        }
        assert_eq!(m.to_owned(), &x + 3.0, "round {round}");
        let cow = pool
            .submit(add_one_in_place, ro.share_copy_on_write().unwrap())
            .unwrap()
            .result()
            .unwrap()
            .unwrap();
        assert_eq!(cow.to_owned(), &x + 1.0);
        assert_eq!(
            ro.to_owned(),
            x,
            "copy-on-write writes stay with the receiver"
        );
    }
    let worker_after = pool
        .submit(worker_held_segments, ())
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(worker_after, worker_base, "the worker still holds segments");
    drop(pool);
    leaks.finish();
}

fn pop_sum(key: ShmKey) -> Result<f64, String> {
    let a = shm_pop::<f64, Ix1>(&key, Keep::Yes).map_err(|e| e.to_string())?;
    Ok(a.view().sum())
}

fn pop_remove_sum(key: ShmKey) -> Result<f64, String> {
    let a = shm_pop::<f64, Ix1>(&key, Keep::No).map_err(|e| e.to_string())?;
    Ok(a.view().sum())
}

fn put_in_worker(n: usize) -> Result<ShmKey, String> {
    shm_put(&Array1::from_elem(n, 2.0f64)).map_err(|e| e.to_string())
}

fn delete_key(key: ShmKey) -> Result<(), String> {
    shm_del(&key).map_err(|e| e.to_string())
}

#[test]
fn put_keys_survive_tasks_pop_keep_delete_clear() {
    let leaks = common::leak_check();
    let pool = pool();
    let x = Array1::from_iter((0..1000).map(f64::from));
    let key = shm_put(&x).unwrap();
    for _ in 0..2 {
        let s = pool
            .submit(pop_sum, key.clone())
            .unwrap()
            .result()
            .unwrap()
            .unwrap();
        assert_eq!(s, 499_500.0);
        assert!(key.path().exists(), "a kept key survives the task");
    }
    let s = pool
        .submit(pop_remove_sum, key.clone())
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(s, 499_500.0);
    assert!(!key.path().exists(), "pop without keep removes the key");
    let gone = pool.submit(pop_sum, key.clone()).unwrap().result().unwrap();
    assert!(gone.unwrap_err().contains("not found"));

    let wkey = pool
        .submit(put_in_worker, 10)
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    let a = shm_pop::<f64, Ix1>(&wkey, Keep::Yes).unwrap();
    assert_eq!(a.view().sum(), 20.0);
    pool.submit(delete_key, wkey.clone())
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert!(!wkey.path().exists());
    assert_eq!(a.view().sum(), 20.0, "popped data outlives its key");

    let k1 = shm_put(&x).unwrap();
    let k2 = shm_put(&arr1(&[1u8])).unwrap();
    assert!(shm_clear().unwrap() >= 2);
    assert!(!k1.path().exists() && !k2.path().exists());
    drop((a, pool));
    leaks.finish();
}

fn put_and_report(n: usize) -> Result<(ShmKey, u32), String> {
    let key = shm_put(&Array1::from_shape_fn(n, |i| i as f64 * 0.5)).map_err(|e| e.to_string())?;
    Ok((key, std::process::id()))
}

fn worker_pid(_: ()) -> u32 {
    std::process::id()
}

/// Waits until the process `pid` has exited (gone, or a zombie whose end
/// `clear_stale` also recognises), up to a deadline.
fn wait_gone(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let gone = npshmex_testkit::proc_stat(pid).is_none_or(|p| p.state == 'Z');
        if gone || std::time::Instant::now() >= deadline {
            return gone;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Issue 11.8: a key put inside a task belongs to the program the pool
/// serves (its name carries the caller's pid), so recycling the worker that
/// made it, or dropping the whole pool, and then `clear_stale` keep it.
#[test]
fn a_key_outlives_the_worker_that_made_it() {
    let leaks = common::leak_check();
    let prefix = format!("npshmex-{}-", std::process::id());
    let expect = |n: usize| Array1::from_shape_fn(n, |i| i as f64 * 0.5);

    // A worker that is replaced after every task.
    let pool = npshmex_pool::ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let (recycled_key, maker) = pool
        .submit(put_and_report, 1000)
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_ne!(maker, std::process::id());
    assert!(
        recycled_key.name().starts_with(&prefix),
        "{recycled_key} is not named after the caller ({prefix})"
    );
    let next = pool.submit(worker_pid, ()).unwrap().result().unwrap();
    assert_ne!(next, maker, "the worker was not recycled");
    assert!(wait_gone(maker), "worker {maker} still runs");

    // A pool dropped entirely while the caller keeps the key.
    let pool2 = common::pool();
    let (dropped_key, maker2) = pool2
        .submit(put_and_report, 20_000)
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert!(dropped_key.name().starts_with(&prefix), "{dropped_key}");
    drop(pool2);
    assert!(wait_gone(maker2), "worker {maker2} still runs");

    npshmex_shm::clear_stale().unwrap();
    for key in [&recycled_key, &dropped_key] {
        assert!(key.path().exists(), "clear_stale removed {key}");
    }
    let a = shm_pop::<f64, Ix1>(&recycled_key, Keep::No).unwrap();
    assert_eq!(a.view(), expect(1000));
    let b = shm_pop::<f64, Ix1>(&dropped_key, Keep::No).unwrap();
    assert_eq!(b.view(), expect(20_000));
    assert!(!recycled_key.path().exists() && !dropped_key.path().exists());
    drop((a, b, pool));
    leaks.finish();
}

fn double_all(
    m: HashMap<String, ShmArray1<f64>>,
) -> Result<HashMap<String, ShmArray1<f64>>, String> {
    m.into_iter()
        .map(|(k, v)| {
            Ok((
                format!("{k}2"),
                v.map(|x| x * 2.0).map_err(|e| e.to_string())?,
            ))
        })
        .collect()
}

#[test]
fn dict_inputs_and_outputs() {
    let leaks = common::leak_check();
    let pool = pool();
    let mut m = HashMap::new();
    m.insert(
        "a".to_string(),
        ShmArray1::from_array(&arr1(&[1.0, 2.0])).unwrap(),
    );
    m.insert(
        "b".to_string(),
        ShmArray1::from_shape_fn(300_000, |i| i as f64)
            .unwrap()
            .into_read_only()
            .unwrap(),
    );
    let out = pool
        .submit(double_all, m)
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out["a2"].view(), arr1(&[2.0, 4.0]));
    assert_eq!(out["b2"].view()[299_999], 599_998.0);
    drop((out, pool));
    leaks.finish();
}

record! {
    /// A numpy structured record with subarray fields.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Rec {
        /// A field.
        pub id: i64,
        /// A field.
        pub x: f64,
        /// A field.
        pub flag: u8,
        /// A field.
        pub name: [u8; 7],
        /// A field.
        pub pos: [f32; 2],
    }
}

fn noop<T>(x: T) -> T {
    x
}

#[test]
fn structured_arrays_pass_a_noop_task_unchanged() {
    let leaks = common::leak_check();
    let pool = pool();
    let recs = Array1::from_shape_fn(50_000, |i| Rec {
        id: i as i64 - 7,
        x: i as f64 / 3.0,
        flag: (i % 2) as u8,
        name: *b"record!",
        pos: [i as f32, -(i as f32)],
    });
    let a = ShmArray1::from_array(&recs).unwrap();
    assert_eq!(
        a.dtype().to_descr(),
        "[('id', '<i8'), ('x', '<f8'), ('flag', '|u1'), ('name', '|u1', (7,)), ('pos', '<f4', (2,))]"
    );
    let back = pool
        .submit(noop::<ShmArray1<Rec>>, a)
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back.view(), recs.view());
    drop(back);
    let back = pool
        .submit(noop::<Shm<Array1<Rec>>>, Shm(recs.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back.0, recs);
    let padded = Array1::from_shape_fn(30_000, |i| Padded {
        id: i as i64,
        x: i as f64 * 0.25,
        flag: (i % 3) as u8,
        name: [b'a' + (i % 26) as u8; 16],
    });
    let p = ShmArray1::from_array(&padded).unwrap();
    let back = pool
        .submit(noop::<ShmArray1<Padded>>, p)
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back.view(), padded.view());
    drop(back);
    let back = pool
        .submit(noop::<Shm<Array1<Padded>>>, Shm(padded.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back.0, padded);
    let small = Shm(recs.slice_move(ndarray::s![..3]));
    let back = pool
        .submit(noop::<Shm<Array1<Rec>>>, small.clone())
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back, small);
    drop(pool);
    leaks.finish();
}

/// A user type holding arrays, as npshmex users pass objects with arrays.
#[derive(Serialize, Deserialize, Debug)]
pub struct Experiment {
    /// Plain data.
    pub name: String,
    /// Zero-copy in shared memory.
    pub raw: ShmArray2<f32>,
    /// A plain ndarray array, copied through shared memory.
    #[serde(with = "via_shm")]
    pub weights: Array1<f64>,
    /// A small plain array (goes inline).
    #[serde(with = "via_shm")]
    pub mask: Array2<bool>,
    /// Any container of shared arrays.
    pub runs: Vec<ShmArray1<u16>>,
}

fn process(mut e: Experiment) -> Result<Experiment, String> {
    e.name.push_str(" done");
    e.raw
        .view_mut()
        .map_err(|x| x.to_string())?
        .mapv_inplace(|v| v * 2.0);
    e.weights /= 2.0;
    e.mask.mapv_inplace(|b| !b);
    e.runs
        .push(ShmArray1::from_elem(3, 9).map_err(|x| x.to_string())?);
    Ok(e)
}

#[test]
fn a_user_wrapper_of_arrays_round_trips() {
    let leaks = common::leak_check();
    let pool = pool();
    let raw = Array2::from_shape_fn((200, 300), |(i, j)| (i + j) as f32);
    let e = Experiment {
        name: "exp".into(),
        raw: ShmArray2::from_array(&raw).unwrap(),
        weights: Array1::from_elem(10_000, 4.0),
        mask: Array2::from_shape_fn((3, 4), |(i, j)| (i + j) % 2 == 0),
        runs: vec![ShmArray1::from_elem(5, 1).unwrap()],
    };
    let back = pool.submit(process, e).unwrap().result().unwrap().unwrap();
    assert_eq!(back.name, "exp done");
    assert_eq!(back.raw.to_owned(), raw * 2.0);
    assert!(back.weights.iter().all(|&w| w == 2.0));
    assert!(!back.mask[(0, 0)]);
    assert_eq!(back.runs.len(), 2);
    assert_eq!(back.runs[1].view(), arr1(&[9u16, 9, 9]));
    drop((back, pool));
    leaks.finish();
}

/// A task argument that lends the caller's arrays in its fields (issue
/// 16.6): the caller keeps them, the worker gets owned copies.
#[derive(Serialize, Deserialize, Debug)]
pub struct LentJob<'a> {
    /// ndarray's borrowed-or-owned array, through `via_shm`.
    #[serde(with = "via_shm")]
    pub x: CowArray<'a, f64, Ix2>,
    /// A lent array that is a serde type itself.
    pub mask: ShmArg<'a, bool, Ix1>,
    /// Plain data.
    pub scale: f64,
}

fn scaled_masked_sums(job: LentJob<'_>) -> (bool, Vec<f64>) {
    let mask = job.mask.into_owned();
    let sums = job
        .x
        .rows()
        .into_iter()
        .zip(&mask)
        .map(|(row, &m)| if m { row.sum() * job.scale } else { 0.0 })
        .collect();
    (job.x.is_owned(), sums)
}

#[test]
fn lent_arrays_in_struct_fields_go_to_a_worker() {
    let leaks = common::leak_check();
    let pool = pool();
    for rows in [4, 500] {
        let x = Array2::from_shape_fn((rows, 200), |(i, j)| (i + j) as f64);
        let mask = Array1::from_shape_fn(rows, |i| i % 3 != 0);
        let job = LentJob {
            x: CowArray::from(&x),
            mask: ShmArg::from(&mask),
            scale: 0.5,
        };
        let (owned, sums) = pool
            .submit(scaled_masked_sums, job)
            .unwrap()
            .result()
            .unwrap();
        assert!(owned, "the worker's field owns its array");
        let expect: Vec<f64> = x
            .rows()
            .into_iter()
            .zip(&mask)
            .map(|(row, &m)| if m { row.sum() * 0.5 } else { 0.0 })
            .collect();
        assert_eq!(sums, expect);
        // The caller still holds (and may change) what it lent.
        let mut x = x;
        x[[0, 0]] = -1.0;
        assert_eq!(mask.len(), rows);
    }
    drop(pool);
    leaks.finish();
}

/// Every kind of lent field: ndarray's `CowArray` and `ArcArray` through
/// `via_shm`, and a `ShmArg`.
#[derive(Serialize, Deserialize, Debug)]
pub struct LentFields<'a> {
    /// Borrowed when sent, owned when received.
    #[serde(with = "via_shm")]
    pub x: CowArray<'a, f64, Ix2>,
    /// Shared ownership, copied through shared memory.
    #[serde(with = "via_shm")]
    pub shared: ndarray::ArcArray<u16, Ix1>,
    /// A lent array that is a serde type itself.
    pub arg: ShmArg<'a, i32, Ix1>,
    /// Plain data.
    pub label: String,
}

#[test]
fn lent_fields_serialize_from_the_borrow_and_arrive_owned() {
    let leaks = common::leak_check();
    for (rows, segments) in [(3, 0), (400, 3)] {
        let x = Array2::from_shape_fn((rows, 100).f(), |(i, j)| (i * 100 + j) as f64);
        let y = Array1::from_shape_fn(rows * 100, |i| i as i32);
        let shared = Array1::from_elem(rows * 100, 7u16).into_shared();
        let lent = LentFields {
            x: CowArray::from(&x),
            shared: shared.clone(),
            arg: ShmArg::from(&y),
            label: "lent".into(),
        };
        assert!(lent.x.is_view());
        let (bytes, fds) = npshmex_shm::oob::collect(|| postcard::to_allocvec(&lent));
        assert_eq!(fds.len(), segments, "{rows} rows");
        drop(lent);
        let bytes = bytes.unwrap();
        let (back, cause) =
            npshmex_shm::oob::with_received(fds.finish().unwrap().into_fds(), || {
                postcard::from_bytes::<LentFields<'static>>(&bytes)
            });
        assert!(cause.is_none());
        let back = back.unwrap();
        assert!(back.x.is_owned());
        assert_eq!(back.x, x);
        assert_eq!(back.x.strides(), x.strides(), "Fortran order kept");
        assert_eq!(back.shared, shared);
        assert!(matches!(back.arg, ShmArg::Owned(ref a) if a == y));
        assert_eq!(back.label, "lent");
        // The caller still has its arrays, and the testkit's round trip
        // (with moves, as the pool does) agrees.
        let again = npshmex_testkit::oob_roundtrip(LentFields {
            x: CowArray::from(x.view()),
            shared: shared.clone(),
            arg: ShmArg::from(&y),
            label: String::new(),
        })
        .unwrap();
        assert_eq!(again.x, x);
        assert_eq!(again.arg.view(), y);
        drop((back, again));
    }
    leaks.finish();
}

fn try_write(mut x: ShmArray1<f64>) -> (Access, String) {
    let t = x.access();
    match x.view_mut() {
        Ok(mut v) => {
            v[0] = 99.0;
            (t, "written".into())
        }
        Err(e @ NdarrayError::ReadOnly) => (t, format!("refused: {e}")),
        Err(e) => (t, format!("other error: {e}")),
    }
}

fn cow_sum_after_write(mut x: ShmArray1<f64>) -> Result<f64, String> {
    x.view_mut().map_err(|e| e.to_string())?.fill(1.0);
    Ok(x.view().sum())
}

#[test]
fn read_only_refuses_writes_and_copy_on_write_never_reaches_the_sender() {
    let leaks = common::leak_check();
    let pool = pool();
    let a = ShmArray1::from_shape_fn(200_000, |i| i as f64).unwrap();
    let expect = a.to_owned();

    let cow = a.share_copy_on_write().unwrap();
    assert_eq!(cow.transfer(), Transfer::CopyOnWrite);
    let (t, r) = pool.submit(try_write, cow).unwrap().result().unwrap();
    assert_eq!((t, r.as_str()), (Access::CopyOnWrite, "written"));
    let s = pool
        .submit(cow_sum_after_write, a.share_copy_on_write().unwrap())
        .unwrap()
        .result()
        .unwrap()
        .unwrap();
    assert_eq!(s, 200_000.0);
    assert_eq!(
        a.to_owned(),
        expect,
        "the receiver's writes never reach the sender"
    );

    let ro = a.into_read_only().unwrap();
    assert_eq!(ro.transfer(), Transfer::ReadOnly);
    let (t, r) = pool
        .submit(try_write, ro.try_clone().unwrap())
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(t, Access::ReadOnly);
    assert!(r.starts_with("refused"), "{r}");
    assert_eq!(ro.to_owned(), expect);
    drop((ro, pool));
    leaks.finish();
}

fn crash(x: ShmArray1<f64>) -> f64 {
    if x.len() > 1 {
        std::process::abort();
    }
    x.view().sum()
}

fn crash_lent(x: ShmArg<'_, f64, Ix2>) -> f64 {
    let v = x.view();
    if v.len() > 1 {
        std::process::abort();
    }
    v.sum()
}

#[test]
fn no_segment_survives_a_worker_crash_mid_task() {
    let leaks = common::leak_check();
    let pool = pool();
    let key = shm_put(&arr1(&[1.0f64])).unwrap();
    let a = ShmArray1::from_elem(1 << 20, 1.0).unwrap();
    let r = pool.submit(crash, a).unwrap().result();
    assert!(matches!(r, Err(TaskError::WorkerDied { .. })), "{r:?}");
    let x = Array2::<f64>::ones((400, 400));
    let r = pool.submit(crash_lent, ShmArg::from(&x)).unwrap().result();
    assert!(matches!(r, Err(TaskError::WorkerDied { .. })), "{r:?}");
    // The pool replaced the worker and still serves.
    let s = pool
        .submit(crash, ShmArray1::from_elem(1, 3.0).unwrap())
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(s, 3.0);
    // A segment whose receiver died is reusable again (the lock died with it).
    assert!(key.path().exists(), "keys are persistent on purpose");
    shm_del(&key).unwrap();
    drop(pool);
    leaks.finish();
}

fn inode_of<T: npshmex_ndarray::Element>(a: &ShmArray1<T>) -> u64 {
    a.segment().file_key().map(|k| k.ino).unwrap_or(0)
}

fn alloc_in_worker(n: usize) -> u64 {
    match ShmArray1::from_elem(n, 2u8) {
        Ok(a) => inode_of(&a),
        Err(_) => 0,
    }
}

#[test]
fn a_forked_worker_never_reuses_the_parents_cached_segments() {
    let leaks = common::leak_check();
    let n = (9 << 20) + 77;
    let a = ShmArray1::from_elem(n, 1u8).unwrap();
    let parent_inode = inode_of(&a);
    drop(a); // now a reusable segment in this process's cache
    let pool = npshmex_pool::ProcessPoolExecutor::builder()
        .max_workers(1)
        .start_method(npshmex_pool::StartMethod::Fork)
        .build()
        .unwrap();
    for _ in 0..2 {
        let w = pool.submit(alloc_in_worker, n).unwrap().result().unwrap();
        assert_ne!(w, 0);
        assert_ne!(w, parent_inode, "the child took the parent's segment");
    }
    let b = ShmArray1::from_elem(n, 3u8).unwrap();
    assert_eq!(
        inode_of(&b),
        parent_inode,
        "the parent still reuses its own"
    );
    drop((b, pool));
    leaks.finish();
}

/// In the worker: the argument's segment, let go after the copy out, is
/// what the next allocation of its size gets (reused pages of the caller's
/// segment, received by move), so the result goes back in it.
fn argument_pages_are_recycled(x: ShmArg<'_, f64, Ix1>) -> (bool, bool) {
    let x = x.into_owned();
    let len = x.len() * 8 + 128;
    match npshmex_shm::cache::alloc(len) {
        Ok(slot) => (
            slot.dirty_len() > 0,
            slot.origin() == npshmex_shm::cache::Origin::Received,
        ),
        Err(_) => (false, false),
    }
}

#[test]
fn the_drop_in_path_writes_its_result_into_the_arguments_pages() {
    let leaks = common::leak_check();
    {
        let pool = pool();
        let x = Array1::from_elem(1 << 18, 1.5);
        let (reused, received) = pool
            .submit(argument_pages_are_recycled, ShmArg::from(&x))
            .unwrap()
            .result()
            .unwrap();
        assert!(reused && received, "reused {reused}, received {received}");
        // And the whole drop-in call still gives the right answer, twice
        // (the second reuses the segment that came home).
        let x2 = Array2::from_elem((512, 512), 2.0);
        for _ in 0..2 {
            let y = pool
                .submit(add_one_lent, ShmArg::from(&x2))
                .unwrap()
                .result()
                .unwrap();
            assert!(y.iter().all(|&v| v == 3.0));
        }
    }
    leaks.finish();
}
