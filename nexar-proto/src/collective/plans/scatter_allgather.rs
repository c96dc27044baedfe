//! Broadcast as a binomial scatter followed by a ring all-gather (van de Geijn).
//!
//! A binomial broadcast sends the whole message `ceil(log2 p)` times along the critical
//! path; this sends it about twice (the scatter halves it at every level, the ring moves
//! `(p-1)/p` of it), so for large messages it wins despite `ceil(log2 p) + p - 1` steps.
//! The buffer is cut by [`blocks`]`(count, p)`; rank `r` gets block `r` from the scatter.

use super::binomial::{scatter_phase, Position};
use super::ring::allgather_phase;
use super::{blocks, ceil_log2, union, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// Broadcast of `count` elements from `root`.
pub(crate) fn broadcast(count: usize, world: usize, root: usize, rank: usize) -> Plan {
    let parts = blocks(count, world);
    let mut b = Builder::default();
    let pos = Position::of(world, root, rank);
    scatter_phase(&mut b, 0, &pos, |ranks| union(&parts, ranks));
    allgather_phase(&mut b, ceil_log2(world), world, rank, &parts);
    b.finish(Algorithm::ScatterAllGather, count)
}
