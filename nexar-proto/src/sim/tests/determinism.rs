//! Reproducibility (trace hash, per-link streams, seeds) and the stepping API.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::*;
use crate::sim::{run_seeds, Fault, LossModel, SimHost, TraceEvent};
use crate::Transmit;

/// A lossy, jittery, duplicating, rate-limited three-host run with scripted faults.
fn busy_run(seed: u64) -> Sim<PingHost> {
    let mut sim = Sim::new(SimConfig {
        seed,
        default_link: LinkConfig {
            latency: ms(3),
            jitter: ms(7),
            loss: LossModel::Bernoulli(0.1),
            duplicate: 0.05,
            bandwidth_bps: Some(50_000_000),
            queue_bytes: Some(20_000),
            ..LinkConfig::default()
        },
        trace_log: 64,
        ..SimConfig::default()
    });
    let t0 = sim.now();
    let a = sim.add_host(doc_addr(0), PingHost::pinger(doc_addr(1), t0, ms(2), 300));
    let b = sim.add_host(
        doc_addr(1),
        PingHost::pinger(doc_addr(2), t0, ms(3), 200).payload(900),
    );
    let c = sim.add_host(doc_addr(2), PingHost::pinger(doc_addr(0), t0, ms(1), 500));
    sim.schedule(ms(100), Fault::Partition(a, b));
    sim.schedule(ms(150), Fault::Pause(c, ms(40)));
    sim.schedule(ms(250), Fault::HealAll);
    sim.schedule(ms(300), Fault::Crash(b));
    sim.schedule(ms(350), Fault::Restart(b, PingHost::echo()));
    run_to_end(&mut sim);
    sim
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let (first, second) = (busy_run(7), busy_run(7));
    assert_eq!(first.trace_hash(), second.trace_hash());
    assert_eq!(first.stats(), second.stats());
    assert!(first.stats().dropped_loss > 0 && first.stats().duplicated > 0);
    let log: Vec<_> = first.trace_log().copied().collect();
    assert_eq!(
        log.len(),
        64,
        "the log keeps only the configured number of entries"
    );
    assert_eq!(log, second.trace_log().copied().collect::<Vec<_>>());
}

#[test]
fn different_seeds_give_different_traces() {
    let hashes: Vec<[u8; 16]> = (0..4).map(|s| busy_run(s).trace_hash()).collect();
    for i in 0..hashes.len() {
        for j in i + 1..hashes.len() {
            assert_ne!(hashes[i], hashes[j], "seeds {i} and {j}");
        }
    }
}

#[test]
fn adding_a_host_does_not_shift_other_links_randomness() {
    let link = LinkConfig {
        jitter: ms(20),
        loss: LossModel::Bernoulli(0.2),
        ..LinkConfig::default()
    };
    let arrivals = |extra_host: bool| {
        let mut sim = Sim::new(SimConfig {
            default_link: link,
            ..SimConfig::with_seed(11)
        });
        let t0 = sim.now();
        let a = sim.add_host(doc_addr(0), PingHost::pinger(doc_addr(1), t0, ms(10), 100));
        let b = sim.add_host(doc_addr(1), PingHost::echo());
        if extra_host {
            // Talks to a over its own links, so a's and b's links must not notice.
            sim.add_host(doc_addr(2), PingHost::pinger(doc_addr(0), t0, ms(3), 300));
        }
        run_to_end(&mut sim);
        // Compare virtual times: each simulation has its own base instant.
        let t0 = sim.base();
        let seen: Vec<_> = sim.host(b).pings_seen.iter().map(|p| p.1 - t0).collect();
        let replies: Vec<_> = sim
            .host(a)
            .replies
            .iter()
            .map(|r| (r.0, r.1 - t0))
            .collect();
        (seen, replies)
    };
    assert_eq!(arrivals(false), arrivals(true));
}

#[test]
fn run_seeds_drives_whole_simulations() {
    run_seeds(5, |seed| {
        let (mut sim, a, _b) = pair(seed, LinkConfig::with_latency(ms(4)), true, 10);
        run_to_end(&mut sim);
        match sim.host(a).replies.len() {
            10 => Ok(()),
            n => Err(format!("{n} replies")),
        }
    });
}

#[test]
fn run_seeds_names_the_seed_of_a_failing_simulation() {
    let caught = catch_unwind(|| {
        run_seeds(3, |seed| {
            let (mut sim, _a, b) = pair(seed, LinkConfig::default(), true, 10);
            sim.crash(b);
            run_to_end(&mut sim);
            assert_eq!(sim.host(b).pings_seen.len(), 10, "b heard nothing");
            Ok(())
        })
    })
    .unwrap_err();
    let message = caught.downcast_ref::<String>().expect("formatted panic");
    assert!(message.contains("b heard nothing"), "{message}");
    assert!(message.contains("NEXAR_SIM_SEED="), "{message}");
}

