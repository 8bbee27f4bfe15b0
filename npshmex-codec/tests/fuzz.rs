//! Untrusted input never panics: arbitrary and mutated bytes into
//! [`NpyHeader::read`], arbitrary text into [`DType::parse_descr`].
//! `cargo xtask test` runs this file in release with `PROPTEST_CASES=300000`.

mod common;

use npshmex_codec::{DType, NpyHeader};
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

proptest! {
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
