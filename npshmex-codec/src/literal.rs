//! A parser for the subset of Python literals that `.npy` headers and dtype
//! descrs use: strings (both quote kinds, prefixes `r`/`u`, triple quotes,
//! escapes, implicit concatenation), integers (decimal, hex, octal, binary,
//! underscores, unary sign), `True`/`False`/`None`, tuples, lists and dicts.
//!
//! It parses data, it never evaluates: this replaces numpy's
//! `ast.literal_eval`. Nesting is bounded by [`MAX_DEPTH`] so hostile input
//! cannot exhaust the stack; every error carries the byte offset of the fault.
//! Rejected alternative: a regex-level scanner for `{'descr': ..}`; it cannot
//! handle nested record descrs or quotes inside field names.

use crate::error::{CodecError, Result};

/// Maximum nesting of brackets: Python's own parser limit (200 nested
/// brackets, "too many nested parentheses" at 201), so every header numpy's
/// `ast.literal_eval` reads is read here too (a record nested 40 deep, which
/// numpy loads, is 81 levels), and the recursion stays a few hundred frames.
pub const MAX_DEPTH: usize = 200;

/// A parsed literal and the byte offset where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lit {
    pub pos: usize,
    pub kind: LitKind,
}

/// The literal kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LitKind {
    Str(String),
    Bytes,
    Int(i128),
    Float,
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

impl LitKind {
    /// The Python type with its article, for messages ("an int").
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            LitKind::Str(_) => "a str",
            LitKind::Bytes => "a bytes",
            LitKind::Int(_) => "an int",
            LitKind::Float => "a float",
            LitKind::Bool(_) => "a bool",
            LitKind::None => "None",
            LitKind::Tuple(_) => "a tuple",
            LitKind::List(_) => "a list",
            LitKind::Dict(_) => "a dict",
        }
    }
}

/// Whether Python 2 long suffixes (`3L`) are accepted, as numpy does for
/// `.npy` versions 1.0 and 2.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LongSuffix {
    Accept,
    Reject,
}

