//! Errors that cross a process boundary: [`RemoteError`], which a task
//! returns with `?` from any error, and [`RemoteCause`], the chain of
//! messages it carries, an ordinary `std::error::Error` on the caller's side.
//!
//! # Why two types
//! `?` inside a task needs `From<E>` for every error type `E`; Rust allows
//! that blanket conversion only for a type that is not itself an `Error`
//! (or it would overlap with `From<T> for T`). That is why `anyhow::Error`
//! is not an `Error` either. So [`RemoteError`] is the carrier a task
//! returns (`fn(A) -> Result<R, RemoteError>`), and it converts on the
//! caller's side into `anyhow::Error`, `Box<dyn Error>` or [`TaskError`],
//! so one more `?` flattens it; [`RemoteCause`] is the `Error` inside it,
//! with the original source chain as its `source()`s.
//!
//! ```
//! use npshmex_pool::RemoteError;
//!
//! fn parse(text: String) -> Result<u32, RemoteError> {
//!     let n: u32 = text.trim().parse()?; // any std::error::Error converts
//!     if n == 0 {
//!         return Err(RemoteError::msg("zero is not allowed"));
//!     }
//!     Ok(n)
//! }
//!
//! fn main() -> anyhow::Result<()> {
//!     assert_eq!(parse("7".into())?, 7);
//!     let err = parse("x".into()).unwrap_err();
//!     assert_eq!(err.to_string(), "invalid digit found in string");
//!     let flattened: anyhow::Error = err.into();
//!     assert!(format!("{flattened:#}").contains("invalid digit"));
//!     Ok(())
//! }
//! ```

use std::error::Error;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::TaskError;

/// One error of a chain, as text: its message, the name of its Rust type
/// where known, and what caused it. An `Error` whose `source()` is the next
/// link, so `{:#}` (anyhow) and error reporters print the whole chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCause {
    message: String,
    type_name: Option<String>,
    source: Option<Box<RemoteCause>>,
}

impl RemoteCause {
    /// A cause with just a message.
    pub fn new(message: impl Into<String>) -> RemoteCause {
        RemoteCause {
            message: message.into(),
            type_name: None,
            source: None,
        }
    }

    /// A cause with a message and what caused it.
    pub(crate) fn with_source(message: impl Into<String>, source: RemoteCause) -> RemoteCause {
        RemoteCause {
            message: message.into(),
            type_name: None,
            source: Some(Box::new(source)),
        }
    }

    /// The chain of `err`: its message and, recursively, its sources'.
    pub fn from_error(err: &(dyn Error + 'static)) -> RemoteCause {
        Self::chain(err, None)
    }

    fn chain(err: &(dyn Error + 'static), type_name: Option<&str>) -> RemoteCause {
        // Sources are kept in order; a source whose message merely repeats
        // its parent's (wrappers that print their inner error) is kept too,
        // since dropping links would hide types a caller may look for.
        let mut links = vec![err.to_string()];
        let mut next = err.source();
        while let Some(e) = next {
            links.push(e.to_string());
            next = e.source();
        }
        let mut cause: Option<Box<RemoteCause>> = None;
        for message in links.into_iter().rev() {
            cause = Some(Box::new(RemoteCause {
                message,
                type_name: None,
                source: cause,
            }));
        }
        let mut head = cause.map_or_else(|| RemoteCause::new(""), |b| *b);
        head.type_name = type_name.map(str::to_owned);
        head
    }

    /// The message of this link.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The Rust type of the original error, where it was known.
    pub fn type_name(&self) -> Option<&str> {
        self.type_name.as_deref()
    }

    /// Every message of the chain, this one first.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        std::iter::successors(Some(self), |c| c.source.as_deref()).map(|c| c.message.as_str())
    }
}

impl fmt::Display for RemoteCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for RemoteCause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

/// A serializable error a task returns: built with `?` from any
/// `std::error::Error` (its message, source chain and type name travel), or
/// from a message with [`RemoteError::msg`].
///
/// Not an `Error` itself (see the module docs); on the caller's side it
/// converts into `anyhow::Error`, `Box<dyn Error + Send + Sync>` and
/// [`TaskError`] with `?`, and [`RemoteError::cause`] is its `Error`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    cause: RemoteCause,
}

impl RemoteError {
    /// An error with just a message.
    pub fn msg(message: impl fmt::Display) -> RemoteError {
        RemoteError {
            cause: RemoteCause::new(message.to_string()),
        }
    }

    /// The error as a `std::error::Error` chain.
    pub fn cause(&self) -> &RemoteCause {
        &self.cause
    }

    /// The error as a `std::error::Error` chain, owned.
    pub fn into_cause(self) -> RemoteCause {
        self.cause
    }
}

impl<E: Error + Send + Sync + 'static> From<E> for RemoteError {
    fn from(err: E) -> RemoteError {
        RemoteError {
            cause: RemoteCause::chain(&err, Some(std::any::type_name::<E>())),
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            let mut first = true;
            for m in self.cause.messages() {
                if !first {
                    f.write_str(": ")?;
                }
                f.write_str(m)?;
                first = false;
            }
            Ok(())
        } else {
            fmt::Display::fmt(&self.cause, f)
        }
    }
}

impl fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.cause, f)
    }
}

impl From<RemoteError> for Box<dyn Error + Send + Sync + 'static> {
    fn from(err: RemoteError) -> Self {
        Box::new(err.cause)
    }
}

impl From<RemoteError> for Box<dyn Error + 'static> {
    fn from(err: RemoteError) -> Self {
        Box::new(err.cause)
    }
}

impl From<RemoteError> for anyhow::Error {
    fn from(err: RemoteError) -> Self {
        anyhow::Error::new(err.cause)
    }
}

impl From<RemoteError> for TaskError {
    fn from(err: RemoteError) -> Self {
        TaskError::Failed(err.cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("reading the input")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    fn task(fail: bool) -> Result<u8, RemoteError> {
        if fail {
            Err(Outer(std::io::Error::other("disk on fire")))?;
        }
        Ok(1)
    }

    #[test]
    fn chains_and_type_names_travel() -> Result<(), Box<dyn Error>> {
        let err = task(true).err().ok_or("an error")?;
        let bytes = postcard::to_allocvec(&err)?;
        let back: RemoteError = postcard::from_bytes(&bytes)?;
        assert_eq!(back, err);
        assert!(back
            .cause()
            .type_name()
            .is_some_and(|t| t.ends_with("Outer")));
        assert_eq!(
            back.cause().messages().collect::<Vec<_>>(),
            ["reading the input", "disk on fire"]
        );
        assert_eq!(format!("{back:#}"), "reading the input: disk on fire");
        let any: anyhow::Error = back.clone().into();
        assert_eq!(format!("{any:#}"), "reading the input: disk on fire");
        let task_err: TaskError = back.into();
        assert_eq!(task_err.to_string(), "reading the input");
        assert!(task_err
            .source()
            .is_some_and(|s| s.to_string() == "disk on fire"));
        assert_eq!(task(false)?, 1);
        Ok(())
    }
}
