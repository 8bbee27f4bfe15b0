//! Named segments: names, `/dev/shm` life cycle, opening foreign files, and
//! `NoSpace` instead of SIGBUS when the filesystem is too small.

use std::collections::BTreeSet;
use std::error::Error;
use std::os::unix::fs::symlink;

use npshmex_shm::{Access, Seals, Segment, ShmDir, ShmError};
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
            |r: Result<Segment, ShmError>| matches!(r, Err(ShmError::InvalidName { .. }));
        assert!(is_invalid(Segment::create_named(bad, 16)), "{bad:?}");
        assert!(
            is_invalid(Segment::open_named(bad, Access::ReadOnly)),
            "{bad:?}"
        );
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
        let mut seg = Segment::create_named(&name, 10_000)?;
        assert_eq!(seg.name(), Some(name.as_str()));
        assert_eq!(seg.len(), 10_000);
        seg.as_mut_slice()?[9_999] = 5;
        assert!(matches!(
            Segment::create_named(&name, 1),
            Err(ShmError::Exists { .. })
        ));
        let ro = Segment::open_named(&name, Access::ReadOnly)?;
        assert_eq!(ro.len(), 10_000);
        assert_eq!(ro.as_slice()[9_999], 5);
        let listed = npshmex_shm::list()?;
        let info = listed.iter().find(|i| i.name == name).ok_or("not listed")?;
        assert_eq!((info.len, info.owner_pid), (10_000, None));
        assert!(matches!(
            seg.seal(Seals::SIZE),
            Err(ShmError::NotSealable { .. })
        ));
        assert!(matches!(seg.freeze(), Err(ShmError::NotSealable { .. })));
    }
    // Named segments outlive their mappings until removed.
    assert_eq!(shm_entries(&prefix), BTreeSet::from([name.clone()]));
    npshmex_shm::remove(&name)?;
    assert!(matches!(
        npshmex_shm::remove(&name),
        Err(ShmError::NotFound { .. })
    ));
    assert!(matches!(
        Segment::open_named(&name, Access::ReadOnly),
        Err(ShmError::NotFound { .. })
    ));

    let unique = Segment::create_named_unique(100)?;
    let uname = unique.name().ok_or("unnamed")?.to_owned();
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
    let ro = dir.open("data.npy", Access::ReadOnly)?;
    assert_eq!(ro.as_slice(), b"\x93NUMPY payload");
    let mut cow = dir.open("data.npy", Access::CopyOnWrite)?;
    cow.as_mut_slice()?[0] = b'X';
    assert_eq!(ro.as_slice()[0], 0x93, "copy-on-write leaked into the file");
    let mut rw = dir.open("data.npy", Access::ReadWrite)?;
    rw.as_mut_slice()?[1] = b'n';
    assert_eq!(std::fs::read(tmp.path().join("data.npy"))?[1], b'n');
    // Empty file: an empty segment.
    std::fs::write(tmp.path().join("empty"), b"")?;
    assert!(dir.open("empty", Access::ReadWrite)?.is_empty());
    // Symlinks are not followed, directories are not segments.
    symlink(tmp.path().join("data.npy"), tmp.path().join("link"))?;
    assert!(matches!(
        dir.open("link", Access::ReadOnly),
        Err(ShmError::Io { .. })
    ));
    std::fs::create_dir(tmp.path().join("sub"))?;
    assert!(matches!(
        dir.open("sub", Access::ReadOnly),
        Err(ShmError::NotRegular { .. })
    ));
    assert!(matches!(
        dir.open("missing", Access::ReadOnly),
        Err(ShmError::NotFound { .. })
    ));
    Ok(())
}

#[test]
fn no_space_on_dev_shm_instead_of_sigbus() -> TestResult {
    let prefix = prefix("nospace");
    let name = format!("{prefix}big");
    // Larger than any /dev/shm: refused at creation.
    match Segment::create_named(&name, 1 << 45) {
        Err(ShmError::NoSpace {
            requested,
            available,
        }) => {
            assert_eq!(requested, 1 << 45);
            assert!(available < requested);
            // Just past the free space reported: still refused, nothing created.
            let just_past = usize::try_from(available + (64 << 20))?;
            assert!(matches!(
                Segment::create_named(&name, just_past),
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
    let mut half = dir.create("half", 512 << 10)?;
    // Reserved: every page can be written without SIGBUS.
    half.as_mut_slice()?.fill(1);
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