/// Parses `text` as exactly one literal, surrounded by optional whitespace.
pub(crate) fn parse(text: &str, long: LongSuffix) -> Result<Lit> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
        long,
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the literal"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    long: LongSuffix,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> CodecError {
        CodecError::Syntax {
            pos: self.i,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.i += 1,
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.i += 1;
                    }
                }
                b'\\' if self.s.get(self.i + 1) == Some(&b'\n') => self.i += 2,
                _ => break,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lit> {
        let pos = self.i;
        let Some(c) = self.peek() else {
            return Err(self.err("unexpected end of input"));
        };
        match c {
            b'(' | b'[' | b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(CodecError::TooDeep {
                        pos,
                        limit: MAX_DEPTH,
                    });
                }
                self.i += 1;
                match c {
                    b'(' => self.paren(pos, depth + 1),
                    b'[' => {
                        let items = self.seq(b']', depth + 1)?;
                        Ok(Lit {
                            pos,
                            kind: LitKind::List(items.0),
                        })
                    }
                    _ => self.dict(pos, depth + 1),
                }
            }
            b'\'' | b'"' => self.strings(pos),
            b'0'..=b'9' | b'.' => self.number(pos, false),
            b'-' | b'+' => {
                self.i += 1;
                self.skip_ws();
                match self.peek() {
                    Some(b'0'..=b'9' | b'.') => self.number(pos, c == b'-'),
                    _ => Err(self.err("a sign must be followed by a number")),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.i += 1;
                }
                let word = &self.text[start..self.i];
                if matches!(self.peek(), Some(b'\'' | b'"')) && is_prefix(word) {
                    self.i = start;
                    return self.strings(pos);
                }
                let kind = match word {
                    "True" => LitKind::Bool(true),
                    "False" => LitKind::Bool(false),
                    "None" => LitKind::None,
                    _ => {
                        self.i = start;
                        return Err(self.err("a name is not a literal"));
                    }
                };
                Ok(Lit { pos, kind })
            }
            _ => Err(self.err("unexpected character")),
        }
    }

    /// Comma-separated values up to `close`; returns them and whether a comma
    /// was seen (which makes `(x,)` a tuple).
    fn seq(&mut self, close: u8, depth: usize) -> Result<(Vec<Lit>, bool)> {
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok((items, comma));
            }
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    comma = true;
                }
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok((items, comma));
                }
                None => return Err(self.err("unclosed bracket")),
                _ => return Err(self.err("expected ',' or a closing bracket")),
            }
        }
    }

    fn paren(&mut self, pos: usize, depth: usize) -> Result<Lit> {
        let (mut items, comma) = self.seq(b')', depth)?;
        if items.len() == 1 && !comma {
            // `(x)` is `x`, not a tuple.
            let mut inner = items.remove(0);
            inner.pos = pos;
            return Ok(inner);
        }
        Ok(Lit {
            pos,
            kind: LitKind::Tuple(items),
        })
    }

    fn dict(&mut self, pos: usize, depth: usize) -> Result<Lit> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                break;
            }
            let k = self.value(depth)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' in a dict"));
            }
            self.i += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            items.push((k, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                None => return Err(self.err("unclosed dict")),
                _ => return Err(self.err("expected ',' or '}' in a dict")),
            }
        }
        Ok(Lit {
            pos,
            kind: LitKind::Dict(items),
        })
    }

    fn number(&mut self, pos: usize, negative: bool) -> Result<Lit> {
        let start = self.i;
        let (radix, digits_start) = match (self.peek(), self.s.get(self.i + 1)) {
            (Some(b'0'), Some(b'x' | b'X')) => (16, self.i + 2),
            (Some(b'0'), Some(b'o' | b'O')) => (8, self.i + 2),
            (Some(b'0'), Some(b'b' | b'B')) => (2, self.i + 2),
            _ => (10, self.i),
        };
        self.i = digits_start;
        let mut value: i128 = 0;
        let mut ndigits = 0;
        let mut overflow = false;
        let mut last_underscore = false;
        while let Some(c) = self.peek() {
            if c == b'_' {
                if ndigits == 0 || last_underscore {
                    return Err(self.err("misplaced '_' in a number"));
                }
                last_underscore = true;
                self.i += 1;
                continue;
            }
            let Some(d) = (c as char).to_digit(radix) else {
                break;
            };
            last_underscore = false;
            ndigits += 1;
            self.i += 1;
            match value
                .checked_mul(i128::from(radix))
                .and_then(|v| v.checked_add(i128::from(d)))
            {
                Some(v) => value = v,
                None => overflow = true,
            }
        }
        if last_underscore {
            return Err(self.err("misplaced '_' in a number"));
        }
        if radix == 10 {
            if matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'j' | b'J')) {
                // A float or complex literal: skip it so the error points past it.
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_'))
                {
                    self.i += 1;
                }
                return Ok(Lit {
                    pos,
                    kind: LitKind::Float,
                });
            }
            // Python forbids leading zeros in non-zero decimal literals.
            if self.s[start] == b'0' && value != 0 {
                self.i = start;
                return Err(self.err("leading zeros in a decimal integer"));
            }
        }
        if ndigits == 0 {
            return Err(self.err("a number needs digits"));
        }
        if self.long == LongSuffix::Accept && matches!(self.peek(), Some(b'L' | b'l')) {
            self.i += 1;
        }
        if self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            return Err(self.err("invalid character in a number"));
        }
        if overflow {
            return Err(CodecError::IntOutOfRange { pos });
        }
        Ok(Lit {
            pos,
            kind: LitKind::Int(if negative { -value } else { value }),
        })
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self, pos: usize) -> Result<Lit> {
        let mut out = String::new();
        let mut bytes = None;
        loop {
            let start = self.i;
            let mut raw = false;
            let mut is_bytes = false;
            while let Some(c) = self.peek() {
                match c {
                    b'r' | b'R' => raw = true,
                    b'b' | b'B' => is_bytes = true,
                    b'u' | b'U' | b'f' | b'F' => {}
                    _ => break,
                }
                self.i += 1;
            }
            if !is_prefix(&self.text[start..self.i]) {
                self.i = start;
                return Err(self.err("bad string prefix"));
            }
            if self.text[start..self.i].contains(['f', 'F']) {
                self.i = start;
                return Err(self.err("f-strings are not literals"));
            }
            match bytes {
                None => bytes = Some(is_bytes),
                Some(b) if b != is_bytes => {
                    return Err(self.err("cannot mix bytes and str literals"))
                }
                Some(_) => {}
            }
            self.one_string(raw, &mut out)?;
            let save = self.i;
            self.skip_ws();
            let next_is_string = match self.peek() {
                Some(b'\'' | b'"') => true,
                Some(c) if c.is_ascii_alphabetic() => {
                    let mut j = self.i;
                    while self.s.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
                        j += 1;
                    }
                    matches!(self.s.get(j), Some(b'\'' | b'"')) && is_prefix(&self.text[self.i..j])
                }
                _ => false,
            };
            if !next_is_string {
                self.i = save;
                break;
            }
        }
        let kind = if bytes == Some(true) {
            LitKind::Bytes
        } else {
            LitKind::Str(out)
        };
        Ok(Lit { pos, kind })
    }

    fn one_string(&mut self, raw: bool, out: &mut String) -> Result<()> {
        let Some(q) = self.peek() else {
            return Err(self.err("expected a quote"));
        };
        let triple = self.s.get(self.i + 1) == Some(&q) && self.s.get(self.i + 2) == Some(&q);
        self.i += if triple { 3 } else { 1 };
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            if c == q {
                if !triple {
                    self.i += 1;
                    return Ok(());
                }
                if self.s.get(self.i + 1) == Some(&q) && self.s.get(self.i + 2) == Some(&q) {
                    self.i += 3;
                    return Ok(());
                }
            }
            if c == b'\n' && !triple {
                return Err(self.err("newline in a single-quoted string"));
            }
            if c == b'\\' {
                if raw {
                    // Raw strings keep the backslash, and it still protects a quote.
                    out.push('\\');
                    self.i += 1;
                    if let Some(n) = self.char_at() {
                        out.push(n);
                        self.i += n.len_utf8();
                    }
                    continue;
                }
                self.escape(out)?;
                continue;
            }
            let Some(ch) = self.char_at() else {
                return Err(self.err("unterminated string"));
            };
            out.push(ch);
            self.i += ch.len_utf8();
        }
    }

    fn char_at(&self) -> Option<char> {
        self.text.get(self.i..).and_then(|t| t.chars().next())
    }

    fn escape(&mut self, out: &mut String) -> Result<()> {
        let esc_pos = self.i;
        self.i += 1;
        let Some(c) = self.char_at() else {
            return Err(self.err("unterminated string"));
        };
        self.i += c.len_utf8();
        let simple = match c {
            '\n' => Some(None),
            '\\' => Some(Some('\\')),
            '\'' => Some(Some('\'')),
            '"' => Some(Some('"')),
            'a' => Some(Some('\x07')),
            'b' => Some(Some('\x08')),
            'f' => Some(Some('\x0c')),
            'n' => Some(Some('\n')),
            'r' => Some(Some('\r')),
            't' => Some(Some('\t')),
            'v' => Some(Some('\x0b')),
            _ => None,
        };
        if let Some(s) = simple {
            if let Some(ch) = s {
                out.push(ch);
            }
            return Ok(());
        }
        let code = match c {
            '0'..='7' => {
                let mut v = c as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                v
            }
            'x' => self.hex(2, esc_pos)?,
            'u' => self.hex(4, esc_pos)?,
            'U' => self.hex(8, esc_pos)?,
            'N' => {
                self.i = esc_pos;
                return Err(self.err("\\N{...} escapes are not supported"));
            }
            other => {
                // Python keeps unknown escapes verbatim.
                out.push('\\');
                out.push(other);
                return Ok(());
            }
        };
        match char::from_u32(code) {
            Some(ch) => {
                out.push(ch);
                Ok(())
            }
            None => {
                self.i = esc_pos;
                Err(self.err("escape is not a valid code point"))
            }
        }
    }

    fn hex(&mut self, n: usize, esc_pos: usize) -> Result<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            match self.peek().and_then(|c| (c as char).to_digit(16)) {
                Some(d) => {
                    v = v.wrapping_mul(16).wrapping_add(d);
                    self.i += 1;
                }
                None => {
                    self.i = esc_pos;
                    return Err(self.err("truncated hex escape"));
                }
            }
        }
        Ok(v)
    }
}

