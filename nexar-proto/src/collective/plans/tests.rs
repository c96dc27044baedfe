//! Every plan of every kind, run for all ranks at once in the mailbox, against a
//! sequential reference.
//!
//! Three element models: wrapping `u64` (exact results for the commutative ops), an
//! affine-map monoid (scans must keep rank order exactly), and `f64` with signed zeros
//! and NaN (all-reduce must give every rank the same bits; every reduction must give the
//! same bits whatever the delivery order).

use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::pipelined;
use crate::codec::{Algorithm, CollectiveKind, DType, ReduceOp};
use crate::collective::mailbox::{self, Affine, Model};
use crate::collective::plan::{Layout, Plan};
use crate::collective::select::{select, CollectiveConfig};
use crate::collective::spec::{self, algorithms, layout_for, reduces, step_bound, CollectiveSpec};

const OPS: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max];

/// What each rank should end with, computed the obvious sequential way: folds run left
/// to right in rank order.
fn reference<E: Model>(spec: &CollectiveSpec, inputs: &[Vec<E>]) -> Vec<Vec<E>> {
    let (p, c, root, op) = (inputs.len(), spec.count, spec.root as usize, spec.op);
    let fold = |ranks: std::ops::Range<usize>, len: usize| -> Vec<E> {
        (0..len)
            .map(|i| {
                let mut acc = E::identity(op);
                for r in ranks.clone() {
                    acc = E::combine(op, acc, inputs[r][i]);
                }
                acc
            })
            .collect()
    };
    let concat = || inputs.concat();
    (0..p)
        .map(|r| match spec.kind {
            CollectiveKind::AllReduce => fold(0..p, c),
            CollectiveKind::Broadcast => inputs[root].clone(),
            CollectiveKind::Reduce if r == root => fold(0..p, c),
            CollectiveKind::AllGather => concat(),
            CollectiveKind::ReduceScatter => fold(0..p, p * c)[r * c..(r + 1) * c].to_vec(),
            CollectiveKind::Gather if r == root => concat(),
            CollectiveKind::Scatter => inputs[root][r * c..(r + 1) * c].to_vec(),
            CollectiveKind::AllToAll => (0..p)
                .flat_map(|src| inputs[src][r * c..(r + 1) * c].to_vec())
                .collect(),
            CollectiveKind::Scan => fold(0..r + 1, c),
            CollectiveKind::ExclusiveScan => fold(0..r, c),
            _ => Vec::new(),
        })
        .collect()
}

/// Plans and layouts of every rank, checked for shape and against the step bound (which
/// some rank must reach: the bounds are tight).
fn plans_for(spec: &CollectiveSpec, world: u32, alg: Algorithm) -> (Vec<Plan>, Vec<Layout>) {
    let mut plans = Vec::new();
    let mut layouts = Vec::new();
    for rank in 0..world {
        let plan = spec::plan(spec, world, rank, alg).expect("valid spec");
        let layout = layout_for(spec, world, rank, alg).expect("valid spec");
        let shared = spec::layout(spec, world, rank);
        assert!(shared.buffer_len >= layout.buffer_len, "{spec:?} {alg:?}");
        assert_eq!(
            (&shared.input, &shared.output),
            (&layout.input, &layout.output)
        );
        assert_eq!(shared.fill_identity, layout.fill_identity);
        if let Err(e) = mailbox::check_shape(&plan, &layout, world) {
            panic!("{spec:?} world {world} rank {rank} {alg:?}: {e}");
        }
        plans.push(plan);
        layouts.push(layout);
    }
    let most = plans.iter().map(|p| p.steps.len()).max().unwrap_or(0);
    let bound = step_bound(spec.kind, alg, world);
    if alg == Algorithm::Pipelined {
        // A step per segment: the bound is reached at the most segments, 256 MiB.
        let segments = pipelined::segments(spec.count, spec.dtype.size());
        let want = if world > 1 {
            segments + world as usize - 2
        } else {
            0
        };
        assert_eq!(most, want, "{spec:?} {alg:?} {world}");
        assert!(most <= bound, "{spec:?} {alg:?} {world}");
    } else {
        assert_eq!(most, bound, "{spec:?} {alg:?} {world}");
    }
    (plans, layouts)
}

fn inputs<E>(layouts: &[Layout], rng: &mut ChaCha8Rng, gen: impl Fn(u64) -> E) -> Vec<Vec<E>> {
    let mut one = |l: &Layout| l.input.clone().map(|_| gen(rng.next_u64())).collect();
    layouts.iter().map(&mut one).collect()
}

fn same<E: Model>(a: &[E], b: &[E]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bits() == y.bits())
}

