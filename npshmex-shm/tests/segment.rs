//! Big segments: past 4 GiB, reserved up front.

use std::error::Error;

use npshmex_shm::{Access, Segment, ShmError};

#[test]
fn five_gib_segment_works_or_is_no_space() -> Result<(), Box<dyn Error>> {
    const LEN: usize = 5 << 30;
    let mut seg = match Segment::anonymous(LEN) {
        Ok(seg) => seg,
        Err(ShmError::NoSpace {
            requested,
            available,
        }) => {
            assert_eq!(requested, LEN as u64);
            eprintln!("note: 5 GiB segment refused: {available} bytes available");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    assert_eq!(seg.len(), LEN);
    seg.advise_hugepage();
    let offsets = [0, (4 << 30) - 1, 4 << 30, (4 << 30) + 4097, LEN - 1];
    {
        let bytes = seg.as_mut_slice()?;
        for (i, &o) in offsets.iter().enumerate() {
            bytes[o] = i as u8 + 1;
        }
    }
    let seg = seg.freeze()?;
    let ro = Segment::from_fd_sealed(seg.try_clone_fd()?, Access::ReadOnly, LEN as u64)?;
    for (i, &o) in offsets.iter().enumerate() {
        assert_eq!(ro.as_slice()[o], i as u8 + 1);
    }
    Ok(())
}
