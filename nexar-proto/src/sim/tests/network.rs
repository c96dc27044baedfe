//! The link model: latency, jitter, loss, duplication, MTU, bandwidth, routing.

use super::*;
use crate::sim::{DropReason, LossModel};

#[test]
fn latency_is_respected_exactly_without_jitter() {
    let (mut sim, a, _b) = pair(1, LinkConfig::with_latency(ms(10)), true, 20);
    run_to_end(&mut sim);
    let a = sim.host(a);
    assert_eq!(a.replies.len(), 20);
    for &(seq, at) in &a.replies {
        assert_eq!(at - a.sent_at[seq as usize], ms(20), "ping {seq}");
    }
    assert_conserved(&sim);
}

#[test]
fn jitter_stays_in_bounds_and_reorders() {
    let link = LinkConfig {
        latency: ms(10),
        jitter: ms(30), // far more than the 10 ms between pings
        ..LinkConfig::default()
    };
    let (mut sim, a, b) = pair(2, link, true, 200);
    run_to_end(&mut sim);
    for &(seq, at) in &sim.host(a).replies {
        let rtt = at - sim.host(a).sent_at[seq as usize];
        assert!(rtt >= ms(20) && rtt < ms(80), "ping {seq}: rtt {rtt:?}");
    }
    let seen: Vec<u32> = sim.host(b).pings_seen.iter().map(|p| p.0).collect();
    assert_eq!(seen.len(), 200);
    assert!(
        seen.windows(2).any(|w| w[0] > w[1]),
        "jitter should reorder"
    );
}

#[test]
fn loss_matches_the_configured_rate() {
    let link = LinkConfig {
        loss: LossModel::Bernoulli(0.2),
        ..LinkConfig::default()
    };
    let (mut sim, _a, b) = pair(3, link, false, 5000);
    run_to_end(&mut sim);
    let got = sim.host(b).pings_seen.len() as u64;
    // Expect 4000; one standard deviation is about 28.
    assert!((3850..=4150).contains(&got), "{got} of 5000 arrived");
    assert_eq!(sim.stats().dropped_loss, 5000 - got);
    assert_conserved(&sim);
}

#[test]
fn gilbert_elliott_loss_comes_in_bursts() {
    let link = LinkConfig {
        loss: LossModel::GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.2,
            loss_good: 0.0,
            loss_bad: 1.0,
        },
        ..LinkConfig::default()
    };
    let n = 20_000;
    let (mut sim, _a, b) = pair(4, link, false, n);
    run_to_end(&mut sim);
    let mut arrived = vec![false; n as usize];
    for p in &sim.host(b).pings_seen {
        arrived[p.0 as usize] = true;
    }
    let lost = arrived.iter().filter(|x| !**x).count();
    let bursts = arrived.windows(2).filter(|w| w[0] && !w[1]).count().max(1);
    let rate = lost as f64 / n as f64;
    let mean_burst = lost as f64 / bursts as f64;
    // Long-run rate 0.01 / 0.21 = 4.8%, mean burst 1 / 0.2 = 5 datagrams; Bernoulli loss at
    // that rate would give bursts of about 1.05.
    assert!((0.03..0.07).contains(&rate), "loss rate {rate}");
    assert!((3.5..7.0).contains(&mean_burst), "mean burst {mean_burst}");
}

#[test]
fn duplication_delivers_twice() {
    let link = LinkConfig {
        duplicate: 1.0,
        ..LinkConfig::default()
    };
    let (mut sim, a, b) = pair(5, link, false, 50);
    run_to_end(&mut sim);
    assert_eq!(sim.host(b).pings_seen.len(), 100);
    assert_eq!(sim.host(a).replies.len(), 100, "each copy is answered");
    assert_eq!(sim.host(a).replied_seqs().len(), 50);
    assert_eq!(sim.stats().duplicated, 50);
    assert_conserved(&sim);
}

#[test]
fn datagrams_over_the_mtu_are_dropped() {
    let link = LinkConfig {
        mtu: 1200,
        ..LinkConfig::default()
    };
    for (payload, expect_through) in [(1200, true), (1201, false)] {
        let (mut sim, a, b) = pair_with(6, link, true, |peer, start| {
            PingHost::pinger(peer, start, ms(10), 10).payload(payload)
        });
        run_to_end(&mut sim);
        let (seen, drops) = (sim.host(b).pings_seen.len(), sim.stats().dropped_mtu);
        if expect_through {
            assert_eq!((seen, drops), (10, 0));
            assert_eq!(sim.host(a).replies.len(), 10);
        } else {
            assert_eq!((seen, drops), (0, 10));
        }
    }
}

#[test]
fn bandwidth_serialises_a_burst() {
    let link = LinkConfig {
        latency: ms(5),
        bandwidth_bps: Some(8_000_000), // 1000-byte datagrams take 1 ms each
        ..LinkConfig::default()
    };
    let (mut sim, _a, b) = pair_with(7, link, false, |peer, start| {
        PingHost::pinger(peer, start, ms(100), 10)
            .payload(1000)
            .batch(10, false)
    });
    run_to_end(&mut sim);
    let base = sim.base();
    let arrivals: Vec<Duration> = sim.host(b).pings_seen.iter().map(|p| p.1 - base).collect();
    let expected: Vec<Duration> = (1..=10).map(|k| ms(5 + k)).collect();
    assert_eq!(arrivals, expected);
}

#[test]
fn gso_batches_are_split_into_datagrams() {
    let (mut sim, a, b) = pair_with(8, LinkConfig::default(), true, |peer, start| {
        PingHost::pinger(peer, start, ms(10), 30)
            .payload(100)
            .batch(3, true)
    });
    run_to_end(&mut sim);
    assert_eq!(sim.host(a).transmits, 10, "one GSO transmit per tick");
    assert_eq!(sim.host(b).pings_seen.len(), 30);
    assert!(sim.host(b).pings_seen.iter().all(|p| p.2 == sim.addr(a)));
    assert_eq!(sim.host(a).replies.len(), 30);
    assert_eq!(sim.stats().sent, 60);
}

#[test]
fn ecn_bits_are_carried() {
    let (mut sim, _a, b) = pair_with(9, LinkConfig::default(), true, |peer, start| {
        PingHost::pinger(peer, start, ms(10), 1).ecn(0b10)
    });
    run_to_end(&mut sim);
    assert_eq!(sim.host(b).last_ecn, Some(0b10));
}

#[test]
fn unknown_destinations_are_dropped_and_counted() {
    let mut sim = Sim::new(SimConfig::with_seed(10));
    let start = sim.now();
    let a = sim.add_host(
        doc_addr(0),
        PingHost::pinger(doc_addr(99), start, ms(10), 5),
    );
    run_to_end(&mut sim);
    assert_eq!(sim.stats().dropped_unknown, 5);
    assert_eq!(sim.stats().dropped_by(DropReason::UnknownAddress), 5);
    assert!(sim.host(a).replies.is_empty());
}
