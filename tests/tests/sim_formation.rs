//! Formation in the simulator: ranks, peer tables, loss and duplication, determinism.

use std::time::Duration;

use nexar_proto::sim::{run_seeds, ClusterSim, Fault};
use nexar_proto::Event;
use nexar_tests::support::{check_formed, form, lan, lossy, FORMATION_LIMIT};

#[test]
fn forms_with_four_workers() {
    let mut c = ClusterSim::with_workers(1, 4, lan());
    let by_rank = form(&mut c).unwrap();
    assert_eq!(by_rank.len(), 4);
}

/// Ranks are exactly 0..N-1, each once; every worker holds the same peer table, naming
/// each rank's real address; the seed reports `ClusterFormed` once; for 1 to 32 workers.
#[test]
fn forms_with_1_2_3_8_and_32_workers() {
    for n in [1, 2, 3, 8, 32] {
        let mut c = ClusterSim::with_workers(u64::from(n), n, lan());
        let by_rank = form(&mut c).unwrap_or_else(|e| panic!("{n} workers: {e}"));
        assert_eq!(by_rank.len(), n as usize);
        // A complete mesh: each worker holds one connection per other rank, nothing else
        // (the seed's control connection aside).
        for w in &by_rank {
            let connections = c.node(*w).unwrap().stats().connections;
            assert_eq!(
                connections, n as usize,
                "{n} workers: {w} has {connections}"
            );
        }
        // Nothing happens afterwards: no late events anywhere.
        let before: Vec<usize> = c.workers.iter().map(|w| c.events(*w).len()).collect();
        c.run_until(Duration::from_secs(2), |_| false);
        let after: Vec<usize> = c.workers.iter().map(|w| c.events(*w).len()).collect();
        assert_eq!(before, after, "{n} workers: events after formation");
        check_formed(&c, &c.workers).unwrap();
    }
}

/// 10% loss, 5% duplication and reordering (jitter) on every link, 8 workers, 200 seeds.
#[test]
fn forms_under_loss_and_duplication_over_200_seeds() {
    run_seeds(200, |seed| {
        let link = lossy(0.10, 0.05, Duration::from_millis(2));
        let mut c = ClusterSim::with_workers(seed, 8, link);
        form(&mut c)?;
        if c.sim.elapsed() > FORMATION_LIMIT {
            return Err(format!("formed only after {:?}", c.sim.elapsed()));
        }
        let stats = c.sim.stats();
        if stats.dropped() == 0 {
            return Err("the link dropped nothing: the fault model is not in effect".into());
        }
        Ok(())
    });
}

/// A worker that cannot reach the seed at first (its connection attempt times out) keeps
/// dialling until it can, within its formation timeout (60 s, past the 40 s partition);
/// the others wait for it.
#[test]
fn a_worker_keeps_dialling_an_unreachable_seed() {
    let mut c = ClusterSim::with_workers(9, 4, lan());
    let late = c.workers[3];
    c.sim.partition(c.seed, late);
    let heal_at = Duration::from_secs(40); // past the 30 s QUIC idle timeout
    c.sim.schedule(heal_at, Fault::Heal(c.seed, late));
    let by_rank = form(&mut c).unwrap();
    assert_eq!(by_rank.len(), 4);
    assert!(c.sim.elapsed() > heal_at, "formed at {:?}", c.sim.elapsed());
    assert!(c
        .events(late)
        .iter()
        .all(|e| matches!(e, Event::Ready { .. })));
}

/// A seed that never answers: the worker gives up at the formation timeout (60 s by
/// default, in virtual time), not a moment earlier, with an error naming the seed's
/// address rather than a bare formation timeout; one whose seed answered is unaffected.
#[test]
fn a_worker_gives_up_on_a_silent_seed_at_the_formation_timeout() {
    let mut c = ClusterSim::with_workers(9, 2, lan());
    let silent = c.workers[1];
    c.sim.partition(c.seed, silent);
    let seed_addr = c.ticket().addr;
    let failed = |c: &ClusterSim| {
        c.events(silent).iter().find_map(|e| match e {
            Event::JoinFailed { error } => Some(error.clone()),
            _ => None,
        })
    };
    assert!(c.run_until(Duration::from_secs(90), |c| failed(c).is_some()));
    let at = c.sim.elapsed();
    match failed(&c) {
        Some(nexar_proto::JoinError::SeedUnreachable { addr, waited }) => {
            assert_eq!(addr, seed_addr);
            assert_eq!(waited, Duration::from_secs(60));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        at >= Duration::from_secs(60) && at < Duration::from_secs(61),
        "{at:?}"
    );
    // The worker the seed answered never fails as if the seed were silent.
    let other = c.workers[0];
    assert!(!c.events(other).iter().any(|e| matches!(
        e,
        Event::JoinFailed {
            error: nexar_proto::JoinError::SeedUnreachable { .. }
        }
    )));
}

/// One seed, two runs: the same trace hash, bit for bit. Another seed: another hash.
#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let run = |seed: u64| {
        let link = lossy(0.05, 0.02, Duration::from_millis(1));
        let mut c = ClusterSim::with_workers(seed, 4, link);
        form(&mut c).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        // A little traffic after formation, so the hash covers more than handshakes.
        c.run_until(Duration::from_millis(500), |_| false);
        (c.sim.trace_hash(), c.sim.elapsed(), c.sim.stats().delivered)
    };
    for seed in [3, 17] {
        assert_eq!(run(seed), run(seed), "seed {seed} is not reproducible");
    }
    assert_ne!(run(3).0, run(17).0, "different seeds gave one trace");
    assert_ne!(run(3).0, run(4).0, "neighbouring seeds gave one trace");
}
