//! The core's randomness: a ChaCha20 CSPRNG seeded by the caller.
//!
//! Adapters seed it from the OS; tests seed it with a constant. The core itself
//! never asks the OS, so the same seed and inputs give byte-identical output.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

/// A 32-byte seed for a machine's random number generator.
pub type Seed = [u8; 32];

/// Seeded cryptographically secure RNG owned by one machine.
#[derive(Clone, Debug)]
pub struct Rng(ChaCha20Rng);

impl Rng {
    /// An RNG whose whole output is determined by `seed`.
    pub fn from_seed(seed: Seed) -> Self {
        Rng(ChaCha20Rng::from_seed(seed))
    }

    /// Convenience for tests and simulations: expands a small number into a seed.
    /// Never use this for real connections (64 bits of entropy at most).
    pub fn from_u64(seed: u64) -> Self {
        Rng(ChaCha20Rng::seed_from_u64(seed))
    }

    /// A uniformly random value in `0..bound` (`bound` > 0), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        if bound <= 1 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.0.next_u64();
            if v < zone {
                return v % bound;
            }
        }
    }

    /// A uniformly random value in `lo..=hi`.
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.0.next_u64(),
        }
    }

    /// A fresh seed drawn from this RNG, to seed a child machine.
    pub fn fork_seed(&mut self) -> Seed {
        let mut seed = [0u8; 32];
        self.0.fill_bytes(&mut seed);
        seed
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for Rng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::from_u64(7);
        let mut b = Rng::from_u64(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut c = Rng::from_u64(8);
        assert_ne!(a.next_u64(), c.next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::from_u64(1);
        for bound in [1u64, 2, 3, 10, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(r.below(bound) < bound.max(1));
            }
        }
        for _ in 0..100 {
            let v = r.range_inclusive(5, 9);
            assert!((5..=9).contains(&v));
        }
        assert_eq!(r.range_inclusive(3, 3), 3);
    }
}
