//! Plans already built, by everything a plan depends on.
//!
//! A training loop runs the same few collectives, with the same shapes, thousands of
//! times. Building a plan allocates a vector per step and a few per transfer list, and
//! dropping it frees them again; each call also built its plan twice (once for the
//! layout). In the 4-rank 8 B allreduce, where a whole operation costs the four ranks
//! about 75 µs of CPU, allocation was 9% of the profile, 3% with the cache. A plan is a
//! pure function of its key, so sharing one between calls changes nothing a rank sends
//! or receives. The cache is bounded and evicts the entry used longest ago: a plan holds
//! a few hundred bytes per step, and the longest (a pipelined broadcast at its most
//! segments, or an all-to-all on a thousand ranks) about a thousand steps, so a full
//! cache of the largest plans stays in the low tens of MB.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::plan::Plan;
use super::spec::{plan, CollectiveSpec, PlanError};
use crate::codec::{Algorithm, CollectiveKind, DType, ReduceOp};

/// Distinct plans kept. A program that cycles through more shapes than this rebuilds
/// the ones it evicted, as every call did before the cache.
pub(crate) const PLAN_CACHE_LEN: usize = 64;

/// Spec fields, world size, rank and algorithm.
type Key = (
    CollectiveKind,
    DType,
    ReduceOp,
    usize,
    u32,
    u32,
    u32,
    Algorithm,
);

#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    plans: BTreeMap<Key, (Arc<Plan>, u64)>,
    /// Bumped on every lookup; an entry remembers when it was last used.
    clock: u64,
}

impl PlanCache {
    /// The plan of `spec` for `rank` of `world` by `algorithm`, built on first use.
    pub(crate) fn get(
        &mut self,
        spec: &CollectiveSpec,
        world: u32,
        rank: u32,
        algorithm: Algorithm,
    ) -> Result<Arc<Plan>, PlanError> {
        self.clock += 1;
        let key = (
            spec.kind, spec.dtype, spec.op, spec.count, spec.root, world, rank, algorithm,
        );
        if let Some((plan, used)) = self.plans.get_mut(&key) {
            *used = self.clock;
            return Ok(Arc::clone(plan));
        }
        let built = Arc::new(plan(spec, world, rank, algorithm)?);
        if self.plans.len() >= PLAN_CACHE_LEN {
            let oldest = self.plans.iter().min_by_key(|(_, (_, used))| *used);
            if let Some(oldest) = oldest.map(|(k, _)| *k) {
                self.plans.remove(&oldest);
            }
        }
        self.plans.insert(key, (Arc::clone(&built), self.clock));
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allreduce(count: usize) -> CollectiveSpec {
        CollectiveSpec {
            kind: CollectiveKind::AllReduce,
            dtype: DType::F32,
            op: ReduceOp::Sum,
            count,
            root: 0,
        }
    }

    #[test]
    fn a_plan_is_built_once_per_key_and_equals_a_fresh_one() {
        let mut c = PlanCache::default();
        let a = c.get(&allreduce(1000), 4, 1, Algorithm::Ring).unwrap();
        let b = c.get(&allreduce(1000), 4, 1, Algorithm::Ring).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second call shares the first plan");
        assert_eq!(*a, plan(&allreduce(1000), 4, 1, Algorithm::Ring).unwrap());
        // Any field of the key differing is another plan.
        let other_rank = c.get(&allreduce(1000), 4, 2, Algorithm::Ring).unwrap();
        assert_eq!(
            *other_rank,
            plan(&allreduce(1000), 4, 2, Algorithm::Ring).unwrap()
        );
        let other_alg = c
            .get(&allreduce(1000), 4, 1, Algorithm::HalvingDoubling)
            .unwrap();
        assert_ne!(other_alg.algorithm, a.algorithm);
        assert_eq!(c.plans.len(), 3);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let mut c = PlanCache::default();
        let first = c.get(&allreduce(1), 4, 0, Algorithm::Ring).unwrap();
        for n in 2..=PLAN_CACHE_LEN {
            c.get(&allreduce(n), 4, 0, Algorithm::Ring).unwrap();
        }
        // Used again, so the oldest is now count 2's.
        assert!(Arc::ptr_eq(
            &first,
            &c.get(&allreduce(1), 4, 0, Algorithm::Ring).unwrap()
        ));
        c.get(&allreduce(1 << 20), 4, 0, Algorithm::Ring).unwrap();
        assert_eq!(c.plans.len(), PLAN_CACHE_LEN);
        let counts: Vec<usize> = c.plans.keys().map(|k| k.3).collect();
        assert!(counts.contains(&1) && !counts.contains(&2), "{counts:?}");
    }

    #[test]
    fn a_refused_spec_is_an_error_and_not_cached() {
        let mut c = PlanCache::default();
        assert!(c.get(&allreduce(8), 4, 9, Algorithm::Ring).is_err());
        assert!(c.plans.is_empty());
    }
}
