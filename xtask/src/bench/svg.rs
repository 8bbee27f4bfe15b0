//! `sweep.svg`: round-trip time against payload size, log-log, one line per
//! transfer path, with the machine's memcpy bandwidth and socket round trip
//! as grey reference lines, so a reader sees without the table where each
//! path stops being dominated by fixed cost and how close it gets to a copy.
//!
//! Written by hand (a few dozen lines of SVG) instead of pulling a plotting
//! crate into the xtask for one picture.

use super::catalog::{SWEEP_BYTES, SWEEP_PATHS};
use super::stats::Summary;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const W: f64 = 900.0;
const H: f64 = 540.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 70.0;

const COLORS: [&str; 3] = ["#1b9e77", "#7570b3", "#d95f02"];

fn label_bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn label_us(exp: i32) -> String {
    match exp {
        e if e < 0 => format!("{} µs", 10f64.powi(e)),
        e if e < 3 => format!("{} µs", 10i64.pow(e as u32)),
        e if e < 6 => format!("{} ms", 10i64.pow((e - 3) as u32)),
        e => format!("{} s", 10i64.pow((e - 6) as u32)),
    }
}

fn path_label(p: &str) -> &'static str {
    match p {
        "zero_copy" => "zero_copy (ShmArray moved there and back)",
        "pool_copy" => "pool_copy (plain Array in and out)",
        _ => "serde_pipe (serde bytes, no shm)",
    }
}

/// The SVG text for the sweep cases found in `cases`.
pub fn sweep(cases: &BTreeMap<String, Summary>) -> String {
    let series: Vec<(&str, Vec<(f64, f64)>)> = SWEEP_PATHS
        .iter()
        .map(|p| {
            let pts = SWEEP_BYTES
                .iter()
                .filter_map(|b| {
                    let s = cases.get(&format!("sweep.{b}.{p}"))?;
                    (s.median > 0.0).then_some((*b as f64, s.median))
                })
                .collect();
            (*p, pts)
        })
        .collect();
    // References: a memcpy at the measured bandwidth, and one socket round trip.
    let memcpy_us_per_byte = cases
        .get("limit.memcpy")
        .map(|s| s.median * 1e3 / 160e6)
        .filter(|v| *v > 0.0);
    let socket_rtt = cases
        .get("limit.socket_rtt")
        .map(|s| s.median)
        .filter(|v| *v > 0.0);

    let (x0, x1) = (
        (SWEEP_BYTES[0] as f64).log10() - 0.3,
        (SWEEP_BYTES[6] as f64).log10() + 0.3,
    );
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .chain(socket_rtt)
        .collect();
    let (ylo, yhi) = if ys.is_empty() {
        (0, 6)
    } else {
        let lo = ys
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .log10()
            .floor() as i32;
        let hi = ys
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .log10()
            .ceil() as i32;
        (lo, hi.max(lo + 1))
    };
    let px = |b: f64| LEFT + (b.log10() - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py =
        |us: f64| H - BOTTOM - (us.log10() - ylo as f64) / (yhi - ylo) as f64 * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">Round trip of one f64 array through a worker and back</text>"#,
        (LEFT + W - RIGHT) / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="50" fill="#555" text-anchor="middle">the worker returns the array unchanged; median of the runs; lower is better</text>"##,
        (LEFT + W - RIGHT) / 2.0
    );
    // Grid, ticks and tick labels.
    for b in SWEEP_BYTES {
        let x = px(b as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e6e6e6"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0,
            label_bytes(b)
        );
    }
    for e in ylo..=yhi {
        let y = py(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e6e6e6"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 8.0,
            y + 4.0,
            label_us(e)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">payload size (bytes, log scale)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 22.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">round-trip time (log scale)</text>"#,
        (TOP + H - BOTTOM) / 2.0
    );
    // Clip everything drawn from data to the plot area.
    let _ = writeln!(
        s,
        r#"<clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}"/></clipPath><g clip-path="url(#plot)">"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    if let Some(k) = memcpy_us_per_byte {
        let (a, b) = (SWEEP_BYTES[0] as f64, SWEEP_BYTES[6] as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="6 4"/>"##,
            px(a),
            py(a * k),
            px(b),
            py(b * k)
        );
    }
    if let Some(r) = socket_rtt {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="2 3"/>"##,
            py(r),
            W - RIGHT,
            py(r)
        );
    }
    for ((_, pts), color) in series.iter().zip(COLORS) {
        if pts.is_empty() {
            continue;
        }
        let d: Vec<String> = pts
            .iter()
            .map(|(b, us)| format!("{:.1},{:.1}", px(*b), py(*us)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            d.join(" ")
        );
        for (b, us) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                px(*b),
                py(*us)
            );
        }
    }
    let _ = writeln!(s, "</g>");
    // Legend, inside the plot at the top left (the lines rise to the right).
    let entries = series.len()
        + usize::from(memcpy_us_per_byte.is_some())
        + usize::from(socket_rtt.is_some());
    let lx = LEFT + 14.0;
    let mut ly = TOP + 22.0;
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="330" height="{}" fill="white" fill-opacity="0.9" stroke="#ccc"/>"##,
        LEFT + 6.0,
        TOP + 6.0,
        entries as f64 * 20.0 + 12.0
    );
    for ((p, pts), color) in series.iter().zip(COLORS) {
        let note = if pts.is_empty() {
            " — not measured"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}{note}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            path_label(p)
        );
        ly += 20.0;
    }
    let refs = [
        (
            memcpy_us_per_byte.is_some(),
            "6 4",
            "memcpy of the payload at this machine's speed",
        ),
        (socket_rtt.is_some(), "2 3", "one 64-byte socket round trip"),
    ];
    for (present, dash, text) in refs {
        if present {
            let _ = writeln!(
                s,
                r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#999" stroke-dasharray="{dash}"/><text x="{}" y="{}">{text}</text>"##,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0
            );
            ly += 20.0;
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_present_points_and_labels_axes() {
        let mut cases = BTreeMap::new();
        for (i, b) in SWEEP_BYTES.iter().enumerate() {
            let us = 10.0 * (i as f64 + 1.0).powi(3);
            cases.insert(
                format!("sweep.{b}.zero_copy"),
                Summary::of(&[us], "µs").unwrap(),
            );
        }
        cases.insert("limit.memcpy".into(), Summary::of(&[14.0], "ms").unwrap());
        let svg = sweep(&cases);
        assert_eq!(svg.matches("<circle").count(), SWEEP_BYTES.len());
        assert!(svg.contains(">1 GiB<") && svg.contains(">8 B<"));
        assert!(svg.contains(">10 µs<") && svg.contains(">1 ms<"));
        assert!(svg.contains("serde_pipe (serde bytes, no shm) — not measured"));
        assert!(svg.contains("memcpy of the payload at this machine's speed"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn empty_sweep_is_still_a_valid_picture() {
        let svg = sweep(&BTreeMap::new());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 0);
    }
}
