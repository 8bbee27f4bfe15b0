//! Multi-process tests: a child process (this test binary re-run with
//! `NPSHMEX_SHM_CHILD` set) receives segments over an `FdSocket` on its stdin.

use std::error::Error;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use npshmex_shm::{Access, FdSocket, Seals, Segment, ShmDir, ShmError};

type TestResult = Result<(), Box<dyn Error>>;

const CHILD_ENV: &str = "NPSHMEX_SHM_CHILD";
const DIR_ENV: &str = "NPSHMEX_SHM_DIR";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Starts this binary as a child in `mode`, its stdin being our socket's peer.
fn spawn_child(mode: &str, envs: &[(&str, &str)]) -> Result<(Child, FdSocket), Box<dyn Error>> {
    let (ours, theirs) = FdSocket::pair()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads",
        "1",
        "-q",
    ])
    .env(CHILD_ENV, mode)
    .stdin(Stdio::from(theirs.into_fd()))
    .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    // Dropping the command closes our copy of the child's end, so the child's
    // death is an end of file for us.
    drop(cmd);
    Ok((child, ours))
}

/// Not a test of its own: the entry point of the child processes. Without
/// `NPSHMEX_SHM_CHILD` it returns at once.
#[test]
fn child_entry() -> TestResult {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let sock = FdSocket::from_fd(std::io::stdin().as_fd().try_clone_to_owned()?);
    match mode.as_str() {
        "roundtrip" => child_roundtrip(&sock),
        "stale" => child_stale(&sock),
        other => Err(format!("unknown child mode {other}").into()),
    }
}

/// Receives a sealed segment, adds one to every byte in place, answers with a
/// frozen segment holding the bytes reversed, and reports whether resizing the
/// received fd was refused.
fn child_roundtrip(sock: &FdSocket) -> TestResult {
    let msg = sock.recv()?;
    let len = u64::from_le_bytes(msg.bytes.as_slice().try_into()?);
    let fd = msg.fds.into_iter().next().ok_or("no fd received")?;
    let shrink_refused = File::from(fd.try_clone()?).set_len(0).is_err();
    let grow_refused = File::from(fd.try_clone()?).set_len(len * 2).is_err();
    // SAFETY: the parent handed this segment over (its mapping is the only
    // other one, and it only reads after we answered): nobody else writes it,
    // and its size is sealed.
    let mut seg = unsafe { Segment::from_fd_unchecked(fd, Access::ReadWrite, len)? };
    for b in seg.as_mut_slice()? {
        *b = b.wrapping_add(1);
    }
    let mut out = Segment::anonymous(seg.len())?;
    for (o, i) in out
        .as_mut_slice()?
        .iter_mut()
        .zip(seg.as_slice().iter().rev())
    {
        *o = *i;
    }
    let out = out.freeze()?;
    sock.send(
        &[u8::from(shrink_refused), u8::from(grow_refused)],
        &[out.fd()?],
    )?;
    // Wait for the parent to finish, so it is the parent that sees our exit.
    match sock.recv() {
        Err(ShmError::PeerClosed) | Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a unique named segment in `$NPSHMEX_SHM_DIR`, reports its name and
/// waits (to be killed).
fn child_stale(sock: &FdSocket) -> TestResult {
    let dir = ShmDir::new(std::env::var(DIR_ENV)?);
    let seg = dir.create_unique(4096)?;
    sock.send(seg.name().as_bytes(), &[])?;
    sock.recv()?;
    Ok(())
}

#[test]
fn round_trip_through_a_child_process() -> TestResult {
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    const LEN: usize = 3 * 4096 + 17;
    let mut seg = Segment::anonymous(LEN)?;
    for (i, b) in seg.as_mut_slice()?.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    seg.seal(Seals::SIZE)?;
    // The child writes in place while we wait, then we read: a hand-over
    // the safe API cannot express (an exclusive segment keeps its fd), so
    // this test shares the file through `from_fd_unchecked` on both sides.
    let fd = seg.into_fd()?;
    // SAFETY: only the child writes, and only before it answers; we read
    // after its answer. The size is sealed.
    let seg = unsafe { Segment::from_fd_unchecked(fd, Access::ReadOnly, LEN as u64)? };
    let (mut child, sock) = spawn_child("roundtrip", &[])?;
    sock.send(&(LEN as u64).to_le_bytes(), &[seg.fd()?])?;
    let reply = sock.recv_timeout(TIMEOUT)?.ok_or("child did not answer")?;
    drop(sock);
    let status = child.wait()?;
    assert!(status.success(), "child failed: {status:?}");

    // Sealing really refused the receiver's ftruncate, both ways.
    assert_eq!(reply.bytes, [1, 1], "child could resize a sealed memfd");
    // The child's in-place writes are visible through our shared mapping.
    for (i, b) in seg.as_slice().iter().enumerate() {
        assert_eq!(*b, ((i % 251) as u8).wrapping_add(1), "byte {i}");
    }
    // The child's result arrived frozen and intact after the child exited.
    let fd = reply.fds.into_iter().next().ok_or("no result fd")?;
    let result = Segment::from_fd_sealed(fd, Access::ReadOnly, LEN as u64)?;
    assert!(result.seals()?.contains(Seals::SIZE | Seals::WRITE));
    let expect: Vec<u8> = seg.as_slice().iter().rev().copied().collect();
    assert_eq!(result.as_slice(), &expect[..]);
    assert!(matches!(
        result.remap(Access::ReadWrite),
        Err(ShmError::NotExclusive { .. })
    ));
    Ok(())
}

#[test]
fn clear_stale_removes_a_killed_owners_segment_and_keeps_live_ones() -> TestResult {
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let dir = ShmDir::new(tmp.path());
    let dir_str = tmp.path().to_str().ok_or("non-utf8 temp dir")?;

    let (mut child, sock) = spawn_child("stale", &[(DIR_ENV, dir_str)])?;
    let msg = sock.recv_timeout(TIMEOUT)?.ok_or("child did not report")?;
    let stale = String::from_utf8(msg.bytes)?;
    assert!(stale.starts_with(&format!("npshmex-{}-", child.id())));
    child.kill()?; // SIGKILL
    let status = child.wait()?;
    assert_eq!(status.signal(), Some(9), "SIGKILL expected");
    drop(sock);

    let live = dir.create_unique(4096)?;
    let live_name = live.name().to_owned();
    let info = dir.list()?;
    let mine = info
        .iter()
        .find(|i| i.name == live_name)
        .ok_or("live segment not listed")?;
    assert_eq!(mine.owner_pid, Some(std::process::id()));
    let start = mine.owner_start_time.ok_or("no start time in the name")?;
    // Same pid as a live process but another start time: the pid was reused.
    let reused = format!("npshmex-{}-{}-feed", std::process::id(), start + 1);
    std::fs::write(tmp.path().join(&reused), b"")?;
    // No owner in the name: never stale.
    std::fs::write(tmp.path().join("npshmex-userkey"), b"")?;
    // Not ours to manage.
    std::fs::write(tmp.path().join("data.npy"), b"")?;

    assert_eq!(dir.list()?.len(), 4);
    assert_eq!(dir.clear_stale()?, 2);
    let left: Vec<String> = dir.list()?.into_iter().map(|i| i.name).collect();
    let mut want = vec![live_name.clone(), "npshmex-userkey".to_owned()];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(dir.clear_stale()?, 0);
    assert_eq!(live.current_len()?, 4096);
    assert_eq!(dir.clear()?, 2);
    assert!(dir.list()?.is_empty());
    assert!(tmp.path().join("data.npy").exists());
    Ok(())
}
