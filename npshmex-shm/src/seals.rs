//! [`Seals`]: the memfd seal bits (`F_SEAL_*`) as a small bit set.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use rustix::fs::SealFlags;

/// A set of memfd seals (`fcntl(F_ADD_SEALS)`). Combine with `|`.
///
/// Seals only ever get added; a sealed property holds for every process that has
/// the memfd, which is what makes it safe to map a segment received from a peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seals(u32);

impl Seals {
    /// No seal.
    pub const NONE: Seals = Seals(0);
    /// `F_SEAL_SEAL`: no further seals can be added.
    pub const SEAL: Seals = Seals(SealFlags::SEAL.bits());
    /// `F_SEAL_SHRINK`: the size can no longer shrink (no SIGBUS for mappers).
    pub const SHRINK: Seals = Seals(SealFlags::SHRINK.bits());
    /// `F_SEAL_GROW`: the size can no longer grow.
    pub const GROW: Seals = Seals(SealFlags::GROW.bits());
    /// `F_SEAL_WRITE`: the contents can no longer change (needs no writable shared
    /// mapping to exist when added).
    pub const WRITE: Seals = Seals(SealFlags::WRITE.bits());
    /// `F_SEAL_FUTURE_WRITE`: no new writable mappings or writes; existing writable
    /// mappings keep working.
    pub const FUTURE_WRITE: Seals = Seals(SealFlags::FUTURE_WRITE.bits());
    /// `SHRINK | GROW`: the size is fixed.
    pub const SIZE: Seals = Seals(Seals::SHRINK.0 | Seals::GROW.0);

    /// The raw `F_SEAL_*` bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Seals from raw `F_SEAL_*` bits (unknown bits are kept).
    pub fn from_bits(bits: u32) -> Seals {
        Seals(bits)
    }

    /// As rustix's flags.
    pub(crate) fn to_flags(self) -> SealFlags {
        SealFlags::from_bits_retain(self.0)
    }

    /// From rustix's flags.
    pub(crate) fn from_flags(flags: SealFlags) -> Seals {
        Seals(flags.bits())
    }

    /// Whether every seal of `other` is in `self`.
    pub fn contains(self, other: Seals) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no seal is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Seals {
    type Output = Seals;
    fn bitor(self, rhs: Seals) -> Seals {
        Seals(self.0 | rhs.0)
    }
}

impl BitOrAssign for Seals {
    fn bitor_assign(&mut self, rhs: Seals) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Seals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Seals::SEAL, "SEAL"),
            (Seals::SHRINK, "SHRINK"),
            (Seals::GROW, "GROW"),
            (Seals::WRITE, "WRITE"),
            (Seals::FUTURE_WRITE, "FUTURE_WRITE"),
        ];
        let mut set = f.debug_set();
        let mut rest = self.0;
        for (seal, name) in names {
            if self.contains(seal) {
                set.entry(&format_args!("{name}"));
                rest &= !seal.0;
            }
        }
        if rest != 0 {
            set.entry(&format_args!("{rest:#x}"));
        }
        set.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_shrink_and_grow() {
        assert!(Seals::SIZE.contains(Seals::SHRINK | Seals::GROW));
        assert!(!Seals::SIZE.contains(Seals::WRITE));
        let mut s = Seals::NONE;
        assert!(s.is_empty());
        s |= Seals::WRITE;
        assert_eq!(format!("{s:?}"), "{WRITE}");
    }
}
