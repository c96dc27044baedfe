//! Join security in the simulator: bad joiners are refused alone and with the right
//! reason, a man in the middle learns nothing, and no private key crosses the wire.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::{FrameDecoder, JoinRejected, Limits, Message, RejectReason};
use nexar_proto::crypto::{DetRng, NodeIdentity};
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Event, JoinError, Node, SeedConfig};
use nexar_tests::rogue::{Behaviour, Lost, RogueClient, RogueStatus};
use nexar_tests::support::{
    ca_key_seed, check_formed, contains, identity_key_seed, lan, FORMATION_LIMIT,
    PKCS8_ED25519_PREFIX,
};

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

/// Decode one whole frame (a close reason carries exactly one).
fn decode_frame(frame: &[u8]) -> Message {
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(frame);
    let msg = decoder
        .poll_message()
        .expect("a well-formed frame")
        .expect("a whole frame");
    assert_eq!(decoder.buffered(), 0, "one frame, nothing after it");
    msg
}

/// The rejection a rogue was told in its close frame.
fn told(status: &RogueStatus) -> JoinRejected {
    let Some(Lost::Application { code, reason }) = &status.lost else {
        panic!("not closed with an application reason: {status:?}");
    };
    let Message::JoinRejected(rejected) = decode_frame(reason) else {
        panic!("close reason is not a JoinRejected frame");
    };
    assert_eq!(
        *code,
        0x100 + u64::from(rejected.reason as u8),
        "close code"
    );
    rejected
}

/// Four honest workers and three bad joiners in one run: a worker with a wrong secret, a
/// rogue that claims a 4 GiB frame right after the pinned TLS handshake, and a rogue that
/// completes TLS and then says nothing. Each bad joiner is refused with its own reason and
/// nobody else notices; the seed never buffers more than one frame's limit.
#[test]
fn bad_joiners_are_refused_alone() {
    let join_timeout = Duration::from_secs(2);
    let mut c = ClusterSim::new_with(7, 4, lan(), |mut config| {
        config.join_timeout = join_timeout;
        config
    });
    let honest: Vec<HostId> = (0..4).map(|_| c.add_worker(|config| config)).collect();

    let mut wrong = c.ticket().clone();
    wrong.secret[0] ^= 0x80;
    let wrong_secret = c.add_worker_with_ticket(&wrong, |config| config);

    let (pin, seed_addr, now) = (c.ticket().pin, c.ticket().addr, c.sim.now());
    let huge = Behaviour::oversized_header(u32::MAX);
    let (rogue, oversized_status) = RogueClient::dial([0xa1; 32], pin, seed_addr, now, huge);
    let oversized = c.add_custom(|_| Box::new(rogue));
    let (rogue, silent_status) =
        RogueClient::dial([0xa2; 32], pin, seed_addr, now, Behaviour::Silent);
    let silent = c.add_custom(|_| Box::new(rogue));
    let (wrong_addr, oversized_addr, silent_addr) = (
        c.sim.addr(wrong_secret),
        c.sim.addr(oversized),
        c.sim.addr(silent),
    );

    let max_frame = Limits::default().max_frame_len as usize;
    let mut peak_buffered = 0;
    let mut timeout_at = None;
    let done = c.run_until(FORMATION_LIMIT, |c| {
        let buffered = c.node(c.seed).unwrap().stats().buffered_bytes;
        assert!(
            buffered <= max_frame,
            "seed buffers {buffered} B at {:?}",
            c.sim.elapsed()
        );
        peak_buffered = peak_buffered.max(buffered);
        if timeout_at.is_none() && !rejections(c, silent_addr).is_empty() {
            timeout_at = Some(c.sim.elapsed());
        }
        honest.iter().all(|h| c.ready(*h).is_some())
            && !c.events(wrong_secret).is_empty()
            && [wrong_addr, oversized_addr, silent_addr]
                .iter()
                .all(|a| !rejections(c, *a).is_empty())
    });
    assert!(done, "not settled after {:?}", c.sim.elapsed());

    // The honest cluster formed as if nothing happened.
    check_formed(&c, &honest).unwrap();
    assert!(
        c.sim.elapsed() < join_timeout + Duration::from_secs(1),
        "done only at {:?}",
        c.sim.elapsed()
    );
    // Let the last close frames reach the rogues (the invariant still holds meanwhile).
    let overflowed = c.run_until(Duration::from_millis(100), |c| {
        c.node(c.seed).unwrap().stats().buffered_bytes > max_frame
    });
    assert!(!overflowed, "seed buffered more than one frame's limit");

    // (a) Wrong secret: a typed rejection on both sides.
    assert_eq!(rejections(&c, wrong_addr), [RejectReason::BadProof]);
    assert_eq!(
        c.events(wrong_secret),
        [Event::JoinFailed {
            error: JoinError::Rejected {
                reason: RejectReason::BadProof
            }
        }]
    );
    assert!(!c.node(wrong_secret).unwrap().is_ready());

    // (b) A 4 GiB claim: refused from the header alone, nothing reserved for it.
    assert_eq!(
        rejections(&c, oversized_addr),
        [RejectReason::FrameTooLarge]
    );
    let oversized_status = oversized_status.borrow().clone();
    assert!(oversized_status.connected, "the pinned handshake completed");
    assert_eq!(oversized_status.written, 9, "the header went out whole");
    let told_oversized = told(&oversized_status);
    assert_eq!(told_oversized.reason, RejectReason::FrameTooLarge);
    assert_eq!(told_oversized.detail, u64::from(u32::MAX));

    // (c) Silence: refused at its own deadline, not before.
    assert_eq!(rejections(&c, silent_addr), [RejectReason::Timeout]);
    let silent_status = silent_status.borrow().clone();
    assert!(silent_status.connected, "the pinned handshake completed");
    let told_silent = told(&silent_status);
    assert_eq!(told_silent.reason, RejectReason::Timeout);
    assert_eq!(told_silent.detail, 2000, "the deadline in milliseconds");
    let at = timeout_at.unwrap();
    assert!(
        at >= join_timeout && at < join_timeout + Duration::from_millis(100),
        "silent joiner refused at {at:?}"
    );

    // Three rejections, nothing else, and no joiner left half-open.
    let rejected = c
        .events(c.seed)
        .iter()
        .filter(|e| matches!(e, Event::JoinerRejected { .. }))
        .count();
    assert_eq!(rejected, 3);
    assert_eq!(c.node(c.seed).unwrap().stats().pending_joiners, 0);
    assert!(peak_buffered <= max_frame);
    // The refused connections drain away; the members' stay.
    c.run_until(Duration::from_secs(5), |_| false);
    assert_eq!(c.node(c.seed).unwrap().stats().connections, 4);
}

