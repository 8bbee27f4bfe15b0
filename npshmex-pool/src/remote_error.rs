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

/// [`RemoteCause::MAX_LINKS`].
const MAX_LINKS: usize = 128;

/// One error of a chain, as text: its message, the name of its Rust type
/// where known, and what caused it. An `Error` whose `source()` is the next
/// link, so `{:#}` (anyhow) and error reporters print the whole chain.
///
/// On the wire the chain is a flat list of at most
/// [`RemoteCause::MAX_LINKS`] links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCause {
    message: String,
    type_name: Option<String>,
    source: Option<Box<RemoteCause>>,
}

impl RemoteCause {
    /// Most links of a chain that crosses a process boundary. Longer
    /// chains (or cyclic ones, whose `source()`s never end) keep their
    /// first links and end with a note that the rest was left out; a peer
    /// that sends more is refused. Each link is a level of recursion for
    /// whoever decodes, prints or drops the chain, so the bound keeps a
    /// deep chain from overflowing the receiving thread's stack.
    pub const MAX_LINKS: usize = MAX_LINKS;

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
        let mut links = vec![(err.to_string(), type_name.map(str::to_owned))];
        let mut next = err.source();
        while let Some(e) = next {
            if links.len() == MAX_LINKS - 1 {
                links.push((OMITTED.to_owned(), None));
                break;
            }
            links.push((e.to_string(), None));
            next = e.source();
        }
        Self::from_links(links)
    }

    /// The chain of `links`, head first (at least one).
    fn from_links(links: Vec<(String, Option<String>)>) -> RemoteCause {
        let mut cause: Option<Box<RemoteCause>> = None;
        for (message, type_name) in links.into_iter().rev() {
            cause = Some(Box::new(RemoteCause {
                message,
                type_name,
                source: cause,
            }));
        }
        cause.map_or_else(|| RemoteCause::new(""), |b| *b)
    }

    /// Every link, this one first.
    fn links(&self) -> impl Iterator<Item = &RemoteCause> {
        std::iter::successors(Some(self), |c| c.source.as_deref())
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
        self.links().map(|c| c.message.as_str())
    }
}

/// The last link of a chain cut at [`RemoteCause::MAX_LINKS`].
const OMITTED: &str = "(further causes left out)";

impl Serialize for RemoteCause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Flat: (message, type name) per link, at most MAX_LINKS (a chain
        // built by hand with `with_source` may be longer: cut like one from
        // `from_error`).
        use serde::ser::SerializeSeq;
        let n = self.links().count();
        let cut = n > MAX_LINKS;
        let kept = if cut { MAX_LINKS - 1 } else { n };
        let mut seq = s.serialize_seq(Some(kept + usize::from(cut)))?;
        for c in self.links().take(kept) {
            seq.serialize_element(&(c.message.as_str(), c.type_name.as_deref()))?;
        }
        if cut {
            seq.serialize_element(&(OMITTED, None::<&str>))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for RemoteCause {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RemoteCause, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RemoteCause;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an error chain of 1 to {MAX_LINKS} links")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RemoteCause, A::Error> {
                let mut links = Vec::new();
                while let Some(link) = seq.next_element::<(String, Option<String>)>()? {
                    if links.len() == MAX_LINKS {
                        return Err(serde::de::Error::invalid_length(MAX_LINKS + 1, &self));
                    }
                    links.push(link);
                }
                if links.is_empty() {
                    return Err(serde::de::Error::invalid_length(0, &self));
                }
                Ok(RemoteCause::from_links(links))
            }
        }
        d.deserialize_seq(V)
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

    /// An error that is its own source: a chain without end.
    #[derive(Debug)]
    struct Cyclic;

    impl fmt::Display for Cyclic {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("again")
        }
    }

    impl Error for Cyclic {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&Cyclic)
        }
    }

    #[test]
    fn chains_are_cut_and_peers_cannot_send_longer_ones() {
        let cause = RemoteCause::from_error(&Cyclic);
        assert_eq!(cause.messages().count(), RemoteCause::MAX_LINKS);
        assert_eq!(cause.messages().last(), Some(OMITTED));
        let bytes = postcard::to_allocvec(&cause).unwrap();
        assert_eq!(postcard::from_bytes::<RemoteCause>(&bytes).unwrap(), cause);
        // A chain built by hand, longer than the bound, is cut on the wire.
        let mut long = RemoteCause::new("end");
        for _ in 0..MAX_LINKS + 5 {
            long = RemoteCause::with_source("more", long);
        }
        let bytes = postcard::to_allocvec(&long).unwrap();
        let back = postcard::from_bytes::<RemoteCause>(&bytes).unwrap();
        assert_eq!(back.messages().count(), MAX_LINKS);
        // A peer's list of more links, or of none, is refused.
        let links = vec![("x".to_string(), None::<String>); MAX_LINKS + 1];
        let bytes = postcard::to_allocvec(&links).unwrap();
        assert!(postcard::from_bytes::<RemoteCause>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&Vec::<(String, Option<String>)>::new()).unwrap();
        assert!(postcard::from_bytes::<RemoteCause>(&bytes).is_err());
    }

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
