//! Which algorithm runs a collective: a pure function of the world size, the message size
//! and the configuration.
//!
//! Every rank must pick the same algorithm without talking (the plans only match each
//! other within one algorithm), so [`select`] reads nothing but its arguments, and the
//! configuration must be the same on every rank; a rank that disagrees is caught by the
//! fingerprint on the first chunk and fails with a mismatch, not a hang.

use super::spec::CollectiveSpec;
use crate::codec::{Algorithm, CollectiveKind};

/// Size thresholds for [`select`], and the executor's pipelining segment.
///
/// The defaults follow the usual MPI crossovers (latency-bound below tens of KiB,
/// bandwidth-bound above a few hundred); benchmarks on the target network should tune
/// them. All ranks must use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectiveConfig {
    /// All-reduce of at most this many bytes uses recursive doubling (`log2 p` steps of
    /// the whole message). The default keeps the whole message inside one loopback
    /// datagram (64 KiB): measured on 4 ranks, recursive doubling wins up to 48 KiB
    /// (158 µs against 256 for halving-doubling) and loses at 64 KiB, where each step's
    /// message spills into a second datagram (422 µs against 243).
    pub small_allreduce_bytes: usize,
    /// All-reduce above `small_allreduce_bytes` and below this uses halving-doubling
    /// (`2 log2 p` steps, bandwidth-optimal for powers of two); from this size on, the
    /// ring (neighbour-only traffic, no fold-in for odd worlds). Two ranks too: recursive
    /// doubling would send the whole message both ways, reduce all of it on both ranks
    /// and need a buffer twice its size; on loopback a 2-rank 64 MiB allreduce took
    /// 175-184 ms that way and 45-58 ms by the ring.
    pub large_allreduce_bytes: usize,
    /// Broadcast of at least this many bytes (in worlds of at least `large_min_world`)
    /// and below `pipelined_broadcast_bytes` uses scatter + all-gather instead of a
    /// binomial tree.
    pub large_broadcast_bytes: usize,
    /// Broadcast of at least this many bytes (any world) runs down a pipelined chain:
    /// each byte crosses each link once. Scatter + all-gather takes the sizes from
    /// `large_broadcast_bytes` up to this, none by default: on 4 loopback ranks the
    /// chain took 0.75-0.82 ms at 512 KiB against 1.08 ms, 0.94 against 1.9 ms at 1 MiB
    /// and 13-14 against 18-19 ms at 16 MiB; at 256 KiB (one segment) it ties the tree.
    pub pipelined_broadcast_bytes: usize,
    /// Reduce of at least this many bytes (in worlds of at least `large_min_world`) uses
    /// reduce-scatter + gather instead of a binomial tree.
    pub large_reduce_bytes: usize,
    /// All-gather whose *total* output (`world * count * size`) is at most this many
    /// bytes uses Bruck's recursive doubling, larger ones the ring.
    pub small_allgather_bytes: usize,
    /// The smallest world in which the two-phase broadcast and reduce pay off: below it
    /// the tree is as short and moves as much.
    pub large_min_world: u32,
    /// Bytes per chunk the executor sends at a time within one transfer, so that a large
    /// step is pipelined rather than stored and forwarded whole.
    pub segment_bytes: usize,
}

impl Default for CollectiveConfig {
    fn default() -> Self {
        CollectiveConfig {
            small_allreduce_bytes: 48 << 10,
            large_allreduce_bytes: 4 << 20,
            large_broadcast_bytes: 512 << 10,
            pipelined_broadcast_bytes: 512 << 10,
            large_reduce_bytes: 512 << 10,
            small_allgather_bytes: 64 << 10,
            large_min_world: 4,
            segment_bytes: 256 << 10,
        }
    }
}

