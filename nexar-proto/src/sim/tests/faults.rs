//! Partitions, crashes, restarts and pauses, applied now or scheduled.

use std::net::SocketAddr;
use std::time::Instant;

use super::*;
use crate::sim::Fault;

/// Both hosts ping each other every 10 ms for 1 s (a from 0 ms, b from 5 ms), 1 ms links.
fn mutual(seed: u64) -> (Sim<PingHost>, HostId, HostId) {
    let mut sim = Sim::new(SimConfig::with_seed(seed));
    let t0 = sim.now();
    let a = sim.add_host(doc_addr(0), PingHost::pinger(doc_addr(1), t0, ms(10), 100));
    let b = sim.add_host(
        doc_addr(1),
        PingHost::pinger(doc_addr(0), t0 + ms(5), ms(10), 100),
    );
    (sim, a, b)
}

/// How many of `pings` (sequence, arrival, sender) were *sent* in `[from, to)`, given the
/// sender's 10 ms schedule starting at `offset`.
fn sent_in(pings: &[(u32, Instant, SocketAddr)], offset: u64, from: u64, to: u64) -> usize {
    pings
        .iter()
        .filter(|p| (from..to).contains(&(offset + 10 * u64::from(p.0))))
        .count()
}

#[test]
fn two_way_partition_cuts_both_directions_until_healed() {
    let (mut sim, a, b) = mutual(20);
    sim.schedule(ms(200), Fault::Partition(a, b));
    sim.schedule(ms(500), Fault::Heal(a, b));
    run_to_end(&mut sim);
    let (ha, hb) = (sim.host(a), sim.host(b));
    assert_eq!(sent_in(&hb.pings_seen, 0, 200, 500), 0, "a -> b cut");
    assert_eq!(sent_in(&ha.pings_seen, 5, 200, 500), 0, "b -> a cut");
    assert_eq!(hb.pings_seen.len(), 70);
    assert_eq!(ha.pings_seen.len(), 70);
    assert_eq!(ha.replies.len(), 70);
    assert_eq!(sim.stats().dropped_partition, 60);
    assert_conserved(&sim);
}

#[test]
fn one_way_partition_cuts_one_direction() {
    let (mut sim, a, b) = mutual(21);
    // Cut between a's pings at 190 and 200 ms (b's 195 ms ping is answered at 196 ms),
    // heal between a's pings at 490 and 500 ms.
    sim.run_until(ms(198));
    sim.partition_oneway(a, b);
    sim.run_until(ms(498));
    sim.heal_oneway(a, b);
    run_to_end(&mut sim);
    let (ha, hb) = (sim.host(a), sim.host(b));
    assert_eq!(sent_in(&hb.pings_seen, 0, 200, 500), 0, "a -> b cut");
    assert_eq!(ha.pings_seen.len(), 100, "b -> a still works");
    // b's pings in the window reached a, but a's pongs to them were cut.
    assert_eq!(hb.replies.len(), 70);
    assert_eq!(ha.replies.len(), 70);
}

#[test]
fn heal_all_lifts_every_partition() {
    let (mut sim, a, b) = mutual(22);
    sim.partition(a, b);
    sim.partition_oneway(b, a);
    sim.run_until(ms(298));
    sim.heal_all();
    run_to_end(&mut sim);
    assert_eq!(sim.host(b).pings_seen.len(), 70);
    assert_eq!(sim.host(a).pings_seen.len(), 70);
}

#[test]
fn crash_drops_and_restart_resumes_with_a_new_incarnation() {
    let (mut sim, a, b) = pair(23, LinkConfig::default(), true, 100);
    sim.schedule(ms(200), Fault::Crash(b));
    sim.schedule(ms(500), Fault::Restart(b, PingHost::echo()));
    sim.run_until(ms(300));
    assert!(sim.is_crashed(b));
    assert_eq!(
        sim.host(b).pings_seen.len(),
        20,
        "the dead incarnation is frozen"
    );
    run_to_end(&mut sim);
    assert!(!sim.is_crashed(b));
    assert_eq!(
        sim.host(b).pings_seen.len(),
        50,
        "the new incarnation starts fresh"
    );
    assert_eq!(sim.host(a).replies.len(), 70);
    assert_eq!(sim.stats().dropped_crash, 30);
    assert_conserved(&sim);
}

