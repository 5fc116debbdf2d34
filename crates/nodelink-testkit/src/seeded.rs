//! Seeded pseudo-randomness for tests and benchmarks: one generator for every crate
//! (rand's `StdRng`), with the few draws tests use, so that a run is reproducible from its
//! seed and no crate keeps a hand-written generator of its own.

use rand::distr::uniform::{SampleRange, SampleUniform};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// A seeded generator: the same seed gives the same sequence on every machine with the
/// locked version of rand (rand does not promise the same sequence across its versions).
#[derive(Debug, Clone)]
pub struct SeededRng(StdRng);

impl SeededRng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(StdRng::seed_from_u64(seed))
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.random_range(0..n)
        }
    }

    /// Uniform in `range` (`a..b` or `a..=b`, of any integer type); panics on an empty one.
    pub fn range<T: SampleUniform, R: SampleRange<T>>(&mut self, range: R) -> T {
        self.0.random_range(range)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }

    /// Fills `buf` with random bytes (fast enough for hundreds of megabytes).
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}

/// `len` random bytes from `seed`: payloads that compress badly and compare exactly.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    SeededRng::new(seed).bytes(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws() {
        let (mut a, mut b) = (SeededRng::new(3), SeededRng::new(3));
        assert_eq!(a.bytes(100), b.bytes(100));
        assert_eq!(a.below(10), b.below(10));
        assert_ne!(seeded_bytes(1, 32), seeded_bytes(2, 32));
        assert_eq!(SeededRng::new(0).below(0), 0);
        assert!((0..100).all(|_| a.below(7) < 7));
        assert!((0..100).all(|_| (3..=5u8).contains(&a.range(3..=5u8))));
        assert!(!(0..100).any(|_| a.chance(0)));
        assert!((0..100).all(|_| a.chance(1000)));
    }
}
