//! Unauthenticated attackers against the seed in the simulator: strangers who finish TLS
//! and stream partial frames, open streams they are not granted, crowd one address, or
//! flood Initials. Each limit is probed exactly at it and one past it, honest joiners still
//! join (before and after formation), and what the seed buffers stays bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::{Hello, Limits, Message, RejectReason, HEADER_LEN};
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Command, Event, NodeConfig, NodeStats, OpId, Outcome};
use nexar_tests::collectives::wait_all;
use nexar_tests::rogue::{Behaviour, ForgingProxy, InitialFlood, RogueClient, StatusHandle};
use nexar_tests::support::{check_formed, lan, FORMATION_LIMIT};

/// The largest Hello payload the default limits admit.
fn hello_max() -> u32 {
    Hello::max_payload_len(&Limits::default())
}

/// The seed's `JoinerRejected` reasons for joiners at `remote`.
fn rejections(c: &ClusterSim, remote: SocketAddr) -> Vec<RejectReason> {
    c.events(c.seed)
        .iter()
        .filter_map(|e| match e {
            Event::JoinerRejected { remote: r, reason } if *r == remote => Some(*reason),
            _ => None,
        })
        .collect()
}

fn seed_stats(c: &ClusterSim) -> NodeStats {
    c.node(c.seed).expect("the seed").stats()
}

/// A rogue host with `n` connections behaving alike.
fn crowd(
    c: &mut ClusterSim,
    key: u8,
    n: usize,
    behaviour: Behaviour,
) -> (HostId, Vec<StatusHandle>) {
    let (pin, addr, now) = (c.ticket().pin, c.ticket().addr, c.sim.now());
    let (rogue, statuses) = RogueClient::dial_many([key; 32], pin, addr, now, behaviour, n);
    (c.add_custom(|_| Box::new(rogue)), statuses)
}

/// The max-size Hello: every field at its largest. The proof is wrong (no secret).
fn max_hello_frame() -> Bytes {
    let hello = Hello {
        version: nexar_proto::PROTOCOL_VERSION,
        join_proof: [0; 32],
        csr_der: Bytes::from(vec![0x30; Limits::default().max_cert_len as usize]),
        listen_addr: "[2001:db8::1]:9000".parse().unwrap(),
        requested_rank: Some(u32::MAX),
        incarnation: u64::MAX,
    };
    Message::Hello(hello).to_frame()
}

/// The pre-proof frame limit is exactly the largest Hello: a whole Hello of that size
/// reaches the proof check (and fails it: `BadProof`), a header one byte past it is
/// refused at once as `FrameTooLarge` naming the length.
#[test]
fn hello_frame_limit_exactly_at_and_one_past() {
    let frame = max_hello_frame();
    assert_eq!(frame.len(), HEADER_LEN + hello_max() as usize);
    // Far below the 16 MiB limit for members.
    assert!(hello_max() < 20 << 10, "{}", hello_max());

    let mut c = ClusterSim::new(31, 1, lan());
    let (at, at_status) = crowd(&mut c, 0xb1, 1, Behaviour::Write(frame.to_vec()));
    let (past, past_status) = crowd(
        &mut c,
        0xb2,
        1,
        Behaviour::oversized_header(hello_max() + 1),
    );
    let (at_addr, past_addr) = (c.sim.addr(at), c.sim.addr(past));
    let done = c.run_until(Duration::from_secs(5), |c| {
        !rejections(c, at_addr).is_empty() && !rejections(c, past_addr).is_empty()
    });
    assert!(done, "not both rejected by {:?}", c.sim.elapsed());
    assert_eq!(rejections(&c, at_addr), vec![RejectReason::BadProof]);
    assert_eq!(rejections(&c, past_addr), vec![RejectReason::FrameTooLarge]);
    // Both long before the join deadline.
    assert!(
        c.sim.elapsed() < Duration::from_secs(1),
        "{:?}",
        c.sim.elapsed()
    );
    assert_eq!(at_status[0].borrow().written, frame.len());
    assert!(past_status[0].borrow().connected);
}

