//! What a collective call asks for ([`CollectiveSpec`]), where its data sits in the
//! working buffer ([`layout`]) and the plan that runs it ([`plan`]).
//!
//! These are the only entry points to the algorithms: they validate the spec once, so a
//! bad call (root out of range, an algorithm that does not implement the kind) is a typed
//! [`PlanError`], never a panic or a plan that hangs.

use std::ops::Range;

use super::plan::{Layout, Plan};
use super::plans::{
    binomial, dissemination, halving_doubling, pairwise, pipelined, recursive_doubling,
    reduce_scatter_gather, ring, scatter_allgather,
};
use crate::codec::{Algorithm, CollectiveKind, DType, Fingerprint, ReduceOp};

/// One collective call, identical on every rank.
///
/// `count` is in elements and means, per kind:
/// - AllReduce, Reduce, Broadcast, Scan, ExclusiveScan: the user's buffer;
/// - AllGather: what each rank contributes (output `world * count`);
/// - ReduceScatter: each rank's output block (input `world * count`);
/// - Gather: each rank's block (the root's output `world * count`);
/// - Scatter: each rank's block (the root's input `world * count`);
/// - AllToAll: the block per (source, destination) pair (input and output
///   `world * count`);
/// - Barrier: 0.
///
/// `root` matters only for Broadcast, Reduce, Gather and Scatter; `op` only for the
/// reducing kinds (see [`reduces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectiveSpec {
    /// The collective.
    pub kind: CollectiveKind,
    /// Element type.
    pub dtype: DType,
    /// How elements combine ([`ReduceOp::None`] for kinds that do not reduce).
    pub op: ReduceOp,
    /// Elements, as above.
    pub count: usize,
    /// Root rank of rooted kinds.
    pub root: u32,
}

impl CollectiveSpec {
    /// `count * dtype.size()`, the size [`select`](super::select::select) goes by
    /// (saturating: an absurd count is refused by [`plan`], not here).
    pub fn bytes(&self) -> usize {
        self.count.saturating_mul(self.dtype.size())
    }

    /// The fingerprint the first chunk carries, so that ranks that called different
    /// collectives detect it.
    pub fn fingerprint(&self, algorithm: Algorithm) -> Fingerprint {
        Fingerprint {
            kind: self.kind,
            dtype: self.dtype,
            op: self.op,
            count: self.count as u64,
            root: self.root,
            algorithm,
        }
    }
}

/// Whether a kind combines data with its `op`.
pub fn reduces(kind: CollectiveKind) -> bool {
    use CollectiveKind::*;
    matches!(
        kind,
        AllReduce | Reduce | ReduceScatter | Scan | ExclusiveScan
    )
}

/// Whether a kind has a root.
pub fn rooted(kind: CollectiveKind) -> bool {
    use CollectiveKind::*;
    matches!(kind, Broadcast | Reduce | Gather | Scatter)
}

/// The algorithms that implement a kind, the default (what a world of one rank or a
/// small message gets) first.
pub fn algorithms(kind: CollectiveKind) -> &'static [Algorithm] {
    use Algorithm::*;
    match kind {
        CollectiveKind::AllReduce => &[RecursiveDoubling, HalvingDoubling, Ring],
        CollectiveKind::Broadcast => &[BinomialTree, ScatterAllGather, Pipelined],
        CollectiveKind::Reduce => &[BinomialTree, ReduceScatterGather],
        CollectiveKind::AllGather => &[RecursiveDoubling, Ring],
        CollectiveKind::ReduceScatter => &[Ring],
        CollectiveKind::Gather | CollectiveKind::Scatter => &[BinomialTree],
        CollectiveKind::AllToAll => &[Pairwise],
        CollectiveKind::Scan | CollectiveKind::ExclusiveScan => &[RecursiveDoubling],
        CollectiveKind::Barrier => &[RecursiveDoubling, Dissemination],
    }
}

/// Why a collective cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A world has at least one rank.
    #[error("a world has at least one rank")]
    EmptyWorld,
    /// The calling rank is not in the world.
    #[error("rank {rank} is outside a world of {world}")]
    Rank {
        /// The rank.
        rank: u32,
        /// The world size.
        world: u32,
    },
    /// The root is not in the world.
    #[error("root {root} is outside a world of {world}")]
    Root {
        /// The root.
        root: u32,
        /// The world size.
        world: u32,
    },
    /// The algorithm has no plan for this kind.
    #[error("{algorithm:?} does not implement {kind:?}")]
    Unsupported {
        /// The collective.
        kind: CollectiveKind,
        /// The algorithm asked for.
        algorithm: Algorithm,
    },
    /// A reducing collective was given [`ReduceOp::None`].
    #[error("{kind:?} reduces, so it needs an operation other than None")]
    MissingOp {
        /// The collective.
        kind: CollectiveKind,
    },
    /// A barrier carries no data.
    #[error("a barrier carries no data, but count is {count}")]
    BarrierCount {
        /// The count given.
        count: usize,
    },
    /// The buffers would not fit in memory addresses.
    #[error("{count} elements across {world} ranks overflow the address space")]
    TooLarge {
        /// The count given.
        count: usize,
        /// The world size.
        world: u32,
    },
}

