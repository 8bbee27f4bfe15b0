//! The frames ranks exchange: a postcard header, then (for small values)
//! the value's bytes inline, in one MPI message on the frame tag; large
//! value bytes and every out-of-band segment follow as raw messages on the
//! data tag, in the order the header lists them, each cut into pieces of
//! at most [`CHUNK`](crate::raw::CHUNK) bytes.
//!
//! The receiver learns every length from the header before any raw message
//! arrives, so it allocates the destination (a shared-memory segment for a
//! segment, a `Vec` for bytes) and posts its receives into it: no staging
//! buffer, no probe per piece. MPI's ordering of messages between two ranks
//! on one tag keeps the pieces matched with their receives. Decoding is
//! strict: a frame that does not parse, announces impossible lengths or
//! carries a wrong number of inline bytes is an [`MpiError::BadFrame`].

use std::ops::Range;

use npshmex_pool::backend::BuildId;
use npshmex_pool::{PanicInfo, RemoteCause, TaskError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::MpiError;
use crate::raw::CHUNK;

/// Where a value's serialized bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// This many bytes follow the header in the same message.
    Inline(u32),
    /// This many bytes follow as raw messages.
    Raw(u64),
}

/// A value's bytes and out-of-band segments, as announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) body: Body,
    /// Length of each segment, in the order of the value's indices.
    pub(crate) items: Vec<u64>,
}

/// One task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) id: u64,
    /// `TaskFn::to_raw`: trampoline and function offsets.
    pub(crate) tramp: i64,
    pub(crate) func: i64,
    pub(crate) arg: Payload,
}

/// Rank 0 to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// The start-up verdict: serve, hearing from rank 0 every `beat_ms`
    /// and leaving after `silence_ms` without a word from it; results up
    /// to `inline_max` bytes inline; poll `spin_us` before sleeping.
    Welcome {
        beat_ms: u64,
        silence_ms: u64,
        inline_max: u32,
        spin_us: u64,
    },
    /// Another rank runs another build: leave without running anything.
    Refused,
    /// Run this.
    Task(Task),
    /// Leave MPI and exit. Without `finalize` (a rank of the job died, so
    /// `MPI_Finalize`, which waits for every rank, might never return),
    /// exit at once instead.
    Shutdown { finalize: bool },
}

/// Why a task produced no value, as a worker reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panicked(PanicInfo),
    ArgumentDecode(RemoteCause),
    ResultEncode(RemoteCause),
    /// Receiving the argument or sending the result failed in the worker.
    Transport(RemoteCause),
}

impl Failure {
    /// The worker-side form of a task error.
    pub(crate) fn from_task_error(e: TaskError) -> Failure {
        match e {
            TaskError::Panicked(p) => Failure::Panicked(p),
            TaskError::ArgumentDecode(c) => Failure::ArgumentDecode(c),
            TaskError::ResultEncode(c) => Failure::ResultEncode(c),
            other => Failure::Transport(RemoteCause::from_error(&other)),
        }
    }

    /// The caller-side error.
    pub(crate) fn into_task_error(self) -> TaskError {
        match self {
            Failure::Panicked(p) => TaskError::Panicked(p),
            Failure::ArgumentDecode(c) => TaskError::ArgumentDecode(c),
            Failure::ResultEncode(c) => TaskError::ResultEncode(c),
            Failure::Transport(c) => TaskError::Transport {
                op: "moving a task through a worker rank",
                source: std::sync::Arc::new(c),
            },
        }
    }
}

/// A worker to rank 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ToCaller {
    /// The start-up handshake: who this rank is, and which build it runs.
    Hello {
        build: BuildId,
        pid: u32,
        host: String,
    },
    /// A task's outcome; on `Ok` its result's payload follows.
    Done {
        id: u64,
        outcome: Result<Payload, Failure>,
    },
    /// The worker got a frame it cannot read, so its stream is out of step:
    /// it leaves.
    Confused { reason: String },
}

/// A frame: `head`, then `inline`.
///
/// # Errors
/// [`MpiError::BadFrame`] if the header does not serialize.
pub(crate) fn encode<H: Serialize>(
    rank: i32,
    head: &H,
    inline: &[u8],
) -> Result<Vec<u8>, MpiError> {
    let mut out = postcard::to_extend(head, Vec::with_capacity(64 + inline.len()))
        .map_err(|e| MpiError::frame(rank, "the header does not serialize", e))?;
    out.extend_from_slice(inline);
    Ok(out)
}

/// The header of a frame and the bytes after it.
///
/// # Errors
/// [`MpiError::BadFrame`] if the header does not parse.
pub(crate) fn decode<H: DeserializeOwned>(rank: i32, bytes: &[u8]) -> Result<(H, &[u8]), MpiError> {
    postcard::take_from_bytes(bytes)
        .map_err(|e| MpiError::frame(rank, "the header does not parse", e))
}

impl Payload {
    /// Checks the inline bytes against the announced body.
    ///
    /// # Errors
    /// [`MpiError::BadFrame`] if they disagree.
    pub(crate) fn check_inline(&self, rank: i32, inline: &[u8]) -> Result<(), MpiError> {
        let expected = match self.body {
            Body::Inline(n) => usize::try_from(n).ok(),
            Body::Raw(_) => Some(0),
        };
        if expected != Some(inline.len()) {
            return Err(MpiError::BadFrame {
                rank,
                reason: "the frame's inline bytes do not match its header",
                source: None,
            });
        }
        Ok(())
    }
}

