//! The one error type of the crate: every refusal of a dtype, descr string,
//! `.npy` header or typed view, with the position or values that caused it.

/// `Result` with [`CodecError`] as the default error.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

/// Why a descr string, header, dtype or typed view was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The text is not a literal of the accepted Python subset.
    #[error("syntax error at byte {pos}: {reason}")]
    Syntax {
        /// Byte offset in the parsed text (in the file for `NpyHeader::read`).
        pos: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// Literals nest deeper than the parser allows.
    #[error("nesting deeper than {limit} levels at byte {pos}")]
    TooDeep {
        /// Byte offset in the parsed text (in the file for `NpyHeader::read`).
        pos: usize,
        /// The nesting limit.
        limit: usize,
    },
    /// An integer literal does not fit the range it is used in.
    #[error("integer out of range at byte {pos}")]
    IntOutOfRange {
        /// Byte offset in the parsed text (in the file for `NpyHeader::read`).
        pos: usize,
    },
    /// A well-formed literal that does not describe a dtype.
    #[error("invalid dtype descr at byte {pos}: {reason}")]
    BadDescr {
        /// Byte offset in the parsed text (in the file for `NpyHeader::read`).
        pos: usize,
        /// What was wrong there.
        reason: String,
    },
    /// A dtype numpy knows but that has no fixed, pointer-free layout
    /// (object arrays) or no platform-independent meaning (long double).
    #[error("unsupported dtype {descr:?}: {reason}")]
    Unsupported {
        /// The type string, e.g. `"|O"`.
        descr: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A structured dtype whose fields are inconsistent.
    #[error("invalid structured dtype: {reason}")]
    BadStruct {
        /// What is inconsistent.
        reason: String,
    },
    /// A size computation (itemsize, shape product, header length) overflows.
    #[error("size overflow computing {what}")]
    Overflow {
        /// Which size.
        what: &'static str,
    },
    /// The file does not start with `\x93NUMPY`.
    #[error("not a .npy file (bad magic)")]
    BadMagic,
    /// A `.npy` format version this crate does not know.
    #[error("unsupported .npy format version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The input ends before what its header announces.
    #[error("truncated input: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes required.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// Bytes after the array data of a `.npy` file.
    #[error("{extra} unexpected bytes after the array data")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// The header text is not valid in its declared encoding.
    #[error("header is not valid {encoding} at byte {pos}")]
    HeaderEncoding {
        /// `"latin1"` or `"utf-8"`.
        encoding: &'static str,
        /// Byte offset of the fault in the file.
        pos: usize,
    },
    /// The header dict is missing a key, has an extra one or a value of the
    /// wrong type.
    #[error("bad .npy header: {reason}")]
    BadHeader {
        /// What is wrong.
        reason: String,
    },
    /// The header is too long for any `.npy` version.
    #[error("header of {len} bytes is too long")]
    HeaderTooLong {
        /// Its length.
        len: usize,
    },
    /// A typed view was requested for a dtype that does not match the Rust type.
    #[error("dtype mismatch: data is {actual}, Rust type is {expected}")]
    DTypeMismatch {
        /// The descr of the Rust type.
        expected: String,
        /// The descr of the data.
        actual: String,
    },
    /// The byte length is not a multiple of the item size.
    #[error("{len} bytes is not a multiple of the item size {itemsize}")]
    Length {
        /// Byte length given.
        len: usize,
        /// Item size of the dtype.
        itemsize: usize,
    },
    /// The bytes are not aligned for the Rust type.
    #[error("address {addr:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// Address of the first byte.
        addr: usize,
        /// Alignment required.
        align: usize,
    },
    /// A byte that is neither 0 nor 1 where a `bool` is expected.
    #[error("byte {index} is {value}, not a valid bool")]
    InvalidBool {
        /// Index of the element.
        index: usize,
        /// Its value.
        value: u8,
    },
    /// A value does not fit a fixed-width string element.
    #[error("{len} units do not fit in {capacity}")]
    TooLong {
        /// Length of the value (bytes or characters).
        len: usize,
        /// Capacity of the element.
        capacity: usize,
    },
    /// A mutable typed view of a type with padding bytes: writing values
    /// would leave those bytes uninitialised.
    #[error("mutable view of {descr} refused: the type has padding bytes")]
    Padding {
        /// The descr of the type.
        descr: String,
    },
}

impl CodecError {
    /// The same error with its text position (if any) mapped through `f`,
    /// e.g. from an offset in the header dict to an offset in the file.
    pub(crate) fn map_pos(self, f: impl FnOnce(usize) -> usize) -> CodecError {
        match self {
            CodecError::Syntax { pos, reason } => CodecError::Syntax {
                pos: f(pos),
                reason,
            },
            CodecError::TooDeep { pos, limit } => CodecError::TooDeep { pos: f(pos), limit },
            CodecError::IntOutOfRange { pos } => CodecError::IntOutOfRange { pos: f(pos) },
            CodecError::BadDescr { pos, reason } => CodecError::BadDescr {
                pos: f(pos),
                reason,
            },
            CodecError::HeaderEncoding { encoding, pos } => CodecError::HeaderEncoding {
                encoding,
                pos: f(pos),
            },
            other => other,
        }
    }
}
