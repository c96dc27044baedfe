//! The built-in compressors and the selection math they share.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::{CompressError, Compressor, Magnitude, Selection};

/// Elements to send out of `n` at `density`: `ceil(density * n)`, at most `n` (so at
/// least one of a non-empty tensor). The same f64 arithmetic on every rank.
pub fn k_for(density: f64, n: usize) -> usize {
    ((density * n as f64).ceil() as usize).min(n)
}

fn check_density(density: f64) -> Result<f64, CompressError> {
    if density > 0.0 && density <= 1.0 {
        Ok(density)
    } else {
        Err(CompressError::Density(density.to_string()))
    }
}

/// The indices of the `k` largest elements by [`Magnitude`], ascending. Ties go to the
/// lower index, so the result is a function of the values alone.
pub fn top_k_indices<T: Magnitude>(values: &[T], k: usize) -> Vec<u32> {
    let mut keyed: Vec<(u64, u32)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v.magnitude(), i as u32))
        .collect();
    if k < keyed.len() {
        // Larger magnitude first, then lower index: a total order, so the first k are
        // the same set whatever order the selection visits them in.
        keyed.select_nth_unstable_by(k, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        keyed.truncate(k);
    }
    let mut out: Vec<u32> = keyed.into_iter().map(|(_, i)| i).collect();
    out.sort_unstable();
    out
}

/// `k` distinct indices out of `0..n`, ascending, uniformly drawn (Floyd's algorithm) from
/// a ChaCha20 stream seeded by (`seed`, `step`): every rank passing the same four numbers
/// gets the same indices, and each step a fresh draw.
pub fn random_k_indices(seed: u64, step: u64, n: usize, k: usize) -> Vec<u32> {
    let k = k.min(n);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&step.to_le_bytes());
    key[16..30].copy_from_slice(b"nexar-random-k");
    let mut rng = ChaCha20Rng::from_seed(key);
    let mut chosen = vec![false; n];
    for j in n - k..n {
        let t = below(&mut rng, j as u64 + 1) as usize;
        if chosen[t] {
            chosen[j] = true;
        } else {
            chosen[t] = true;
        }
    }
    chosen
        .iter()
        .enumerate()
        .filter(|(_, c)| **c)
        .map(|(i, _)| i as u32)
        .collect()
}

/// A uniform draw from `0..bound` (Lemire's multiply-and-reject, no modulo bias).
fn below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(bound);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// Send everything: a plain all-reduce (the residual stays zero).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCompression;

impl Compressor for NoCompression {
    fn select<T: Magnitude>(&mut self, _step: u64, _values: &[T]) -> Selection {
        Selection::All
    }
}

/// Send the `ceil(density * n)` largest elements by magnitude (each rank its own).
#[derive(Debug, Clone, Copy)]
pub struct TopK {
    density: f64,
}

impl TopK {
    /// Top-k at `density` in (0, 1]; 1 sends everything, as a dense all-reduce.
    pub fn new(density: f64) -> Result<Self, CompressError> {
        Ok(Self {
            density: check_density(density)?,
        })
    }
}

impl Compressor for TopK {
    fn select<T: Magnitude>(&mut self, _step: u64, values: &[T]) -> Selection {
        let k = k_for(self.density, values.len());
        if k == values.len() {
            return Selection::All;
        }
        Selection::PerRank(top_k_indices(values, k))
    }
}

/// Send `ceil(density * n)` elements drawn at random, the same on every rank.
#[derive(Debug, Clone, Copy)]
pub struct RandomK {
    density: f64,
    seed: u64,
}

impl RandomK {
    /// Random-k at `density` in (0, 1], drawing from `seed`, which every rank must pass
    /// alike (e.g. a constant of the training job).
    pub fn new(density: f64, seed: u64) -> Result<Self, CompressError> {
        Ok(Self {
            density: check_density(density)?,
            seed,
        })
    }
}