#[test]
fn stepping_moves_the_clock_event_by_event() {
    let mut sim: Sim<PingHost> = Sim::new(SimConfig::default());
    assert!(!sim.step(), "an empty world has nothing to do");
    sim.run_until(ms(5));
    assert_eq!(
        sim.elapsed(),
        ms(5),
        "run_until moves the clock even when idle"
    );
    assert_eq!(sim.now(), sim.base() + ms(5));

    let (mut sim, a, b) = pair(0, LinkConfig::with_latency(ms(3)), true, 3);
    assert!(sim.step(), "a's first timer");
    assert_eq!((sim.elapsed(), sim.stats().sent), (ms(0), 1));
    assert!(sim.step(), "the ping reaches b");
    assert_eq!(sim.elapsed(), ms(3));
    assert_eq!(sim.host(b).pings_seen.len(), 1);
    let got_reply = sim.run_until_cond(ms(100), |sim| !sim.host(a).replies.is_empty());
    assert!(got_reply);
    assert_eq!(
        sim.elapsed(),
        ms(6),
        "stops at the step that made the predicate true"
    );
    let never = sim.run_until_cond(ms(100), |sim| sim.host(a).replies.len() > 3);
    assert!(!never);
    assert_eq!(sim.elapsed(), ms(100));
}

#[test]
fn kick_sends_a_commanded_datagram_at_once() {
    let mut sim = Sim::new(SimConfig::default());
    let a = sim.add_host(doc_addr(0), PingHost::echo());
    let b = sim.add_host(doc_addr(1), PingHost::echo());
    sim.run_until(ms(10));
    let (now, to) = (sim.now(), sim.addr(b));
    sim.host_mut(a).ping_now(now, to);
    sim.kick(a);
    assert_eq!(sim.stats().sent, 1, "sent before any step");
    assert_eq!(sim.next_event_time(), Some(ms(11)));
    // Without kick, the next step drains the host first, at the same virtual time.
    let a_addr = sim.addr(a);
    sim.host_mut(b).ping_now(now, a_addr);
    sim.run_until(ms(20));
    assert_eq!(sim.host(a).replies.len(), 1);
    assert_eq!(sim.host(b).replies.len(), 1);
    assert_eq!(sim.host(b).sent_at, [sim.base() + ms(10)]);
}

#[test]
fn the_trace_records_each_kind_of_event() {
    let mut sim = Sim::new(SimConfig {
        trace_log: 100,
        ..SimConfig::default()
    });
    let t0 = sim.now();
    let a = sim.add_host(doc_addr(0), PingHost::pinger(doc_addr(1), t0, ms(10), 1));
    let b = sim.add_host(doc_addr(1), PingHost::echo());
    sim.partition_oneway(b, a);
    run_to_end(&mut sim);
    let events: Vec<String> = sim.trace_log().map(|e| e.to_string()).collect();
    let kinds: Vec<_> = sim.trace_log().map(|e| e.event).collect();
    assert!(matches!(kinds[0], TraceEvent::Fault(_)), "{events:#?}");
    assert_eq!(kinds[1], TraceEvent::Timeout { host: a }, "{events:#?}");
    assert_eq!(
        kinds[3],
        TraceEvent::Deliver {
            from: a,
            to: b,
            len: 64
        },
        "{events:#?}"
    );
    assert!(
        events
            .last()
            .unwrap()
            .contains("drop h1 -> h0 64 B (partition)"),
        "{events:#?}"
    );
}

/// A host whose timer is always in the past: time can never move on.
struct Stuck(Instant);

impl SimHost for Stuck {
    fn handle_datagram(&mut self, _: Instant, _: std::net::SocketAddr, _: Option<u8>, _: &[u8]) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_transmit(&mut self, _: Instant, _: &mut Vec<u8>) -> Option<Transmit> {
        None
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        Some(self.0)
    }
}

#[test]
fn a_livelocked_host_is_reported_not_hung() {
    let mut sim = Sim::new(SimConfig {
        livelock_limit: 100,
        ..SimConfig::with_seed(42)
    });
    let base = sim.base();
    sim.add_host(doc_addr(0), Stuck(base));
    let caught = catch_unwind(AssertUnwindSafe(|| sim.run_until(ms(10)))).err();
    let message = caught
        .as_ref()
        .and_then(|p| p.downcast_ref::<String>())
        .map(String::as_str)
        .unwrap_or("no panic");
    assert!(message.contains("seed 42"), "{message}");
}