/// A worker whose ticket has the right secret but points at an impostor seed (another
/// key): the pinned handshake fails, so the worker says nothing, and the impostor, even
/// knowing the secret, learns nothing and sees nothing beyond a failed handshake.
#[test]
fn man_in_the_middle_is_refused_by_the_pin() {
    let mut c = ClusterSim::new(11, 2, lan());
    let real = c.ticket().clone();
    let impostor = c.add_node(|config, now| {
        Node::seed(config, SeedConfig::new(2, real.secret), now).expect("impostor seed")
    });
    let impostor_ticket = c.node(impostor).unwrap().ticket().unwrap().clone();
    assert_ne!(
        impostor_ticket.pin, real.pin,
        "the impostor has its own key"
    );

    let mut redirected = real.clone();
    redirected.addr = c.sim.addr(impostor);
    let victim = c.add_worker_with_ticket(&redirected, |config| config);
    let honest: Vec<HostId> = (0..2).map(|_| c.add_worker(|config| config)).collect();

    let done = c.run_until(FORMATION_LIMIT, |c| {
        !c.events(victim).is_empty() && honest.iter().all(|h| c.ready(*h).is_some())
    });
    assert!(done, "not settled after {:?}", c.sim.elapsed());
    check_formed(&c, &honest).unwrap();

    let events = c.events(victim);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(
            &events[0],
            Event::JoinFailed {
                error: JoinError::SeedUntrusted { .. }
            }
        ),
        "{events:?}"
    );
    // The victim never spoke: its Hello (and with it any proof) was never written.
    assert!(c.node(victim).unwrap().sent_control_frames().is_empty());

    // Let everything settle: nothing more happens anywhere.
    c.run_until(Duration::from_secs(5), |_| false);
    assert_eq!(c.events(victim).len(), 1);
    assert!(
        c.events(impostor).is_empty(),
        "impostor saw {:?}",
        c.events(impostor)
    );
    let stats = c.node(impostor).unwrap().stats();
    assert_eq!(stats.pending_joiners, 0, "no half-open joiner left behind");
    assert_eq!(stats.connections, 0, "the failed handshake drained");
    assert!(c.node(impostor).unwrap().sent_control_frames().is_empty());
    // The real seed never heard of the victim either.
    let victim_addr = c.sim.addr(victim);
    assert!(rejections(&c, victim_addr).is_empty());
}

