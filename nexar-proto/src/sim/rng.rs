//! Seeded random streams, one per purpose, so that a new draw in one place shifts nothing
//! elsewhere.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// What a random stream is used for; part of its derivation so streams never collide.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// Whether a datagram on a link is lost (and Gilbert-Elliott state changes).
    Loss,
    /// A datagram's jitter on a link.
    Jitter,
    /// Whether a datagram on a link is duplicated.
    Duplicate,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Loss => b"loss",
            Purpose::Jitter => b"jitter",
            Purpose::Duplicate => b"duplicate",
        }
    }
}

/// The stream for `purpose` on the directed link `from -> to` of the run seeded `seed`.
///
/// Derived by hashing rather than by drawing from a parent generator: a link's stream then
/// depends only on (seed, purpose, from, to), so adding a host, or a link being used for
/// the first time later in the run, does not shift any other link's draws.
pub(crate) fn link_stream(seed: u64, purpose: Purpose, from: usize, to: usize) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(b"nexar-sim link stream v1\0");
    h.update(purpose.label());
    h.update([0]);
    h.update(seed.to_le_bytes());
    h.update((from as u64).to_le_bytes());
    h.update((to as u64).to_le_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// True with probability `p` (values outside 0..=1 saturate).
///
/// Always consumes exactly one draw, so a stream's later values do not depend on `p`.
pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    // 53 random bits give a uniform f64 in [0, 1).
    let x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    x < p
}

/// A uniform integer in `0..n` (0 when `n` is 0), from exactly one draw.
///
/// Uses the high half of a 64x64-bit product; its bias is below n / 2^64, far beneath
/// anything a simulation could observe.
pub(crate) fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_of_each_other_and_reproducible() {
        let mut a = link_stream(7, Purpose::Jitter, 0, 1);
        let mut b = link_stream(7, Purpose::Jitter, 0, 1);
        let mut c = link_stream(7, Purpose::Jitter, 1, 0);
        let mut d = link_stream(7, Purpose::Loss, 0, 1);
        let x = a.next_u64();
        assert_eq!(x, b.next_u64());
        assert_ne!(x, c.next_u64());
        assert_ne!(x, d.next_u64());
    }

    #[test]
    fn below_and_chance_stay_in_range() {
        let mut r = link_stream(1, Purpose::Loss, 0, 0);
        assert_eq!(below(&mut r, 0), 0);
        for _ in 0..1000 {
            assert!(below(&mut r, 10) < 10);
            assert!(!chance(&mut r, 0.0));
            assert!(chance(&mut r, 1.0));
        }
    }
}
