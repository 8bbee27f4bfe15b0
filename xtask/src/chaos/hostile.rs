//! Hostile input: mutated `.npy` headers, mutated Arrow IPC files, and
//! random frames written into workers' sockets: typed errors only, no
//! panic, no hang.

use super::{frames, hostile_arrow, hostile_npy, Scale, Verdict};
use anyhow::{Context, Result};

/// Runs the scenario.
pub fn run(scale: &Scale) -> Result<Verdict> {
    let npy = hostile_npy::fuzz(scale.npy_headers, scale.seed).context(".npy headers")?;
    let arrow = hostile_arrow::fuzz(scale.arrow_files, scale.seed).context("Arrow IPC files")?;
    let frames = match frames::run(scale.frame_rounds, scale.seed).context("random frames")? {
        Some(f) => format!(
            "{} garbage writes into worker sockets ({} workers refused and were replaced; \
             around them {} tasks succeeded, {} failed with typed errors)",
            f.injected, f.replaced, f.ok, f.failed_typed
        ),
        None => "random frames SKIPPED: `ss` (iproute2) not found to locate worker sockets".into(),
    };
    Ok(Verdict::Pass(format!(
        "{} mutated .npy headers ({} accepted, {} refused with typed errors, slowest {:?}); \
         {} mutated Arrow IPC files ({} accepted and valid, {} refused, slowest {:?}); {frames}",
        npy.inputs,
        npy.ok,
        npy.refused,
        npy.slowest,
        arrow.inputs,
        arrow.ok,
        arrow.refused,
        arrow.slowest
    )))
}
