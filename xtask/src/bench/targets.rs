//! The targets of BENCHMARKS.md ("Targets (ratios, same run)"), row for row
//! as that table writes them — figure, bar, goal, why — and their verdicts
//! in one run.
//!
//! Bars and goals are kept as the table's own text (`≤ 1.3`, `≥ 800,000 /s`)
//! and parsed, so the table in `results.md` reads exactly like the one in
//! BENCHMARKS.md; a row written for many figures (`sweep.<n>.pool_copy /
//! sweep.<n>.serde_pipe`, n ≥ 65536) is expanded into one verdict per figure.
//!
//! A measured value that is physically impossible — a memory peak below the
//! result's own size, a time below the matching `limit.*` — is a failed
//! measurement, never a pass: a figure the machine cannot produce says the
//! case measured something else.

use super::catalog::SWEEP_BYTES;
use super::stats::Summary;
use std::collections::BTreeMap;

/// What a target is computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Figure {
    /// `a / b` of two cases' medians.
    Ratio(String, String),
    /// One case's median.
    Value(String),
}

impl Figure {
    fn ratio(a: impl Into<String>, b: impl Into<String>) -> Figure {
        Figure::Ratio(a.into(), b.into())
    }

    /// The label of a verdict row.
    pub fn label(&self) -> String {
        match self {
            Figure::Ratio(a, b) => format!("{a} / {b}"),
            Figure::Value(a) => a.clone(),
        }
    }

    fn cases(&self) -> Vec<&str> {
        match self {
            Figure::Ratio(a, b) => vec![a, b],
            Figure::Value(a) => vec![a],
        }
    }
}

/// One row of the targets table of BENCHMARKS.md.
pub struct Target {
    /// The figure column, as BENCHMARKS.md writes it (markdown).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "compared with BENCHMARKS.md by a test")
    )]
    pub figure: &'static str,
    /// The concrete figures that row stands for.
    pub computes: Vec<Figure>,
    /// The bar column, e.g. `≤ 1.3`.
    pub bar: &'static str,
    /// The goal column.
    pub goal: &'static str,
    /// The why column (may be empty).
    pub why: &'static str,
}

fn row(
    figure: &'static str,
    computes: Vec<Figure>,
    bar: &'static str,
    goal: &'static str,
    why: &'static str,
) -> Target {
    Target {
        figure,
        computes,
        bar,
        goal,
        why,
    }
}

fn r(a: &str, b: &str) -> Vec<Figure> {
    vec![Figure::ratio(a, b)]
}

