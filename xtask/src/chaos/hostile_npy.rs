//! Hostile `.npy` headers: a seed corpus of valid headers (written here by
//! hand, not by the codec under test) mutated at random and fed to
//! `NpyHeader::read`. Every input must give `Ok` or a typed `Err`: no
//! panic, no slow input; and whatever is accepted must write back to bytes
//! that read to the same header.

use super::mutate::{Mutator, Stats};
use anyhow::{bail, Result};
use npshmex_codec::NpyHeader;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Longest one header may take to parse before it counts as a hang.
const SLOW: Duration = Duration::from_secs(1);

/// Dict texts of the seed corpus: plain, structured, nested, titled,
/// subarray, datetime, unicode, zero-dimensional and empty arrays.
const DICTS: &[&str] = &[
    "{'descr': '<f8', 'fortran_order': False, 'shape': (20000000,), }",
    "{'descr': '|u1', 'fortran_order': True, 'shape': (3, 4, 5), }",
    "{'descr': [('id', '<i8'), ('x', '<f8'), ('flag', '|u1'), ('name', '|S16')], 'fortran_order': False, 'shape': (1000000,), }",
    "{'descr': '<U7', 'fortran_order': False, 'shape': (), }",
    "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (0,), }",
    "{'descr': [('a', '<f4', (2, 3)), ('', '|V4'), ('b', [('c', '>i2'), ('d', '|b1')])], 'fortran_order': False, 'shape': (2, 2), }",
    "{'descr': '>c16', 'fortran_order': False, 'shape': (7,), }",
    "{'descr': '<m8[15us]', 'fortran_order': True, 'shape': (1, 1, 1, 1), }",
    "{'descr': [(('the title', 'name'), '<f8'), ('z', '<f2')], 'fortran_order': False, 'shape': (5,), }",
    "{'fortran_order': False, 'shape': (4,), 'descr': '>i4'}",
];

/// Tokens spliced into headers: syntax, keys, extreme numbers, odd types.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "'",
    "\"",
    ",",
    ":",
    " ",
    "\n",
    "\\",
    "True",
    "False",
    "None",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "0",
    "9223372036854775807",
    "99999999999999999999999999",
    "'descr'",
    "'shape'",
    "'fortran_order'",
    "'<f8'",
    "'|O'",
    "'<g'",
    "'>U2147483647'",
    "'|V0'",
    "'|S0'",
    "'<M8[99999999999999999999Y]'",
    "[('a','<f8')]",
    "((((((((((((((((((((((((((((((((",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "\\x00",
    "\\u1234",
    "é",
    "\u{0}",
    "1e10",
    "0x10",
    "+1",
    "(1,)*64",
    "(2147483648, 2147483648, 2147483648)",
];

/// The seed files: every dict as version 1.0, 2.0 and 3.0.
pub fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for d in DICTS {
        for major in [1u8, 2, 3] {
            out.push(npy(major, d));
        }
    }
    out
}

/// A `.npy` prefix: magic, version, header length, dict padded with spaces
/// and a newline so the data starts at a multiple of 64.
fn npy(major: u8, dict: &str) -> Vec<u8> {
    let len_bytes = if major == 1 { 2 } else { 4 };
    let pre = 8 + len_bytes;
    let total = (pre + dict.len() + 1).div_ceil(64) * 64;
    let hlen = total - pre;
    let mut v = b"\x93NUMPY".to_vec();
    v.extend([major, 0]);
    if major == 1 {
        v.extend((hlen as u16).to_le_bytes());
    } else {
        v.extend((hlen as u32).to_le_bytes());
    }
    v.extend(dict.as_bytes());
    v.resize(total - 1, b' ');
    v.push(b'\n');
    v
}

/// Parses `n` mutated headers; `Err` on the first panic, hang or broken round trip.
pub fn fuzz(n: usize, seed: u64) -> Result<Stats> {
    let seeds = corpus();
    for s in &seeds {
        if let Err(e) = NpyHeader::read(s) {
            bail!(
                "a valid seed header is refused ({e}): {:?}",
                String::from_utf8_lossy(s)
            );
        }
    }
    let mut m = Mutator::new(seed, TOKENS);
    let mut st = Stats::default();
    for i in 0..n {
        let input = m.mutate(&seeds);
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| NpyHeader::read(&input)));
        let dt = t.elapsed();
        st.slowest = st.slowest.max(dt);
        st.inputs += 1;
        let show = || {
            format!(
                "input #{i} (seed {seed}): {:?}",
                String::from_utf8_lossy(&input)
            )
        };
        if dt > SLOW {
            bail!("parsing took {dt:?}: {}", show());
        }
        match r {
            Err(_) => bail!("NpyHeader::read panicked on {}", show()),
            Ok(Err(_)) => st.refused += 1,
            Ok(Ok((h, off))) => {
                st.ok += 1;
                if off > input.len() {
                    bail!(
                        "data offset {off} past the {} input bytes of {}",
                        input.len(),
                        show()
                    );
                }
                check_round_trip(&h).map_err(|e| anyhow::anyhow!("{e} for {}", show()))?;
            }
        }
    }
    Ok(st)
}

/// An accepted header writes to bytes that read back to itself.
fn check_round_trip(h: &NpyHeader) -> Result<()> {
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        let _ = h.data_len();
        let Ok(bytes) = h.to_bytes() else {
            return Ok(()); // refusing to write (e.g. too long for the format) is allowed
        };
        match NpyHeader::read(&bytes) {
            Ok((h2, off)) if &h2 == h && off == bytes.len() => Ok(()),
            Ok((h2, off)) => bail!("round trip changed the header: {h:?} -> {h2:?} (offset {off})"),
            Err(e) => bail!("its own bytes are refused: {e}"),
        }
    }));
    match r {
        Ok(r) => r,
        Err(_) => bail!("writing or re-reading an accepted header panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_valid_and_aligned() {
        for s in corpus() {
            assert_eq!(s.len() % 64, 0);
            let (_, off) = NpyHeader::read(&s).unwrap();
            assert_eq!(off, s.len());
        }
    }

    #[test]
    fn a_short_fuzz_finds_nothing() {
        let st = fuzz(2_000, 7).unwrap();
        assert_eq!(st.inputs, 2_000);
        assert!(st.refused > 0 && st.ok > 0, "{st:?}");
    }
}
