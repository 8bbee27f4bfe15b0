//! Named segments: names, `/dev/shm` life cycle, opening foreign files, and
//! `NoSpace` instead of SIGBUS when the filesystem is too small.

use std::collections::BTreeSet;
use std::error::Error;
use std::os::unix::fs::symlink;

use npshmex_shm::{Access, NamedSegment, Segment, ShmDir, ShmError, Writable};
use npshmex_testkit::{shm_entries, TmpfsMount};

type TestResult = Result<(), Box<dyn Error>>;

/// A name prefix no other test (or process) uses: `npshmex-shmtest-<pid>-<tag>-`.
fn prefix(tag: &str) -> String {
    format!("npshmex-shmtest-{}-{tag}-", std::process::id())
}

#[test]
fn invalid_names_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let inner = tmp.path().join("inner");
    std::fs::create_dir(&inner)?;
    let dir = ShmDir::new(&inner);
    let long = "n".repeat(201);
    for bad in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "/abs",
        "nul\0byte",
        "tab\tname",
        long.as_str(),
    ] {
        let is_invalid =
            |r: Result<NamedSegment, ShmError>| matches!(r, Err(ShmError::InvalidName { .. }));
        assert!(is_invalid(NamedSegment::create(bad, 16)), "{bad:?}");
        assert!(is_invalid(NamedSegment::open(bad, Writable::No)), "{bad:?}");
        assert!(is_invalid(dir.create(bad, 16)), "{bad:?}");
        assert!(
            matches!(npshmex_shm::remove(bad), Err(ShmError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(tmp.path())?.count(),
        1,
        "something escaped the directory"
    );
    assert_eq!(std::fs::read_dir(&inner)?.count(), 0);
    Ok(())
}

#[test]
fn dev_shm_life_cycle() -> TestResult {
    let prefix = prefix("life");
    let name = format!("{prefix}a");
    {
        let seg = NamedSegment::create(&name, 10_000)?;
        assert_eq!(seg.name(), name.as_str());
        assert_eq!(seg.len(), 10_000);
        seg.write_at(9_999, &[5])?;
        assert!(matches!(
            seg.write_at(9_999, &[1, 2]),
            Err(ShmError::TooSmall { .. })
        ));
        assert!(matches!(
            NamedSegment::create(&name, 1),
            Err(ShmError::Exists { .. })
        ));
        let ro = NamedSegment::open(&name, Writable::No)?;
        assert_eq!(ro.len(), 10_000);
        let mut b = [0u8; 1];
        ro.read_at(9_999, &mut b)?;
        assert_eq!(b, [5]);
        assert!(
            matches!(ro.write_at(0, &[1]), Err(ShmError::Io { .. })),
            "opened read-only"
        );
        let copy = ro.to_segment()?;
        assert!(copy.is_exclusive());
        assert_eq!(copy.as_slice()[9_999], 5);
        // Another process truncates the file: a typed error, never SIGBUS.
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg.path())?
            .set_len(100)?;
        assert!(matches!(
            ro.read_at(9_999, &mut b),
            Err(ShmError::TooSmall { .. })
        ));
        let listed = npshmex_shm::list()?;
        let info = listed.iter().find(|i| i.name == name).ok_or("not listed")?;
        assert_eq!((info.len, info.owner_pid), (100, None));
    }
    // Named segments outlive their mappings until removed.
    assert_eq!(shm_entries(&prefix), BTreeSet::from([name.clone()]));
    npshmex_shm::remove(&name)?;
    assert!(matches!(
        npshmex_shm::remove(&name),
        Err(ShmError::NotFound { .. })
    ));
    assert!(matches!(
        NamedSegment::open(&name, Writable::No),
        Err(ShmError::NotFound { .. })
    ));

    let unique = NamedSegment::create_unique(100)?;
    let uname = unique.name().to_owned();
    assert!(uname.starts_with(&format!("npshmex-{}-", std::process::id())));
    let info = npshmex_shm::list()?
        .into_iter()
        .find(|i| i.name == uname)
        .ok_or("not listed")?;
    assert_eq!(info.owner_pid, Some(std::process::id()));
    assert!(info.owner_start_time.is_some());
    unique.unlink()?;
    assert!(shm_entries(&uname).is_empty());
    assert!(shm_entries(&prefix).is_empty());
    Ok(())
}

#[test]
fn foreign_files_open_and_odd_entries_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = ShmDir::new(tmp.path());
    // A file numpy (or anyone) wrote: any valid name opens, in every access mode.
    std::fs::write(tmp.path().join("data.npy"), b"\x93NUMPY payload")?;
    let ro = dir.open("data.npy", Writable::No)?;
    assert_eq!(ro.to_segment()?.as_slice(), b"\x93NUMPY payload");
    let rw = dir.open("data.npy", Writable::Yes)?;
    rw.write_at(1, b"n")?;
    assert_eq!(std::fs::read(tmp.path().join("data.npy"))?[1], b'n');
    // Zero-copy is possible, but only with a promise nobody writes meanwhile.
    // SAFETY: this test is the only user of its temporary directory.
    let mapped = unsafe { Segment::from_fd_unchecked(ro.try_clone_fd()?, Access::ReadOnly, 0)? };
    assert_eq!(&mapped.as_slice()[..2], b"\x93n");
    // Empty file: an empty segment.
    std::fs::write(tmp.path().join("empty"), b"")?;
    assert!(dir.open("empty", Writable::Yes)?.is_empty());
    assert!(dir.open("empty", Writable::No)?.to_segment()?.is_empty());
    // Symlinks are not followed, directories are not segments.
    symlink(tmp.path().join("data.npy"), tmp.path().join("link"))?;
    assert!(matches!(
        dir.open("link", Writable::No),
        Err(ShmError::Io { .. })
    ));
    std::fs::create_dir(tmp.path().join("sub"))?;
    assert!(matches!(
        dir.open("sub", Writable::No),
        Err(ShmError::NotRegular { .. })
    ));
    assert!(matches!(
        dir.open("missing", Writable::No),
        Err(ShmError::NotFound { .. })
    ));
    Ok(())
}

