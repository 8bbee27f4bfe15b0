//! [`BuildId`]: the identity of this executable's *contents*, for transports
//! whose workers run a copy of it on other machines.
//!
//! The local pool checks device, inode and mtime of `/proc/self/exe`, which
//! is exact on one machine and meaningless across machines (each host has
//! its own copy, with its own inode and mtime). What two hosts can compare
//! is the contents: the linker's `.note.gnu.build-id` (a hash of the linked
//! output, which every common Linux toolchain emits), read from the ELF
//! program headers without loading the file; where there is none (another
//! linker, a stripped note), a 128-bit SipHash of the whole file. The hash
//! catches accidents (an old copy on one host, a rebuilt binary), not an
//! adversary: a peer that can start ranks in the job is trusted anyway.

use std::fmt;
use std::fs::File;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// How a [`BuildId`] was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BuildIdKind {
    /// The ELF `.note.gnu.build-id` the linker wrote.
    GnuNote,
    /// A hash of the executable file's bytes (no build-id note found).
    FileHash,
}

/// The identity of an executable's contents (see the module docs): equal
/// on two machines exactly when they run the same build.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildId {
    kind: BuildIdKind,
    bytes: Vec<u8>,
}

/// Longest build-id note accepted (sha1 is 20 bytes, md5 16, uuid 16; a
/// linker may be told to use a longer hash).
const MAX_NOTE: usize = 64;
/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;
/// `PT_NOTE`.
const PT_NOTE: u32 = 4;

impl BuildId {
    /// The build id of the running executable (`/proc/self/exe`, which
    /// names the file this process was started from even if it was
    /// replaced since).
    ///
    /// # Errors
    /// The I/O error of opening or reading the file.
    pub fn current() -> std::io::Result<BuildId> {
        BuildId::of_file(&mut File::open("/proc/self/exe")?)
    }

    /// The build id of an executable file: its GNU build-id note when it
    /// has one, else a hash of its bytes.
    ///
    /// # Errors
    /// The I/O error of reading the file.
    pub fn of_file(file: &mut File) -> std::io::Result<BuildId> {
        if let Some(note) = gnu_build_id(file)? {
            return Ok(BuildId {
                kind: BuildIdKind::GnuNote,
                bytes: note,
            });
        }
        Ok(BuildId {
            kind: BuildIdKind::FileHash,
            bytes: hash_reader(file)?,
        })
    }

    /// How the id was obtained.
    pub fn kind(&self) -> BuildIdKind {
        self.kind
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            BuildIdKind::GnuNote => "build-id ",
            BuildIdKind::FileHash => "file hash ",
        })?;
        for b in &self.bytes {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The `NT_GNU_BUILD_ID` note of a little-endian ELF64 file, if it has one
/// (anything else, or anything malformed, is "none": the caller hashes).
fn gnu_build_id(file: &File) -> std::io::Result<Option<Vec<u8>>> {
    let mut eh = [0u8; 64];
    if file.read_exact_at(&mut eh, 0).is_err() {
        return Ok(None);
    }
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Ok(None);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(&eh, 0x20), u16_at(&eh, 0x36), u16_at(&eh, 0x38))
    else {
        return Ok(None);
    };
    let (phentsize, phnum) = (usize::from(phentsize), usize::from(phnum));
    if phentsize < 56 || phnum == 0 {
        return Ok(None);
    }
    let mut ph = vec![0u8; phentsize * phnum];
    if file.read_exact_at(&mut ph, phoff).is_err() {
        return Ok(None);
    }
    for entry in ph.chunks_exact(phentsize) {
        let (Some(p_type), Some(offset), Some(size)) =
            (u32_at(entry, 0), u64_at(entry, 8), u64_at(entry, 32))
        else {
            continue;
        };
        // Notes are small; a huge PT_NOTE is malformed.
        if p_type != PT_NOTE || size > 1 << 20 {
            continue;
        }
        let Ok(size) = usize::try_from(size) else {
            continue;
        };
        let mut notes = vec![0u8; size];
        if file.read_exact_at(&mut notes, offset).is_err() {
            continue;
        }
        if let Some(id) = find_note(&notes) {
            return Ok(Some(id.to_vec()));
        }
    }
    Ok(None)
}

/// The descriptor of the `GNU` note of type `NT_GNU_BUILD_ID` in a note
/// segment (entries: namesz, descsz, type, name, desc; 4-byte aligned).
fn find_note(mut notes: &[u8]) -> Option<&[u8]> {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let namesz = usize::try_from(u32_at(notes, 0)?).ok()?;
        let descsz = usize::try_from(u32_at(notes, 4)?).ok()?;
        let ntype = u32_at(notes, 8)?;
        let name_end = 12usize.checked_add(align4(namesz)?)?;
        let desc_end = name_end.checked_add(align4(descsz)?)?;
        let name = notes.get(12..12 + namesz)?;
        let desc = notes.get(name_end..name_end.checked_add(descsz)?)?;
        if ntype == NT_GNU_BUILD_ID
            && name == b"GNU\0"
            && !desc.is_empty()
            && desc.len() <= MAX_NOTE
        {
            return Some(desc);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

/// 128 bits of SipHash over a file's bytes (two keyed hashers) and its
/// length.
fn hash_reader(file: &mut impl Read) -> std::io::Result<Vec<u8>> {
    // `DefaultHasher::new()` has fixed keys: the same in every process of
    // the same build, which is all that is compared.
    let mut a = std::collections::hash_map::DefaultHasher::new();
    let mut b = std::collections::hash_map::DefaultHasher::new();
    b.write_u64(0x6e70_7368_6d65_7821);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        a.write(&buf[..n]);
        b.write(&buf[..n]);
        total += n as u64;
    }
    a.write_u64(total);
    b.write_u64(total);
    let mut out = a.finish().to_le_bytes().to_vec();
    out.extend_from_slice(&b.finish().to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], ntype: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&ntype.to_le_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn the_running_executable_has_a_stable_id() {
        let a = BuildId::current().expect("reading /proc/self/exe");
        let b = BuildId::current().expect("reading /proc/self/exe");
        assert_eq!(a, b);
        assert!(!a.as_bytes().is_empty());
        assert!(a.to_string().len() > 16);
    }

    #[test]
    fn notes_are_found_among_others() {
        let mut seg = note(b"Go\0", 4, b"go-build");
        seg.extend(note(b"GNU\0", 1, &[0, 0, 0, 0]));
        seg.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab; 20]));
        assert_eq!(find_note(&seg), Some(&[0xab; 20][..]));
    }

    #[test]
    fn malformed_notes_are_none() {
        assert_eq!(find_note(&[]), None);
        assert_eq!(find_note(&[0xff; 12]), None);
        let mut truncated = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 20]);
        truncated.truncate(20);
        assert_eq!(find_note(&truncated), None);
        assert_eq!(find_note(&note(b"GNU\0", NT_GNU_BUILD_ID, &[])), None);
    }

    #[test]
    fn contents_without_a_note_are_hashed() -> std::io::Result<()> {
        let text = b"not an ELF file, but an executable all the same";
        let a = hash_reader(&mut &text[..])?;
        assert_eq!(a, hash_reader(&mut &text[..])?);
        assert_eq!(a.len(), 16);
        assert_ne!(a, hash_reader(&mut &text[..text.len() - 1])?);
        let mut other = *text;
        other[3] ^= 1;
        assert_ne!(a, hash_reader(&mut &other[..])?);
        Ok(())
    }
}
