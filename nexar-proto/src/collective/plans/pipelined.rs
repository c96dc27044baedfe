//! Pipelined chain broadcast: the message flows root, root + 1, ... in segments, each
//! rank forwarding segment `k` while segment `k + 1` arrives (NCCL's ring broadcast).
//!
//! Every byte crosses each of the `p - 1` links once, so a large broadcast takes about
//! `N/B + (p - 2)S/B` (`S` the segment), against about `2N/B` for scatter + all-gather
//! and `log2(p) N/B` for a binomial tree. It also moves the least in total, `(p - 1)N`
//! against `(p - 1)N(1 + 1/p)` for scatter + all-gather, which is what counts where ranks
//! share cores and every byte is encrypted once and decrypted once.
//!
//! A segment is a step: at position `q` of the chain (`q = rank - root mod p`) segment
//! `k` arrives in step `k + q - 1` and leaves in step `k + q`, the step after, where the
//! executor forwards the received payload itself rather than a copy of it.

use super::{ahead, behind, blocks, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// The segment a large message is cut into (the executor's default chunk, so that a
/// segment is one chunk on the wire).
pub(crate) const SEGMENT_BYTES: usize = 256 << 10;

/// At most this many segments (a step each): past `MAX_SEGMENTS * SEGMENT_BYTES`, 256 MiB,
/// segments grow instead, so that the steps a chunk may name stay bounded.
pub(crate) const MAX_SEGMENTS: usize = 1024;

/// How many segments `count` elements of `elem` bytes are cut into: the same on every
/// rank, at least one, and never more than there are elements.
pub(crate) fn segments(count: usize, elem: usize) -> usize {
    let bytes = count.saturating_mul(elem);
    bytes
        .div_ceil(SEGMENT_BYTES)
        .clamp(1, MAX_SEGMENTS)
        .min(count.max(1))
}

/// Broadcast of `count` elements from `root`, cut into `segments` pieces by [`blocks`].
pub(crate) fn broadcast(
    count: usize,
    world: usize,
    root: usize,
    rank: usize,
    segments: usize,
) -> Plan {
    let at = |pos: usize| ahead(root, pos, world);
    let q = behind(rank, root, world);
    let mut b = Builder::default();
    for (k, seg) in blocks(count, segments.max(1)).into_iter().enumerate() {
        if q > 0 {
            b.recv(k + q - 1, at(q - 1), seg.clone(), false);
        }
        if q + 1 < world {
            b.send(k + q, at(q + 1), seg);
        }
    }
    b.finish(Algorithm::Pipelined, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_bounded_and_cover_small_counts() {
        assert_eq!(segments(0, 4), 1);
        assert_eq!(segments(3, 4), 1);
        assert_eq!(segments(SEGMENT_BYTES / 4, 4), 1);
        assert_eq!(segments(SEGMENT_BYTES / 4 + 1, 4), 2);
        assert_eq!(segments(4 << 20, 4), 64); // 16 MiB of f32
        assert_eq!(segments(usize::MAX / 2, 8), MAX_SEGMENTS);
    }

    #[test]
    fn each_rank_forwards_a_segment_the_step_after_it_arrives() {
        // Four ranks, root 1: chain 1 -> 2 -> 3 -> 0, three segments.
        let p = broadcast(30, 4, 1, 3, 3);
        assert_eq!(p.steps.len(), 3 + 2);
        for (k, seg) in [(0usize, 0..10), (1, 10..20), (2, 20..30)] {
            // Position 2: receives segment k in step k + 1, sends it in step k + 2.
            assert_eq!(p.steps[k + 1].recvs[0].range, seg);
            assert_eq!(p.steps[k + 1].recvs[0].peer, 2);
            assert_eq!(p.steps[k + 2].sends[0].range, seg);
            assert_eq!(p.steps[k + 2].sends[0].peer, 0);
        }
        // The root only sends, the last rank only receives.
        let root = broadcast(30, 4, 1, 1, 3);
        assert!(root.steps.iter().all(|s| s.recvs.is_empty()));
        let last = broadcast(30, 4, 1, 0, 3);
        assert!(last.steps.iter().all(|s| s.sends.is_empty()));
    }
}