#[test]
fn a_crashed_host_gets_no_timers() {
    let (mut sim, a, b) = mutual(24);
    sim.run_until(ms(100));
    sim.crash(b);
    run_to_end(&mut sim);
    assert_eq!(sim.host(b).sent_at.len(), 10, "b stopped pinging at 100 ms");
    assert_eq!(sim.host(a).sent_at.len(), 100);
}

#[test]
fn pause_buffers_input_and_delivers_it_on_resume() {
    let (mut sim, a, b) = mutual(25);
    sim.schedule(ms(200), Fault::Pause(b, ms(300)));
    sim.run_until(ms(300));
    assert!(sim.is_paused(b));
    run_to_end(&mut sim);
    let (ha, hb) = (sim.host(a), sim.host(b));
    let t0 = sim.base();
    // Nothing lost: a's pings from the pause were buffered and answered at 500 ms.
    assert_eq!(hb.pings_seen.len(), 100);
    let late: Vec<_> = hb.pings_seen[20..50].iter().map(|p| p.1 - t0).collect();
    assert!(late.iter().all(|t| *t == ms(500)), "{late:?}");
    assert_eq!(ha.replies.len(), 100);
    // b's own timer did not fire while paused; the overdue tick fires on resume.
    let b_sends: Vec<_> = hb.sent_at.iter().map(|t| *t - t0).collect();
    assert!(!b_sends.iter().any(|t| *t > ms(200) && *t < ms(500)));
    assert!(b_sends.contains(&ms(500)) && b_sends.contains(&ms(510)));
    assert_eq!(sim.stats().dropped(), 0);
}

#[test]
fn a_full_socket_buffer_drops_while_paused() {
    let mut sim = Sim::new(SimConfig {
        socket_buffer: 10 * 64,
        ..SimConfig::with_seed(26)
    });
    let t0 = sim.now();
    let a = sim.add_host(doc_addr(0), PingHost::pinger(doc_addr(1), t0, ms(10), 100));
    let b = sim.add_host(doc_addr(1), PingHost::echo());
    sim.run_until(ms(200));
    sim.pause(b, ms(300));
    run_to_end(&mut sim);
    assert_eq!(sim.stats().dropped_socket_buffer, 20, "30 arrived, 10 fit");
    assert_eq!(sim.host(b).pings_seen.len(), 80);
    assert_eq!(sim.host(a).replies.len(), 80);
}

#[test]
fn resume_ends_a_pause_early_and_crash_loses_the_buffer() {
    let (mut sim, a, b) = pair(27, LinkConfig::default(), true, 100);
    sim.run_until(ms(200));
    sim.pause(b, ms(10_000));
    sim.run_until(ms(300));
    sim.resume(b);
    assert!(!sim.is_paused(b));
    assert_eq!(
        sim.host(b).pings_seen.len(),
        30,
        "buffered ones delivered at once"
    );
    sim.pause(b, ms(10_000));
    sim.run_until(ms(400));
    sim.crash(b);
    assert_eq!(
        sim.stats().dropped_crash,
        10,
        "the buffer died with the host"
    );
    sim.run_until(ms(2000));
    assert_eq!(
        sim.next_event_time(),
        None,
        "the cancelled resume left no event"
    );
    assert_eq!(sim.host(a).replies.len(), 30);
}

#[test]
fn a_scheduled_link_change_applies_at_its_time() {
    let (mut sim, a, b) = pair(28, LinkConfig::default(), true, 100);
    let slow = LinkConfig::with_latency(ms(50));
    sim.schedule(
        ms(500),
        Fault::SetLink {
            from: a,
            to: b,
            config: slow,
        },
    );
    run_to_end(&mut sim);
    let ha = sim.host(a);
    for &(seq, at) in &ha.replies {
        let rtt = at - ha.sent_at[seq as usize];
        let expected = if seq < 50 { ms(2) } else { ms(51) };
        assert_eq!(rtt, expected, "ping {seq}");
    }
    assert_eq!(sim.link(a, b), slow);
    assert_eq!(sim.link(b, a), LinkConfig::default());
}
