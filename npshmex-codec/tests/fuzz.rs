//! Untrusted input never panics: arbitrary and mutated bytes into
//! [`NpyHeader::read`], arbitrary text into [`DType::parse_descr`], and
//! grammar-built hostile headers (deep nesting, edge-of-range numbers).
//! `cargo xtask test` runs this file in release with `PROPTEST_CASES=300000`.

mod common;

use npshmex_codec::{from_native, to_native, DType, NpyHeader};
use proptest::prelude::*;

/// A small valid `.npy` prefix to mutate, so the fuzzer reaches the parser.
fn valid_file(dt: &DType, shape: Vec<usize>) -> Vec<u8> {
    NpyHeader::new(dt.clone(), shape)
        .to_bytes()
        .unwrap_or_default()
}

/// If a header parses, writing and reading it again is consistent.
fn check_read(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((h, offset)) = NpyHeader::read(bytes) {
        prop_assert!(offset <= bytes.len());
        if let Ok(again) = h.to_bytes() {
            let (h2, off2) =
                NpyHeader::read(&again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(h2, h);
            prop_assert_eq!(off2, again.len());
        }
    }
    Ok(())
}

/// A small deterministic generator, so one `u64` from proptest picks a
/// whole hostile header (shrinking then means "a smaller seed", which is
/// enough to reproduce).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Dimensions and sizes: zero, tiny, and the edges of i32/i64/u64.
    fn number(&mut self) -> String {
        match self.below(9) {
            0 => "0".into(),
            1 => u64::MAX.to_string(),
            2 => (1u64 << 62).to_string(),
            3 => "99999999999999999999999999".into(),
            4 => ((1u64 << 31) + self.below(3)).to_string(),
            5 => "-1".into(),
            6 => (1u64 << 27).to_string(),
            _ => self.below(6).to_string(),
        }
    }
    fn shape(&mut self) -> String {
        match self.below(4) {
            0 => self.number(),
            k => {
                let dims: Vec<String> = (0..k).map(|_| self.number()).collect();
                format!("({},)", dims.join(", "))
            }
        }
    }
    fn scalar(&mut self) -> String {
        const T: [&str; 12] = [
            "<f8", ">i4", "|b1", "|S", "<U", "|V", ">M8[", "<m8", ">c16", ">f2", "|O", "<f16",
        ];
        match T[self.below(T.len() as u64) as usize] {
            s @ ("|S" | "<U" | "|V") => format!("'{s}{}'", self.number()),
            ">M8[" => format!("'>M8[{}ms]'", self.number()),
            s => format!("'{s}'"),
        }
    }
    /// A descr: scalars, lists with titles, padding and subarrays, tuples,
    /// dict forms with offsets and itemsize, nested up to `depth`.
    fn descr(&mut self, depth: u32) -> String {
        if depth == 0 {
            return self.scalar();
        }
        match self.below(5) {
            0 | 1 => self.scalar(),
            2 => {
                let fields: Vec<String> = (0..self.below(4))
                    .map(|i| match self.below(6) {
                        0 => format!("('f{i}', {}, {})", self.descr(depth - 1), self.shape()),
                        1 => format!("(('t{i}', 'f{i}'), {})", self.descr(depth - 1)),
                        2 => format!("('', '|V{}')", self.number()),
                        _ => format!("('f{i}', {})", self.descr(depth - 1)),
                    })
                    .collect();
                format!("[{}]", fields.join(", "))
            }
            3 => format!("({}, {})", self.descr(depth - 1), self.shape()),
            _ => {
                let k = self.below(3);
                let names: Vec<String> = (0..k).map(|i| format!("'n{i}'")).collect();
                let formats: Vec<String> = (0..k).map(|_| self.descr(depth - 1)).collect();
                let mut d = format!(
                    "{{'names': [{}], 'formats': [{}]",
                    names.join(", "),
                    formats.join(", ")
                );
                if self.below(2) == 0 {
                    let offsets: Vec<String> = (0..k).map(|_| self.number()).collect();
                    d += &format!(", 'offsets': [{}]", offsets.join(", "));
                }
                if self.below(2) == 0 {
                    d += &format!(", 'itemsize': {}", self.number());
                }
                d + "}"
            }
        }
    }
}

proptest! {
    /// Grammar-built headers with nesting, titles, padding, dict forms and
    /// numbers at the edges of every integer type: never a panic (or an
    /// allocation the size of a dtype rather than of the data); an accepted
    /// header writes back to one with the same layout, and its (small)
    /// data converts to native order and back unchanged.
    #[test]
    fn hostile_descrs_and_numbers(seed in 1u64.., fortran: bool) {
        let mut g = Gen(seed);
        let descr = g.descr(6);
        let shape = g.shape();
        let text = format!(
            "{{'descr': {descr}, 'fortran_order': {}, 'shape': {shape}}}",
            if fortran { "True" } else { "False" }
        );
        let mut file = b"\x93NUMPY\x02\x00".to_vec();
        file.extend_from_slice(&(text.len() as u32).to_le_bytes());
        file.extend_from_slice(text.as_bytes());
        if let Ok((h, _)) = NpyHeader::read(&file) {
            let again = h.to_bytes().map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            let (h2, _) = NpyHeader::read(&again).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert!(h2.dtype.same_layout(&h.dtype), "{}", text);
            prop_assert_eq!(&h2.shape, &h.shape);
            let len = h.data_len().map_err(|e| TestCaseError::fail(e.to_string()))?;
            if len <= 1 << 16 {
                let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
                let (_, mut native) = to_native(&h.dtype, data.clone())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                from_native(&h.dtype, &mut native).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(native, data);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_read(&bytes)?;
        let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        check_read(&with_magic)?;
    }

    #[test]
    fn mutated_headers_never_panic(
        dt in common::dtype(),
        shape in proptest::collection::vec(0usize..5, 0..4),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate: bool,
    ) {
        let mut file = valid_file(&dt, shape);
        prop_assume!(!file.is_empty());
        for (at, b) in edits {
            let i = at.index(file.len());
            file[i] = b;
        }
        if truncate {
            file.truncate(cut.index(file.len()));
        }
        check_read(&file)?;
    }

    #[test]
    fn arbitrary_descr_text_never_panics(text in "[\\[\\](){}'\",: <>|=a-zA-Z0-9_\\\\]{0,60}") {
        let _ = DType::parse_descr(&text);
    }
}