fn validate(spec: &CollectiveSpec, world: u32, rank: u32) -> Result<(), PlanError> {
    if world == 0 {
        return Err(PlanError::EmptyWorld);
    }
    if rank >= world {
        return Err(PlanError::Rank { rank, world });
    }
    if rooted(spec.kind) && spec.root >= world {
        let root = spec.root;
        return Err(PlanError::Root { root, world });
    }
    if reduces(spec.kind) && spec.op == ReduceOp::None {
        return Err(PlanError::MissingOp { kind: spec.kind });
    }
    if spec.kind == CollectiveKind::Barrier && spec.count != 0 {
        let count = spec.count;
        return Err(PlanError::BarrierCount { count });
    }
    // The largest buffer any plan uses is `max(4 * count, 2 * world * count)` elements;
    // refuse anything whose size in bytes does not fit a usize.
    let factor = (2 * world as usize).max(4) * spec.dtype.size();
    if spec.count.checked_mul(factor).is_none() {
        let count = spec.count;
        return Err(PlanError::TooLarge { count, world });
    }
    Ok(())
}

/// Where `rank`'s input and output sit in its working buffer, for whichever algorithm
/// runs the spec.
///
/// `input` and `output` depend only on the kind, never on the algorithm, so the user's
/// data is placed the same way whatever [`select`](super::select::select) picked. A rank
/// that contributes nothing (a broadcast's non-roots) has an empty `input`, one that gets
/// nothing (a reduce's non-roots) an empty `output`. Algorithms need different scratch,
/// so `buffer_len` here is the largest any algorithm of the kind needs (all-reduce and
/// all-gather reserve room for recursive doubling's scratch even when the ring runs);
/// [`layout_for`] gives the exact size for one algorithm. Never panics; for a spec that
/// [`plan`] refuses the ranges mean nothing.
pub fn layout(spec: &CollectiveSpec, world: u32, rank: u32) -> Layout {
    let (input, output, fill_identity) = ranges(spec, world, rank);
    let buffer_len = algorithms(spec.kind)
        .iter()
        .filter_map(|&a| plan(spec, world, rank, a).ok())
        .map(|p| p.buffer_len)
        .max()
        .unwrap_or(0)
        .max(input.end)
        .max(output.end)
        .max(fill_identity.end);
    Layout {
        buffer_len,
        input,
        output,
        fill_identity,
    }
}

/// [`layout`] for one algorithm: the same ranges, and `buffer_len` exactly the plan's.
pub fn layout_for(
    spec: &CollectiveSpec,
    world: u32,
    rank: u32,
    algorithm: Algorithm,
) -> Result<Layout, PlanError> {
    let buffer_len = plan(spec, world, rank, algorithm)?.buffer_len;
    Ok(layout_of(spec, world, rank, buffer_len))
}

/// [`layout_for`] of a plan already built (its `buffer_len`), without building it again.
pub(crate) fn layout_of(spec: &CollectiveSpec, world: u32, rank: u32, buffer_len: usize) -> Layout {
    let (input, output, fill_identity) = ranges(spec, world, rank);
    Layout {
        buffer_len,
        input,
        output,
        fill_identity,
    }
}

/// `(input, output, fill_identity)` of [`layout`]; saturating, so that a spec too large
/// to plan gives nonsense rather than a panic.
fn ranges(
    spec: &CollectiveSpec,
    world: u32,
    rank: u32,
) -> (Range<usize>, Range<usize>, Range<usize>) {
    let (c, p, r) = (spec.count, world as usize, rank as usize);
    let is_root = rank == spec.root;
    let mul = usize::saturating_mul;
    let block = |i: usize| mul(i, c)..mul(i + 1, c);
    let all = mul(p, c);
    let none = 0..0;
    match spec.kind {
        CollectiveKind::AllReduce | CollectiveKind::Scan => (0..c, 0..c, none),
        CollectiveKind::Broadcast if is_root => (0..c, 0..c, none),
        CollectiveKind::Broadcast => (none.clone(), 0..c, none),
        CollectiveKind::Reduce if is_root => (0..c, 0..c, none),
        CollectiveKind::Reduce => (0..c, none.clone(), none),
        CollectiveKind::AllGather => (block(r), 0..all, none),
        CollectiveKind::ReduceScatter => (0..all, block(r), none),
        CollectiveKind::Gather if is_root => (block(r), 0..all, none),
        CollectiveKind::Gather => (0..c, none.clone(), none),
        CollectiveKind::Scatter if is_root => (0..all, block(r), none),
        CollectiveKind::Scatter => (none.clone(), 0..c, none),
        CollectiveKind::AllToAll if p == 1 => (0..c, 0..c, none),
        CollectiveKind::AllToAll => (0..all, all..mul(all, 2), none),
        CollectiveKind::ExclusiveScan if r == 0 => (0..c, c..mul(c, 2), c..mul(c, 2)),
        CollectiveKind::ExclusiveScan => (0..c, c..mul(c, 2), none),
        CollectiveKind::Barrier => (none.clone(), none.clone(), none),
    }
}

