//! Property tests of the encoder/decoder pairs: descr text, `.npy` files,
//! serde, byte-order conversion.

mod common;

use common::{bytes_from_seed, dtype};
use npshmex_codec::{convert_byte_order, ByteOrder, DType, NpyHeader};
use proptest::prelude::*;

proptest! {
    #[test]
    fn descr_round_trips(dt in dtype()) {
        let text = dt.to_descr();
        let back = DType::parse_descr(&text);
        prop_assert_eq!(back.as_ref(), Ok(&dt), "descr {}", text);
    }

    #[test]
    fn npy_round_trips(
        dt in dtype(),
        shape in proptest::collection::vec(0usize..4, 0..6),
        fortran_order: bool,
        seed: u64,
    ) {
        let h = NpyHeader { dtype: dt, fortran_order, shape };
        let data_len = h.data_len().unwrap();
        prop_assume!(data_len < 1 << 16);
        let data = bytes_from_seed(seed, data_len);
        let mut file = h.to_bytes().unwrap();
        prop_assert_eq!(file.len() % 64, 0);
        prop_assert_eq!(file.len(), h.encoded_len().unwrap());
        file.extend_from_slice(&data);
        let (back, offset) = NpyHeader::read(&file).unwrap();
        prop_assert_eq!(&back, &h);
        prop_assert_eq!(&file[offset..], &data[..]);
        // Writing what was read gives the same bytes.
        prop_assert_eq!(&back.to_bytes().unwrap()[..], &file[..offset]);
    }

    #[test]
    fn serde_round_trips(dt in dtype()) {
        let wire = postcard::to_stdvec(&dt).unwrap();
        let back: DType = postcard::from_bytes(&wire).unwrap();
        prop_assert_eq!(back, dt);
    }

    #[test]
    fn byte_order_round_trips(dt in dtype(), n in 0usize..4, seed: u64) {
        prop_assume!(dt.itemsize() < 4096);
        let data = bytes_from_seed(seed, dt.itemsize() * n);
        let mut buf = data.clone();
        let big = convert_byte_order(&dt, &mut buf, ByteOrder::Big).unwrap();
        let little = convert_byte_order(&big, &mut buf, ByteOrder::Little).unwrap();
        prop_assert!(little.same_layout(&dt.with_byte_order(ByteOrder::Little)));
        let back = convert_byte_order(&little, &mut buf, ByteOrder::Little).unwrap();
        prop_assert_eq!(&back, &little);
        // Swapping to one order and back to the original order restores the bytes.
        let mut again = data.clone();
        let swapped = convert_byte_order(&dt, &mut again, ByteOrder::Big).unwrap();
        let mut round = again.clone();
        let undo = |d: &DType, b: &mut [u8]| -> DType {
            // Reapply the original orders field by field: convert to little,
            // then compare with the original converted to little.
            convert_byte_order(d, b, ByteOrder::Little).unwrap()
        };
        let a = undo(&swapped, &mut round);
        let mut orig = data;
        let b = undo(&dt, &mut orig);
        prop_assert_eq!(a, b);
        prop_assert_eq!(round, orig);
    }
}

#[test]
fn typical_dtypes_are_small_on_the_wire() {
    let f8 = DType::parse_descr("<f8").unwrap();
    let wire = postcard::to_stdvec(&f8).unwrap();
    assert!(wire.len() <= 4, "'<f8' takes {} bytes", wire.len());
    let rec =
        DType::parse_descr("[('x', '<f8'), ('y', '<f8'), ('id', '<i4', (3,)), ('name', '|S16')]")
            .unwrap();
    let wire = postcard::to_stdvec(&rec).unwrap();
    assert!(
        wire.len() <= 40,
        "a 4-field record takes {} bytes",
        wire.len()
    );
}