/// The targets, in the order of BENCHMARKS.md.
pub fn all() -> Vec<Target> {
    let sweep_ratio = |n: usize, a: &str, b: &str| {
        Figure::ratio(format!("sweep.{n}.{a}"), format!("sweep.{n}.{b}"))
    };
    vec![
        row(
            "`seed.pool_in_place / seed.bare_in_place`",
            r("seed.pool_in_place", "seed.bare_in_place"),
            "≤ 1.3",
            "≤ 1.05",
            "only a round trip on top of the work itself",
        ),
        row(
            "`seed.pool_zero_copy / seed.bare`",
            r("seed.pool_zero_copy", "seed.bare"),
            "≤ 2.0",
            "≤ 1.2",
            "plus first touch of the fresh result pages",
        ),
        row(
            "`seed.pool_copy / seed.bare`",
            r("seed.pool_copy", "seed.bare"),
            "≤ 4.0",
            "≤ 2.0",
            "npshmex (Python) is ~10× its own bare numpy",
        ),
        row(
            "`seed.py_npshmex / seed.pool_copy`",
            r("seed.py_npshmex", "seed.pool_copy"),
            "≥ 4",
            "≥ 8",
            "reuse of already-faulted segments and mappings, huge pages where the system allows",
        ),
        row(
            "`seed.serde_pipe / seed.pool_zero_copy`",
            r("seed.serde_pipe", "seed.pool_zero_copy"),
            "≥ 5",
            "≥ 10",
            "",
        ),
        row(
            "`tiny.roundtrip`",
            vec![Figure::Value("tiny.roundtrip".into())],
            "≤ 4 µs",
            "≤ 1.5 µs",
            "`limit.spin_rtt` ~0.07 µs, `limit.socket_rtt` ~50 µs: a shared-memory doorbell with a bounded spin, then a futex",
        ),
        row(
            "`py.tiny_roundtrip / tiny.roundtrip`",
            r("py.tiny_roundtrip", "tiny.roundtrip"),
            "≥ 40",
            "≥ 100",
            "",
        ),
        row(
            "`tiny.throughput`",
            vec![Figure::Value("tiny.throughput".into())],
            "≥ 800,000 /s",
            "≥ 2,000,000 /s",
            "`tiny.map_chunked` shows workers are not the limit",
        ),
        row(
            "`tiny.throughput / py.tiny_throughput`",
            r("tiny.throughput", "py.tiny_throughput"),
            "≥ 80",
            "≥ 200",
            "",
        ),
        row(
            "`rs_procspawn.tiny_roundtrip / tiny.roundtrip`",
            r("rs_procspawn.tiny_roundtrip", "tiny.roundtrip"),
            "≥ 20",
            "≥ 60",
            "",
        ),
        row(
            "`seed.rs_procspawn / seed.pool_copy`",
            r("seed.rs_procspawn", "seed.pool_copy"),
            "≥ 3",
            "≥ 8",
            "procspawn: ~720–790 ms here",
        ),
        row(
            "`seed.py_ray / seed.pool_zero_copy`",
            r("seed.py_ray", "seed.pool_zero_copy"),
            "≥ 2",
            "≥ 4",
            "Ray: 44–490 ms here, read-only result",
        ),
        row(
            "`sweep.8.zero_copy / sweep.8.serde_pipe`, same at 1024",
            [8, 1024]
                .map(|n| sweep_ratio(n, "zero_copy", "serde_pipe"))
                .to_vec(),
            "≤ 1.5",
            "≤ 1.0",
            "small arrays from a shared arena, not a memfd each",
        ),
        row(
            "`sweep.<n>.pool_copy / sweep.<n>.serde_pipe`, n ≥ 65536",
            SWEEP_BYTES
                .iter()
                .filter(|n| **n >= 65536)
                .map(|n| sweep_ratio(*n, "pool_copy", "serde_pipe"))
                .collect(),
            "≤ 1.0",
            "≤ 0.5",
            "the drop-in path never loses to plain serde",
        ),
        row(
            "`sweep.1073741824.pool_copy / sweep.268435456.pool_copy`",
            r("sweep.1073741824.pool_copy", "sweep.268435456.pool_copy"),
            "≤ 5",
            "≤ 4.2",
            "cost linear in bytes",
        ),
        row(
            "`sweep.1073741824`: serde_pipe / zero_copy",
            r("sweep.1073741824.serde_pipe", "sweep.1073741824.zero_copy"),
            "≥ 20",
            "≥ 50",
            "",
        ),
        row(
            "`records.serde_pipe / records.zero_copy`",
            r("records.serde_pipe", "records.zero_copy"),
            "≥ 5",
            "≥ 10",
            "",
        ),
        row(
            "`arrow.ipc_pipe / arrow.zero_copy`",
            r("arrow.ipc_pipe", "arrow.zero_copy"),
            "≥ 3",
            "≥ 10",
            "",
        ),
        row(
            "`mem.copy_peak`",
            vec![Figure::Value("mem.copy_peak".into())],
            "≤ 2.5",
            "≤ 2.0",
            "cgroup peak of the process tree; npshmex ~3.0, stdlib ~5.1",
        ),
        row(
            "`mem.zero_copy_peak`",
            vec![Figure::Value("mem.zero_copy_peak".into())],
            "≤ 1.1",
            "≤ 1.02",
            "the result only",
        ),
        row(
            "`mpi.py_mpi4py_seed / mpi.seed`",
            r("mpi.py_mpi4py_seed", "mpi.seed"),
            "≥ 2",
            "≥ 5",
            "`mpi4py.futures` on the same OpenMPI, TCP forced",
        ),
        row(
            "`mpi.py_mpi4py_tiny / mpi.tiny_roundtrip`",
            r("mpi.py_mpi4py_tiny", "mpi.tiny_roundtrip"),
            "≥ 5",
            "≥ 20",
            "",
        ),
    ]
}

