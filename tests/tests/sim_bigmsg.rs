//! Tagged messages longer than one frame, in the simulator: lengths probed at and one
//! past the frame limit and the configured maximum under loss, the receiver's bound on
//! messages nobody has asked for, a sender lost mid-message, and a hostile announcement.

use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::{Message, TaggedPart, TaggedStart};
use nexar_proto::collective::CommId;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId, LinkConfig};
use nexar_proto::{Command, CommandError, Event, NodeConfig, OpError, OpId, Outcome};
use nexar_tests::support::{form, lan, lossy};

/// The frame limit here: small, so that "several frames" stays cheap to simulate.
const FRAME: u32 = 64 << 10;
/// The configured maximum: several frames and a few bytes.
const MAX: usize = 5 * FRAME as usize + 7;

fn small_frames(mut config: NodeConfig) -> NodeConfig {
    config.limits.max_frame_len = FRAME;
    config.max_message_len = MAX;
    config
}

/// `len` bytes that depend on `index` and on their position (an xorshift stream), so a
/// byte misplaced, lost or repeated anywhere changes the comparison.
fn pattern(index: u64, len: usize) -> Bytes {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The outcome of `op` on `host`, once there is one.
fn outcome(c: &ClusterSim, host: HostId, op: OpId) -> Option<Result<Outcome, OpError>> {
    c.events(host).iter().find_map(|e| match e {
        Event::Completed { op: o, outcome } if *o == op => Some(outcome.clone()),
        _ => None,
    })
}

fn rank(c: &ClusterSim, host: HostId) -> u32 {
    c.ready(host).expect("ready").0
}

/// Every length around the frame limit (the largest single-frame message, the frame
/// limit itself) and up to the maximum arrives intact, exactly once, in order, whether
/// its receive was posted before or after it came; one byte past the maximum is refused
/// typed at the sender before anything is queued.
fn lengths_at_and_past_the_limits(seed: u64) -> Result<(), String> {
    let link = lossy(0.05, 0.0, Duration::from_millis(2));
    let mut c = ClusterSim::with_workers_config(seed, 2, link, small_frames);
    let hosts = form(&mut c)?;
    let (a, b) = (hosts[0], hosts[1]);
    let (from, to) = (rank(&c, a), rank(&c, b));
    let node = c.node(a).ok_or("no node")?;
    let (single, max) = (node.max_single_frame_message(), node.max_message());
    if max != MAX || single >= FRAME as usize {
        return Err(format!("max {max}, single frame {single}"));
    }
    let frame = FRAME as usize;
    let lens = [
        0,
        1,
        single - 1,
        single,
        single + 1,
        frame - 1,
        frame,
        frame + 1,
        3 * frame,
        MAX,
    ];
    match c.command(
        a,
        Command::Send {
            comm: CommId::WORLD,
            to,
            tag: 0,
            data: Bytes::from(vec![0u8; MAX + 1]),
        },
    ) {
        Err(CommandError::MessageTooLarge { len, limit }) if (len, limit) == (MAX + 1, MAX) => {}
        other => return Err(format!("a message of MAX + 1 bytes: {other:?}")),
    }
    // Two tags; on tag 0 the receives are posted first, on tag 1 after the sends.
    let mut recvs = Vec::new();
    let mut sends = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let tag = i as u64 % 2;
        if tag == 0 {
            recvs.push((
                i,
                c.command(
                    b,
                    Command::Recv {
                        comm: CommId::WORLD,
                        from,
                        tag,
                    },
                )
                .unwrap(),
            ));
        }
        let data = pattern(seed ^ i as u64, len);
        let send = c.command(
            a,
            Command::Send {
                comm: CommId::WORLD,
                to,
                tag,
                data,
            },
        );
        sends.push(send.map_err(|e| format!("send of {len} B: {e}"))?);
    }
    for (i, _) in lens.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        recvs.push((
            i,
            c.command(
                b,
                Command::Recv {
                    comm: CommId::WORLD,
                    from,
                    tag: 1,
                },
            )
            .unwrap(),
        ));
    }
    let all = |c: &ClusterSim| {
        recvs.iter().all(|(_, op)| outcome(c, b, *op).is_some())
            && sends.iter().all(|op| outcome(c, a, *op).is_some())
    };
    if !c.run_until(Duration::from_secs(60), all) {
        return Err("not every message arrived".into());
    }
    for &(i, op) in &recvs {
        let want = pattern(seed ^ i as u64, lens[i]);
        match outcome(&c, b, op) {
            Some(Ok(Outcome::Received { data, tag, .. }))
                if data == want && tag == i as u64 % 2 => {}
            other => {
                let got = other.map(|o| o.map(|o| format!("{o:?}").len()));
                return Err(format!("message {i} of {} B: {got:?}", lens[i]));
            }
        }
    }
    for op in sends {
        if outcome(&c, a, op) != Some(Ok(Outcome::Sent)) {
            return Err(format!("send {op:?}: {:?}", outcome(&c, a, op)));
        }
    }
    let received = c
        .events(b)
        .iter()
        .filter(|e| matches!(e, Event::Completed { .. }));
    if received.count() != lens.len() {
        return Err("a receive completed twice".into());
    }
    if c.node(b).unwrap().stats().unmatched_bytes != 0 || c.sim.stats().dropped() == 0 {
        return Err("bytes left unmatched, or no loss in effect".into());
    }
    Ok(())
}

