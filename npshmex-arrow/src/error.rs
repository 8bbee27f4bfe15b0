//! The one error type of the crate, [`ArrowShmError`].

use crate::compression::IpcCompression;
use arrow_schema::ArrowError;
use npshmex_shm::ShmError;

/// `Result` with [`ArrowShmError`] as the default error.
pub type Result<T, E = ArrowShmError> = std::result::Result<T, E>;

/// Everything that can go wrong writing or reading Arrow data in shared memory.
///
/// Reading data from outside (a segment another process wrote, a file in
/// `/dev/shm`, bytes received from a worker) never panics: malformed input is
/// one of [`Malformed`](Self::Malformed), [`Flatbuffer`](Self::Flatbuffer),
/// [`Invalid`](Self::Invalid) or, as the last line of defence,
/// [`DecoderPanicked`](Self::DecoderPanicked); a compressed file can also be
/// refused with one of the variants about its compressed buffers
/// ([`CompressedBufferTooShort`](Self::CompressedBufferTooShort) to
/// [`DecompressedLong`](Self::DecompressedLong)), each checked before the
/// memory it declares is allocated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArrowShmError {
    /// A shared-memory operation failed.
    #[error("shared memory: {op}")]
    Shm {
        /// What was being done.
        op: &'static str,
        /// The error of `npshmex-shm`.
        #[source]
        source: ShmError,
    },
    /// Arrow refused the data while it was being laid out for writing.
    #[error("cannot encode the batch")]
    Encode {
        /// Arrow's error.
        #[source]
        source: ArrowError,
    },
    /// A batch does not have the schema of the file being written.
    #[error("batch {index} has a schema different from the file's")]
    SchemaMismatch {
        /// Index of the offending batch.
        index: usize,
    },
    /// Two batches of one file carry different dictionaries for the same
    /// field: the IPC file format allows one dictionary per field.
    #[error("dictionary {dict_id} differs between batches (the IPC file format allows one dictionary per field)")]
    DictionaryReplaced {
        /// The IPC dictionary id.
        dict_id: i64,
    },
    /// A size does not fit the field the IPC format has for it.
    #[error("{what} of {value} bytes does not fit the IPC format")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// The size.
        value: u64,
    },
    /// The bytes are not a well-formed Arrow IPC file.
    #[error("not a valid Arrow IPC file: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// A flatbuffer of the file (footer or message) failed verification.
    #[error("corrupt {what} flatbuffer")]
    Flatbuffer {
        /// Which flatbuffer.
        what: &'static str,
        /// The verifier's error.
        #[source]
        source: flatbuffers::InvalidFlatbuffer,
    },
    /// Arrow's IPC decoder or its validation rejected the data (bad offsets,
    /// invalid UTF-8, dictionary keys out of range, ...).
    #[error("invalid Arrow data: {op}")]
    Invalid {
        /// What was being decoded.
        op: &'static str,
        /// Arrow's error.
        #[source]
        source: ArrowError,
    },
    /// Arrow's decoder panicked on corrupt input; the panic was caught.
    /// Should not happen (every check we know of runs first); reported so
    /// that a hostile file is an error and not a crash.
    #[error("Arrow's decoder panicked on corrupt input: {message}")]
    DecoderPanicked {
        /// The panic message.
        message: String,
    },
    /// The caller asked for exactly one batch and the file holds another number.
    #[error("expected exactly one record batch, the file holds {actual}")]
    NotOneBatch {
        /// How many batches the file holds.
        actual: usize,
    },
    /// A value meant to carry one array did not hold exactly one column.
    #[error("expected a single-column batch carrying an array, got {columns} columns")]
    NotOneColumn {
        /// How many columns it had.
        columns: usize,
    },
    /// A buffer of a compressed message is shorter than the 8-byte
    /// uncompressed length that must start it.
    #[error("compressed buffer of {len} bytes is shorter than its 8-byte length prefix")]
    CompressedBufferTooShort {
        /// The buffer's length in the message.
        len: u64,
    },
    /// A compressed buffer declares a negative uncompressed length other
    /// than -1 (which means "stored uncompressed").
    #[error("compressed buffer declares the uncompressed length {length}")]
    NegativeUncompressedLength {
        /// The declared length.
        length: i64,
    },
    /// A message's body compression names a codec or method the IPC format
    /// does not define.
    #[error("unknown body compression (codec {codec}, method {method})")]
    UnknownCompression {
        /// The `CompressionType` value.
        codec: i8,
        /// The `BodyCompressionMethod` value.
        method: i8,
    },
    /// The uncompressed sizes a compressed file declares add up past what
    /// this machine can address.
    #[error("the uncompressed sizes declared by a compressed file overflow")]
    DeclaredSizeOverflow,
    /// A compressed buffer declares more bytes than its compressed bytes can
    /// stand for with its codec (checked before anything is allocated).
    #[error("{codec} buffer of {compressed} bytes declares {declared} uncompressed bytes, more than the codec can produce ({limit})")]
    DecompressionRatio {
        /// The codec.
        codec: IpcCompression,
        /// Length of the compressed frame.
        compressed: u64,
        /// The declared uncompressed length.
        declared: u64,
        /// The most the frame can decompress to.
        limit: u64,
    },
    /// A compressed file declares an uncompressed size larger than the
    /// memory available (checked before anything is allocated).
    #[error("compressed file needs {needed} bytes once decompressed, {available} are available")]
    DecompressionMemory {
        /// Size of the decompressed file.
        needed: u64,
        /// Memory available now (`MemAvailable`).
        available: u64,
    },
    /// A compressed buffer is not a valid frame of its codec.
    #[error("corrupt {codec} buffer")]
    Decompress {
        /// The codec.
        codec: IpcCompression,
        /// The codec's error.
        #[source]
        source: std::io::Error,
    },
    /// A compressed buffer decompressed to fewer bytes than it declares.
    #[error("{codec} buffer decompressed to {actual} bytes, {declared} declared")]
    DecompressedShort {
        /// The codec.
        codec: IpcCompression,
        /// The declared uncompressed length.
        declared: u64,
        /// What it decompressed to.
        actual: u64,
    },
    /// A compressed buffer decompresses to more bytes than it declares.
    #[error("{codec} buffer decompresses to more than the {declared} bytes it declares")]
    DecompressedLong {
        /// The codec.
        codec: IpcCompression,
        /// The declared uncompressed length.
        declared: u64,
    },
    /// A buffer could not be compressed while writing a file.
    #[error("cannot compress a buffer with {codec}")]
    Compress {
        /// The codec.
        codec: IpcCompression,
        /// The codec's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing an IPC file to its destination failed.
    #[error("cannot write the IPC file")]
    Io {
        /// The writer's error.
        #[source]
        source: std::io::Error,
    },
    /// A received segment is missing seals the sender promised.
    #[error("received segment lacks the {missing} seal(s) its receive mode requires")]
    MissingSeals {
        /// Which seals are missing.
        missing: &'static str,
    },
    /// A batch was serialized or deserialized outside a pool task, where no
    /// file descriptor can travel.
    #[error("npshmex segment types can only be serialized inside a pool task (no fd collector)")]
    NoCollector,
}

impl ArrowShmError {
    pub(crate) fn shm(op: &'static str) -> impl FnOnce(ShmError) -> ArrowShmError {
        move |source| ArrowShmError::Shm { op, source }
    }

    pub(crate) fn invalid(op: &'static str) -> impl FnOnce(ArrowError) -> ArrowShmError {
        move |source| ArrowShmError::Invalid { op, source }
    }
}
