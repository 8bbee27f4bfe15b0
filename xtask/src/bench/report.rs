//! `results.json` (machine facts and one summary per case) and `results.md`
//! (every target ratio of BENCHMARKS.md with its value, bar, goal and
//! verdict, then every case, then why absent cases are absent).

use super::cases::Scale;
use super::driver::Results;
use super::targets::{self, Figure, Status, Verdict};
use anyhow::Result;
use std::fmt::Write as _;

fn verdicts(res: &Results) -> Vec<Verdict> {
    let slack = targets::mem_slack(res.machine.cores, Scale::new(res.quick).seed_bytes());
    targets::verdicts(&res.cases, &res.absent, &res.failed, slack)
}

/// Figures without a target, shown for context.
const CONTEXT: &[(&str, &str, &str)] = &[
    (
        "mpi.seed",
        "seed.pool_copy",
        "the seed across MPI ranks (TCP) against the local drop-in path",
    ),
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
    "`*.serde_pipe`, `arrow.ipc_pipe`: plain serde bytes; inline through the worker's control ring up to 128 KiB (the pool's cap on inline payloads), above that the same bytes in a sealed memfd (no pipe copies: this flatters the baselines).",
    "`sweep.*`: the worker returns the array unchanged, so the figure is the transfer alone; payloads under 16 MiB average up to 1,000 round trips per sample (a pool's first few hundred tiny round trips are slower while the scheduler places its threads).",
    "`records.*`: the record struct carries its 7 padding bytes as an explicit `pad` field (numpy `align=True` layout), since a typed view cannot write implicit padding.",
    "`py.tiny_throughput` uses 20,000 tasks, `rs_procspawn.tiny_throughput` at most 10,000 and no more than the open-file limit allows (each pending procspawn task holds its channels' fds: about 2,400 at a limit of 20,000): they are rates, and 100,000 tasks would only lengthen the run or exhaust fds.",
    "`seed.py_sharedarray`: the input is put in shm before the clock starts; the worker attaches it and creates its result in shm.",
    "`mpi.*`: one `mpiexec -n 2 --mca btl tcp,self` job per case (rank 0 and one worker rank, TCP forced, on this one machine), rounds timed inside it after a warm-up round. `mpi.seed`: a writable `ShmArray` is moved to the worker (sent from its pages, received into a reused segment), the worker returns `x + 1` allocated in shm. `mpi.py_mpi4py_seed`: `MPIPoolExecutor.submit(add_one, x)` with a numpy array, pickled.",
    "`mem.*`: each sample is one call in a fresh process placed in a memory cgroup of its own (workers and the shared memory they touch are charged to it): (cgroup peak during the call − usage just before it) / array size. Setup (pool, worker up, input; for `mem.zero_copy_peak` the input already in shm) happens before the first reading; nothing is cached from an earlier call.",
];

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
    let _ = writeln!(
        s,
        "The rows of BENCHMARKS.md, one per figure. A value the machine cannot \
         produce (a memory peak below the result's own size, a time below the \
         matching `limit.*`) is a failed measurement, never a pass.\n"
    );
    let _ = writeln!(s, "| figure | value | bar | goal | verdict | why |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|---|");
    for v in verdicts(res) {
        let value = v.value.map_or("—".to_string(), num);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            v.label,
            value,
            v.bar,
            v.goal,
            v.status.text(),
            v.why
        );
    }
    where_the_time_goes(&mut s, res);
    let _ = writeln!(s, "\n## Context (no target)\n");
    let _ = writeln!(s, "| figure | value | meaning |");
    let _ = writeln!(s, "|---|---:|---|");
    for (a, b, what) in CONTEXT {
        let value = targets::value_of(&res.cases, &Figure::Ratio(a.to_string(), b.to_string()))
            .map_or("—".to_string(), num);
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

/// "Where the time goes": the reasoning of BENCHMARKS.md with this run's
/// `limit.*` figures (and the seed cases they explain) filled in.
fn where_the_time_goes(s: &mut String, res: &Results) {
    let get = |n: &str| res.cases.get(n).map(|c| c.median);
    let show = |n: &str, unit: &str| match get(n) {
        Some(v) => format!("{} {unit} (`{n}`)", num(v)),
        None => format!("— (`{n}` not measured in this run)"),
    };
    let bytes = Scale::new(res.quick).seed_bytes();
    let size = format!("{:.0} MB", bytes as f64 / 1e6);
    let page = rustix::param::page_size();
    let _ = writeln!(s, "\n## Where the time goes\n");
    let _ = writeln!(
        s,
        "- Copying {size} into memory that is already mapped and touched: {}. \
         Creating a fresh {size} memfd, mapping it and writing one byte per page: {}{}. \
         Fresh pages are paid on top of any copy into them; a Rust `Vec` does not ask \
         for huge pages, numpy does on large arrays.",
        show("limit.memcpy", "ms"),
        show("limit.first_touch", "ms"),
        match (get("limit.first_touch"), get("limit.memcpy")) {
            (Some(t), Some(c)) if c > 0.0 => format!(
                ", {} µs per {} KiB page, {}× the copy",
                num(t * 1e3 / (bytes / page).max(1) as f64),
                page / 1024,
                num(t / c)
            ),
            _ => String::new(),
        }
    );
    let _ = writeln!(
        s,
        "- So the levers are: never touch fresh pages twice (allocate results directly in \
         shm), reuse segments whose pages are already faulted (a per-process cache of \
         sealed-size memfds), `MADV_HUGEPAGE` where the kernel honours it, no copy \
         that the receive mode does not require, and large copies split across CPUs: one \
         thread cannot keep memory busy, and the faults and zeroing of fresh pages run in \
         parallel too (copies of {} MiB and more, on {} threads on this machine, \
         `npshmex_shm::copy`).",
        npshmex_shm::copy::PARALLEL_FROM >> 20,
        npshmex_shm::copy::max_threads(),
    );
    let in_copies = |n: &str| match (get(n), get("limit.memcpy")) {
        (Some(v), Some(c)) if c > 0.0 => {
            format!("{}, {} memcpys of the seed", show(n, "ms"), num(v / c))
        }
        _ => show(n, "ms"),
    };
    let _ = writeln!(
        s,
        "- In this run: the bare work with a fresh result {}; the drop-in path {}; \
         the zero-copy path {}; plain serde bytes {}.",
        in_copies("seed.bare"),
        in_copies("seed.pool_copy"),
        in_copies("seed.pool_zero_copy"),
        in_copies("seed.serde_pipe"),
    );
    let (quarter, whole) = ("sweep.268435456.pool_copy", "sweep.1073741824.pool_copy");
    let _ = writeln!(
        s,
        "- The drop-in path by size: 256 MiB {}, 1 GiB {}{}. Each call, the worker and \
         then the caller copy the array out into fresh heap memory (an owned `Array` is a \
         `Vec`), which the echo then frees: 2 × the array of new pages per call, whatever \
         npshmex does with its segments (those are reused). {}",
        show(quarter, "µs"),
        show(whole, "µs"),
        match (get(quarter), get(whole)) {
            (Some(q), Some(w)) if q > 0.0 => format!(", {}× for 4× the bytes", num(w / q)),
            _ => String::new(),
        },
        page_reporting(),
    );
    let _ = writeln!(
        s,
        "- A wake-up across processes: a socket round trip {} against two processes \
         spinning on one shared page {}; a tiny task's round trip is {}. A shared-memory \
         doorbell with a bounded spin, then a futex, is what closes that gap.",
        show("limit.socket_rtt", "µs"),
        show("limit.spin_rtt", "µs"),
        show("tiny.roundtrip", "µs"),
    );
    let _ = writeln!(
        s,
        "- Round trips of a few µs also depend on where the scheduler puts the caller and \
         the worker. With two CPUs, a caller and a worker on different CPUs see each \
         other's writes at once; on the same CPU each hop waits for the other to yield. \
         Seen on the machine these targets were set on, with the same binary: a one-element \
         `ShmArray` round trip took ~4 µs in runs where the two sat apart and 8–13 µs in \
         runs where they shared a CPU for the whole run, so `sweep.8.*`, `sweep.1024.*` and \
         `tiny.*` can move between two levels from one run to the next (this run: \
         `sweep.8.zero_copy` {}, `sweep.8.serde_pipe` {}).",
        show("sweep.8.zero_copy", "µs"),
        show("sweep.8.serde_pipe", "µs"),
    );
}

/// What this machine says about free page reporting, which decides what
/// fresh heap memory costs when a virtual machine's host takes freed pages
/// back.
fn page_reporting() -> String {
    let dir = std::path::Path::new("/sys/module/page_reporting/parameters");
    let read = |n: &str| {
        std::fs::read_to_string(dir.join(n))
            .ok()
            .map(|v| v.trim().to_string())
    };
    match read("page_reporting_order") {
        None => "This kernel does not report free pages to a hypervisor.".to_string(),
        Some(order) => format!(
            "This kernel reports freed memory to its hypervisor (free page reporting, \
             blocks of order {order}{}): memory freed and allocated again can come back \
             through a host page fault, costing far more than a fresh page of the guest's \
             own (seen here: numpy's `np.ones` of 1 GiB 3.1 s at first, 0.15 s when \
             repeated at once), and large arrays freed every call are what it takes back.",
            read("max_waiting_mib")
                .map(|m| format!(", once more than {m} MiB wait"))
                .unwrap_or_default()
        ),
    }
}

/// The targets as plain text lines for the terminal (reasons of absence are in results.md).
pub fn targets_text(res: &Results) -> String {
    let mut s = String::from("targets:\n");
    for v in verdicts(res) {
        let value = v.value.map_or("—".to_string(), num);
        let status = match &v.status {
            Status::Absent(_) => "absent".to_string(),
            other => other.text(),
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
    use crate::bench::stats::Summary;
    use std::collections::BTreeMap;

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
            ("tiny.roundtrip", 1.0, "µs"),
            ("limit.memcpy", 14.0, "ms"),
            ("mem.zero_copy_peak", 0.5, "x"),
        ]);
        let v = verdicts(&r);
        assert_eq!(v[0].status, Status::Bar);
        assert_eq!(v[1].status, Status::Miss);
        assert!(matches!(v[2].status, Status::Absent(_)));
        assert!(v[3]
            .status
            .text()
            .contains("`seed.py_npshmex` absent: no python"));
        assert_eq!(v[5].status, Status::Goal);
        assert_eq!(v[5].bar, "≤ 4 µs");
        let md = markdown(&r);
        assert!(md.contains(
            "| `seed.pool_in_place / seed.bare_in_place` | 1.10 | ≤ 1.3 | ≤ 1.05 | pass | only a round trip on top of the work itself |"
        ));
        assert!(md.contains(
            "| `mem.zero_copy_peak` | 0.50 | ≤ 1.1 | ≤ 1.02 | FAILED measurement (impossible:"
        ));
        assert!(md.contains("`seed.py_npshmex`: absent: no python"));
        assert!(md.contains("## Where the time goes"));
        assert!(md.contains("14.0 ms (`limit.memcpy`)"));
        assert!(md.contains("`limit.first_touch` not measured in this run"));
        assert!(md.contains("| `mpi.py_mpi4py_seed / mpi.seed` | — | ≥ 2 | ≥ 5 | absent ("));
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(num(123456.7), "123,457");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.04), "0.040");
        assert_eq!(num(25.0), "25.0");
    }
}