#[test]
fn no_space_on_dev_shm_instead_of_sigbus() -> TestResult {
    let prefix = prefix("nospace");
    let name = format!("{prefix}big");
    // Larger than any /dev/shm: refused at creation.
    match NamedSegment::create(&name, 1 << 45) {
        Err(ShmError::NoSpace {
            requested,
            available,
        }) => {
            assert_eq!(requested, 1 << 45);
            assert!(available < requested);
            // Just past the free space reported: still refused, nothing created.
            let just_past = usize::try_from(available + (64 << 20))?;
            assert!(matches!(
                NamedSegment::create(&name, just_past),
                Err(ShmError::NoSpace { .. })
            ));
        }
        other => return Err(format!("expected NoSpace, got {other:?}").into()),
    }
    assert!(shm_entries(&prefix).is_empty());
    Ok(())
}

#[test]
fn no_space_on_a_small_tmpfs() -> TestResult {
    let Some(mount) = TmpfsMount::new("1m") else {
        return Ok(());
    };
    let dir = ShmDir::new(mount.path());
    assert!(
        matches!(dir.create("big", 2 << 20), Err(ShmError::NoSpace { requested, .. }) if requested == 2 << 20)
    );
    let half = dir.create("half", 512 << 10)?;
    // Reserved: every page can be written.
    half.write_at(0, &vec![1u8; 512 << 10])?;
    match dir.create("more", 768 << 10) {
        Err(ShmError::NoSpace {
            requested,
            available,
        }) => {
            assert_eq!(requested, 768 << 10);
            assert!(available <= 512 << 10);
        }
        other => return Err(format!("expected NoSpace, got {other:?}").into()),
    }
    let names: Vec<String> = std::fs::read_dir(mount.path())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(names, ["half"], "a failed creation left a file behind");
    Ok(())
}