/// Before the proof the seed grants one unidirectional stream (control) and no
/// bidirectional one, however hard a stranger tries; a half-frame on it holds at most one
/// Hello's worth in the seed's decoder until the join deadline.
#[test]
fn strangers_get_one_stream_and_no_bidi() {
    let mut c = ClusterSim::new(32, 1, lan());
    let half = Behaviour::HalfFrames {
        claim: hello_max(),
        send: hello_max() as usize - 1,
    };
    let (_, halves) = crowd(&mut c, 0xc1, 3, half);
    let (_, bidi) = crowd(&mut c, 0xc2, 1, Behaviour::OpenBidi);
    c.run_until(Duration::from_secs(1), |_| false);
    for s in &halves {
        let s = s.borrow();
        assert!(s.connected);
        assert_eq!(s.uni_opened, 1, "{s:?}");
        assert!(!s.bidi_opened);
    }
    assert!(bidi[0].borrow().connected);
    assert!(!bidi[0].borrow().bidi_opened);
    let stats = seed_stats(&c);
    assert_eq!(stats.unproven_connections, 4);
    let per_conn = HEADER_LEN + hello_max() as usize;
    assert!(
        stats.buffered_bytes <= 3 * per_conn,
        "{} > 3 x {per_conn}",
        stats.buffered_bytes
    );
}

/// The per-address limit, exactly at it (nobody evicted) and one past (the oldest is).
#[test]
fn per_address_limit_exactly_at_and_one_past() {
    for (n, evicted) in [(8usize, 0u64), (9, 1)] {
        let mut c = ClusterSim::new_with(33, 1, lan(), |mut config: NodeConfig| {
            config.max_unproven_per_ip = 8;
            config
        });
        let (_, statuses) = crowd(&mut c, 0xd1, n, Behaviour::Silent);
        c.run_until(Duration::from_secs(1), |_| false);
        let stats = seed_stats(&c);
        assert_eq!(stats.evicted_unproven, evicted, "{n} connections");
        assert_eq!(stats.unproven_connections, 8.min(n), "{n} connections");
        let lost = statuses
            .iter()
            .filter(|s| s.borrow().lost.is_some())
            .count();
        assert_eq!(lost as u64, evicted, "{n} connections");
    }
}

/// The total limit (`max_joiners`) across addresses, exactly at it and one past.
#[test]
fn total_unproven_limit_exactly_at_and_one_past() {
    for (extra, evicted) in [(0usize, 0u64), (1, 1)] {
        let mut c = ClusterSim::new_with(34, 1, lan(), |mut config: NodeConfig| {
            config.max_joiners = 8;
            config
        });
        crowd(&mut c, 0xe1, 4, Behaviour::Silent);
        crowd(&mut c, 0xe2, 4, Behaviour::Silent);
        if extra > 0 {
            crowd(&mut c, 0xe3, extra, Behaviour::Silent);
        }
        c.run_until(Duration::from_secs(1), |_| false);
        let stats = seed_stats(&c);
        assert_eq!(stats.evicted_unproven, evicted, "{extra} extra");
        assert_eq!(stats.unproven_connections, 8, "{extra} extra");
    }
}

/// A connection that never finishes its handshake is closed at `handshake_timeout`, long
/// before the join deadline.
#[test]
fn half_open_connections_end_at_the_handshake_deadline() {
    let mut c = ClusterSim::new(35, 1, lan());
    let (pin, addr, now) = (c.ticket().pin, c.ticket().addr, c.sim.now());
    // Eight Initials (below the Retry threshold, so each takes a slot), never answered.
    let (flood, sent) = InitialFlood::new(
        [0xf1; 32],
        pin,
        addr,
        now,
        Duration::from_millis(1),
        now + Duration::from_millis(8),
    );
    c.add_custom(|_| Box::new(flood));
    c.run_until(Duration::from_millis(500), |_| false);
    assert_eq!(*sent.borrow(), 8);
    assert_eq!(seed_stats(&c).unproven_connections, 8);
    assert_eq!(seed_stats(&c).retries_sent, 0);
    let config = NodeConfig::new([0; 32], 0, addr);
    c.run_until(config.handshake_timeout, |_| false);
    let stats = seed_stats(&c);
    assert_eq!(stats.handshake_timeouts, 8);
    assert_eq!(stats.unproven_connections, 0);
}

