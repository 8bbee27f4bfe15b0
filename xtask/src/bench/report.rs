//! `results.json` (machine facts and one summary per case) and `results.md`
//! (every target ratio of BENCHMARKS.md with its value, bar, goal and
//! verdict, then every case, then why absent cases are absent).

use super::driver::Results;
use super::stats::Summary;
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Which way a target points.
#[derive(Clone, Copy)]
enum Dir {
    AtMost,
    AtLeast,
}

/// What a target is computed from.
#[derive(Clone, Copy)]
enum Figure {
    Ratio(&'static str, &'static str),
    Value(&'static str),
}

/// One row of the targets table of BENCHMARKS.md.
struct Target {
    figure: Figure,
    dir: Dir,
    bar: f64,
    goal: f64,
}

const fn at_most(figure: Figure, bar: f64, goal: f64) -> Target {
    Target {
        figure,
        dir: Dir::AtMost,
        bar,
        goal,
    }
}
const fn at_least(figure: Figure, bar: f64, goal: f64) -> Target {
    Target {
        figure,
        dir: Dir::AtLeast,
        bar,
        goal,
    }
}

use Figure::{Ratio, Value};

/// The targets, in the order of BENCHMARKS.md.
const TARGETS: &[Target] = &[
    at_most(Ratio("seed.pool_in_place", "seed.bare_in_place"), 1.3, 1.05),
    at_most(Ratio("seed.pool_zero_copy", "seed.bare"), 2.0, 1.2),
    at_most(Ratio("seed.pool_copy", "seed.bare"), 4.0, 2.0),
    at_least(Ratio("seed.py_npshmex", "seed.pool_copy"), 4.0, 8.0),
    at_least(Ratio("seed.serde_pipe", "seed.pool_zero_copy"), 5.0, 10.0),
    at_most(Value("tiny.roundtrip"), 25.0, 3.0),
    at_least(Ratio("py.tiny_roundtrip", "tiny.roundtrip"), 10.0, 60.0),
    at_least(Value("tiny.throughput"), 100_000.0, 500_000.0),
    at_least(Ratio("tiny.throughput", "py.tiny_throughput"), 10.0, 60.0),
    at_least(
        Ratio("rs_procspawn.tiny_roundtrip", "tiny.roundtrip"),
        3.0,
        20.0,
    ),
    at_least(Ratio("seed.rs_procspawn", "seed.pool_copy"), 3.0, 8.0),
    at_least(Ratio("seed.py_ray", "seed.pool_zero_copy"), 1.0, 2.0),
    at_least(
        Ratio("sweep.1073741824.serde_pipe", "sweep.1073741824.zero_copy"),
        20.0,
        50.0,
    ),
    at_least(Ratio("records.serde_pipe", "records.zero_copy"), 5.0, 10.0),
    at_least(Ratio("arrow.ipc_pipe", "arrow.zero_copy"), 3.0, 10.0),
    at_most(Value("mem.copy_peak"), 3.0, 2.1),
    at_most(Value("mem.zero_copy_peak"), 1.2, 1.05),
];

/// Figures without a target, shown for context.
const CONTEXT: &[(&str, &str, &str)] = &[
    (
        "workers.1",
        "workers.2",
        "speed-up of 64 × 8 MiB tasks from 1 to 2 workers",
    ),
    (
        "seed.py_npshmex",
        "seed.py_stdlib",
        "npshmex against stdlib ProcessPoolExecutor",
    ),
    (
        "seed.pool_copy",
        "limit.memcpy",
        "drop-in path in memcpys of the seed",
    ),
    (
        "tiny.roundtrip",
        "limit.socket_rtt",
        "tiny round trip in socket round trips",
    ),
];

/// How the cases are measured where BENCHMARKS.md leaves room, printed
/// under the tables so a reader can weigh the figures.
const NOTES: &[&str] = &[
    "`seed.pool_copy`, `sweep.*.pool_copy`, `mem.copy_peak`: the caller lends its plain `Array1` (`ShmArg::from(&x)`, no clone) and gets a plain `Array1` back; the worker takes the received array by value (`x.into_owned() + 1.0` reuses its buffer).",
    "`seed.pool_zero_copy`, `workers.*`, `arrow.zero_copy`: the input already lives in a sealed (read-only) segment; each call sends a free handle of it. `seed.pool_in_place`, `sweep.*.zero_copy`, `records.zero_copy`, `big.4gib`: a writable array is moved to the worker and back.",
    "`*.serde_pipe`, `arrow.ipc_pipe`: plain serde bytes; through the worker socket up to 16 MiB (the pool's cap on inline frames), above that the same bytes in a sealed memfd (no socket copies: this flatters the baselines).",
    "`sweep.*`: the worker returns the array unchanged, so the figure is the transfer alone; payloads under 16 MiB average up to 100 round trips per sample.",
    "`records.*`: the record struct carries its 7 padding bytes as an explicit `pad` field (numpy `align=True` layout), since a typed view cannot write implicit padding.",
    "`py.tiny_throughput` uses 20,000 tasks, `rs_procspawn.tiny_throughput` at most 10,000 and no more than the open-file limit allows (each pending procspawn task holds its channels' fds: about 2,400 at a limit of 20,000): they are rates, and 100,000 tasks would only lengthen the run or exhaust fds.",
    "`seed.py_sharedarray`: the input is put in shm before the clock starts; the worker attaches it and creates its result in shm.",
    "`mem.*`: each sample is one call in a fresh process placed in a memory cgroup of its own (workers and the shared memory they touch are charged to it): (cgroup peak during the call − usage just before it) / array size. Setup (pool, worker up, input; for `mem.zero_copy_peak` the input already in shm) happens before the first reading; nothing is cached from an earlier call.",
];

/// A target's verdict in one run.
struct Verdict {
    label: String,
    value: Option<f64>,
    bar: String,
    goal: String,
    status: String,
}

fn value_of(cases: &BTreeMap<String, Summary>, f: Figure) -> Result<f64, Vec<&'static str>> {
    let get = |n: &'static str| cases.get(n).map(|s| s.median).ok_or(n);
    match f {
        Value(a) => get(a).map_err(|n| vec![n]),
        Ratio(a, b) => match (get(a), get(b)) {
            (Ok(x), Ok(y)) if y > 0.0 => Ok(x / y),
            (Ok(_), Ok(_)) => Err(vec![b]),
            (x, y) => Err([x.err(), y.err()].into_iter().flatten().collect()),
        },
    }
}

