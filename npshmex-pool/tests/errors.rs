//! Errors that chain and locate, through real workers (issue 16.4): a task
//! returns `RemoteError` with `?` and the caller flattens it with `?`;
//! `{:#}` of decode failures shows their cause; a panic says where and in
//! which worker; a `panic_any` payload says its type.

use std::error::Error;
use std::fmt;

use npshmex_pool::{ProcessPoolExecutor, RemoteError, TaskError};
use npshmex_testkit::LeakCheck;
use serde::{Deserialize, Deserializer, Serialize};

npshmex_pool::test_support!();

/// A user error with a source, as `thiserror` would write it.
#[derive(Debug)]
struct ConfigError {
    field: &'static str,
    source: std::num::ParseIntError,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad value for {}", self.field)
    }
}

impl Error for ConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

fn parse_threads(text: String) -> Result<u32, RemoteError> {
    let n: u32 = text.parse().map_err(|source| ConfigError {
        field: "threads",
        source,
    })?;
    if n == 0 {
        return Err(RemoteError::msg("threads must be positive"));
    }
    Ok(n)
}

/// What a caller writes: one `?` for the pool, one for the task's error.
fn caller(pool: &ProcessPoolExecutor, text: &str) -> anyhow::Result<u32> {
    Ok(pool.submit(parse_threads, text.to_string())?.result()??)
}

#[test]
fn a_task_error_travels_with_its_chain_and_flattens_with_question_marks() {
    let leaks = LeakCheck::start();
    {
        let pool = ProcessPoolExecutor::new(1).expect("pool");
        assert_eq!(caller(&pool, "8").expect("ok"), 8);

        let err = caller(&pool, "eight").expect_err("not a number");
        let full = format!("{err:#}");
        assert_eq!(
            full, "bad value for threads: invalid digit found in string",
            "{{:#}} shows the whole chain"
        );
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        assert_eq!(chain.len(), 2, "{chain:?}");

        let err = caller(&pool, "0").expect_err("zero");
        assert_eq!(format!("{err:#}"), "threads must be positive");

        // The same through TaskError: `Failed` with the cause as source.
        let r = pool
            .submit(parse_threads, "x".to_string())
            .expect("submit")
            .result()
            .expect("the task ran");
        let task_err: TaskError = r.expect_err("not a number").into();
        let TaskError::Failed(cause) = &task_err else {
            panic!("expected Failed, got {task_err:?}");
        };
        assert_eq!(cause.message(), "bad value for threads");
        assert!(
            cause.type_name().is_some_and(|t| t.contains("ConfigError")),
            "{cause:?}"
        );
        // `Failed` shows its cause's message; the rest of the chain are
        // its sources.
        assert_eq!(task_err.to_string(), "bad value for threads");
        let source = task_err.source().expect("Failed has a source");
        assert_eq!(source.to_string(), "invalid digit found in string");
        assert!(source.source().is_none());
    }
    leaks.finish();
}

/// Serializes fine; refuses to deserialize, with a message of its own.
#[derive(Debug, Serialize)]
struct Picky(u32);

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Picky, D::Error> {
        let v = u32::deserialize(d)?;
        Err(serde::de::Error::custom(format!(
            "picky refuses {v}: only on Tuesdays"
        )))
    }
}

fn make_picky(x: u32) -> Picky {
    Picky(x)
}

fn take_picky(p: Picky) -> u32 {
    p.0
}

#[test]
fn decode_failures_show_their_cause_in_the_chain() {
    let leaks = LeakCheck::start();
    {
        let pool = ProcessPoolExecutor::new(1).expect("pool");

        let err = pool
            .submit(make_picky, 5)
            .expect("submit")
            .result()
            .expect_err("the result cannot be decoded");
        assert!(matches!(err, TaskError::ResultDecode { .. }), "{err:?}");
        let full = format!("{:#}", anyhow::Error::from(err));
        assert!(
            full.contains("picky refuses 5: only on Tuesdays"),
            "{{:#}} of ResultDecode: {full}"
        );

        let err = pool
            .submit(take_picky, Picky(6))
            .expect("submit")
            .result()
            .expect_err("the argument cannot be decoded");
        assert!(matches!(err, TaskError::ArgumentDecode(_)), "{err:?}");
        let full = format!("{:#}", anyhow::Error::from(err));
        assert!(
            full.contains("picky refuses 6: only on Tuesdays"),
            "{{:#}} of ArgumentDecode: {full}"
        );

        // The pool is fine afterwards.
        assert_eq!(
            pool.submit(take_picky_u32, 3)
                .expect("s")
                .result()
                .expect("ok"),
            3
        );
    }
    leaks.finish();
}

fn take_picky_u32(x: u32) -> u32 {
    x
}

fn panics_here(_: ()) -> u32 {
    panic!("the gauge reads {}", 42)
}

fn panics_with_a_number(_: ()) -> u32 {
    std::panic::panic_any(17u64)
}

#[derive(Debug)]
struct Opaque;

fn panics_with_a_struct(_: ()) -> u32 {
    std::panic::panic_any(Opaque)
}

#[test]
fn a_panic_says_where_and_in_which_worker() {
    let leaks = LeakCheck::start();
    {
        let pool = ProcessPoolExecutor::new(1).expect("pool");
        let worker = pool
            .submit(|(): ()| std::process::id(), ())
            .expect("s")
            .result()
            .expect("ok");
        let err = pool
            .submit(panics_here, ())
            .expect("s")
            .result()
            .expect_err("panics");
        let TaskError::Panicked(info) = &err else {
            panic!("expected Panicked, got {err:?}");
        };
        assert_eq!(info.message(), "the gauge reads 42");
        let at = info.location().expect("a location");
        assert!(at.starts_with("npshmex-pool/tests/errors.rs:"), "{at}");
        assert_eq!(info.pid(), worker, "the worker that ran it");
        assert_ne!(info.pid(), std::process::id());
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("worker {worker}")) && shown.contains(at),
            "{shown}"
        );

        let err = pool
            .submit(panics_with_a_number, ())
            .expect("s")
            .result()
            .expect_err("panics");
        let TaskError::Panicked(info) = &err else {
            panic!("expected Panicked, got {err:?}");
        };
        assert_eq!(info.message(), "panic_any with a u64 payload: 17");

        let err = pool
            .submit(panics_with_a_struct, ())
            .expect("s")
            .result()
            .expect_err("panics");
        let TaskError::Panicked(info) = &err else {
            panic!("expected Panicked, got {err:?}");
        };
        assert!(info.message().contains("not a string"), "{info:?}");
    }
    leaks.finish();
}