impl Compressor for RandomK {
    fn select<T: Magnitude>(&mut self, step: u64, values: &[T]) -> Selection {
        let n = values.len();
        let k = k_for(self.density, n);
        if k == n {
            return Selection::All;
        }
        Selection::Shared(random_k_indices(self.seed, step, n, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn densities_are_checked_at_and_past_the_edges() {
        assert!(TopK::new(1.0).is_ok());
        assert!(TopK::new(f64::MIN_POSITIVE).is_ok());
        assert!(TopK::new(0.0).is_err());
        assert!(TopK::new(1.0 + f64::EPSILON).is_err());
        assert!(RandomK::new(f64::NAN, 1).is_err());
        assert_eq!(k_for(0.01, 1000), 10);
        assert_eq!(k_for(0.01, 1001), 11);
        assert_eq!(k_for(1e-9, 5), 1);
        assert_eq!(k_for(1.0, 5), 5);
        assert_eq!(k_for(0.5, 0), 0);
    }

    #[test]
    fn top_k_breaks_ties_by_lower_index() {
        let v = [1i32, -3, 3, 2, -3, 0];
        assert_eq!(top_k_indices(&v, 2), vec![1, 2]);
        assert_eq!(top_k_indices(&v, 3), vec![1, 2, 4]);
        assert_eq!(top_k_indices(&v, 0), Vec::<u32>::new());
        assert_eq!(top_k_indices(&v, 6), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn full_density_sends_everything() {
        let v = [1.0f32, 2.0];
        assert_eq!(TopK::new(1.0).unwrap().select(0, &v), Selection::All);
        assert_eq!(RandomK::new(1.0, 3).unwrap().select(0, &v), Selection::All);
        assert_eq!(NoCompression.select(0, &v), Selection::All);
    }

    proptest! {
        /// Against a sort of every index by (|x| desc, index asc): the first k of it.
        #[test]
        fn top_k_is_the_k_largest_by_magnitude(
            v in prop::collection::vec(-50i64..50, 0..300),
            k in 0usize..320,
        ) {
            let mut order: Vec<usize> = (0..v.len()).collect();
            order.sort_by(|&a, &b| v[b].abs().cmp(&v[a].abs()).then(a.cmp(&b)));
            let mut expect: Vec<u32> = order.iter().take(k).map(|&i| i as u32).collect();
            expect.sort_unstable();
            prop_assert_eq!(top_k_indices(&v, k), expect.clone());
            let floats: Vec<f32> = v.iter().map(|&x| x as f32 * 0.25).collect();
            prop_assert_eq!(top_k_indices(&floats, k), expect);
        }

        /// k distinct, ascending indices in range; the same for the same (seed, step);
        /// and a different step draws again.
        #[test]
        fn random_k_is_distinct_sorted_and_reproducible(
            seed in any::<u64>(), step in any::<u64>(), n in 0usize..2000, k in 0usize..2100,
        ) {
            let a = random_k_indices(seed, step, n, k);
            prop_assert_eq!(a.len(), k.min(n));
            prop_assert!(a.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(a.iter().all(|&i| (i as usize) < n));
            prop_assert_eq!(&a, &random_k_indices(seed, step, n, k));
        }
    }

    /// Every index is drawn about equally often (a biased draw would favour the ends).
    #[test]
    fn random_k_covers_indices_uniformly() {
        let (n, k, steps) = (50usize, 5usize, 4000u64);
        let mut hits = vec![0u32; n];
        for step in 0..steps {
            for i in random_k_indices(7, step, n, k) {
                hits[i as usize] += 1;
            }
        }
        let mean = (steps as usize * k / n) as u32; // 400
        assert!(
            hits.iter().all(|&h| h > mean * 3 / 4 && h < mean * 5 / 4),
            "{hits:?}"
        );
        assert_ne!(
            random_k_indices(7, 0, 100, 50),
            random_k_indices(7, 1, 100, 50)
        );
        assert_ne!(
            random_k_indices(7, 0, 100, 50),
            random_k_indices(8, 0, 100, 50)
        );
    }
}
