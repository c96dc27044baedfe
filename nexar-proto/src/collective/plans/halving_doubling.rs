//! Halving-doubling all-reduce (Rabenseifner): a reduce-scatter by recursive halving,
//! then an all-gather by recursive doubling.
//!
//! Like the ring it moves about `2(p-1)/p` of the message per rank, but in
//! `2 log2 q` steps instead of `2(p-1)`, so it suits the sizes between recursive
//! doubling's (latency-bound) and the ring's (bandwidth-bound, where the ring's
//! neighbour-only traffic and fold-free schedule win). `q` is the largest power of two
//! `<= p`; the `p - q` extra ranks fold their data into ranks `0..p-q` first and get the
//! result back last, as in recursive doubling.

use super::{blocks, floor_pow2, union, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// All-reduce of `count` elements over [`blocks`]`(count, q)`; `2 log2 q` steps, plus 2
/// when `p` is not a power of two.
///
/// Halving: with partner `r ^ m` for `m = q/2, ..., 1`, a rank keeps the half of its
/// window of blocks on its side of `m`, sends the other half and reduces the partner's
/// copy of its kept half into it; it ends owning block `r`, which only it has computed.
/// Doubling: windows are exchanged back (copied) with `m = 1, ..., q/2`, so every rank
/// ends with the same bits.
pub(crate) fn allreduce(count: usize, world: usize, rank: usize) -> Plan {
    let q = floor_pow2(world);
    let extra = world - q;
    let rounds = q.trailing_zeros() as usize;
    let first = usize::from(extra > 0);
    let last = first + 2 * rounds;
    let mut b = Builder::default();
    if rank >= q {
        b.send(0, rank - q, 0..count);
        b.recv(last, rank - q, 0..count, false);
        return b.finish(Algorithm::HalvingDoubling, count);
    }
    if rank < extra {
        b.recv(0, rank + q, 0..count, true);
    }
    let parts = blocks(count, q);
    let mut window = 0..q;
    for k in 0..rounds {
        let m = q >> (k + 1);
        let mid = window.start + m;
        let (keep, give) = if rank & m == 0 {
            (window.start..mid, mid..window.end)
        } else {
            (mid..window.end, window.start..mid)
        };
        b.send(first + k, rank ^ m, union(&parts, give));
        b.recv(first + k, rank ^ m, union(&parts, keep.clone()), true);
        window = keep;
    }
    debug_assert_eq!(window, rank..rank + 1);
    for k in 0..rounds {
        let m = 1 << k;
        let theirs = if rank & m == 0 {
            window.end..window.end + m
        } else {
            window.start - m..window.start
        };
        b.send(first + rounds + k, rank ^ m, union(&parts, window.clone()));
        b.recv(
            first + rounds + k,
            rank ^ m,
            union(&parts, theirs.clone()),
            false,
        );
        window = window.start.min(theirs.start)..window.end.max(theirs.end);
    }
    if rank < extra {
        b.send(last, rank + q, 0..count);
    }
    b.finish(Algorithm::HalvingDoubling, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_then_doubles() {
        let plan = allreduce(8, 4, 1);
        let lens: Vec<_> = plan.steps.iter().map(|s| s.sends[0].range.len()).collect();
        assert_eq!(lens, [4, 2, 2, 4]);
        assert_eq!(plan.steps[0].recvs[0].range, 0..4);
        assert_eq!(plan.steps[1].recvs[0].range, 2..4);
        assert_eq!(allreduce(8, 5, 4).steps.len(), 6);
    }
}