#[test]
fn take_is_atomic_and_gives_the_name_back() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = ShmDir::new(tmp.path());
    let entries = || -> Result<BTreeSet<String>, std::io::Error> {
        std::fs::read_dir(tmp.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    };
    std::fs::write(tmp.path().join("data.npy"), b"payload")?;

    // Taken: the name is gone, the bytes are readable, a second taker and
    // an opener find nothing.
    let taken = dir.take("data.npy", Writable::No)?;
    assert_eq!(taken.name(), "data.npy");
    assert_eq!(taken.segment().to_segment()?.as_slice(), b"payload");
    assert!(matches!(
        dir.take("data.npy", Writable::No),
        Err(ShmError::NotFound { .. })
    ));
    assert!(matches!(
        dir.open("data.npy", Writable::No),
        Err(ShmError::NotFound { .. })
    ));
    // Dropped: back under its name, nothing else left.
    drop(taken);
    assert_eq!(entries()?, BTreeSet::from(["data.npy".to_string()]));

    // Put back while another file took the name: that one stays.
    let taken = dir.take("data.npy", Writable::No)?;
    std::fs::write(tmp.path().join("data.npy"), b"newer")?;
    assert!(matches!(taken.put_back(), Err(ShmError::Exists { .. })));
    assert_eq!(std::fs::read(tmp.path().join("data.npy"))?, b"newer");
    assert_eq!(entries()?.len(), 1);

    // Removed: nothing left at all.
    dir.take("data.npy", Writable::Yes)?.remove()?;
    assert!(entries()?.is_empty());

    // What `open` refuses is refused, and left where it was.
    symlink("/etc/hostname", tmp.path().join("link"))?;
    assert!(dir.take("link", Writable::No).is_err());
    std::fs::create_dir(tmp.path().join("sub"))?;
    assert!(matches!(
        dir.take("sub", Writable::No),
        Err(ShmError::NotRegular { .. })
    ));
    assert_eq!(
        entries()?,
        BTreeSet::from(["link".to_string(), "sub".to_string()])
    );
    assert!(matches!(
        dir.take("../x", Writable::No),
        Err(ShmError::InvalidName { .. })
    ));
    Ok(())
}

#[test]
fn concurrent_takers_get_the_file_exactly_once() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = ShmDir::new(tmp.path());
    for round in 0..50 {
        let name = format!("key-{round}");
        std::fs::write(tmp.path().join(&name), b"x")?;
        let winners = std::thread::scope(|s| {
            let takers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| dir.take(&name, Writable::No).map(|t| t.remove())))
                .collect();
            takers
                .into_iter()
                .map(|t| t.join())
                .filter(|r| matches!(r, Ok(Ok(Ok(())))))
                .count()
        });
        assert_eq!(winners, 1, "round {round}");
    }
    assert_eq!(std::fs::read_dir(tmp.path())?.count(), 0);
    Ok(())
}

#[test]
fn a_taken_file_removed_meanwhile_still_counts_as_removed() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = ShmDir::new(tmp.path());
    std::fs::write(tmp.path().join("data.npy"), b"x")?;
    let taken = dir.take("data.npy", Writable::No)?;
    // What a concurrent `clear` of this process's segments does.
    std::fs::remove_file(taken.segment().path())?;
    taken.remove()?;
    assert_eq!(std::fs::read_dir(tmp.path())?.count(), 0);
    Ok(())
}

#[test]
fn take_racing_a_name_that_changes_kind_leaves_nothing_behind() -> TestResult {
    // Another process swaps what is under the name between a file and a
    // directory while this one takes it: whatever `take` moved that it had
    // not checked goes back, and nothing stays under a name of ours.
    let tmp = tempfile::tempdir()?;
    let dir = ShmDir::new(tmp.path());
    let path = tmp.path().join("key");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> TestResult {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::write(&path, b"file");
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::create_dir(&path);
                let _ = std::fs::remove_dir(&path);
            }
        });
        // Until the race has been seen both ways (a file taken, a
        // directory refused) often enough, within a bound.
        let (mut taken_files, mut refused) = (0, 0);
        for _ in 0..200_000 {
            match dir.take("key", Writable::No) {
                Ok(taken) => {
                    taken.remove()?;
                    taken_files += 1;
                }
                Err(ShmError::NotRegular { .. }) => refused += 1,
                Err(_) => {}
            }
            if taken_files >= 200 && refused >= 200 {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            taken_files > 0 && refused > 0,
            "{taken_files} taken, {refused} refused"
        );
        Ok(())
    })?;
    let ours: Vec<String> = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("npshmex-"))
        .collect();
    assert!(ours.is_empty(), "left behind: {ours:?}");
    Ok(())
}