fn verdicts(res: &Results) -> Vec<Verdict> {
    TARGETS
        .iter()
        .map(|t| {
            let (label, unit) = match t.figure {
                Ratio(a, b) => (format!("{a} / {b}"), String::new()),
                Value(a) => (
                    a.to_string(),
                    res.cases
                        .get(a)
                        .map(|s| format!(" {}", s.unit))
                        .unwrap_or_default(),
                ),
            };
            let sym = match t.dir {
                Dir::AtMost => "≤",
                Dir::AtLeast => "≥",
            };
            let fmt = |x: f64| format!("{sym} {}{unit}", threshold(x));
            let (value, status) = match value_of(&res.cases, t.figure) {
                Ok(v) => {
                    let meets = |lim: f64| match t.dir {
                        Dir::AtMost => v <= lim,
                        Dir::AtLeast => v >= lim,
                    };
                    let s = if meets(t.goal) {
                        "pass (goal reached)"
                    } else if meets(t.bar) {
                        "pass"
                    } else {
                        "MISS"
                    };
                    (Some(v), s.to_string())
                }
                Err(missing) => {
                    let why: Vec<String> = missing
                        .iter()
                        .map(|n| match (res.absent.get(*n), res.failed.get(*n)) {
                            (Some(w), _) => format!("`{n}` absent: {w}"),
                            (_, Some(_)) => format!("`{n}` failed"),
                            _ => format!("`{n}` not run"),
                        })
                        .collect();
                    (None, format!("absent ({})", why.join("; ")))
                }
            };
            Verdict {
                label,
                value,
                bar: fmt(t.bar),
                goal: fmt(t.goal),
                status,
            }
        })
        .collect()
}

/// A bar or goal as BENCHMARKS.md writes it (`1.05`, `4`, `100,000`).
fn threshold(x: f64) -> String {
    if x >= 10_000.0 {
        num(x)
    } else {
        format!("{x}")
    }
}

/// A number with as many digits as make sense for its size.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 10_000.0 {
        let s = format!("{x:.0}");
        // thousands separators for rates
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `results.json`: `{"machine": {...}, "cases": {...}}`, plus `mode` and
/// `absent`/`failed` maps (name → reason).
pub fn json(res: &Results) -> Result<String> {
    let v = serde_json::json!({
        "machine": res.machine,
        "mode": if res.quick { "quick" } else { "full" },
        "cases": res.cases,
        "absent": res.absent,
        "failed": res.failed,
    });
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}