/// Runs one case in every model that applies and checks it; returns the messages sent.
fn check(spec: &CollectiveSpec, world: u32, alg: Algorithm, seed: u64) -> usize {
    let what = format!("{spec:?} world {world} {alg:?} seed {seed}");
    let (plans, layouts) = plans_for(spec, world, alg);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // Exact integers (odd factors, so products do not collapse to 0).
    let odd = spec.op == ReduceOp::Prod;
    let ints = inputs(&layouts, &mut rng, |x| if odd { x | 1 } else { x });
    let run = mailbox::run(&plans, &layouts, &ints, spec.op, 0xDEAD_BEEF, seed);
    let (got, messages) = run.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(got == reference(spec, &ints), "{what}: wrong u64 result");

    if matches!(
        spec.kind,
        CollectiveKind::Scan | CollectiveKind::ExclusiveScan
    ) {
        let maps = inputs(&layouts, &mut rng, |x| Affine(x | 1, x >> 7));
        let run = mailbox::run(&plans, &layouts, &maps, spec.op, Affine(3, 3), seed);
        let (got, _) = run.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            got == reference(spec, &maps),
            "{what}: scan out of rank order"
        );
    }

    if reduces(spec.kind) {
        // Signed zeros and NaN make operand order visible in the bits.
        let special = [0.0, -0.0, f64::NAN, 1.5, -2.25, 1e300];
        let floats = inputs(&layouts, &mut rng, |x| match x % 8 {
            k @ 0..=5 => special[k as usize],
            _ => (x >> 11) as f64 / 1e6 - 4e9,
        });
        let poison = f64::from_bits(0x7ff4_dead_beef_0000);
        let first = mailbox::run(&plans, &layouts, &floats, spec.op, poison, seed);
        let first = first.unwrap_or_else(|e| panic!("{what}: {e}")).0;
        let again = mailbox::run(&plans, &layouts, &floats, spec.op, poison, !seed);
        let again = again.unwrap_or_else(|e| panic!("{what}: {e}")).0;
        for (a, b) in first.iter().zip(&again) {
            assert!(same(a, b), "{what}: result depends on delivery order");
        }
        if spec.kind == CollectiveKind::AllReduce {
            for out in &first {
                assert!(same(out, &first[0]), "{what}: ranks disagree bitwise");
            }
        }
    }
    messages
}

fn spec_of(
    kind: CollectiveKind,
    dtype: DType,
    op: ReduceOp,
    count: usize,
    root: u32,
) -> CollectiveSpec {
    let op = if reduces(kind) { op } else { ReduceOp::None };
    let count = if kind == CollectiveKind::Barrier {
        0
    } else {
        count
    };
    CollectiveSpec {
        kind,
        dtype,
        op,
        count,
        root,
    }
}

/// Kinds whose `count` is per rank, so buffers grow with `world * count`: capped so that
/// a case stays small in memory while still covering `count < world` and uneven sizes.
fn capped(kind: CollectiveKind, count: usize, world: u32) -> usize {
    use CollectiveKind::*;
    match kind {
        AllGather | ReduceScatter | Gather | Scatter | AllToAll => {
            count.min(32768 / world as usize)
        }
        _ => count,
    }
}

/// Release builds (what CI runs) check every world and many random cases; a debug build
/// checks a sample, so that a plain `cargo test` stays quick.
const FULL: bool = !cfg!(debug_assertions);

/// Every world 1..=64, every kind and algorithm, a few small counts around the world
/// size (empty, fewer elements than ranks, uneven blocks).
#[test]
fn every_plan_for_every_world_small_counts() {
    let sampled = |w: &u32| FULL || *w <= 13 || [17, 31, 37, 61, 64].contains(w);
    for world in (1..=64u32).filter(sampled) {
        let w = world as usize;
        for &kind in CollectiveKind::ALL {
            for &alg in algorithms(kind) {
                for (i, count) in [0, 1, w.saturating_sub(1), w + 1, 2 * w + 3]
                    .into_iter()
                    .enumerate()
                {
                    let root = (world * 5 + i as u32) % world;
                    let op = OPS[i % OPS.len()];
                    let spec = spec_of(kind, DType::U64, op, count, root);
                    check(&spec, world, alg, u64::from(world) << 8 | i as u64);
                }
            }
        }
    }
}

fn world() -> impl Strategy<Value = u32> {
    let awkward = vec![3, 5, 6, 7, 11, 12, 13, 17, 24, 31, 37, 48, 61, 63, 64];
    prop_oneof![2 => 1u32..=64, 1 => prop::sample::select(awkward)]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..=70, 0usize..=4096, Just(4096)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if FULL { 384 } else { 32 }))]

    /// Random world, count, kind, algorithm (the selected one a quarter of the time),
    /// root, op, dtype and delivery order.
    #[test]
    fn plans_match_the_sequential_reference(
        world in world(),
        count in count(),
        kind in prop::sample::select(CollectiveKind::ALL),
        dtype in prop::sample::select(DType::ALL),
        op in prop::sample::select(&OPS[..]),
        pick in 0usize..8,
        root in any::<u32>(),
        seed in any::<u64>(),
    ) {
        let count = capped(kind, count, world);
        let spec = spec_of(kind, dtype, op, count, root % world);
        let algs = algorithms(kind);
        let alg = if pick < 2 {
            select(&spec, world, &CollectiveConfig::default())
        } else {
            algs[pick % algs.len()]
        };
        check(&spec, world, alg, seed);
    }
}

