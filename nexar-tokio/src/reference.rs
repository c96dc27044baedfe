//! A fixed all-reduce whose exact bits other runs can compare against: the same inputs
//! through the real driver here, and through the simulator in a workspace test.
//!
//! The values are not small integers on purpose: float addition then depends on the
//! order of the reduction, so equal bits mean the same plan ran in the same order (the
//! core reduces in plan order, never in arrival order, and picks the algorithm from world
//! size, bytes and config alone). Equal bits across ranks, runs and drivers is the claim.

use crate::{Client, NexarError, ReduceOp};

/// 1 MiB of `f32`.
pub const PATTERN_ELEMENTS: usize = 1 << 18;

/// Rank `rank`'s input at element `i`: a value in [-1, 1) with a full 24-bit mantissa
/// pattern, fixed forever (changing it invalidates recorded digests).
pub fn pattern_f32(rank: u32, i: usize) -> f32 {
    let x = (u64::from(rank) + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let x = (x ^ (x >> 31)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mantissa = (x >> 40) as u32; // 24 bits
    mantissa as f32 / (1u32 << 23) as f32 - 1.0
}

/// Rank `rank`'s whole input for the reference all-reduce.
pub fn pattern_input(rank: u32) -> Vec<f32> {
    (0..PATTERN_ELEMENTS)
        .map(|i| pattern_f32(rank, i))
        .collect()
}

/// Run the reference all-reduce (sum of [`pattern_input`]) on `client`'s world; every rank
/// of the world must call it.
pub async fn pattern_allreduce(client: &Client) -> Result<Vec<f32>, NexarError> {
    client
        .all_reduce_start(pattern_input(client.rank()), ReduceOp::Sum)
        .await
}

/// A digest of the exact bits of `values` (FNV-1a over the little-endian bytes), to
/// compare results compactly.
pub fn digest(values: &[f32]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_fixed_and_in_range() {
        assert!((0..1000).all(|i| (-1.0..1.0).contains(&pattern_f32(3, i))));
        // Recorded once; a change here breaks comparisons with earlier runs.
        assert_eq!(pattern_f32(0, 0).to_bits(), 0xbe13_a2c0);
        assert_eq!(pattern_f32(3, 7).to_bits(), 0x3f0c_52f2);
        assert_ne!(pattern_f32(0, 1), pattern_f32(1, 0));
    }
}