/// Every control frame sent during a formation (Hellos, Welcomes and the rejection in a
/// close frame) is free of private keys: none holds any node's Ed25519 key seed, the
/// cluster CA's, the join secret, or a PKCS#8 key header.
#[test]
fn no_private_key_material_on_the_wire() {
    let sim_seed = 21;
    let mut c = ClusterSim::new(sim_seed, 3, lan());
    for _ in 0..3 {
        c.add_worker(|config| config);
    }
    let mut wrong = c.ticket().clone();
    wrong.secret[31] ^= 1;
    let refused = c.add_worker_with_ticket(&wrong, |config| config);
    let honest: Vec<HostId> = c
        .workers
        .iter()
        .copied()
        .filter(|w| *w != refused)
        .collect();
    assert!(c.run_until(FORMATION_LIMIT, |c| {
        honest.iter().all(|h| c.ready(*h).is_some()) && !c.events(refused).is_empty()
    }));
    check_formed(&c, &honest).unwrap();

    let nodes: Vec<HostId> = c.sim.host_ids().collect();
    let config = |id: HostId| ClusterSim::node_config(sim_seed, id.0, c.sim.addr(id));

    // The secrets a node holds, recomputed from its config as the node derives them.
    let mut secrets: Vec<(String, [u8; 32])> = nodes
        .iter()
        .map(|id| {
            (
                format!("{id} identity key"),
                identity_key_seed(&config(*id)),
            )
        })
        .collect();
    secrets.push(("cluster CA key".into(), ca_key_seed(&config(c.seed))));
    secrets.push(("join secret".into(), c.ticket().secret));

    // The recomputation names the real keys: the seed's matches the ticket's pin, each
    // worker's public key is in its Hello, and the CA's in every Welcome.
    let public = |seed: &[u8; 32], purpose: &str| {
        NodeIdentity::generate(&mut DetRng::derive(seed, purpose)).public_key_der()
    };
    let seed_identity =
        NodeIdentity::generate(&mut DetRng::derive(&config(c.seed).rng_seed, "identity"));
    assert_eq!(seed_identity.spki_sha256(), c.ticket().pin);

    let mut frames: Vec<(HostId, Bytes)> = Vec::new();
    let (mut hellos, mut welcomes, mut rejects) = (0, 0, 0);
    for &id in &nodes {
        for frame in c.node(id).unwrap().sent_control_frames() {
            match decode_frame(&frame) {
                Message::Hello(h) => {
                    hellos += 1;
                    let spki = public(&config(id).rng_seed, "identity");
                    assert!(contains(&h.csr_der, &spki), "{id}: CSR is for another key");
                }
                Message::Welcome(w) => {
                    welcomes += 1;
                    let mut rng = DetRng::derive(&config(c.seed).rng_seed, "cluster");
                    let _cluster_id: [u8; 16] = rng.array();
                    let ca = NodeIdentity::generate(&mut rng).public_key_der();
                    assert!(contains(&w.ca_cert_der, &ca), "CA certificate key");
                }
                Message::JoinRejected(_) => rejects += 1,
                // Liveness traffic (checked for secrets below like everything else).
                Message::Heartbeat(_) => {}
                other => panic!("{id} sent an unexpected control message {other:?}"),
            }
            frames.push((id, frame));
        }
    }
    assert_eq!(hellos, 4, "one Hello per worker, the refused one included");
    assert_eq!(welcomes, 3, "one Welcome per rank");
    assert_eq!(rejects, 1, "the refused worker's close reason");

    for (id, frame) in &frames {
        assert!(
            !contains(frame, &PKCS8_ED25519_PREFIX),
            "{id} sent a PKCS#8 key header"
        );
        for (name, secret) in &secrets {
            assert!(!contains(frame, secret), "{id} sent the {name}");
        }
    }
}
