//! The sparse exchange: (index, value) pairs on the wire, summed in rank order.
//!
//! Top-k ranks choose different indices, so their contributions cannot be all-reduced
//! element by element. Each rank packs its pairs ([`encode_pairs`]), an all-gather hands
//! every rank every rank's block, and [`sum_pairs`] adds them rank 0 first, then rank 1,
//! ...: every rank runs the same additions in the same order on the same bytes, so the
//! results are bit-identical (floating-point addition is not associative; a fixed order is
//! what makes it reproducible). The gathered bytes come from other ranks, so they are
//! checked like network input: lengths, index range and order, with a typed error.

use super::CompressError;
use crate::codec::ReduceOp;
use crate::collective::Element;

/// Bytes of one pair of `T`: a little-endian `u32` index, then the value.
pub const fn pair_size<T: Element>() -> usize {
    4 + T::SIZE
}

/// Pack `indices` and `values` (same length) as little-endian pairs.
pub fn encode_pairs<T: Element>(indices: &[u32], values: &[T]) -> Vec<u8> {
    let mut out = vec![0u8; indices.len() * pair_size::<T>()];
    for ((pair, &i), &v) in out
        .chunks_exact_mut(pair_size::<T>())
        .zip(indices)
        .zip(values)
    {
        pair[..4].copy_from_slice(&i.to_le_bytes());
        v.write_le(&mut pair[4..]);
    }
    out
}

/// Sum the all-gathered blocks of `world` ranks (equal lengths, rank order) into a dense
/// vector of `n` elements, rank by rank and, within a rank, in its index order.
pub fn sum_pairs<T: Element>(
    gathered: &[u8],
    world: u32,
    n: usize,
) -> Result<Vec<T>, CompressError> {
    let bad = |rank, detail| Err(CompressError::BadPairs { rank, detail });
    let ranks = world.max(1) as usize;
    if gathered.len() % ranks != 0 {
        return bad(0, "the gathered length is not a multiple of the world size");
    }
    let block = gathered.len() / ranks;
    let mut out = vec![T::identity(ReduceOp::Sum); n];
    for (rank, bytes) in gathered.chunks(block.max(1)).enumerate() {
        let rank = rank as u32;
        if bytes.len() % pair_size::<T>() != 0 {
            return bad(rank, "a block is not a whole number of pairs");
        }
        let mut prev: Option<u32> = None;
        for pair in bytes.chunks_exact(pair_size::<T>()) {
            let mut idx = [0u8; 4];
            idx.copy_from_slice(&pair[..4]);
            let index = u32::from_le_bytes(idx);
            if index as usize >= n {
                return bad(rank, "an index past the end of the tensor");
            }
            if prev.is_some_and(|p| index <= p) {
                return bad(rank, "indices not strictly increasing");
            }
            prev = Some(index);
            let slot = &mut out[index as usize];
            *slot = T::combine(ReduceOp::Sum, *slot, T::from_le(&pair[4..]));
        }
    }
    Ok(out)
}

/// A dense vector of `n` elements holding `values` at `indices` and zero elsewhere (the
/// checked, ascending indices of a [`Payload::Shared`](super::Payload::Shared)).
pub fn scatter<T: Element>(indices: &[u32], values: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::identity(ReduceOp::Sum); n];
    for (&i, &v) in indices.iter().zip(values) {
        out[i as usize] = v;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a sequential reference: each element's contributions added in f32, rank
        /// 0 first; equal bits, so the order is the fixed one.
        #[test]
        fn sum_pairs_matches_a_rank_ordered_reference(
            n in 1usize..200,
            world in 1u32..9,
            k in 0usize..20,
            seed in any::<u64>(),
        ) {
            let k = k.min(n);
            let mut blocks = Vec::new();
            let mut expect = vec![0f32; n];
            for r in 0..world {
                let indices = super::super::random_k_indices(seed ^ u64::from(r), 0, n, k);
                let values: Vec<f32> =
                    indices.iter().map(|&i| (i as f32 + 0.1) * (r as f32 + 1.3)).collect();
                for (&i, &v) in indices.iter().zip(&values) {
                    expect[i as usize] += v;
                }
                blocks.extend(encode_pairs(&indices, &values));
            }
            let got = sum_pairs::<f32>(&blocks, world, n).unwrap();
            prop_assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                expect.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn malformed_blocks_are_typed_errors() {
        let ok = encode_pairs(&[0u32, 4], &[1i32, 2]);
        assert_eq!(sum_pairs::<i32>(&ok, 1, 5).unwrap(), vec![1, 0, 0, 0, 2]);
        // Index exactly at the end: refused; one before: accepted above.
        let past = encode_pairs(&[5u32], &[1i32]);
        assert!(matches!(
            sum_pairs::<i32>(&past, 1, 5),
            Err(CompressError::BadPairs { rank: 0, .. })
        ));
        let twice = [
            encode_pairs(&[1u32], &[1i32]),
            encode_pairs(&[1u32, 1], &[1i32, 1]),
        ];
        assert!(matches!(
            sum_pairs::<i32>(&twice[1], 1, 5),
            Err(CompressError::BadPairs { .. })
        ));
        let two_ranks = [twice[0].clone(), ok[..8].to_vec()].concat();
        assert_eq!(
            sum_pairs::<i32>(&two_ranks, 2, 5).unwrap(),
            vec![1, 1, 0, 0, 0]
        );
        assert!(sum_pairs::<i32>(&ok[..7], 1, 5).is_err());
        assert!(sum_pairs::<i32>(&ok[..15], 2, 5).is_err());
        assert_eq!(sum_pairs::<u8>(&[], 3, 2).unwrap(), vec![0, 0]);
    }

    #[test]
    fn pairs_round_trip_every_width() {
        let b = encode_pairs(&[2u32], &[-1.5f64]);
        assert_eq!(b.len(), 12);
        assert_eq!(sum_pairs::<f64>(&b, 1, 3).unwrap(), vec![0.0, 0.0, -1.5]);
        let b = encode_pairs(&[0u32, 1], &[half::bf16::from_f32(2.0); 2]);
        assert_eq!(sum_pairs::<half::bf16>(&b, 1, 2).unwrap()[1].to_f32(), 2.0);
        assert_eq!(scatter(&[1u32], &[9u64], 3), vec![0, 9, 0]);
    }
}
