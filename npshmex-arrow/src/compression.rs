//! The body compression of IPC files: [`IpcCompression`], one buffer
//! compressed or decompressed with the two codecs the format defines, and how
//! far a declared uncompressed length is believed before memory is spent on it.
//!
//! # Design
//! The codecs are the `lz4_flex` and `zstd` crates, the ones arrow-ipc's
//! `lz4`/`zstd` features use; their decompressors are called here directly
//! rather than through arrow-ipc because arrow-ipc decompresses into a fresh
//! `Vec` allocated at the *declared* size (a file of a few bytes could ask
//! for terabytes) and then copies; here each buffer is decompressed once,
//! straight into its place in a shared-memory segment whose size was checked
//! first (see `inflate`). `lz4_flex` is built with its safe decoder.
//!
//! A compressed buffer is an 8-byte little-endian uncompressed length and a
//! frame of the codec; length -1 means the rest is stored uncompressed
//! (written when compressing does not help), and an empty buffer stays empty.

use crate::error::{ArrowShmError, Result};
use arrow_ipc::{BodyCompression, BodyCompressionMethod, CompressionType};
use std::fmt;
use std::io::{Read, Write};

/// How the record batch bodies of an IPC file are compressed (the IPC
/// format's `BodyCompression`, one codec per message, each buffer compressed
/// on its own).
///
/// Reading accepts every variant: compressed files are decompressed into
/// shared memory as an uncompressed file. Writing compressed is for files on
/// disk ([`write_ipc_file`](crate::write_ipc_file)); segments in shared
/// memory are always uncompressed, so that they can be read in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpcCompression {
    /// Buffers stored as they are.
    #[default]
    None,
    /// LZ4 frame format (what pyarrow's `compression="lz4"` and
    /// `feather.write_feather` write by default).
    Lz4Frame,
    /// Zstandard, at its default level.
    Zstd,
}

impl fmt::Display for IpcCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpcCompression::None => "uncompressed",
            IpcCompression::Lz4Frame => "LZ4 frame",
            IpcCompression::Zstd => "ZSTD",
        })
    }
}

/// Length of the uncompressed-length prefix of every compressed buffer.
pub(crate) const PREFIX_LEN: usize = 8;
/// The prefix of a buffer stored uncompressed inside a compressed message.
const STORED_UNCOMPRESSED: i64 = -1;

impl IpcCompression {
    /// The compression of a message's record batch.
    ///
    /// # Errors
    /// [`ArrowShmError::UnknownCompression`] for codecs or methods the
    /// format does not define.
    pub(crate) fn from_fb(c: Option<BodyCompression<'_>>) -> Result<IpcCompression> {
        let Some(c) = c else {
            return Ok(IpcCompression::None);
        };
        let unknown = || ArrowShmError::UnknownCompression {
            codec: c.codec().0,
            method: c.method().0,
        };
        if c.method() != BodyCompressionMethod::BUFFER {
            return Err(unknown());
        }
        match c.codec() {
            CompressionType::LZ4_FRAME => Ok(IpcCompression::Lz4Frame),
            CompressionType::ZSTD => Ok(IpcCompression::Zstd),
            _ => Err(unknown()),
        }
    }

    /// The codec field of a message compressed with `self`.
    pub(crate) fn to_fb(self) -> Option<CompressionType> {
        match self {
            IpcCompression::None => None,
            IpcCompression::Lz4Frame => Some(CompressionType::LZ4_FRAME),
            IpcCompression::Zstd => Some(CompressionType::ZSTD),
        }
    }

    /// The most bytes a frame of `compressed` bytes can decompress to.
    ///
    /// LZ4: a byte of the compressed stream stands for at most 255 output
    /// bytes (each match-length byte adds at most 255 to a match; literals
    /// are 1:1; frame headers and block sizes produce nothing). ZSTD: no
    /// block produces more than 128 KiB, and the smallest block (an RLE
    /// block: 3-byte header and the byte) is 4 bytes, so at most 32 768
    /// output bytes per input byte.
    pub(crate) fn max_decompressed(self, compressed: u64) -> u64 {
        let ratio: u64 = match self {
            IpcCompression::None => 1,
            IpcCompression::Lz4Frame => 255,
            IpcCompression::Zstd => 1 << 15,
        };
        compressed.saturating_mul(ratio)
    }
}

/// What the 8-byte prefix of a compressed buffer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// The rest of the buffer is the data, uncompressed (prefix -1).
    Stored,
    /// The buffer is empty (prefix 0, as arrow-rs reads it).
    Empty,
    /// The rest is a frame that decompresses to this many bytes.
    Frame(u64),
}