/// Announced lengths as `usize`, refusing what this process cannot address.
///
/// # Errors
/// [`MpiError::Size`].
pub(crate) fn to_len(rank: i32, len: u64) -> Result<usize, MpiError> {
    usize::try_from(len).map_err(|_| MpiError::Size {
        rank,
        len,
        reason: "larger than this process can address",
    })
}

/// The pieces, at most `chunk` bytes each, that `len` bytes travel as.
pub(crate) fn pieces(len: usize, chunk: usize) -> impl Iterator<Item = Range<usize>> {
    let chunk = chunk.max(1);
    (0..len.div_ceil(chunk)).map(move |i| i * chunk..((i + 1) * chunk).min(len))
}

/// [`pieces`] of the MPI message size.
pub(crate) fn mpi_pieces(len: usize) -> impl Iterator<Item = Range<usize>> {
    pieces(len, CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_payload() -> impl Strategy<Value = Payload> {
        (
            prop_oneof![
                any::<u32>().prop_map(Body::Inline),
                any::<u64>().prop_map(Body::Raw)
            ],
            proptest::collection::vec(any::<u64>(), 0..8),
        )
            .prop_map(|(body, items)| Payload { body, items })
    }

    fn arb_to_worker() -> impl Strategy<Value = ToWorker> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<u32>(), any::<u64>()).prop_map(
                |(beat_ms, silence_ms, inline_max, spin_us)| ToWorker::Welcome {
                    beat_ms,
                    silence_ms,
                    inline_max,
                    spin_us
                }
            ),
            Just(ToWorker::Refused),
            any::<bool>().prop_map(|finalize| ToWorker::Shutdown { finalize }),
            (any::<u64>(), any::<i64>(), any::<i64>(), arb_payload()).prop_map(
                |(id, tramp, func, arg)| ToWorker::Task(Task {
                    id,
                    tramp,
                    func,
                    arg
                })
            ),
        ]
    }

    fn arb_to_caller() -> impl Strategy<Value = ToCaller> {
        prop_oneof![
            (any::<u64>(), arb_payload()).prop_map(|(id, p)| ToCaller::Done { id, outcome: Ok(p) }),
            (any::<u64>(), ".*").prop_map(|(id, m)| ToCaller::Done {
                id,
                outcome: Err(Failure::ArgumentDecode(RemoteCause::new(m)))
            }),
            ".*".prop_map(|reason| ToCaller::Confused { reason }),
        ]
    }

    proptest! {
        #[test]
        fn frames_to_workers_roundtrip(head in arb_to_worker(), inline in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = encode(0, &head, &inline)?;
            let (back, rest) = decode::<ToWorker>(0, &bytes)?;
            prop_assert_eq!(back, head);
            prop_assert_eq!(rest, &inline[..]);
        }

        #[test]
        fn frames_to_the_caller_roundtrip(head in arb_to_caller(), inline in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = encode(1, &head, &inline)?;
            let (back, rest) = decode::<ToCaller>(1, &bytes)?;
            prop_assert_eq!(back, head);
            prop_assert_eq!(rest, &inline[..]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<ToWorker>(2, &bytes);
            let _ = decode::<ToCaller>(2, &bytes);
        }

        #[test]
        fn pieces_cover_every_byte_once(len in 0usize..10_000, chunk in 1usize..3_000) {
            let ps: Vec<_> = pieces(len, chunk).collect();
            let mut at = 0;
            for p in &ps {
                prop_assert_eq!(p.start, at);
                prop_assert!(p.end > p.start && p.end - p.start <= chunk);
                at = p.end;
            }
            prop_assert_eq!(at, len);
        }
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        // Empty, an unknown variant, and a header cut short.
        assert!(matches!(
            decode::<ToWorker>(3, &[]),
            Err(MpiError::BadFrame {
                rank: 3,
                source: Some(_),
                ..
            })
        ));
        assert!(matches!(
            decode::<ToWorker>(3, &[200]),
            Err(MpiError::BadFrame {
                rank: 3,
                source: Some(_),
                ..
            })
        ));
        let full = encode(
            0,
            &ToWorker::Task(Task {
                id: 7,
                tramp: 1,
                func: 2,
                arg: Payload {
                    body: Body::Raw(1 << 40),
                    items: vec![1, 2, 3],
                },
            }),
            &[],
        )
        .expect("a header serializes");
        assert!(matches!(
            decode::<ToWorker>(3, &full[..full.len() - 1]),
            Err(MpiError::BadFrame { rank: 3, .. })
        ));
    }

    #[test]
    fn inline_bytes_must_match_the_header() {
        let p = Payload {
            body: Body::Inline(4),
            items: vec![],
        };
        assert!(p.check_inline(1, &[1, 2, 3, 4]).is_ok());
        assert!(matches!(
            p.check_inline(1, &[1, 2, 3]),
            Err(MpiError::BadFrame {
                rank: 1,
                source: None,
                ..
            })
        ));
        let raw = Payload {
            body: Body::Raw(4),
            items: vec![],
        };
        assert!(matches!(
            raw.check_inline(1, &[0]),
            Err(MpiError::BadFrame { .. })
        ));
    }

    #[test]
    fn payloads_past_two_gib_are_cut_below_int_max() {
        let len = (5usize << 30) + 3;
        let ps: Vec<_> = mpi_pieces(len).collect();
        assert_eq!(ps.len(), 6);
        assert!(ps.iter().all(|p| p.end - p.start <= i32::MAX as usize));
        assert_eq!(ps.last().map(|p| p.end), Some(len));
    }
}
