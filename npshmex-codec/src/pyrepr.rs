//! Python's `repr` of the values a `.npy` header holds (str, tuple of ints),
//! byte for byte, since numpy writes headers with `repr` and the files must
//! compare equal with `cmp`.

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

/// Python's `str.isprintable` for non-ASCII characters, approximated
/// without the Unicode database: separators (Zs, Zl, Zp), controls (Cc),
/// the common format characters (Cf), private use (Co) and noncharacters are
/// not printable. Unassigned code points (Cn) Python would also escape are
/// written as they are; numpy reads both spellings the same.
fn is_printable(c: char) -> bool {
    let u = c as u32;
    let unprintable = matches!(u,
        0x80..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2
        | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0000..=0xe0fff | 0xf0000..=0x10ffff)
        || (u & 0xfffe) == 0xfffe;
    !unprintable
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