/// Reads the prefix of a non-empty compressed buffer.
///
/// # Errors
/// [`ArrowShmError::CompressedBufferTooShort`] when the buffer cannot hold
/// the prefix, [`ArrowShmError::NegativeUncompressedLength`] for negative
/// lengths other than -1.
pub(crate) fn prefix(buffer: &[u8]) -> Result<Prefix> {
    let Some(bytes) = buffer.first_chunk::<PREFIX_LEN>() else {
        return Err(ArrowShmError::CompressedBufferTooShort {
            len: buffer.len() as u64,
        });
    };
    match i64::from_le_bytes(*bytes) {
        STORED_UNCOMPRESSED => Ok(Prefix::Stored),
        0 => Ok(Prefix::Empty),
        n => u64::try_from(n)
            .map(Prefix::Frame)
            .map_err(|_| ArrowShmError::NegativeUncompressedLength { length: n }),
    }
}

/// Decompresses one frame of `codec`, exactly filling `out`.
///
/// Nothing is allocated in proportion to `out` or to what the frame claims:
/// the LZ4 decoder buffers at most one block (4 MiB at most), the ZSTD one
/// writes straight into `out` and stops at its end.
///
/// # Errors
/// [`ArrowShmError::Decompress`] for a corrupt frame,
/// [`ArrowShmError::DecompressedShort`] / [`ArrowShmError::DecompressedLong`]
/// when it holds fewer or more bytes than `out`.
pub(crate) fn decompress_into(
    codec: IpcCompression,
    frame: &[u8],
    out: &mut [u8],
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> Result<()> {
    let declared = out.len() as u64;
    let corrupt = |source| ArrowShmError::Decompress { codec, source };
    match codec {
        IpcCompression::None => {
            if frame.len() != out.len() {
                return Err(ArrowShmError::DecompressedShort {
                    codec,
                    declared,
                    actual: frame.len() as u64,
                });
            }
            out.copy_from_slice(frame);
            Ok(())
        }
        IpcCompression::Lz4Frame => {
            let mut decoder = lz4_flex::frame::FrameDecoder::new(frame);
            let mut filled = 0;
            while filled < out.len() {
                match decoder.read(&mut out[filled..]) {
                    Ok(0) => {
                        return Err(ArrowShmError::DecompressedShort {
                            codec,
                            declared,
                            actual: filled as u64,
                        })
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(corrupt(e)),
                }
            }
            let mut probe = [0u8; 1];
            match decoder.read(&mut probe) {
                Ok(0) => Ok(()),
                Ok(_) => Err(ArrowShmError::DecompressedLong { codec, declared }),
                Err(e) => Err(corrupt(e)),
            }
        }
        IpcCompression::Zstd => {
            let decompressor = match zstd {
                Some(d) => d,
                None => zstd.insert(zstd::bulk::Decompressor::new().map_err(corrupt)?),
            };
            match decompressor.decompress_to_buffer(frame, out) {
                Ok(n) if n == out.len() => Ok(()),
                Ok(n) => Err(ArrowShmError::DecompressedShort {
                    codec,
                    declared,
                    actual: n as u64,
                }),
                // libzstd stops at the end of `out` with "destination buffer
                // is too small"; the frame header says whether that is why
                Err(e) => match zstd::zstd_safe::get_frame_content_size(frame) {
                    Ok(Some(size)) if size > declared => {
                        Err(ArrowShmError::DecompressedLong { codec, declared })
                    }
                    _ => Err(corrupt(e)),
                },
            }
        }
    }
}

/// Compresses buffers for a message with one codec, keeping the codec's
/// context between buffers.
pub(crate) struct Compressor {
    codec: IpcCompression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    pub(crate) fn new(codec: IpcCompression) -> Compressor {
        Compressor { codec, zstd: None }
    }

    pub(crate) fn codec(&self) -> IpcCompression {
        self.codec
    }

    /// `input` as a buffer of a message compressed with the codec: the
    /// length prefix and a frame, or prefix -1 and `input` when the frame
    /// would not be smaller (as arrow-ipc and pyarrow write); an empty input
    /// stays empty.
    pub(crate) fn compress(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        let codec = self.codec;
        let failed = |source| ArrowShmError::Compress { codec, source };
        if input.is_empty() || codec == IpcCompression::None {
            return Ok(input.to_vec());
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + input.len() / 2);
        out.extend_from_slice(&(input.len() as u64).to_le_bytes());
        match codec {
            IpcCompression::None => {}
            IpcCompression::Lz4Frame => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(out);
                encoder.write_all(input).map_err(failed)?;
                out = encoder
                    .finish()
                    .map_err(|e| failed(std::io::Error::other(e)))?;
            }
            IpcCompression::Zstd => {
                let compressor = match &mut self.zstd {
                    Some(c) => c,
                    None => self.zstd.insert(
                        zstd::bulk::Compressor::new(zstd::DEFAULT_COMPRESSION_LEVEL)
                            .map_err(failed)?,
                    ),
                };
                out.extend_from_slice(&compressor.compress(input).map_err(failed)?);
            }
        }
        if out.len() - PREFIX_LEN >= input.len() {
            out.clear();
            out.extend_from_slice(&STORED_UNCOMPRESSED.to_le_bytes());
            out.extend_from_slice(input);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODECS: [IpcCompression; 2] = [IpcCompression::Lz4Frame, IpcCompression::Zstd];

    fn inflate(codec: IpcCompression, buffer: &[u8], declared: usize) -> Result<Vec<u8>> {
        let mut out = vec![0; declared];
        match prefix(buffer)? {
            Prefix::Stored => out.copy_from_slice(&buffer[PREFIX_LEN..]),
            Prefix::Empty => out.clear(),
            Prefix::Frame(_) => decompress_into(codec, &buffer[PREFIX_LEN..], &mut out, &mut None)?,
        }
        Ok(out)
    }

    proptest! {
        #[test]
        fn buffers_round_trip(data in proptest::collection::vec(0u8..4, 0..4000)) {
            for codec in CODECS {
                let c = Compressor::new(codec).compress(&data).map_err(|e| TestCaseError::fail(e.to_string()))?;
                if data.is_empty() {
                    prop_assert!(c.is_empty());
                    continue;
                }
                let declared = match prefix(&c).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    Prefix::Frame(n) => n,
                    Prefix::Stored => (c.len() - PREFIX_LEN) as u64,
                    Prefix::Empty => 0,
                };
                prop_assert_eq!(declared, data.len() as u64);
                prop_assert!(codec.max_decompressed((c.len() - PREFIX_LEN) as u64) >= declared);
                let back = inflate(codec, &c, data.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, data.clone());
            }
        }

        #[test]
        fn wrong_lengths_and_corrupt_frames_are_errors(
            pattern in proptest::collection::vec(any::<u8>(), 1..40),
            len in 200usize..4000,
            delta in 1usize..100,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            // a repeated pattern: compressible by both codecs
            let data: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
            for codec in CODECS {
                let c = Compressor::new(codec).compress(&data).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(matches!(prefix(&c), Ok(Prefix::Frame(_))));
                let frame = &c[PREFIX_LEN..];
                let short = decompress_into(codec, frame, &mut vec![0; data.len() + delta], &mut None);
                let is_short = matches!(short, Err(ArrowShmError::DecompressedShort { actual, .. }) if actual == data.len() as u64);
                prop_assert!(is_short, "{:?}", short);
                let long = decompress_into(codec, frame, &mut vec![0; data.len() - delta], &mut None);
                let is_long = matches!(long, Err(ArrowShmError::DecompressedLong { .. }));
                prop_assert!(is_long, "{:?}", long);
                // one byte changed anywhere: an error, or (a literal byte) the
                // right length with other contents; never a panic
                let mut bad = frame.to_vec();
                let i = at.index(bad.len());
                bad[i] = bad[i].wrapping_add(byte.max(1));
                let mut out = vec![0; data.len()];
                match decompress_into(codec, &bad, &mut out, &mut None) {
                    Ok(()) => prop_assert_eq!(out.len(), data.len()),
                    Err(ArrowShmError::Decompress { codec: c, .. }
                        | ArrowShmError::DecompressedShort { codec: c, .. }
                        | ArrowShmError::DecompressedLong { codec: c, .. }) => prop_assert_eq!(c, codec),
                    Err(e) => prop_assert!(false, "unexpected error {e:?}"),
                }
            }
        }

        #[test]
        fn every_prefix_is_read_or_refused(n in any::<i64>(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut b = n.to_le_bytes().to_vec();
            b.extend_from_slice(&tail);
            match (n, prefix(&b)) {
                (-1, Ok(Prefix::Stored)) | (0, Ok(Prefix::Empty)) => {}
                (n, Ok(Prefix::Frame(m))) => prop_assert_eq!(n as u64, m),
                (n, Err(ArrowShmError::NegativeUncompressedLength { length })) => {
                    prop_assert!(n < -1);
                    prop_assert_eq!(length, n);
                }
                (n, other) => prop_assert!(false, "{n}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_buffer_shorter_than_the_prefix_is_an_error() {
        for len in 1..PREFIX_LEN {
            assert!(matches!(
                prefix(&vec![0xff; len]),
                Err(ArrowShmError::CompressedBufferTooShort { len: l }) if l == len as u64
            ));
        }
    }

    #[test]
    fn incompressible_data_is_stored() -> Result<()> {
        let data: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        for codec in CODECS {
            let c = Compressor::new(codec).compress(&data)?;
            assert_eq!(prefix(&c)?, Prefix::Stored);
            assert_eq!(&c[PREFIX_LEN..], &data[..]);
        }
        Ok(())
    }

    #[test]
    fn garbage_frames_are_decompress_errors() {
        for codec in CODECS {
            let mut out = vec![0; 100];
            let r = decompress_into(codec, b"definitely not a frame", &mut out, &mut None);
            assert!(
                matches!(r, Err(ArrowShmError::Decompress { codec: c, .. }) if c == codec),
                "{r:?}"
            );
        }
    }
}
