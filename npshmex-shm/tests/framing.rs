//! `FdSocket` framing: arbitrary payload sizes and fd counts arrive intact and in
//! order, buffered frames come first, partial frames wait.

use std::error::Error;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use npshmex_shm::{Access, FdSocket, Segment, ShmError};
use proptest::prelude::*;

type TestResult = Result<(), Box<dyn Error>>;

/// Distinct memfds told apart by their size (1..=K pages): received fds are
/// checked by mapping them and comparing sizes.
const K: usize = 5;

fn markers() -> Result<Vec<Segment>, ShmError> {
    (1..=K)
        .map(|i| Segment::anonymous(i * 4096)?.freeze())
        .collect()
}

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 253) as u8)
        .collect()
}

/// Sends `frames` from another thread and checks what arrives.
fn round_trip(frames: &[(usize, usize)]) -> TestResult {
    let segs = markers()?;
    let (a, b) = FdSocket::pair()?;
    std::thread::scope(|s| -> TestResult {
        let sender = s.spawn(|| -> Result<(), ShmError> {
            for (n, &(len, nfds)) in frames.iter().enumerate() {
                let data = payload(len, n);
                let fds: Vec<BorrowedFd<'_>> = (0..nfds)
                    .map(|i| segs[(i + n) % K].fd())
                    .collect::<Result<_, _>>()?;
                if n % 2 == 0 {
                    a.send(&data, &fds)?;
                } else {
                    let (x, y) = data.split_at(len / 3);
                    a.send_vectored(&[x, &[], y], &fds)?;
                }
            }
            Ok(())
        });
        for (n, &(len, nfds)) in frames.iter().enumerate() {
            let msg = b
                .recv_timeout(Duration::from_secs(120))?
                .ok_or("frame did not arrive")?;
            assert_eq!(msg.bytes.len(), len, "frame {n}");
            assert!(msg.bytes == payload(len, n), "frame {n}: payload differs");
            assert_eq!(msg.fds.len(), nfds, "frame {n}");
            for (i, fd) in msg.fds.into_iter().enumerate() {
                let seg = Segment::from_fd_sealed(fd, Access::ReadOnly, 0)?;
                assert_eq!(seg.len(), ((i + n) % K + 1) * 4096, "frame {n} fd {i}");
            }
        }
        sender.join().map_err(|_| "sender panicked")??;
        Ok(())
    })?;
    assert!(b.try_recv()?.is_none());
    drop(a);
    assert!(matches!(b.recv(), Err(ShmError::PeerClosed)));
    Ok(())
}

fn frame_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..64,
        3 => 0usize..70_000,
        1 => 0usize..(1 << 20) + 1,
    ]
}

/// 1 to 4 frames in a row with at most ~600 fds in flight in total.
fn frames() -> impl Strategy<Value = Vec<(usize, usize)>> {
    (1usize..=4).prop_flat_map(|n| prop::collection::vec((frame_len(), 0usize..=600 / n), n))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn frames_arrive_intact(frames in frames()) {
        round_trip(&frames).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

#[test]
fn edge_cases_arrive_intact() -> TestResult {
    // Exactly at and around the fd chunk size; padding needed past 16 chunks.
    round_trip(&[(0, 253), (0, 254), (1, 506), (0, 0), (3, 600)])?;
    round_trip(&[(0, 253 * 17 + 1)])?;
    round_trip(&[(1 << 20, 1), (0, 0), (300_000, 2)])
}

#[test]
fn buffered_frames_come_before_end_of_file() -> TestResult {
    let (a, b) = FdSocket::pair()?;
    let seg = Segment::anonymous(4096)?.freeze()?;
    for i in 0..3u8 {
        a.send(&[i], &[seg.fd()?])?;
    }
    drop(a);
    for i in 0..3u8 {
        let msg = b.try_recv()?.ok_or("buffered frame missing")?;
        assert_eq!((msg.bytes.as_slice(), msg.fds.len()), (&[i][..], 1));
    }
    assert!(matches!(b.try_recv(), Err(ShmError::PeerClosed)));
    Ok(())
}

fn header(nfds: u32, len: u64) -> Vec<u8> {
    let mut h = b"NPSX".to_vec();
    h.extend_from_slice(&nfds.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

#[test]
fn partial_frames_wait_for_the_rest() -> TestResult {
    let (raw, b) = UnixStream::pair()?;
    let b = FdSocket::from_fd(b.into());
    let mut first = header(0, 5);
    first.extend_from_slice(b"ab");
    (&raw).write_all(&first)?;
    assert!(b.try_recv()?.is_none());
    assert!(b.recv_timeout(Duration::from_millis(20))?.is_none());
    (&raw).write_all(b"cde")?;
    assert_eq!(
        b.recv_timeout(Duration::from_secs(60))?
            .ok_or("no frame")?
            .bytes,
        b"abcde"
    );
    Ok(())
}

#[test]
fn hostile_frames_are_errors() -> TestResult {
    // More fds announced than sent.
    let (raw, b) = UnixStream::pair()?;
    let b = FdSocket::from_fd(b.into());
    let mut frame = header(2, 1);
    frame.push(0);
    (&raw).write_all(&frame)?;
    assert!(matches!(b.recv(), Err(ShmError::Frame { .. })));
    // The stream is not trusted after that.
    assert!(matches!(b.try_recv(), Err(ShmError::Frame { .. })));

    // A length past the limit.
    let (raw, b) = UnixStream::pair()?;
    let b = FdSocket::from_fd(b.into());
    (&raw).write_all(&header(0, u64::MAX))?;
    assert!(matches!(b.recv(), Err(ShmError::Frame { .. })));

    // Too many fds announced.
    let (raw, b) = UnixStream::pair()?;
    let b = FdSocket::from_fd(b.into());
    (&raw).write_all(&header(u32::MAX, 0))?;
    assert!(matches!(b.recv(), Err(ShmError::Frame { .. })));
    Ok(())
}

#[test]
fn one_thread_sends_while_another_receives() -> TestResult {
    let (a, b) = FdSocket::pair()?;
    const N: u32 = 2_000;
    std::thread::scope(|s| -> TestResult {
        let echo = s.spawn(|| -> Result<(), ShmError> {
            for _ in 0..N {
                let msg = b.recv()?;
                b.send(
                    &msg.bytes,
                    &msg.fds.iter().map(|f| f.as_fd()).collect::<Vec<_>>(),
                )?;
            }
            Ok(())
        });
        let reader = s.spawn(|| -> Result<u32, ShmError> {
            let mut seen = 0;
            for i in 0..N {
                let msg = a.recv()?;
                assert_eq!(msg.bytes, i.to_le_bytes());
                seen += 1;
            }
            Ok(seen)
        });
        for i in 0..N {
            a.send(&i.to_le_bytes(), &[])?;
        }
        echo.join().map_err(|_| "echo panicked")??;
        assert_eq!(reader.join().map_err(|_| "reader panicked")??, N);
        Ok(())
    })
}
