//! A leak of each kind fails `LeakCheck::finish`. One test in a binary of
//! its own: a failing check releases its lock while the test still holds
//! what it leaked, which would disturb other checks running meanwhile.

use npshmex_testkit::LeakCheck;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `leak` between start and finish; whether finish failed, and the
/// message it failed with.
fn fails<T>(leak: impl FnOnce() -> T) -> (Option<String>, T) {
    let mut kept = None;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let leaks = LeakCheck::start();
        kept = Some(leak());
        leaks.finish();
    }));
    let msg = r.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    (msg, kept.unwrap_or_else(|| unreachable!("leak() ran")))
}

#[test]
fn each_kind_of_leak_fails_the_check() -> anyhow::Result<()> {
    let (msg, f) = fails(|| std::fs::File::open("/proc/self/stat"));
    drop(f?);
    assert!(msg.is_some_and(|m| m.contains("file descriptors leaked")));

    let (msg, seg) = fails(|| npshmex_shm::Segment::anonymous(4096));
    drop(seg?);
    assert!(msg.is_some_and(|m| m.contains("segments still held")));

    let path = format!("/dev/shm/{}detects", npshmex_testkit::own_shm_prefix());
    let (msg, written) = fails(|| std::fs::write(&path, b"x"));
    written?;
    std::fs::remove_file(&path)?;
    assert!(msg.is_some_and(|m| m.contains("/dev/shm entries left behind")));

    let (msg, child) = fails(|| std::process::Command::new("true").spawn());
    child?.wait()?;
    assert!(msg.is_some_and(|m| m.contains("zombies")));

    // and after all that cleaned up, a check passes again
    LeakCheck::start().finish();
    Ok(())
}