#[test]
fn lengths_at_and_one_past_the_frame_limit_and_the_maximum_arrive_under_loss() {
    run_seeds(4, lengths_at_and_past_the_limits);
}

/// A message of many frames nobody has asked for holds at most the receiver's unmatched
/// budget (plus one part and the message's overhead); the rest waits behind QUIC flow
/// control. A receive then gets all of it, and the budget is back to zero.
#[test]
fn an_unclaimed_message_holds_at_most_the_bound_until_received() {
    const LIMIT: usize = 128 << 10;
    const LEN: usize = 2 << 20;
    let config = |mut config: NodeConfig| {
        config = small_frames(config);
        config.max_message_len = LEN;
        config.max_unmatched_bytes = LIMIT;
        config
    };
    let mut c = ClusterSim::with_workers_config(3, 2, lan(), config);
    let hosts = form(&mut c).unwrap();
    let (a, b) = (hosts[0], hosts[1]);
    let (from, to) = (rank(&c, a), rank(&c, b));
    let data = pattern(42, LEN);
    let send = c
        .command(
            a,
            Command::Send {
                comm: CommId::WORLD,
                to,
                tag: 5,
                data: data.clone(),
            },
        )
        .unwrap();
    let peak = Cell::new(0);
    let watch = |c: &ClusterSim| {
        peak.set(peak.get().max(c.node(b).unwrap().stats().unmatched_bytes));
        false
    };
    c.run_until(Duration::from_secs(2), watch);
    let bound = LIMIT + FRAME as usize + 256;
    assert!(peak.get() > LIMIT, "never filled: {} B", peak.get());
    assert!(peak.get() <= bound, "held {} B (bound {bound})", peak.get());

    let recv = c
        .command(
            b,
            Command::Recv {
                comm: CommId::WORLD,
                from,
                tag: 5,
            },
        )
        .unwrap();
    let got = c.run_until(Duration::from_secs(20), |c| {
        watch(c);
        outcome(c, b, recv).is_some() && outcome(c, a, send).is_some()
    });
    assert!(got, "the message never arrived");
    assert!(
        matches!(outcome(&c, b, recv), Some(Ok(Outcome::Received { data: d, .. })) if d == data)
    );
    assert_eq!(outcome(&c, a, send), Some(Ok(Outcome::Sent)));
    assert!(peak.get() <= bound, "held {} B (bound {bound})", peak.get());
    assert_eq!(c.node(b).unwrap().stats().unmatched_bytes, 0);
}

