//! Hostile input: mutated `.npy` headers (and, as their crates land, Arrow
//! IPC files and random frames into a worker's socket): typed errors only,
//! no panic, no hang.

use super::{hostile_npy, Scale, Verdict};
use anyhow::{Context, Result};

/// Runs the scenario.
pub fn run(scale: &Scale) -> Result<Verdict> {
    let npy = hostile_npy::fuzz(scale.npy_headers, scale.seed).context(".npy headers")?;
    Ok(Verdict::Pass(format!(
        "{} mutated .npy headers: {} accepted, {} refused with typed errors, slowest {:?}",
        npy.inputs, npy.ok, npy.refused, npy.slowest
    )))
}
