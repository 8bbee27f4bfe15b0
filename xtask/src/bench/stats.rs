//! Reducing the samples of a case to the figure BENCHMARKS.md asks for: the
//! median, with the minimum and maximum kept beside it.
//!
//! The median (not the mean) because a shared 2-core machine produces rare,
//! large outliers that would otherwise decide the figure.

use serde::Serialize;

/// The summary of one case, as it appears in `results.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Median of the samples.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Unit of all three (`ms`, `µs`, `tasks/s`, `x`).
    pub unit: String,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none or one is not finite.
    pub fn of(samples: &[f64], unit: &str) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            unit: unit.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Summary::of(&[5.0, 1.0, 3.0], "ms").unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0], "ms").unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Summary::of(&[], "ms").is_none());
        assert!(Summary::of(&[1.0, f64::NAN], "ms").is_none());
    }
}