#[test]
fn blocks_partition_evenly() {
    use super::blocks;
    assert_eq!(blocks(10, 4), [0..3, 3..6, 6..8, 8..10]);
    assert_eq!(blocks(2, 4), [0..1, 1..2, 2..2, 2..2]);
    assert_eq!(blocks(0, 3), [0..0, 0..0, 0..0]);
    for count in 0..50 {
        for parts in 1..20 {
            let b = blocks(count, parts);
            assert_eq!(b.len(), parts);
            assert_eq!(b.last().map(|r| r.end), Some(count));
            assert!(b
                .windows(2)
                .all(|w| w[0].end == w[1].start && w[0].len() >= w[1].len()));
            assert!(b[0].len() - b[parts - 1].len() <= 1);
        }
    }
}

#[test]
fn bad_specs_are_typed_errors() {
    use spec::PlanError;
    let s = spec_of(CollectiveKind::Broadcast, DType::F32, ReduceOp::None, 4, 3);
    assert_eq!(
        spec::plan(&s, 3, 0, Algorithm::BinomialTree),
        Err(PlanError::Root { root: 3, world: 3 })
    );
    assert_eq!(
        spec::plan(&s, 4, 4, Algorithm::BinomialTree),
        Err(PlanError::Rank { rank: 4, world: 4 })
    );
    assert_eq!(
        spec::plan(&s, 0, 0, Algorithm::BinomialTree),
        Err(PlanError::EmptyWorld)
    );
    let kind = CollectiveKind::Broadcast;
    let algorithm = Algorithm::Ring;
    assert_eq!(
        spec::plan(&s, 4, 0, algorithm),
        Err(PlanError::Unsupported { kind, algorithm })
    );
    let mut r = spec_of(CollectiveKind::AllReduce, DType::F32, ReduceOp::Sum, 4, 0);
    r.op = ReduceOp::None;
    let kind = CollectiveKind::AllReduce;
    assert_eq!(
        spec::plan(&r, 4, 0, Algorithm::Ring),
        Err(PlanError::MissingOp { kind })
    );
    let mut b = spec_of(CollectiveKind::Barrier, DType::U8, ReduceOp::None, 0, 0);
    b.count = 1;
    let err = spec::plan(&b, 4, 0, Algorithm::Dissemination);
    assert_eq!(err, Err(PlanError::BarrierCount { count: 1 }));
    let huge = spec_of(
        CollectiveKind::AllGather,
        DType::F64,
        ReduceOp::None,
        usize::MAX / 64,
        0,
    );
    assert!(matches!(
        spec::plan(&huge, 8, 0, Algorithm::Ring),
        Err(PlanError::TooLarge { .. })
    ));
    assert_eq!(step_bound(CollectiveKind::Barrier, Algorithm::Ring, 8), 0);
}

/// No rank may leave a barrier before every rank has entered it: follow who has heard
/// from whom (a message carries everything its sender had heard when it sent) through
/// every rank's plan, for both barrier algorithms and every world up to 40.
#[test]
fn every_barrier_plan_hears_from_every_rank() {
    let b = spec_of(CollectiveKind::Barrier, DType::U8, ReduceOp::None, 0, 0);
    for &algorithm in algorithms(CollectiveKind::Barrier) {
        for world in 1..=40u32 {
            let plans: Vec<Plan> = (0..world)
                .map(|r| spec::plan(&b, world, r, algorithm).expect("a barrier plan"))
                .collect();
            let steps = plans.iter().map(|p| p.steps.len()).max().unwrap_or(0);
            assert!(steps <= step_bound(CollectiveKind::Barrier, algorithm, world));
            let mut heard: Vec<Vec<bool>> = (0..world as usize)
                .map(|r| (0..world as usize).map(|s| s == r).collect())
                .collect();
            for k in 0..steps {
                let before = heard.clone();
                for (r, plan) in plans.iter().enumerate() {
                    for send in plan.steps.get(k).map_or(&[][..], |s| &s.sends[..]) {
                        let to = &mut heard[send.peer as usize];
                        for (t, &h) in to.iter_mut().zip(&before[r]) {
                            *t |= h;
                        }
                    }
                }
            }
            for (r, h) in heard.iter().enumerate() {
                let missing = h.iter().filter(|&&x| !x).count();
                assert_eq!(
                    missing, 0,
                    "{algorithm:?} world {world}: rank {r} left early"
                );
            }
        }
    }
}
