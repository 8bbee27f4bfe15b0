//! Python's `repr` of the values a `.npy` header holds (str, tuple of ints),
//! byte for byte, since numpy writes headers with `repr` and the files must
//! compare equal with `cmp`.

use crate::printable::PRINTABLE;
use std::fmt::Write as _;

/// Python's `repr(tuple_of_ints)`.
pub(crate) fn write_shape(shape: &[usize], out: &mut String) {
    out.push('(');
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{d}");
    }
    if shape.len() == 1 {
        out.push(',');
    }
    out.push(')');
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`,
/// escapes for the quote, backslash, controls and non-printable characters.
pub(crate) fn write_py_str(s: &str, out: &mut String) {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x7f => out.push(c),
            c if is_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(q);
}

/// Python's `str.isprintable` for non-ASCII characters.
fn is_printable(c: char) -> bool {
    let u = c as u32;
    PRINTABLE
        .binary_search_by(|&(lo, hi)| {
            if hi < u {
                std::cmp::Ordering::Less
            } else if lo > u {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_of_strings() {
        let r = |s: &str| {
            let mut o = String::new();
            write_py_str(s, &mut o);
            o
        };
        assert_eq!(r("a"), "'a'");
        assert_eq!(r("it's"), "\"it's\"");
        assert_eq!(r("'\""), "'\\'\"'");
        assert_eq!(r("a\\b\n\x01\x7f"), "'a\\\\b\\n\\x01\\x7f'");
        assert_eq!(r("é名😀"), "'é名😀'");
        assert_eq!(r("\u{a0}\u{2028}\u{e000}"), "'\\xa0\\u2028\\ue000'");
        assert_eq!(r("\u{378}\u{301}\u{10ffff}"), "'\\u0378\u{301}\\U0010ffff'");
    }

    #[test]
    fn python_repr_of_shapes() {
        let r = |s: &[usize]| {
            let mut o = String::new();
            write_shape(s, &mut o);
            o
        };
        assert_eq!(r(&[]), "()");
        assert_eq!(r(&[3]), "(3,)");
        assert_eq!(r(&[2, 0, 5]), "(2, 0, 5)");
    }
}
