//! Moves through `oob` with the move flags trusted (`with_received_moves`),
//! as the pool's transport receives them: a move is real only when the
//! sender dropped its last handle, and a segment coming home reuses its
//! mapping.

use std::sync::Arc;

use npshmex_shm::cache::{self, Slot};
use npshmex_shm::oob::{self, collect, receive, send, with_received_moves};
use npshmex_shm::{Access, Result, Transfer};

fn writable_slot(byte: u8) -> Result<Arc<Slot>> {
    let mut slot = cache::alloc(4096)?;
    slot.segment_mut().as_mut_slice()?[0] = byte;
    Ok(Arc::new(slot))
}

#[test]
fn a_move_of_a_kept_handle_sends_a_copy() -> Result<()> {
    let slot = writable_slot(7)?;
    let key = slot.file_key();
    let (r, collected) = collect(|| send(&slot, Transfer::Move));
    let r = r?;
    let out = collected.finish()?;
    assert!(out.is_moved(0));
    let (fds, moved) = out.into_parts();
    // SAFETY: the fds come straight from `finish`, which proved the move.
    let (got, _) = unsafe { with_received_moves(fds, &moved, || receive(r)) };
    let got = got?;
    assert_ne!(
        got.file_key(),
        key,
        "the sender kept its handle: a copy moved"
    );
    assert_eq!(got.segment().as_slice()[0], 7);
    assert_eq!(got.segment().access(), Access::ReadWrite);
    assert!(
        slot.segment().is_exclusive(),
        "the kept handle is still the only writer"
    );
    Ok(())
}

#[test]
fn a_proven_move_arrives_writable_and_comes_home_to_its_mapping() -> Result<()> {
    // Past the cache's minimum size, so the sender keeps its mapping.
    let slot = cache::alloc((3 << 20) + 123)?;
    let slot = Arc::new(slot);
    let key = slot.file_key();
    let ptr = slot.segment().as_ptr();
    let (r, collected) = collect(|| send(&slot, Transfer::Move));
    let r = r?;
    drop(slot);
    let (fds, moved) = collected.finish()?.into_parts();
    // SAFETY: the fds come straight from `finish`, which proved the move.
    let (got, cause) = unsafe { with_received_moves(fds, &moved, || receive(r)) };
    assert!(cause.is_none());
    let mut got = got?;
    assert_eq!(got.file_key(), key, "no copy");
    assert_eq!(
        got.segment().as_ptr(),
        ptr,
        "this process's own mapping, reused"
    );
    got.segment_mut().as_mut_slice()?[1] = 1;
    Ok(())
}

#[test]
fn plain_fds_are_never_taken_for_moves() -> Result<()> {
    // A value may push any fd and claim a move in its bytes; the flags the
    // transport passes on only ever mark what `finish` itself resolved.
    let dev_null = std::fs::File::open("/dev/null").map_err(|e| npshmex_shm::ShmError::Io {
        op: "open",
        source: e,
    })?;
    let (index, collected) = collect(|| oob::push_fd(dev_null.into()));
    assert_eq!(index?, 0);
    let out = collected.finish()?;
    assert!(!out.is_moved(0));
    assert_eq!(out.moved(), &[false]);
    Ok(())
}

#[test]
fn contents_transports_hand_segments_over_as_slots() -> Result<()> {
    // What a transport that carries contents does: the sender reads each
    // moved slot, the receiver fills a slot of its own and decodes.
    let mut slot = cache::alloc(4096)?;
    slot.segment_mut().as_mut_slice()?[..3].copy_from_slice(b"abc");
    let slot = Arc::new(slot);
    let (refs, collected) = collect(|| {
        Ok::<_, npshmex_shm::ShmError>((send(&slot, Transfer::Move)?, send(&slot, Transfer::Move)?))
    });
    let (r1, r2) = refs?;
    drop(slot);
    let out = collected.finish_local()?;
    assert_eq!(out.len(), 2);
    let mut inbound = Vec::new();
    for item in &out {
        let oob::Outbound::Slot(s) = item else {
            panic!("a moved segment arrives as a slot");
        };
        let bytes = s.segment().as_slice();
        let mut mine = cache::alloc(bytes.len())?;
        mine.segment_mut().as_mut_slice()?[..bytes.len()].copy_from_slice(bytes);
        inbound.push(oob::Inbound::Slot(mine));
    }
    let (got, cause) = oob::with_received_local(inbound, || {
        Ok::<_, npshmex_shm::ShmError>((
            receive(r1)?,
            receive(r2.with_transfer(Transfer::ReadOnly))?,
        ))
    });
    assert!(cause.is_none());
    let (moved, shared) = got?;
    assert_eq!(&moved.segment().as_slice()[..3], b"abc");
    assert_eq!(moved.segment().access(), Access::ReadWrite);
    assert_eq!(shared.segment().access(), Access::ReadOnly);
    assert!(shared
        .segment()
        .seals()?
        .contains(npshmex_shm::Seals::WRITE));
    Ok(())
}