/// Many strangers from one address stream partial frames while four honest workers join:
/// the crowd is held to the per-address limit (the oldest evicted), the workers form as
/// usual, and the seed's decoders never hold more than one Hello per unproven connection.
#[test]
fn a_crowd_of_half_frames_does_not_stop_formation() {
    for seed in [41, 42, 43] {
        let mut c = ClusterSim::new(seed, 4, lan());
        let half = Behaviour::HalfFrames {
            claim: hello_max(),
            send: hello_max() as usize - 1,
        };
        let (_, statuses) = crowd(&mut c, 0x71, 100, half);
        let honest: Vec<HostId> = (0..4).map(|_| c.add_worker(|config| config)).collect();
        let defaults = NodeConfig::new([0; 32], 0, c.ticket().addr);
        let per_conn = HEADER_LEN + hello_max() as usize;
        let bound = (defaults.max_unproven_per_ip + 4) * per_conn;
        let mut peak = 0;
        let done = c.run_until(FORMATION_LIMIT, |c| {
            let stats = seed_stats(c);
            peak = peak.max(stats.buffered_bytes);
            assert!(stats.unproven_connections <= defaults.max_unproven_per_ip + 4);
            honest.iter().all(|h| c.ready(*h).is_some())
        });
        assert!(done, "seed {seed}: not formed by {:?}", c.sim.elapsed());
        check_formed(&c, &honest).unwrap();
        assert!(
            c.sim.elapsed() < Duration::from_secs(5),
            "seed {seed}: {:?}",
            c.sim.elapsed()
        );
        assert!(peak <= bound, "seed {seed}: buffered {peak} > {bound}");
        let stats = seed_stats(&c);
        assert!(stats.evicted_unproven >= 100 - defaults.max_unproven_per_ip as u64);
        let connected = statuses.iter().filter(|s| s.borrow().connected).count();
        assert!(connected > 0, "seed {seed}: no rogue finished TLS");
    }
}

/// After formation, an elastic joiner goes through the same admission: with a crowd of
/// half-framers at the seed it is still proven, queued and admitted at the next
/// checkpoint, and the members (proven connections, never evicted) see nothing.
#[test]
fn elastic_joiner_after_formation_passes_a_crowd() {
    let mut c = ClusterSim::new_elastic(
        44,
        2,
        lan(),
        |c| c,
        |mut s| {
            s.max_world_size = 3;
            s.max_pending_joins = 1;
            s
        },
    );
    let honest: Vec<HostId> = (0..2).map(|_| c.add_worker(|config| config)).collect();
    assert!(c.run_until_ready(&honest, FORMATION_LIMIT));
    let half = Behaviour::HalfFrames {
        claim: hello_max(),
        send: hello_max() as usize - 1,
    };
    let (_, statuses) = crowd(&mut c, 0x72, 100, half);
    let late = c.add_worker(|config| config);
    c.run_until(Duration::from_millis(500), |_| false);
    let stats = seed_stats(&c);
    assert!(stats.evicted_unproven >= 36, "{stats:?}");
    assert!(statuses.iter().any(|s| s.borrow().connected));
    let ops: Vec<(HostId, OpId)> = honest
        .iter()
        .map(|h| (*h, c.command(*h, Command::Checkpoint).expect("checkpoint")))
        .collect();
    let results = wait_all(&mut c, &ops, Duration::from_secs(20)).expect("checkpoint done");
    for r in results {
        assert!(
            matches!(r, Ok(Outcome::Checkpoint { world_size: 3, .. })),
            "{r:?}"
        );
    }
    assert!(c.run_until_ready(&[late], Duration::from_secs(10)));
    assert_eq!(
        c.ready(late).map(|(rank, world, _)| (rank, world)),
        Some((2, 3))
    );
    for h in &honest {
        assert!(c.node(*h).unwrap().is_ready());
        assert!(!c
            .events(*h)
            .iter()
            .any(|e| matches!(e, Event::PeerDown { .. })));
    }
}

/// 1000 Initials a second that never answer: past the threshold the seed answers with
/// stateless Retries, so the flood holds at most the threshold's slots, and honest
/// workers that start during it form within a few seconds.
#[test]
fn an_initial_flood_does_not_lock_out_joiners() {
    let mut c = ClusterSim::new(36, 4, lan());
    let (pin, addr, now) = (c.ticket().pin, c.ticket().addr, c.sim.now());
    let (flood, sent) = InitialFlood::new(
        [0xf2; 32],
        pin,
        addr,
        now,
        Duration::from_millis(1),
        now + Duration::from_secs(6),
    );
    c.add_custom(|_| Box::new(flood));
    c.run_until(Duration::from_secs(1), |_| false);
    let start = c.sim.elapsed();
    let honest: Vec<HostId> = (0..4).map(|_| c.add_worker(|config| config)).collect();
    let threshold = NodeConfig::new([0; 32], 0, addr).retry_above_handshaking;
    let done = c.run_until(FORMATION_LIMIT, |c| {
        assert!(seed_stats(c).unproven_connections <= threshold + 4);
        honest.iter().all(|h| c.ready(*h).is_some())
    });
    assert!(done, "not formed by {:?}", c.sim.elapsed());
    check_formed(&c, &honest).unwrap();
    let took = c.sim.elapsed() - start;
    assert!(
        took < Duration::from_secs(5),
        "formed {took:?} after the workers started"
    );
    assert!(*sent.borrow() >= 1000, "{}", sent.borrow());
    assert!(seed_stats(&c).retries_sent >= 900, "{:?}", seed_stats(&c));
}

