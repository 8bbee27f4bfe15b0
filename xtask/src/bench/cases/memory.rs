//! Memory actually added during a call, as the system sees it: a thread
//! samples `MemTotal − MemAvailable` from `/proc/meminfo` every 5 ms while
//! the call runs (shared-memory pages count there, unlike in a process's
//! RSS), and the peak minus the value just before the call is the figure.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Sampling period (BENCHMARKS.md asks for at most 10 ms).
const PERIOD: Duration = Duration::from_millis(5);

/// `MemTotal − MemAvailable`, bytes.
pub fn used_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let field = |key: &str| -> Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} missing from /proc/meminfo"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unreadable {key} line {line:?}"))?;
        Ok(kib * 1024)
    };
    Ok(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?))
}

/// Runs `call` while sampling; returns its value and the peak bytes added.
/// The last sample is taken after `call` returns, while its result is still alive.
pub fn peak_added<T>(call: impl FnOnce() -> Result<T>) -> Result<(T, u64)> {
    let before = used_bytes()?;
    let peak = AtomicU64::new(before);
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(u) = used_bytes() {
                    peak.fetch_max(u, Ordering::Relaxed);
                }
                std::thread::sleep(PERIOD);
            }
        });
        let r = call();
        if let Ok(u) = used_bytes() {
            peak.fetch_max(u, Ordering::Relaxed);
        }
        stop.store(true, Ordering::Relaxed);
        r
    })?;
    Ok((out, peak.load(Ordering::Relaxed).saturating_sub(before)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_returns_the_call_value() {
        assert!(used_bytes().unwrap() > 0);
        let (v, _) = peak_added(|| Ok(7)).unwrap();
        assert_eq!(v, 7);
        assert!(peak_added(|| -> Result<()> { anyhow::bail!("inner") }).is_err());
    }
}
