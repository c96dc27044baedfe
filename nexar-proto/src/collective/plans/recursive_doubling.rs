//! Recursive doubling: the distance between partners doubles every step, so the data
//! each rank has seen doubles too. `O(log p)` steps of the whole message: the choice for
//! small messages, where latency dominates. Used for all-reduce, all-gather (Bruck's
//! form), inclusive and exclusive scan.
//!
//! Floating-point results depend on the order of operands, not only on association
//! (`min(+0, -0)` or NaN payloads), so wherever two ranks must end with the same bits, or
//! a scan must combine earlier ranks on the left, the plan spells the operand order out:
//! `Recv { reduce }` computes `op(mine, incoming)`, and to get `op(incoming, mine)` a
//! rank receives into scratch and reduces its own data into that with a [`Local`].
//!
//! [`Local`]: crate::collective::plan::Local

use std::ops::Range;

use super::{ahead, behind, ceil_log2, floor_pow2, span, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// In `step`, set `dst = op(incoming, dst)`: the incoming data lands in `scratch`, `dst`
/// is reduced into it and the result copied back.
fn recv_on_the_left(b: &mut Builder, step: usize, from: usize, dst: Range<usize>, scratch: usize) {
    let s = scratch..scratch + dst.len();
    b.recv(step, from, s.clone(), false);
    b.local(step, dst.clone(), scratch, true);
    b.local(step, s, dst.start, false);
}

/// All-reduce of `count` elements (buffer `2 * count`, the upper half scratch).
///
/// With `q` the largest power of two `<= p` and `e = p - q` extra ranks: first rank
/// `q + i` folds its data into rank `i` (`i < e`); then the `q` ranks exchange whole
/// buffers with `rank ^ 2^k` for `k = 0..log2 q`; last, rank `i` sends the result back to
/// `q + i`. `log2 q` steps, plus 2 when `p` is not a power of two.
///
/// Both partners of an exchange compute `op(lower rank's data, higher rank's data)`,
/// holding bit-identical values for their halves of the ranks, so by induction every rank
/// ends with the same bits.
pub(crate) fn allreduce(count: usize, world: usize, rank: usize) -> Plan {
    let q = floor_pow2(world);
    let extra = world - q;
    let all = 0..count;
    let mut b = Builder::default();
    let first = usize::from(extra > 0);
    if rank >= q {
        b.send(0, rank - q, all.clone());
        b.recv(first + q.trailing_zeros() as usize, rank - q, all, false);
        return b.finish(Algorithm::RecursiveDoubling, count);
    }
    if rank < extra {
        b.recv(0, rank + q, all.clone(), true);
    }
    for k in 0..q.trailing_zeros() as usize {
        let partner = rank ^ (1 << k);
        b.send(first + k, partner, all.clone());
        if rank < partner {
            b.recv(first + k, partner, all.clone(), true);
        } else {
            recv_on_the_left(&mut b, first + k, partner, all.clone(), count);
        }
    }
    if rank < extra {
        b.send(first + q.trailing_zeros() as usize, rank + q, all);
    }
    b.finish(Algorithm::RecursiveDoubling, 2 * count)
}

/// Barrier on the all-reduce's pairs with empty messages: `rank ^ 2^k` in step `k`, the
/// extra ranks of a world that is not a power of two folded in first and released last.
/// After step `k` a rank has heard, directly or through its partners, from the `2^(k+1)`
/// ranks of its block, so from everyone at the end.
///
/// Chosen over dissemination for powers of two (the same `log2 p` steps and messages):
/// each exchange is symmetric, so both partners leave a step at once, where
/// dissemination's ring of waits lets ranks leave one after another; and the pairs are
/// the all-reduce's, so a barrier before a small all-reduce leaves each pair in step.
/// With the CLI's ranks in per-core blocks this took the 4-rank barrier from 54 to 35 µs
/// and the 8 B all-reduce after it from 44 to 35 µs (BENCHMARKS.md, session 10).
pub(crate) fn barrier(world: usize, rank: usize) -> Plan {
    let q = floor_pow2(world);
    let extra = world - q;
    let first = usize::from(extra > 0);
    let rounds = q.trailing_zeros() as usize;
    let mut b = Builder::default();
    if rank >= q {
        b.send(0, rank - q, 0..0);
        b.recv(first + rounds, rank - q, 0..0, false);
        return b.finish(Algorithm::RecursiveDoubling, 0);
    }
    if rank < extra {
        b.recv(0, rank + q, 0..0, false);
    }
    for k in 0..rounds {
        let partner = rank ^ (1 << k);
        b.send(first + k, partner, 0..0);
        b.recv(first + k, partner, 0..0, false);
    }
    if rank < extra {
        b.send(first + rounds, rank + q, 0..0);
    }
    b.finish(Algorithm::RecursiveDoubling, 0)
}

/// All-gather of `count` elements per rank, Bruck's way: `ceil(log2 p)` steps for any
/// `p`. Buffer: the rank-order output (`0..p*count`, own block in place) then a staging
/// area where slot `j` holds rank `r + j`'s block.
///
/// In step `k` (`d = 2^k`), a rank sends its first `min(d, p - d)` slots to `r - d` and
/// receives as many into slots `d..` from `r + d`; at the end the staging area is rotated
/// into rank order with two local copies.
pub(crate) fn allgather(count: usize, world: usize, rank: usize) -> Plan {
    let out = world * count;
    let slots = |first: usize, n: usize| {
        let s = span(first, n, count);
        out + s.start..out + s.end
    };
    let steps = ceil_log2(world);
    let mut b = Builder::default();
    for k in 0..steps {
        let d = 1 << k;
        let n = d.min(world - d);
        // Own block is in place in the output; the staging copy of it (slot 0) is made
        // at the end of step 0, in time for step 1's send.
        let sent = if k == 0 {
            span(rank, 1, count)
        } else {
            slots(0, n)
        };
        b.send(k, behind(rank, d, world), sent);
        b.recv(k, ahead(rank, d, world), slots(d, n), false);
    }
    if steps > 1 {
        b.local(0, span(rank, 1, count), out, false);
    }
    if steps > 0 {
        // Slots 1..p-r hold ranks r+1..p, slots p-r..p hold ranks 0..r.
        let last = steps - 1;
        b.local(last, slots(1, world - rank - 1), (rank + 1) * count, false);
        b.local(last, slots(world - rank, rank), 0, false);
    }
    b.finish(Algorithm::RecursiveDoubling, 2 * out)
}

/// Inclusive scan of `count` elements (Hillis–Steele), `ceil(log2 p)` steps; buffer
/// `0..count` the running prefix, `count..2*count` scratch.
///
/// In step `k` (`d = 2^k`), rank `r` holds the prefix of ranks `r-d+1..=r` (clipped at
/// 0); it sends it to `r + d` and receives that of `r - d`, which it combines on the left:
/// `prefix = op(incoming, prefix)`. So operands are always (earlier ranks, later ranks)
/// and for an associative op the result equals the left fold `x_0 ∘ x_1 ∘ ... ∘ x_r`,
/// grouped as a balanced tree.
pub(crate) fn scan(count: usize, world: usize, rank: usize) -> Plan {
    let prefix = 0..count;
    let mut b = Builder::default();
    for k in 0..ceil_log2(world) {
        let d = 1 << k;
        if rank + d < world {
            b.send(k, rank + d, prefix.clone());
        }
        if rank >= d {
            recv_on_the_left(&mut b, k, rank - d, prefix.clone(), count);
        }
    }
    b.finish(Algorithm::RecursiveDoubling, 2 * count)
}

/// Exclusive scan of `count` elements, `ceil(log2 p)` steps; rank `r` ends with
/// `x_0 ∘ ... ∘ x_{r-1}`, rank 0 with the identity (the layout's `fill_identity`).
///
/// Buffer: inclusive prefix (`0..c`, the input), exclusive prefix (`c..2c`, the output),
/// two scratch blocks. The inclusive prefix travels exactly as in [`scan`]; each incoming
/// prefix is combined on the left into both running prefixes. The first one a rank
/// receives (step 0, from `r - 1`) is copied into the exclusive prefix, so ranks other
/// than 0 never need the identity.
pub(crate) fn exclusive_scan(count: usize, world: usize, rank: usize) -> Plan {
    let c = count;
    let (incl, excl, s, t) = (0..c, c..2 * c, 2 * c..3 * c, 3 * c);
    let mut b = Builder::default();
    for k in 0..ceil_log2(world) {
        let d = 1 << k;
        if rank + d < world {
            b.send(k, rank + d, incl.clone());
        }
        if rank < d {
            continue;
        }
        b.recv(k, rank - d, s.clone(), false);
        if k == 0 {
            b.local(k, s.clone(), excl.start, false);
        } else {
            b.local(k, s.clone(), t, false);
            b.local(k, excl.clone(), t, true);
            b.local(k, t..t + c, excl.start, false);
        }
        b.local(k, incl.clone(), s.start, true);
        b.local(k, s.clone(), incl.start, false);
    }
    b.finish(Algorithm::RecursiveDoubling, 4 * c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allreduce_folds_in_the_extra_ranks() {
        // p = 6: q = 4, ranks 4 and 5 fold into 0 and 1, wait two rounds, get the result.
        let p = allreduce(3, 6, 5);
        assert_eq!(p.steps.len(), 4);
        assert_eq!(p.steps[0].sends[0].peer, 1);
        assert!(p.steps[1].sends.is_empty() && p.steps[2].recvs.is_empty());
        assert_eq!(p.steps[3].recvs[0].peer, 1);
        assert_eq!(allreduce(3, 6, 1).steps.len(), 4);
        assert_eq!(allreduce(3, 6, 3).steps.len(), 3);
        assert_eq!(allreduce(3, 8, 3).steps.len(), 3);
        assert!(allreduce(3, 1, 0).steps.is_empty());
    }

    #[test]
    fn the_higher_partner_combines_on_the_left() {
        let p = allreduce(4, 2, 1);
        let step = &p.steps[0];
        assert!(!step.recvs[0].reduce);
        assert_eq!(step.recvs[0].range, 4..8);
        assert!(step.locals[0].reduce && step.locals[0].src == (0..4));
        let p = allreduce(4, 2, 0);
        assert!(p.steps[0].recvs[0].reduce && p.steps[0].locals.is_empty());
    }

    #[test]
    fn bruck_takes_ceil_log2_steps() {
        for world in 1..=40 {
            let steps = (0..world).map(|r| allgather(2, world, r).steps.len()).max();
            assert_eq!(steps, Some(ceil_log2(world)));
        }
    }
}
