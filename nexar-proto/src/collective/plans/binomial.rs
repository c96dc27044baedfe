//! Binomial tree, built by halving the interval of ranks: `ceil(log2 p)` steps, for
//! broadcast, reduce, gather and scatter, with any root.
//!
//! The holder of an interval of ranks (the root holds `0..p`) splits it into a lower half
//! of `ceil(n/2)` ranks and an upper half of `floor(n/2)`; the half without the holder
//! goes to that half's *first* rank, and both halves recurse one step later. For `p` a
//! power of two and root 0 this is the textbook binomial tree; for other sizes the depth
//! is still `ceil(log2 p)`.
//!
//! Why intervals rather than ranks relative to the root: every subtree is a contiguous
//! run of ranks, so gather and scatter move one contiguous range per edge with no
//! rotation at the root, and every non-root rank's own block is at offset 0 of its
//! buffer (it is the first rank of its subtree).

use std::ops::Range;

use super::{ceil_log2, span, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// One tree edge seen from the parent: at `depth`, the ranks `span` go to `child`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edge {
    pub(crate) depth: usize,
    pub(crate) child: usize,
    pub(crate) span: Range<usize>,
}

/// One rank's place in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    /// The ranks of this rank's subtree (`0..world` at the root); it is their first rank
    /// unless it is the root.
    pub(crate) span: Range<usize>,
    /// `(depth, parent)`, for every rank but the root.
    pub(crate) parent: Option<(usize, usize)>,
    /// Children, shallowest first.
    pub(crate) children: Vec<Edge>,
}

impl Position {
    /// Where `rank` sits in the tree rooted at `root`; `O(log p)`: it follows only the
    /// halves that contain `rank`.
    pub(crate) fn of(world: usize, root: usize, rank: usize) -> Position {
        let mut pos = Position {
            span: 0..world,
            parent: None,
            children: Vec::new(),
        };
        let (mut interval, mut holder, mut depth) = (0..world, root, 0);
        while interval.len() > 1 {
            let mid = interval.start + interval.len().div_ceil(2);
            let (kept, given) = if holder < mid {
                (interval.start..mid, mid..interval.end)
            } else {
                (mid..interval.end, interval.start..mid)
            };
            let child = given.start;
            if rank == holder {
                pos.children.push(Edge {
                    depth,
                    child,
                    span: given.clone(),
                });
            } else if rank == child {
                pos.parent = Some((depth, holder));
                pos.span = given.clone();
            }
            if given.contains(&rank) {
                (interval, holder) = (given, child);
            } else {
                interval = kept;
            }
            depth += 1;
        }
        pos
    }
}

/// Data flows down in steps `first + depth`: each rank receives `at(own span)` from its
/// parent, then forwards `at(child span)` to each child. `at` maps a span of ranks to the
/// range of this rank's buffer holding their data.
pub(crate) fn scatter_phase(
    b: &mut Builder,
    first: usize,
    pos: &Position,
    at: impl Fn(Range<usize>) -> Range<usize>,
) {
    if let Some((depth, parent)) = pos.parent {
        b.recv(first + depth, parent, at(pos.span.clone()), false);
    }
    for e in &pos.children {
        b.send(first + e.depth, e.child, at(e.span.clone()));
    }
}

/// Data flows up in steps `first + (depths - 1 - depth)`, deepest edges first: each rank
/// receives (copying or reducing) `at(child span)` from each child, deepest child first,
/// then sends `at(own span)` to its parent. `depths` is `ceil(log2 p)`.
pub(crate) fn gather_phase(
    b: &mut Builder,
    first: usize,
    depths: usize,
    pos: &Position,
    at: impl Fn(Range<usize>) -> Range<usize>,
    reduce: bool,
) {
    for e in pos.children.iter().rev() {
        b.recv(
            first + depths - 1 - e.depth,
            e.child,
            at(e.span.clone()),
            reduce,
        );
    }
    if let Some((depth, parent)) = pos.parent {
        b.send(first + depths - 1 - depth, parent, at(pos.span.clone()));
    }
}

/// Broadcast of `count` elements from `root`.
pub(crate) fn broadcast(count: usize, world: usize, root: usize, rank: usize) -> Plan {
    let mut b = Builder::default();
    scatter_phase(&mut b, 0, &Position::of(world, root, rank), |_| 0..count);
    b.finish(Algorithm::BinomialTree, count)
}

/// Reduce of `count` elements to `root`. Association at each rank:
/// `((own ∘ deepest child) ∘ ...) ∘ shallowest child`, children's values being their
/// whole subtrees; fixed by the plan, so the root's bits do not depend on timing.
pub(crate) fn reduce(count: usize, world: usize, root: usize, rank: usize) -> Plan {
    let mut b = Builder::default();
    let pos = Position::of(world, root, rank);
    gather_phase(&mut b, 0, ceil_log2(world), &pos, |_| 0..count, true);
    b.finish(Algorithm::BinomialTree, count)
}

/// Gather of `count` elements per rank to `root`, in rank order. Each rank's buffer
/// holds its subtree's blocks (`span.len() * count`, the root's `world * count`).
pub(crate) fn gather(count: usize, world: usize, root: usize, rank: usize) -> Plan {
    let mut b = Builder::default();
    let pos = Position::of(world, root, rank);
    let base = pos.span.start;
    let at = |s: Range<usize>| span(s.start - base, s.len(), count);
    gather_phase(&mut b, 0, ceil_log2(world), &pos, at, false);
    b.finish(Algorithm::BinomialTree, pos.span.len() * count)
}

/// Scatter of `world * count` elements from `root`, block `r` to rank `r`; the mirror of
/// [`gather`].
pub(crate) fn scatter(count: usize, world: usize, root: usize, rank: usize) -> Plan {
    let mut b = Builder::default();
    let pos = Position::of(world, root, rank);
    let base = pos.span.start;
    scatter_phase(&mut b, 0, &pos, |s| span(s.start - base, s.len(), count));
    b.finish(Algorithm::BinomialTree, pos.span.len() * count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every non-root rank has exactly one parent, receives its span once, and the spans
    /// handed out by a parent tile its own span minus itself.
    #[test]
    fn the_tree_covers_every_rank_once() {
        for world in 1..=70 {
            for root in 0..world {
                let mut parents = 0;
                for rank in 0..world {
                    let pos = Position::of(world, root, rank);
                    assert!(pos.span.contains(&rank));
                    assert_eq!(pos.parent.is_none(), rank == root);
                    if rank != root {
                        parents += 1;
                        assert_eq!(pos.span.start, rank, "a subtree starts at its holder");
                    }
                    let mut covered: Vec<usize> = vec![rank];
                    for e in &pos.children {
                        assert!(e.depth < ceil_log2(world));
                        let child = Position::of(world, root, e.child);
                        assert_eq!(child.parent, Some((e.depth, rank)));
                        assert_eq!(child.span, e.span);
                        covered.extend(e.span.clone());
                    }
                    covered.sort_unstable();
                    assert_eq!(covered, pos.span.clone().collect::<Vec<_>>());
                }
                assert_eq!(parents, world - 1);
            }
        }
    }

    #[test]
    fn power_of_two_from_zero_is_the_textbook_tree() {
        let pos = Position::of(8, 0, 0);
        let children: Vec<_> = pos.children.iter().map(|e| e.child).collect();
        assert_eq!(children, [4, 2, 1]);
        assert_eq!(Position::of(8, 0, 6).parent, Some((1, 4)));
    }
}
