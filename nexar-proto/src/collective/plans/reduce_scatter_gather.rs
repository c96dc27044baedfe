//! Reduce as a ring reduce-scatter followed by a binomial gather to the root
//! (Rabenseifner's reduce).
//!
//! A binomial reduce moves and reduces the whole message at every level; here each rank
//! reduces `(p-1)/p` of it once and the gather moves the reduced blocks, so every rank
//! does a share of the arithmetic and the root's links carry about one message: better
//! for large messages, at `p - 1 + ceil(log2 p)` steps. The buffer is cut by
//! [`blocks`]`(count, p)`; the root ends with every reduced block.

use super::binomial::{gather_phase, Position};
use super::ring::reduce_scatter_phase;
use super::{blocks, ceil_log2, union, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// Reduce of `count` elements to `root`.
pub(crate) fn reduce(count: usize, world: usize, root: usize, rank: usize) -> Plan {
    let parts = blocks(count, world);
    let mut b = Builder::default();
    reduce_scatter_phase(&mut b, 0, world, rank, &parts);
    let pos = Position::of(world, root, rank);
    let at = |ranks| union(&parts, ranks);
    gather_phase(&mut b, world - 1, ceil_log2(world), &pos, at, false);
    b.finish(Algorithm::ReduceScatterGather, count)
}
