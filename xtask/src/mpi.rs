//! `cargo xtask mpi [-n N]`: the pool across MPI ranks (npshmex-mpi) started
//! under `mpiexec`. Not written yet: the command exists so that its flags and
//! place in the xtask are fixed; it says so and fails, rather than passing
//! without checking anything.

use crate::flags;
use anyhow::{bail, Result};

/// Runs `cargo xtask mpi`.
pub fn run(opts: &flags::Mpi) -> Result<()> {
    bail!(
        "mpi: not implemented yet (would start {} ranks under mpiexec)",
        opts.ranks()
    )
}
