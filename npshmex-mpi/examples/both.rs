//! One function, two executors: the same code, generic over
//! [`Executor`], runs on a local `ProcessPoolExecutor` and on the MPI
//! ranks; only how the executor is built differs.
//!
//! ```text
//! mpiexec -n 3 target/release/examples/both
//! ```

use anyhow::{anyhow, ensure, Result};
use npshmex_mpi::MpiPoolExecutor;
use npshmex_ndarray::ShmArray1;
use npshmex_pool::{Executor, MapOptions, ProcessPoolExecutor};

/// A chunk's sum of squares; the chunk travels in shared memory (between
/// ranks: as a raw MPI message from its pages).
fn sum_of_squares(x: ShmArray1<f64>) -> f64 {
    x.view().iter().map(|v| v * v).sum()
}

fn square(x: u64) -> u64 {
    x * x
}

/// Works with any executor of the family.
fn work(ex: &impl Executor) -> Result<(u64, f64)> {
    let mut total = 0;
    for r in ex.map(
        square,
        0..1000u64,
        MapOptions {
            chunksize: 50,
            ..MapOptions::default()
        },
    )? {
        total += r?;
    }
    let futures = (0..4)
        .map(|i| {
            let chunk = ShmArray1::from_shape_fn(250_000, |j| (i * 250_000 + j) as f64 / 1e6)?;
            Ok(ex.submit(sum_of_squares, chunk)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sum = 0.0;
    for f in futures {
        sum += f.result()?;
    }
    Ok((total, sum))
}

fn main() -> Result<()> {
    // Both inits first: a local pool's worker (this program started again)
    // stops in the first, an MPI worker rank in the second.
    npshmex_pool::init();
    let mpi = npshmex_mpi::init()?;

    let local = ProcessPoolExecutor::new(2)?;
    let on_this_host = work(&local)?;
    drop(local);
    println!("local pool: {on_this_host:?}");

    let ranks = MpiPoolExecutor::new(&mpi)?;
    let on_the_ranks = work(&ranks)?;
    drop(ranks);
    println!("MPI ranks:  {on_the_ranks:?}");

    ensure!(
        on_this_host.0 == on_the_ranks.0,
        "the sums of squares differ"
    );
    let close = (on_this_host.1 - on_the_ranks.1).abs() <= 1e-9 * on_this_host.1.abs();
    if !close {
        return Err(anyhow!("{on_this_host:?} != {on_the_ranks:?}"));
    }
    println!("the same results through both executors");
    Ok(())
}
