//! Ring: every rank sends only to `rank + 1` and receives only from `rank - 1`.
//!
//! Bandwidth-optimal (each rank moves `(p-1)/p` of the data per phase) at the cost of
//! `p - 1` latency steps per phase, so it is the choice for large messages. The phases
//! work on any list of blocks, one per rank, so other algorithms reuse them: broadcast's
//! scatter + all-gather and reduce's reduce-scatter + gather.

use std::ops::Range;

use super::{ahead, behind, blocks, span, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// Reduce-scatter phase in steps `first..first + p - 1`: afterwards rank `r` holds block
/// `r` reduced over every rank, and the other blocks hold partial sums.
///
/// In step `s`, rank `r` sends block `r - s - 1` (its running partial) to `r + 1` and
/// reduces block `r - s - 2` from `r - 1` into its own: the partial for block `b` starts
/// at rank `b + 1` and travels once round the ring, ending at rank `b`. Association for
/// block `b`: `x_b ∘ (x_{b-1} ∘ (... ∘ x_{b+1}))`, one rank computes each step of it.
pub(crate) fn reduce_scatter_phase(
    b: &mut Builder,
    first: usize,
    world: usize,
    rank: usize,
    blocks: &[Range<usize>],
) {
    let (next, prev) = (ahead(rank, 1, world), behind(rank, 1, world));
    for s in 0..world - 1 {
        b.send(first + s, next, blocks[behind(rank, s + 1, world)].clone());
        b.recv(
            first + s,
            prev,
            blocks[behind(rank, s + 2, world)].clone(),
            true,
        );
    }
}

/// All-gather phase in steps `first..first + p - 1`: rank `r` starts with block `r`
/// and ends with every block. Blocks are copied, never recomputed, so all ranks end
/// with the same bits.
///
/// In step `s`, rank `r` forwards block `r - s` to `r + 1` and receives block
/// `r - s - 1` from `r - 1`.
pub(crate) fn allgather_phase(
    b: &mut Builder,
    first: usize,
    world: usize,
    rank: usize,
    blocks: &[Range<usize>],
) {
    let (next, prev) = (ahead(rank, 1, world), behind(rank, 1, world));
    for s in 0..world - 1 {
        b.send(first + s, next, blocks[behind(rank, s, world)].clone());
        b.recv(
            first + s,
            prev,
            blocks[behind(rank, s + 1, world)].clone(),
            false,
        );
    }
}

/// All-reduce: reduce-scatter then all-gather over [`blocks`]`(count, p)`;
/// `2(p - 1)` steps, buffer `count`.
pub(crate) fn allreduce(count: usize, world: usize, rank: usize) -> Plan {
    let parts = blocks(count, world);
    let mut b = Builder::default();
    reduce_scatter_phase(&mut b, 0, world, rank, &parts);
    allgather_phase(&mut b, world - 1, world, rank, &parts);
    b.finish(Algorithm::Ring, count)
}

/// All-gather of `count` elements per rank into `world * count`, rank order;
/// `p - 1` steps.
pub(crate) fn allgather(count: usize, world: usize, rank: usize) -> Plan {
    let parts: Vec<_> = (0..world).map(|i| span(i, 1, count)).collect();
    let mut b = Builder::default();
    allgather_phase(&mut b, 0, world, rank, &parts);
    b.finish(Algorithm::Ring, world * count)
}

/// Reduce-scatter of `world * count` elements, rank `r` keeping block `r`; `p - 1` steps.
pub(crate) fn reduce_scatter(count: usize, world: usize, rank: usize) -> Plan {
    let parts: Vec<_> = (0..world).map(|i| span(i, 1, count)).collect();
    let mut b = Builder::default();
    reduce_scatter_phase(&mut b, 0, world, rank, &parts);
    b.finish(Algorithm::Ring, world * count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_talks_only_to_its_neighbours() {
        let plan = allreduce(10, 4, 2);
        assert_eq!(plan.steps.len(), 6);
        for step in &plan.steps {
            assert_eq!(step.sends.len(), 1);
            assert_eq!(step.sends[0].peer, 3);
            assert_eq!(step.recvs[0].peer, 1);
        }
        // The first half reduces, the second copies.
        assert!(plan.steps[..3].iter().all(|s| s.recvs[0].reduce));
        assert!(plan.steps[3..].iter().all(|s| !s.recvs[0].reduce));
    }

    #[test]
    fn one_rank_has_nothing_to_do() {
        assert!(allreduce(5, 1, 0).steps.is_empty());
        assert!(allgather(5, 1, 0).steps.is_empty());
        assert!(reduce_scatter(5, 1, 0).steps.is_empty());
    }
}
