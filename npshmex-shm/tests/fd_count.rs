//! No fd leaks: the process holds the same fds before and after 10,000 send and
//! receive cycles with fds. Alone in its own test binary so no concurrent test
//! opens or closes fds while it counts.

use std::error::Error;

use npshmex_shm::{oob, Access, FdSocket, Segment, ShmError};

#[test]
fn fd_count_is_unchanged_after_10000_cycles() -> Result<(), Box<dyn Error>> {
    // Warm up lazily opened fds (thread-locals, /proc) before the first count.
    let (a, b) = FdSocket::pair()?;
    let before = npshmex_testkit::open_fds();
    {
        let seg = Segment::anonymous(4096)?.freeze()?;
        for i in 0..10_000u32 {
            let nfds = (i % 4) as usize;
            let fds = vec![seg.fd()?; nfds];
            a.send(&i.to_le_bytes(), &fds)?;
            let msg = b.recv()?;
            assert_eq!(msg.fds.len(), nfds);
            if i % 3 == 0 {
                // Through the out-of-band collector, taking only some fds: the
                // rest must be closed by with_received.
                let (_, collected) = oob::collect(|| -> Result<(), ShmError> {
                    for fd in msg.fds {
                        oob::push_fd(fd)?;
                    }
                    Ok(())
                });
                let fds = collected.finish()?.into_fds();
                let (r, _) = oob::with_received(fds, || -> Result<(), ShmError> {
                    if nfds > 0 {
                        let s = Segment::from_fd_sealed(oob::take_fd(0)?, Access::ReadOnly, 0)?;
                        assert_eq!(s.len(), 4096);
                    }
                    Ok(())
                });
                r?;
            } else if let Some(fd) = msg.fds.into_iter().next() {
                let s = Segment::from_fd_sealed(fd, Access::ReadOnly, 0)?;
                assert_eq!(s.len(), 4096);
            }
        }
    }
    drop(a);
    assert!(matches!(b.recv(), Err(ShmError::PeerClosed)));
    drop(b);
    let after = npshmex_testkit::open_fds() + 2;
    assert_eq!(before, after, "fds leaked");
    Ok(())
}
