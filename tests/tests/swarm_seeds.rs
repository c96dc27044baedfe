//! The swarm on fixed seeds: generated workloads and faults, every invariant checked
//! (`NEXAR_SWARM_SEEDS=N` runs more). Fresh seeds run in CI through the `swarm` binary.

use nexar_tests::swarm::{run_seed, short_hash, Progress};

/// Seeds known to pass on this tree (seeds the swarm found failing are in
/// `swarm_regressions.rs`, with the bug each found).
const SEEDS: std::ops::Range<u64> = 1040..1079;

#[test]
fn fixed_seeds_pass() {
    let count: u64 = std::env::var("NEXAR_SWARM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEEDS.end - SEEDS.start);
    let progress = Progress::default();
    for seed in SEEDS.start..SEEDS.start + count {
        let r = run_seed(seed, &progress);
        assert!(
            r.passed(),
            "swarm seed {seed}: {}\nscenario: {:?}\nlast events:\n{}\nreplay: cargo run \
             --release -p nexar-tests --bin swarm -- --seeds 1 --from {seed}",
            r.outcome.violation.as_deref().unwrap_or("?"),
            r.scenario,
            r.outcome.recent.join("\n")
        );
    }
}

/// Same seed, same run: bit for bit the same trace, twice.
#[test]
fn a_seed_replays_to_the_same_trace() {
    for seed in [1041, 1047, 1053] {
        let a = run_seed(seed, &Progress::default());
        let b = run_seed(seed, &Progress::default());
        assert_eq!(
            a.outcome.trace_hash,
            b.outcome.trace_hash,
            "seed {seed}: trace {} then {}",
            short_hash(&a.outcome.trace_hash),
            short_hash(&b.outcome.trace_hash)
        );
        assert_eq!(a.outcome.violation, b.outcome.violation);
        assert_eq!(a.outcome.ops, b.outcome.ops);
    }
}