/// Which way a limit points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// `≤`
    AtMost,
    /// `≥`
    AtLeast,
}

/// A bar or goal text (`≤ 1.05`, `≥ 800,000 /s`) as direction and number.
pub fn parse_limit(text: &str) -> Option<(Dir, f64)> {
    let (dir, rest) = if let Some(r) = text.strip_prefix('≤') {
        (Dir::AtMost, r)
    } else {
        (Dir::AtLeast, text.strip_prefix('≥')?)
    };
    let number = rest.split_whitespace().next()?.replace(',', "");
    Some((dir, number.parse().ok()?))
}

/// The least value a case can physically have, if there is one.
enum Floor {
    /// A fixed number (a memory peak below 1× is less than the result itself).
    Fixed(f64, &'static str),
    /// Another case of the same run, times a factor.
    Case(&'static str, f64),
}

/// The floor of a case: a result of `x + 1` over the seed is a fresh array
/// computed from the input: at least the writing half of a memcpy's traffic
/// (`limit.memcpy` copies between plain heap buffers on 4 KiB pages; a
/// result written into huge-page-backed shared memory, reading the input
/// as it goes, measured up to a fifth faster than it here); a cross-process
/// round trip cannot beat two processes spinning on one shared page; a
/// memory peak cannot be below the result's own size. In-place updates
/// have no floor here: `x += 1` moves the same bytes as a memcpy and may
/// tie it.
fn floor(case: &str) -> Option<Floor> {
    const SEED_RESULTS: &[&str] = &[
        "seed.bare",
        "seed.pool_copy",
        "seed.pool_zero_copy",
        "seed.serde_pipe",
        "seed.rs_procspawn",
        "seed.py_stdlib",
        "seed.py_npshmex",
        "seed.py_sharedarray",
        "seed.py_ray",
        "mpi.seed",
        "mpi.py_mpi4py_seed",
    ];
    const ROUND_TRIPS: &[&str] = &[
        "tiny.roundtrip",
        "py.tiny_roundtrip",
        "rs_procspawn.tiny_roundtrip",
        "mpi.tiny_roundtrip",
        "mpi.py_mpi4py_tiny",
    ];
    if case.starts_with("mem.") {
        Some(Floor::Fixed(1.0, "the result's own size, 1.0×"))
    } else if SEED_RESULTS.contains(&case) {
        Some(Floor::Case("limit.memcpy", 0.5))
    } else if ROUND_TRIPS.contains(&case) {
        Some(Floor::Case("limit.spin_rtt", 1.0))
    } else {
        None
    }
}

/// Pages a memory cgroup charges ahead per CPU (the kernel's
/// `MEMCG_CHARGE_BATCH`): a usage reading may include up to that many pages
/// per CPU not yet in use, so a peak can read that much short of the truth.
const CHARGE_BATCH_PAGES: usize = 64;

/// How far below its floor a `mem.*` figure may read without being
/// impossible: the cgroup counter's batching, in multiples of `bytes`.
pub fn mem_slack(cores: usize, bytes: usize) -> f64 {
    (CHARGE_BATCH_PAGES * rustix::param::page_size() * cores.max(1)) as f64 / bytes.max(1) as f64
}

/// Why the measured `case` is impossible, if it is (`mem_slack`: see [`mem_slack`]).
pub fn impossible(cases: &BTreeMap<String, Summary>, case: &str, mem_slack: f64) -> Option<String> {
    let v = cases.get(case)?.median;
    match floor(case)? {
        Floor::Fixed(min, what) => (v < min - mem_slack).then(|| {
            format!("`{case}` = {v:.3} is below {what} (less the cgroup counter's batching, {mem_slack:.3})")
        }),
        // The limit's fastest sample: a limit measured while the machine
        // was busy reads high, and only a value below its best is impossible.
        Floor::Case(limit, factor) => {
            let l = cases.get(limit)?.min * factor;
            let times = if factor == 1.0 {
                String::new()
            } else {
                format!("{factor} × ")
            };
            (v < l).then(|| {
                format!("`{case}` = {v:.3} is below {times}`{limit}` = {l:.3} (its fastest sample)")
            })
        }
    }
}

/// What became of one concrete figure.
#[derive(Debug, PartialEq)]
pub enum Status {
    /// Meets the goal.
    Goal,
    /// Meets the bar, not the goal.
    Bar,
    /// Misses the bar.
    Miss,
    /// A value the machine cannot produce: a failed measurement.
    Impossible(String),
    /// Not computable in this run, with the reasons.
    Absent(String),
}

impl Status {
    /// The verdict column of `results.md`.
    pub fn text(&self) -> String {
        match self {
            Status::Goal => "pass (goal reached)".into(),
            Status::Bar => "pass".into(),
            Status::Miss => "MISS".into(),
            Status::Impossible(why) => format!("FAILED measurement (impossible: {why})"),
            Status::Absent(why) => format!("absent ({why})"),
        }
    }
}

/// A target's verdict for one concrete figure.
pub struct Verdict {
    /// The concrete figure, e.g. `sweep.65536.pool_copy / sweep.65536.serde_pipe`.
    pub label: String,
    /// Its value, when both cases were measured.
    pub value: Option<f64>,
    /// The row's bar and goal text.
    pub bar: &'static str,
    /// The row's goal text.
    pub goal: &'static str,
    /// The row's why.
    pub why: &'static str,
    /// The verdict.
    pub status: Status,
}

/// `a / b` or `a` from the medians; `Err` names the cases missing.
pub fn value_of(cases: &BTreeMap<String, Summary>, f: &Figure) -> Result<f64, Vec<String>> {
    let get = |n: &String| cases.get(n).map(|s| s.median).ok_or_else(|| n.clone());
    match f {
        Figure::Value(a) => get(a).map_err(|n| vec![n]),
        Figure::Ratio(a, b) => match (get(a), get(b)) {
            (Ok(x), Ok(y)) if y > 0.0 => Ok(x / y),
            (Ok(_), Ok(_)) => Err(vec![b.clone()]),
            (x, y) => Err([x.err(), y.err()].into_iter().flatten().collect()),
        },
    }
}

/// Every target's verdicts in a run.
pub fn verdicts(
    cases: &BTreeMap<String, Summary>,
    absent: &BTreeMap<String, String>,
    failed: &BTreeMap<String, String>,
    mem_slack: f64,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for t in all() {
        for f in &t.computes {
            let (value, status) = match value_of(cases, f) {
                Ok(v) => {
                    let impossible: Vec<String> = f
                        .cases()
                        .into_iter()
                        .filter_map(|c| impossible(cases, c, mem_slack))
                        .collect();
                    let meets = |text: &str| match parse_limit(text) {
                        Some((Dir::AtMost, lim)) => v <= lim,
                        Some((Dir::AtLeast, lim)) => v >= lim,
                        None => false,
                    };
                    let s = if !impossible.is_empty() {
                        Status::Impossible(impossible.join("; "))
                    } else if meets(t.goal) {
                        Status::Goal
                    } else if meets(t.bar) {
                        Status::Bar
                    } else {
                        Status::Miss
                    };
                    (Some(v), s)
                }
                Err(missing) => {
                    let why: Vec<String> = missing
                        .iter()
                        .map(|n| match (absent.get(n), failed.get(n)) {
                            (Some(w), _) => format!("`{n}` absent: {w}"),
                            (_, Some(_)) => format!("`{n}` failed"),
                            _ => format!("`{n}` not run"),
                        })
                        .collect();
                    (None, Status::Absent(why.join("; ")))
                }
            };
            out.push(Verdict {
                label: f.label(),
                value,
                bar: t.bar,
                goal: t.goal,
                why: t.why,
                status,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases(v: &[(&str, f64)]) -> BTreeMap<String, Summary> {
        v.iter()
            .map(|(n, x)| (n.to_string(), Summary::of(&[*x], "ms").unwrap()))
            .collect()
    }

    #[test]
    fn every_bar_and_goal_parses_and_points_one_way() {
        for t in all() {
            let bar = parse_limit(t.bar);
            let goal = parse_limit(t.goal);
            assert!(bar.is_some() && goal.is_some(), "{}", t.figure);
            assert_eq!(bar.map(|b| b.0), goal.map(|g| g.0), "{}", t.figure);
            assert!(!t.computes.is_empty(), "{}", t.figure);
        }
        assert_eq!(parse_limit("≥ 800,000 /s"), Some((Dir::AtLeast, 800_000.0)));
        assert_eq!(parse_limit("≤ 1.05"), Some((Dir::AtMost, 1.05)));
        assert_eq!(parse_limit("1.05"), None);
    }

    #[test]
    fn templated_rows_expand_to_every_size() {
        let labels: Vec<String> = all()
            .iter()
            .flat_map(|t| t.computes.iter().map(Figure::label))
            .collect();
        for n in [65536, 1048576, 16777216, 268435456, 1073741824] {
            assert!(labels.contains(&format!("sweep.{n}.pool_copy / sweep.{n}.serde_pipe")));
        }
        assert!(labels.contains(&"sweep.1024.zero_copy / sweep.1024.serde_pipe".to_string()));
        assert!(!labels.contains(&"sweep.1024.pool_copy / sweep.1024.serde_pipe".to_string()));
    }

    #[test]
    fn impossible_values_fail_instead_of_passing() {
        let c = cases(&[
            ("mem.zero_copy_peak", 0.0),
            ("mem.copy_peak", 2.2),
            ("mem.py_stdlib_peak", 0.995),
            ("limit.spin_rtt", 0.07),
            ("tiny.roundtrip", 0.05),
            ("limit.memcpy", 14.0),
            ("seed.pool_copy", 6.0),
            ("seed.bare", 20.0),
        ]);
        let v = verdicts(&c, &BTreeMap::new(), &BTreeMap::new(), 0.01);
        let status = |label: &str| &v.iter().find(|v| v.label == label).unwrap().status;
        assert!(
            matches!(status("mem.zero_copy_peak"), Status::Impossible(w) if w.contains("1.0×"))
        );
        assert_eq!(status("mem.copy_peak"), &Status::Bar);
        // within the counter's batching of 1.0: not impossible
        assert_eq!(impossible(&c, "mem.py_stdlib_peak", 0.01), None);
        assert!(impossible(&c, "mem.py_stdlib_peak", 0.001).is_some());
        assert!(
            matches!(status("tiny.roundtrip"), Status::Impossible(w) if w.contains("limit.spin_rtt"))
        );
        assert!(
            matches!(status("seed.pool_copy / seed.bare"), Status::Impossible(w) if w.contains("limit.memcpy"))
        );
        assert!(matches!(
            status("mpi.py_mpi4py_seed / mpi.seed"),
            Status::Absent(_)
        ));
    }

    /// The table of BENCHMARKS.md, where the checkout has it beside it (as
    /// the project's machines and CI do): every row, bar, goal and why the
    /// same, in the same order.
    #[test]
    fn rows_match_benchmarks_md_when_present() {
        let path = crate::util::workspace_root().join("../shared/BENCHMARKS.md");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("{} not found: targets not compared", path.display());
            return;
        };
        let section = text
            .split("## Targets")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_default();
        let theirs: Vec<Vec<String>> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                cells[1..cells.len() - 1]
                    .iter()
                    .map(|c| c.to_string())
                    .collect()
            })
            .collect();
        let ours: Vec<Vec<String>> = all()
            .iter()
            .map(|t| {
                vec![
                    t.figure.to_string(),
                    t.bar.to_string(),
                    t.goal.to_string(),
                    t.why.to_string(),
                ]
            })
            .collect();
        assert_eq!(ours, theirs);
    }
}