/// The sender dies mid-message (a slow link keeps both messages in flight): the receive
/// waiting on one fails with `PeerLost` naming it, and the part of the other, which
/// nobody had asked for, is dropped and its memory released.
#[test]
fn a_sender_lost_mid_message_fails_the_receive_and_releases_the_parts() {
    const LEN: usize = 4 << 20;
    let config = |mut config: NodeConfig| {
        config = small_frames(config);
        config.max_message_len = LEN;
        config
    };
    let mut c = ClusterSim::with_workers_config(9, 2, lan(), config);
    let hosts = form(&mut c).unwrap();
    let (a, b) = (hosts[0], hosts[1]);
    let (from, to) = (rank(&c, a), rank(&c, b));
    let slow = LinkConfig {
        bandwidth_bps: Some(8_000_000),
        ..lan()
    };
    c.sim.set_link_both(a, b, slow);
    let recv = c
        .command(
            b,
            Command::Recv {
                comm: CommId::WORLD,
                from,
                tag: 1,
            },
        )
        .unwrap();
    for tag in [1, 2] {
        let data = pattern(tag, LEN);
        c.command(
            a,
            Command::Send {
                comm: CommId::WORLD,
                to,
                tag,
                data,
            },
        )
        .unwrap();
    }
    let started = c.run_until(Duration::from_secs(5), |c| {
        c.node(b).unwrap().stats().unmatched_bytes > 64 << 10
    });
    assert!(started, "the unclaimed message never started arriving");
    assert!(
        outcome(&c, b, recv).is_none(),
        "4 MiB crossed 1 MB/s too fast"
    );
    c.sim.crash(a);
    let failed = c.run_until(Duration::from_secs(30), |c| outcome(c, b, recv).is_some());
    assert!(failed, "the receive never failed");
    assert_eq!(
        outcome(&c, b, recv),
        Some(Err(OpError::PeerLost { rank: from }))
    );
    assert_eq!(c.node(b).unwrap().stats().unmatched_bytes, 0);
}

/// A hostile member announces lengths: the maximum is taken (and costs the receiver the
/// fixed overhead only, nothing of the length), one byte more, `u64::MAX` or a part out
/// of place cut the member off, nothing allocated; the receive waiting on it fails
/// with `PeerLost`.
#[test]
fn hostile_announcements_are_refused_without_allocating() {
    for case in 0..3 {
        let mut c = ClusterSim::with_workers_config(11 + case, 2, lan(), small_frames);
        let hosts = form(&mut c).unwrap();
        let (rogue, b) = (hosts[0], hosts[1]);
        let (from, to) = (rank(&c, rogue), rank(&c, b));
        let epoch = c.ready(b).unwrap().2;
        let recv = c
            .command(
                b,
                Command::Recv {
                    comm: CommId::WORLD,
                    from,
                    tag: 9,
                },
            )
            .unwrap();
        let start = |tag, total| {
            Message::TaggedStart(TaggedStart {
                epoch,
                comm: 0,
                tag,
                seq: 0,
                total,
            })
        };
        let raw = |c: &mut ClusterSim, msg: Message| {
            assert!(c.node_mut(rogue).unwrap().send_raw(to, &msg));
            c.sim.kick(rogue);
            c.run_until(Duration::from_millis(50), |_| false);
        };
        raw(&mut c, start(1, MAX as u64));
        assert!(outcome(&c, b, recv).is_none(), "the maximum was refused");
        assert_eq!(c.node(b).unwrap().stats().unmatched_bytes, 256);
        let bad = match case {
            0 => start(2, MAX as u64 + 1),
            1 => start(2, u64::MAX),
            _ => Message::TaggedPart(TaggedPart {
                epoch,
                comm: 0,
                tag: 1,
                seq: 0,
                offset: 1,
                payload: Bytes::from_static(b"gap"),
            }),
        };
        raw(&mut c, bad);
        let cut = c.run_until(Duration::from_secs(10), |c| outcome(c, b, recv).is_some());
        assert!(cut, "case {case}: the hostile member was not cut off");
        assert_eq!(
            outcome(&c, b, recv),
            Some(Err(OpError::PeerLost { rank: from })),
            "case {case}"
        );
        assert_eq!(c.node(b).unwrap().stats().unmatched_bytes, 0, "case {case}");
    }
}
