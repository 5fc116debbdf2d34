//! What the relay does to each datagram, and the seeded dice that decide it.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

/// How a [`UdpRelay`](crate::UdpRelay) mistreats datagrams.
///
/// Probabilities are per datagram and must lie in `0.0..=1.0`. They are
/// applied in this order:
///
/// 1. `drop` — the datagram vanishes (nothing else applies).
/// 2. `corrupt` — one random bit of one random byte is flipped.
/// 3. `duplicate` — the datagram is sent twice.
/// 4. `reorder` — the datagram is held back and released right after the
///    next delivered datagram (or after [`REORDER_TIMEOUT`](crate::REORDER_TIMEOUT)
///    if none comes).
/// 5. `delay` ± `jitter` — delivery is deferred by a uniformly drawn
///    duration in `[delay - jitter, delay + jitter]` (clamped at zero).
///    Jitter alone can reorder datagrams, as on a real network.
///
/// [`Impairment::default()`] impairs nothing: every datagram is forwarded
/// immediately and unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back behind the next one.
    pub reorder: f64,
    /// Base one-way delay added to every datagram.
    pub delay: Duration,
    /// Maximum deviation from `delay`, drawn uniformly per datagram.
    pub jitter: Duration,
    /// Probability that one bit of a datagram is flipped.
    pub corrupt: f64,
    /// Seed of the decision RNGs (`seed` client→upstream, `seed + 1` back).
    pub seed: u64,
}

/// Why an [`Impairment`] was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImpairmentError {
    /// A probability was NaN or outside `0.0..=1.0`.
    #[error("impairment probability `{field}` = {value} is not within 0.0..=1.0")]
    Probability {
        /// Name of the offending field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
}

impl Impairment {
    /// An impairment that does nothing (same as [`Impairment::default()`]).
    pub const NONE: Impairment = Impairment {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        corrupt: 0.0,
        seed: 0,
    };

    /// Checks that every probability lies in `0.0..=1.0`.
    pub fn validate(&self) -> Result<(), ImpairmentError> {
        for (field, value) in [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ImpairmentError::Probability { field, value });
            }
        }
        Ok(())
    }
}

/// The fate of one datagram, drawn before anything is done with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decision {
    pub(crate) drop: bool,
    pub(crate) duplicate: bool,
    pub(crate) reorder: bool,
    /// `(byte index, bit index)` to flip, if the datagram is corrupted and
    /// not empty.
    pub(crate) corrupt: Option<(usize, u8)>,
    pub(crate) delay: Duration,
}

/// Draws the decision for a datagram of `len` bytes.
///
/// Always consumes exactly the same number of random values, so that one
/// datagram's outcome (or a change of probabilities) never shifts the random
/// stream seen by later datagrams.
pub(crate) fn decide(rng: &mut StdRng, imp: &Impairment, len: usize) -> Decision {
    let drop_roll: f64 = rng.random();
    let duplicate_roll: f64 = rng.random();
    let reorder_roll: f64 = rng.random();
    let corrupt_roll: f64 = rng.random();
    let byte_roll: u64 = rng.random();
    let bit_roll: u8 = rng.random_range(0..8);
    let jitter_roll: f64 = rng.random_range(-1.0..=1.0);

    let corrupt = (corrupt_roll < imp.corrupt && len > 0).then(|| {
        // `len` fits in u64 on every supported platform, and the remainder
        // is below `len`, so it fits back into usize.
        let index = usize::try_from(byte_roll % len as u64).unwrap_or(0);
        (index, bit_roll)
    });

    // Integer nanoseconds keep `delay - jitter <= result <= delay + jitter`
    // exact; the float product is truncated towards zero.
    let base = i128::try_from(imp.delay.as_nanos()).unwrap_or(i128::MAX);
    let jitter = imp.jitter.as_nanos() as f64;
    let spread = (jitter * jitter_roll) as i128;
    let nanos = base.saturating_add(spread).clamp(0, i128::from(u64::MAX));
    let delay = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));

    Decision {
        drop: drop_roll < imp.drop,
        duplicate: duplicate_roll < imp.duplicate,
        reorder: reorder_roll < imp.reorder,
        corrupt,
        delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn default_is_none_and_valid() {
        assert_eq!(Impairment::default(), Impairment::NONE);
        assert_eq!(Impairment::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_probabilities() {
        let bad = Impairment {
            duplicate: 1.5,
            ..Impairment::NONE
        };
        assert!(matches!(
            bad.validate(),
            Err(ImpairmentError::Probability {
                field: "duplicate",
                ..
            })
        ));
        let nan = Impairment {
            drop: f64::NAN,
            ..Impairment::NONE
        };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn no_impairment_decides_nothing() {
        let mut rng = StdRng::seed_from_u64(1);
        for len in 0..100 {
            let d = decide(&mut rng, &Impairment::NONE, len);
            assert!(!d.drop && !d.duplicate && !d.reorder);
            assert_eq!(d.corrupt, None);
            assert_eq!(d.delay, Duration::ZERO);
        }
    }

    #[test]
    fn draws_do_not_depend_on_probabilities() {
        // Same seed, different probabilities: the drop decisions under
        // `drop = 0.3` must be the same whatever else is configured.
        let a = Impairment {
            drop: 0.3,
            seed: 9,
            ..Impairment::NONE
        };
        let b = Impairment {
            corrupt: 1.0,
            duplicate: 0.7,
            jitter: Duration::from_millis(5),
            ..a
        };
        let mut ra = StdRng::seed_from_u64(9);
        let mut rb = StdRng::seed_from_u64(9);
        for _ in 0..1000 {
            assert_eq!(decide(&mut ra, &a, 10).drop, decide(&mut rb, &b, 10).drop);
        }
    }

    #[test]
    fn delay_stays_within_jitter_bounds() {
        let imp = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(4),
            ..Impairment::NONE
        };
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            let d = decide(&mut rng, &imp, 1).delay;
            assert!(
                d >= Duration::from_millis(6) && d <= Duration::from_millis(14),
                "{d:?}"
            );
        }
    }
}