fn is_prefix(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    matches!(
        w.as_str(),
        "" | "r" | "u" | "b" | "br" | "rb" | "f" | "fr" | "rf"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<LitKind> {
        parse(s, LongSuffix::Reject).map(|l| l.kind)
    }

    #[test]
    fn scalars() {
        assert_eq!(p("  12 ").unwrap(), LitKind::Int(12));
        assert_eq!(p("-0x1_0").unwrap(), LitKind::Int(-16));
        assert_eq!(p("True").unwrap(), LitKind::Bool(true));
        assert_eq!(p("'a\\'b'").unwrap(), LitKind::Str("a'b".into()));
        assert_eq!(p("\"it's\"").unwrap(), LitKind::Str("it's".into()));
        assert_eq!(p("'a' \"b\"").unwrap(), LitKind::Str("ab".into()));
        assert_eq!(
            p(r"'\x41\u00e9\U0001F600\101'").unwrap(),
            LitKind::Str("Aé😀A".into())
        );
        assert_eq!(p(r"r'\x41'").unwrap(), LitKind::Str(r"\x41".into()));
        assert_eq!(p("'''a'b'''").unwrap(), LitKind::Str("a'b".into()));
        assert_eq!(p("1.5").unwrap(), LitKind::Float);
        assert_eq!(p("b'x'").unwrap(), LitKind::Bytes);
    }

    #[test]
    fn containers() {
        assert_eq!(p("(3)").unwrap(), LitKind::Int(3));
        assert!(matches!(p("(3,)").unwrap(), LitKind::Tuple(v) if v.len() == 1));
        assert!(matches!(p("()").unwrap(), LitKind::Tuple(v) if v.is_empty()));
        assert!(matches!(p("[1, 2,]").unwrap(), LitKind::List(v) if v.len() == 2));
        assert!(matches!(p("{'a': 1, }").unwrap(), LitKind::Dict(v) if v.len() == 1));
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(
            p("{'a': foo}"),
            Err(CodecError::Syntax {
                pos: 6,
                reason: "a name is not a literal"
            })
        );
        assert!(matches!(p("(1, 2"), Err(CodecError::Syntax { pos: 5, .. })));
        assert!(matches!(p("'abc"), Err(CodecError::Syntax { .. })));
        assert!(matches!(p("01"), Err(CodecError::Syntax { pos: 0, .. })));
        assert!(matches!(p("1 2"), Err(CodecError::Syntax { pos: 2, .. })));
        assert!(matches!(
            p("999999999999999999999999999999999999999999"),
            Err(CodecError::IntOutOfRange { pos: 0 })
        ));
        assert!(matches!(p("3L"), Err(CodecError::Syntax { .. })));
        assert_eq!(
            parse("(3L,)", LongSuffix::Accept).map(|l| l.kind),
            Ok(LitKind::Tuple(vec![Lit {
                pos: 1,
                kind: LitKind::Int(3)
            }]))
        );
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            p(&deep),
            Err(CodecError::TooDeep {
                limit: MAX_DEPTH,
                ..
            })
        ));
        let ok = format!("{}{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(p(&ok).is_ok());
        let over = format!("{}{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(matches!(p(&over), Err(CodecError::TooDeep { .. })));
        // A record nested 40 deep (numpy 2.2 loads it) parses and writes back.
        let descr = format!("{}'<i4'{}", "[('a', ".repeat(40), ")]".repeat(40));
        let dt = crate::DType::parse_descr(&descr);
        assert_eq!(dt.map(|d| d.to_descr()), Ok(descr));
    }
}
