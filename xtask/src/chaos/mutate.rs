//! A small structure-aware mutator shared by the hostile-input scenarios:
//! bit flips, byte overwrites, token splices, deletions, duplications,
//! truncations, length-field rewrites and crossovers between seeds, one to
//! four of them per input, from a seeded RNG so any failure reproduces.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// What a fuzz run over mutated inputs saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inputs tried.
    pub inputs: usize,
    /// Accepted (and fully valid).
    pub ok: usize,
    /// Refused with a typed error.
    pub refused: usize,
    /// Slowest single input.
    pub slowest: Duration,
}

/// Mutates seed inputs.
pub struct Mutator {
    rng: StdRng,
    tokens: &'static [&'static str],
}

impl Mutator {
    /// A mutator drawing from `seed`, splicing `tokens`.
    pub fn new(seed: u64, tokens: &'static [&'static str]) -> Mutator {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
            tokens,
        }
    }

    /// A random number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.rng.gen_range(0..n)
        }
    }

    /// Random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.gen()).collect()
    }

    /// A mutated copy of one of `seeds`.
    pub fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut v = seeds[self.below(seeds.len())].clone();
        let rounds = 1 + self.below(4);
        for _ in 0..rounds {
            self.once(&mut v, seeds);
        }
        v
    }

    fn once(&mut self, v: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let len = v.len();
        match self.below(10) {
            0 => {
                if len > 0 {
                    let i = self.below(len);
                    v[i] ^= 1 << self.below(8);
                }
            }
            1 => {
                if len > 0 {
                    let i = self.below(len);
                    const ODD: [u8; 8] = [0, 0xff, 0x7f, 0x80, b'\'', b'(', b'\n', b'9'];
                    v[i] = ODD[self.below(ODD.len())];
                }
            }
            2 | 3 => {
                let tok = self.tokens[self.below(self.tokens.len())].as_bytes();
                let at = self.below(len + 1);
                v.splice(at..at, tok.iter().copied());
            }
            4 => {
                let a = self.below(len + 1);
                let b = (a + self.below(16)).min(len);
                v.drain(a..b);
            }
            5 => {
                let a = self.below(len + 1);
                let b = (a + self.below(64)).min(len);
                let dup: Vec<u8> = v[a..b].to_vec();
                v.splice(b..b, dup);
            }
            6 => v.truncate(self.below(len + 1)),
            7 => {
                // Rewrite a little-endian length field near the start (.npy
                // header length, Arrow continuation/metadata lengths).
                if len >= 12 {
                    let at = self.below(len.min(64) - 4);
                    const LENS: [u32; 6] = [0, 1, 0xffff, 0x7fff_ffff, 0xffff_ffff, 0x1_0000];
                    let n = if self.rng.gen() {
                        LENS[self.below(LENS.len())]
                    } else {
                        self.rng.gen()
                    };
                    v[at..at + 4].copy_from_slice(&n.to_le_bytes());
                }
            }
            8 => {
                let other = &seeds[self.below(seeds.len())];
                let cut = self.below(len + 1);
                let from = self.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = self.below(32);
                let at = self.below(len + 1);
                let junk = self.bytes(n);
                v.splice(at..at, junk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_reproduce_and_differ() {
        let seeds = vec![b"hello world, a seed".to_vec(), vec![1u8; 80]];
        let run = |s| {
            let mut m = Mutator::new(s, &["(", "token"]);
            (0..50).map(|_| m.mutate(&seeds)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        assert!(run(3).iter().any(|v| !seeds.contains(v)));
    }
}