/// The algorithm for `spec` in a world of `world` ranks: depends only on the kind,
/// `world`, `spec.bytes()` and `config`, so every rank picks the same one. Always one
/// that [`plan`](super::spec::plan) accepts for the kind.
pub fn select(spec: &CollectiveSpec, world: u32, config: &CollectiveConfig) -> Algorithm {
    use Algorithm as A;
    let bytes = spec.bytes();
    let large_world = world >= config.large_min_world;
    match spec.kind {
        CollectiveKind::AllReduce if bytes <= config.small_allreduce_bytes => A::RecursiveDoubling,
        CollectiveKind::AllReduce if bytes < config.large_allreduce_bytes => A::HalvingDoubling,
        CollectiveKind::AllReduce => A::Ring,
        CollectiveKind::Broadcast if world > 1 && bytes >= config.pipelined_broadcast_bytes => {
            A::Pipelined
        }
        CollectiveKind::Broadcast if large_world && bytes >= config.large_broadcast_bytes => {
            A::ScatterAllGather
        }
        CollectiveKind::Reduce if large_world && bytes >= config.large_reduce_bytes => {
            A::ReduceScatterGather
        }
        CollectiveKind::Broadcast | CollectiveKind::Reduce => A::BinomialTree,
        CollectiveKind::AllGather
            if bytes.saturating_mul(world as usize) <= config.small_allgather_bytes =>
        {
            A::RecursiveDoubling
        }
        CollectiveKind::AllGather | CollectiveKind::ReduceScatter => A::Ring,
        CollectiveKind::Gather | CollectiveKind::Scatter => A::BinomialTree,
        CollectiveKind::AllToAll => A::Pairwise,
        CollectiveKind::Scan | CollectiveKind::ExclusiveScan => A::RecursiveDoubling,
        // Fewer steps than recursive doubling's fold in and out otherwise.
        CollectiveKind::Barrier if world.is_power_of_two() => A::RecursiveDoubling,
        CollectiveKind::Barrier => A::Dissemination,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{DType, ReduceOp};
    use crate::collective::spec::algorithms;

    fn spec(kind: CollectiveKind, dtype: DType, count: usize) -> CollectiveSpec {
        let op = ReduceOp::Sum;
        CollectiveSpec {
            kind,
            dtype,
            op,
            count,
            root: 0,
        }
    }

    #[test]
    fn selection_always_names_an_algorithm_of_the_kind() {
        let config = CollectiveConfig::default();
        for &kind in CollectiveKind::ALL {
            for &dtype in DType::ALL {
                for count in [0, 1, 1000, 1 << 14, 1 << 17, 1 << 20, 1 << 24, usize::MAX] {
                    for world in [1, 2, 3, 4, 7, 64, 1000] {
                        let a = select(&spec(kind, dtype, count), world, &config);
                        assert!(algorithms(kind).contains(&a), "{kind:?} {a:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn size_moves_allreduce_from_latency_to_bandwidth_algorithms() {
        let c = CollectiveConfig::default();
        let f32s = |n| spec(CollectiveKind::AllReduce, DType::F32, n);
        assert_eq!(select(&f32s(1024), 8, &c), Algorithm::RecursiveDoubling);
        assert_eq!(select(&f32s(1 << 18), 8, &c), Algorithm::HalvingDoubling);
        assert_eq!(select(&f32s(1 << 22), 8, &c), Algorithm::Ring);
        // The same element count in a smaller type is a smaller message.
        let u8s = spec(CollectiveKind::AllReduce, DType::U8, 1 << 18);
        assert_eq!(select(&u8s, 8, &c), Algorithm::HalvingDoubling);
        let bcast = spec(CollectiveKind::Broadcast, DType::F64, 1 << 15);
        assert_eq!(select(&bcast, 8, &c), Algorithm::BinomialTree);
        let two_phase = CollectiveConfig {
            pipelined_broadcast_bytes: usize::MAX,
            ..CollectiveConfig::default()
        };
        let half = spec(CollectiveKind::Broadcast, DType::F64, 1 << 16);
        assert_eq!(select(&half, 8, &two_phase), Algorithm::ScatterAllGather);
        assert_eq!(select(&bcast, 2, &c), Algorithm::BinomialTree);
        // Two ranks: one step for small messages, halves for large ones.
        assert_eq!(select(&f32s(1024), 2, &c), Algorithm::RecursiveDoubling);
        assert_eq!(select(&f32s(1 << 18), 2, &c), Algorithm::HalvingDoubling);
        assert_eq!(select(&f32s(1 << 24), 2, &c), Algorithm::Ring);
        let large = spec(CollectiveKind::Broadcast, DType::F64, 1 << 20);
        assert_eq!(select(&large, 8, &c), Algorithm::Pipelined);
        assert_eq!(select(&large, 2, &c), Algorithm::Pipelined);
        assert_eq!(select(&large, 1, &c), Algorithm::BinomialTree);
    }

    #[test]
    fn barriers_pair_up_in_powers_of_two_and_disseminate_otherwise() {
        let c = CollectiveConfig::default();
        let b = spec(CollectiveKind::Barrier, DType::U8, 0);
        for world in [1, 2, 4, 8, 64] {
            assert_eq!(select(&b, world, &c), Algorithm::RecursiveDoubling);
        }
        for world in [3, 5, 6, 7, 63] {
            assert_eq!(select(&b, world, &c), Algorithm::Dissemination);
        }
    }
}