/// `results.md`.
pub fn markdown(res: &Results) -> String {
    let mut s = String::new();
    let m = &res.machine;
    let _ = writeln!(s, "# npshmex-rs benchmark results\n");
    let _ = writeln!(
        s,
        "Machine: {} cores, kernel {}, {:.1} GiB free in /dev/shm, load average {:.2} at the start.",
        m.cores,
        m.kernel,
        m.shm_free_bytes as f64 / (1u64 << 30) as f64,
        m.loadavg_1m
    );
    if res.quick {
        let _ = writeln!(
            s,
            "\n**Quick run** (`--quick`): reduced sizes, one run per case, no warm-up. \
             The figures only show that every case runs; the ratios below mean nothing."
        );
    } else {
        let _ = writeln!(
            s,
            "\nEach figure is the median of 5 runs after one warm-up; targets are ratios \
             between cases of this same run (see BENCHMARKS.md)."
        );
    }
    let _ = writeln!(s, "\n## Targets\n");
    let _ = writeln!(s, "| figure | value | bar | goal | verdict |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    for v in verdicts(res) {
        let value = v.value.map_or("—".to_string(), num);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} |",
            v.label, value, v.bar, v.goal, v.status
        );
    }
    let _ = writeln!(s, "\n## Context (no target)\n");
    let _ = writeln!(s, "| figure | value | meaning |");
    let _ = writeln!(s, "|---|---:|---|");
    for (a, b, what) in CONTEXT {
        let value = value_of(&res.cases, Ratio(a, b)).map_or("—".to_string(), num);
        let _ = writeln!(s, "| `{a} / {b}` | {value} | {what} |");
    }
    let _ = writeln!(s, "\n## Cases\n");
    let _ = writeln!(s, "| case | median | min | max | unit |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    for (name, c) in &res.cases {
        let _ = writeln!(
            s,
            "| `{name}` | {} | {} | {} | {} |",
            num(c.median),
            num(c.min),
            num(c.max),
            c.unit
        );
    }
    if !res.absent.is_empty() || !res.failed.is_empty() {
        let _ = writeln!(s, "\n## Absent and failed cases\n");
        for (name, why) in &res.absent {
            let _ = writeln!(s, "- `{name}`: absent: {why}");
        }
        for (name, why) in &res.failed {
            let _ = writeln!(s, "- `{name}`: **failed**: {why}");
        }
    }
    let _ = writeln!(s, "\n## How the cases are measured\n");
    for n in NOTES {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(
        s,
        "\nThe sweep is plotted in `sweep.svg` (log-log, µs against bytes)."
    );
    s
}

/// The targets as plain text lines for the terminal (reasons of absence are in results.md).
pub fn targets_text(res: &Results) -> String {
    let mut s = String::from("targets:\n");
    for v in verdicts(res) {
        let value = v.value.map_or("—".to_string(), num);
        let status = if v.value.is_some() {
            v.status.as_str()
        } else {
            "absent"
        };
        let _ = writeln!(
            s,
            "  {:<58} {:>10}  bar {:<12} {status}",
            v.label, value, v.bar
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::machine::Machine;

    fn res(cases: &[(&str, f64, &str)]) -> Results {
        Results {
            machine: Machine::probe(),
            quick: false,
            cases: cases
                .iter()
                .map(|(n, v, u)| (n.to_string(), Summary::of(&[*v], u).unwrap()))
                .collect(),
            absent: [("seed.py_npshmex".to_string(), "no python".to_string())].into(),
            failed: BTreeMap::new(),
        }
    }

    #[test]
    fn verdicts_follow_direction_bar_and_goal() {
        let r = res(&[
            ("seed.pool_in_place", 110.0, "ms"),
            ("seed.bare_in_place", 100.0, "ms"),
            ("seed.pool_zero_copy", 300.0, "ms"),
            ("seed.bare", 100.0, "ms"),
            ("tiny.roundtrip", 2.0, "µs"),
        ]);
        let v = verdicts(&r);
        assert_eq!(v[0].status, "pass");
        assert_eq!(v[1].status, "MISS");
        assert!(v[2].status.starts_with("absent"));
        assert!(v[3].status.contains("`seed.py_npshmex` absent: no python"));
        assert_eq!(v[5].status, "pass (goal reached)");
        assert_eq!(v[5].bar, "≤ 25 µs");
        let md = markdown(&r);
        assert!(md.contains(
            "| `seed.pool_in_place / seed.bare_in_place` | 1.10 | ≤ 1.3 | ≤ 1.05 | pass |"
        ));
        assert!(md.contains("`seed.py_npshmex`: absent: no python"));
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(num(123456.7), "123,457");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.04), "0.040");
        assert_eq!(num(25.0), "25.0");
    }
}