/// A forged, unauthenticated answer to a joiner's first Initial (here a Version
/// Negotiation packet from a relay in the path; an Initial-space CONNECTION_CLOSE takes
/// the same path in the transport) makes the joiner dial again, not fail for good.
#[test]
fn a_forged_close_before_the_handshake_is_retried() {
    let mut c = ClusterSim::new(37, 1, lan());
    let seed_addr = c.ticket().addr;
    let (proxy, forged) = ForgingProxy::new(seed_addr, 2);
    let proxy = c.add_custom(|_| Box::new(proxy));
    let mut ticket = c.ticket().clone();
    ticket.addr = c.sim.addr(proxy);
    let worker = c.add_worker_with_ticket(&ticket, |config| config);
    assert!(c.run_until_ready(&[worker], Duration::from_secs(10)));
    assert_eq!(*forged.borrow(), 2);
    assert!(!c
        .events(worker)
        .iter()
        .any(|e| matches!(e, Event::JoinFailed { .. })));
}

/// The workers' mesh acceptors follow the same rules: a flood of Initials at one worker's
/// listening address during formation is answered with Retries past the threshold, and
/// the mesh still forms within a few seconds.
#[test]
fn an_initial_flood_at_a_worker_does_not_stop_the_mesh() {
    let mut c = ClusterSim::new(38, 4, lan());
    let honest: Vec<HostId> = (0..4).map(|_| c.add_worker(|config| config)).collect();
    let (pin, now) = (c.ticket().pin, c.sim.now());
    let target = c.sim.addr(honest[3]);
    let (flood, sent) = InitialFlood::new(
        [0xf3; 32],
        pin,
        target,
        now,
        Duration::from_millis(1),
        now + Duration::from_secs(5),
    );
    c.add_custom(|_| Box::new(flood));
    let done = c.run_until(FORMATION_LIMIT, |c| {
        honest.iter().all(|h| c.ready(*h).is_some())
    });
    assert!(done, "not formed by {:?}", c.sim.elapsed());
    check_formed(&c, &honest).unwrap();
    assert!(
        c.sim.elapsed() < Duration::from_secs(5),
        "{:?}",
        c.sim.elapsed()
    );
    // Run out the flood: the victim keeps answering with Retries, holding few slots.
    c.run_until(Duration::from_secs(5), |c| {
        let stats = c.node(honest[3]).unwrap().stats();
        assert!(stats.unproven_connections <= 8 + 3, "{stats:?}");
        false
    });
    assert!(*sent.borrow() >= 4000, "{}", sent.borrow());
    let stats = c.node(honest[3]).unwrap().stats();
    assert!(stats.retries_sent >= 3000, "{stats:?}");
}

/// Retry tokens, evictions and handshake deadlines keep replay exact: the same seed gives
/// the same trace, bit for bit, under a flood and a crowd.
#[test]
fn hostile_runs_replay_bit_for_bit() {
    let run = || {
        let mut c = ClusterSim::new(39, 2, lan());
        let (pin, addr, now) = (c.ticket().pin, c.ticket().addr, c.sim.now());
        let (flood, _) = InitialFlood::new(
            [0xf4; 32],
            pin,
            addr,
            now,
            Duration::from_millis(1),
            now + Duration::from_secs(1),
        );
        c.add_custom(|_| Box::new(flood));
        let half = Behaviour::HalfFrames {
            claim: hello_max(),
            send: 100,
        };
        crowd(&mut c, 0x73, 70, half);
        let honest: Vec<HostId> = (0..2).map(|_| c.add_worker(|config| config)).collect();
        assert!(c.run_until_ready(&honest, FORMATION_LIMIT));
        c.run_until(Duration::from_secs(4), |_| false);
        let stats = seed_stats(&c);
        assert!(
            stats.retries_sent > 0 && stats.evicted_unproven > 0,
            "{stats:?}"
        );
        (c.sim.trace_hash(), stats)
    };
    assert_eq!(run(), run());
}