/// `rank`'s plan for this spec with `algorithm`; every rank of a `world` gets plans
/// that match each other step for step.
pub fn plan(
    spec: &CollectiveSpec,
    world: u32,
    rank: u32,
    algorithm: Algorithm,
) -> Result<Plan, PlanError> {
    validate(spec, world, rank)?;
    if !algorithms(spec.kind).contains(&algorithm) {
        let kind = spec.kind;
        return Err(PlanError::Unsupported { kind, algorithm });
    }
    let (c, p, r, root) = (
        spec.count,
        world as usize,
        rank as usize,
        spec.root as usize,
    );
    use Algorithm as A;
    use CollectiveKind as K;
    Ok(match (spec.kind, algorithm) {
        (K::AllReduce, A::Ring) => ring::allreduce(c, p, r),
        (K::AllReduce, A::HalvingDoubling) => halving_doubling::allreduce(c, p, r),
        (K::AllReduce, _) => recursive_doubling::allreduce(c, p, r),
        (K::Broadcast, A::ScatterAllGather) => scatter_allgather::broadcast(c, p, root, r),
        (K::Broadcast, A::Pipelined) => {
            let segments = pipelined::segments(c, spec.dtype.size());
            pipelined::broadcast(c, p, root, r, segments)
        }
        (K::Broadcast, _) => binomial::broadcast(c, p, root, r),
        (K::Reduce, A::ReduceScatterGather) => reduce_scatter_gather::reduce(c, p, root, r),
        (K::Reduce, _) => binomial::reduce(c, p, root, r),
        (K::AllGather, A::Ring) => ring::allgather(c, p, r),
        (K::AllGather, _) => recursive_doubling::allgather(c, p, r),
        (K::ReduceScatter, _) => ring::reduce_scatter(c, p, r),
        (K::Gather, _) => binomial::gather(c, p, root, r),
        (K::Scatter, _) => binomial::scatter(c, p, root, r),
        (K::AllToAll, _) => pairwise::alltoall(c, p, r),
        (K::Scan, _) => recursive_doubling::scan(c, p, r),
        (K::ExclusiveScan, _) => recursive_doubling::exclusive_scan(c, p, r),
        (K::Barrier, A::Dissemination) => dissemination::barrier(p, r),
        (K::Barrier, _) => recursive_doubling::barrier(p, r),
    })
}

/// The most steps any rank's plan has for this kind, algorithm and world size, over
/// every count (0 when the algorithm does not implement the kind, which [`plan`]
/// refuses). Lets an executor reject a chunk whose step number no plan could reach.
/// Tight for every algorithm but the pipelined chain, whose steps grow with the message
/// up to its most segments.
pub fn step_bound(kind: CollectiveKind, algorithm: Algorithm, world: u32) -> usize {
    use Algorithm as A;
    if world == 0 || !algorithms(kind).contains(&algorithm) {
        return 0;
    }
    let p = world as usize;
    let log = super::plans::ceil_log2(p);
    // log2 of the largest power of two <= p, plus the fold-in and fold-out steps.
    let folded = p.ilog2() as usize;
    let fold = if p.is_power_of_two() { 0 } else { 2 };
    match (kind, algorithm) {
        (CollectiveKind::AllReduce, A::Ring) => 2 * (p - 1),
        (CollectiveKind::AllReduce | CollectiveKind::Barrier, A::RecursiveDoubling) => {
            folded + fold
        }
        (CollectiveKind::AllReduce, _) => 2 * folded + fold,
        (CollectiveKind::Broadcast, A::ScatterAllGather) => log + p - 1,
        (CollectiveKind::Broadcast, A::Pipelined) => super::plans::pipelined::MAX_SEGMENTS + p - 2,
        (CollectiveKind::Reduce, A::ReduceScatterGather) => p - 1 + log,
        (CollectiveKind::AllGather, A::Ring) => p - 1,
        (CollectiveKind::ReduceScatter | CollectiveKind::AllToAll, _) => p - 1,
        _ => log,
    }
}
