//! Writing elements as numpy stores them (every field byte from the value,
//! every padding byte zero) in bounded chunks, for element types that a
//! typed `&mut` view cannot write: records with padding bytes.
//!
//! A typed view of a padded record would let safe code store a value whose
//! padding bytes are uninitialised into shared memory that numpy, the
//! receiver and `as_npy_bytes` read as bytes. So these types go through the
//! codec's byte encoding ([`npshmex_codec::to_bytes`]), which zeroes the
//! padding. Encoding a whole array at once would need one (or, collecting
//! the elements first, two) full-size temporaries next to the segment;
//! chunks of [`CHUNK_BYTES`] keep the scratch memory bounded whatever the
//! array's size, at the cost of one small allocation per chunk (the codec
//! has no encoder into a caller's buffer).

use npshmex_codec::{to_bytes, Element};

/// Bytes encoded at a time: large enough that the per-chunk overhead
/// vanishes, small enough to stay in cache.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// Elements of `A` per chunk (at least one, however large `A` is).
pub(crate) fn chunk_elems<A>() -> usize {
    (CHUNK_BYTES / std::mem::size_of::<A>().max(1)).max(1)
}

/// The encoding of `values`, chunk by chunk (each at most [`chunk_elems`]
/// elements), in the order given.
pub(crate) fn encoded_chunks<A: Element>(
    values: impl IntoIterator<Item = A>,
) -> impl Iterator<Item = Vec<u8>> {
    let mut values = values.into_iter();
    let mut buf: Vec<A> = Vec::new();
    std::iter::from_fn(move || {
        buf.clear();
        buf.extend(values.by_ref().take(chunk_elems::<A>()));
        (!buf.is_empty()).then(|| to_bytes(&buf))
    })
}

/// Encodes `values` into `dst` from its start, stopping when either runs
/// out; returns how many elements were written.
pub(crate) fn encode_into<A: Element>(
    values: impl IntoIterator<Item = A>,
    dst: &mut [u8],
) -> usize {
    let size = std::mem::size_of::<A>();
    if size == 0 {
        return 0;
    }
    let mut at = 0;
    for bytes in encoded_chunks(values.into_iter().take(dst.len() / size)) {
        // `take` bounds the total by `dst`'s length, so this fits.
        dst[at..at + bytes.len()].copy_from_slice(&bytes);
        at += bytes.len();
    }
    at / size
}

/// Reads the elements of `data` chunk by chunk into a scratch buffer, lets
/// `f` change them, and encodes them back in place. `data` is a whole
/// number of `A`s at an address aligned for `A`; `dtype` is theirs.
///
/// # Errors
/// What viewing a chunk returns (`InvalidBool` for data that changed
/// under a vouched mapping; unreachable for data validated on receipt).
pub(crate) fn update_encoded<A: Element>(
    dtype: &npshmex_codec::DType,
    data: &mut [u8],
    mut f: impl FnMut(&mut [A]),
) -> npshmex_codec::Result<()> {
    let size = std::mem::size_of::<A>();
    if size == 0 {
        return Ok(());
    }
    let mut buf: Vec<A> = Vec::with_capacity(chunk_elems::<A>().min(data.len() / size));
    for chunk in data.chunks_mut(chunk_elems::<A>() * size) {
        buf.clear();
        // Each chunk starts at a multiple of the element size from an
        // aligned start, so it is aligned too.
        buf.extend_from_slice(npshmex_codec::cast_slice::<A>(dtype, chunk)?);
        f(&mut buf);
        chunk.copy_from_slice(&to_bytes(&buf));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    npshmex_codec::record! {
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        struct Gap { a: u8, b: u32 }
    }

    #[test]
    fn chunks_cover_every_value_and_zero_the_padding() {
        let n = chunk_elems::<Gap>() * 2 + 3;
        let values = (0..n).map(|i| Gap {
            a: i as u8,
            b: i as u32,
        });
        let chunks: Vec<Vec<u8>> = encoded_chunks(values.clone()).collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_BYTES));
        let all: Vec<Gap> = values.collect();
        assert_eq!(chunks.concat(), to_bytes(&all));

        let mut dst = vec![0xffu8; 8 * 5];
        let written = encode_into(all.iter().copied(), &mut dst);
        assert_eq!(written, 5, "stops when the destination is full");
        assert_eq!(dst, to_bytes(&all[..5]));
        let mut big = vec![0xffu8; 8 * 4];
        assert_eq!(encode_into(all[..2].iter().copied(), &mut big), 2);
        assert_eq!(&big[16..], &[0xff; 16], "stops when the values run out");
        assert_eq!(chunk_elems::<[u8; 100_000]>(), 1);
    }

    #[test]
    fn updates_go_through_the_encoding() {
        let all: Vec<Gap> = (0..chunk_elems::<Gap>() + 1)
            .map(|i| Gap { a: 1, b: i as u32 })
            .collect();
        let bytes = to_bytes(&all);
        // A buffer aligned for `Gap` (4) without `unsafe`: skip to an
        // aligned start.
        let mut buf = vec![0u8; bytes.len() + 4];
        let start = buf.as_ptr().align_offset(4).min(4);
        let data = &mut buf[start..start + bytes.len()];
        data.copy_from_slice(&bytes);
        data[1] = 0xee; // dirty padding is zeroed by the update
        let mut seen = 0;
        update_encoded::<Gap>(&Gap::dtype(), data, |s| {
            seen += s.len();
            s.iter_mut().for_each(|g| g.a += 1);
        })
        .unwrap();
        assert_eq!(seen, all.len());
        let expect: Vec<Gap> = all.iter().map(|g| Gap { a: 2, b: g.b }).collect();
        assert_eq!(data, &to_bytes(&expect)[..]);
    }
}
