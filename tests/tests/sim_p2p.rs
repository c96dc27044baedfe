//! Tagged point-to-point messaging in the simulator: exactly-once, per-(source, tag) order
//! under loss and reordering, and bounded memory under a flood.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::collective::CommId;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{Command, CommandError, Event, NodeConfig, OpId, Outcome};
use nexar_tests::support::{form, lan, lossy, tagged_payload, TestRng};

/// One planned message.
#[derive(Debug, Clone)]
struct Planned {
    from: u32,
    to: u32,
    tag: u64,
    data: Bytes,
}

/// Whether receives for this (from, to, tag) are posted before the sends (so arrivals
/// complete them at once) or after all sends (so arrivals wait, unmatched).
fn posted_early(from: u32, to: u32, tag: u64) -> bool {
    (u64::from(from) + u64::from(to) + tag) & 1 == 0
}

/// What random traffic to run.
struct Shape {
    ranks: u32,
    messages: usize,
    /// A message's length, drawn from the run's generator.
    len: fn(&mut TestRng) -> usize,
    /// Every worker's config.
    config: fn(NodeConfig) -> NodeConfig,
}

/// 1000 random tagged messages among 8 ranks (self-sends included), random lengths up to
/// 4 KiB, over links with 5% loss and jitter (so datagrams reorder). Every message is
/// received exactly once, intact, and in the order sent per (source, tag).
fn random_traffic(seed: u64) -> Result<(), String> {
    let shape = Shape {
        ranks: 8,
        messages: 1000,
        len: |rng| 16 + rng.below(4096 - 16 + 1) as usize,
        config: |config| config,
    };
    traffic(seed, &shape)
}

/// `shape.messages` random tagged messages among `shape.ranks` ranks, over links with 5%
/// loss and jitter: every one is received exactly once, intact, in order per
/// (source, tag).
fn traffic(seed: u64, shape: &Shape) -> Result<(), String> {
    let (ranks, messages) = (shape.ranks, shape.messages);
    let link = lossy(0.05, 0.0, Duration::from_millis(2));
    let mut c = ClusterSim::with_workers_config(seed, ranks, link, shape.config);
    let by_rank = form(&mut c)?;
    let host = |rank: u32| by_rank[rank as usize];

    let mut rng = TestRng::new(seed ^ 0x5eed);
    let plan: Vec<Planned> = (0..messages)
        .map(|i| {
            let from = rng.below(u64::from(ranks)) as u32;
            let to = rng.below(u64::from(ranks)) as u32;
            let tag = rng.below(4);
            let len = (shape.len)(&mut rng);
            let data = tagged_payload(from, to, tag, i as u32, len);
            Planned {
                from,
                to,
                tag,
                data,
            }
        })
        .collect();

    // Which message each receive is for: the k-th receive posted for a (source, tag) on
    // a rank takes the k-th message sent there, so receives are posted in send order.
    let mut recv_for: BTreeMap<(HostId, OpId), usize> = BTreeMap::new();
    let mut send_ops: BTreeMap<(HostId, OpId), usize> = BTreeMap::new();
    let recv = |c: &mut ClusterSim, m: &Planned| {
        c.command(
            host(m.to),
            Command::Recv {
                comm: CommId::WORLD,
                from: m.from,
                tag: m.tag,
            },
        )
        .map_err(|e| format!("recv on rank {}: {e}", m.to))
    };
    for (i, m) in plan.iter().enumerate() {
        if posted_early(m.from, m.to, m.tag) {
            let op = recv(&mut c, m)?;
            recv_for.insert((host(m.to), op), i);
        }
        let op = c
            .command(
                host(m.from),
                Command::Send {
                    comm: CommId::WORLD,
                    to: m.to,
                    tag: m.tag,
                    data: m.data.clone(),
                },
            )
            .map_err(|e| format!("send {i}: {e}"))?;
        send_ops.insert((host(m.from), op), i);
        if i % 10 == 9 {
            c.run_until(Duration::from_millis(1), |_| false);
        }
    }
    for (i, m) in plan.iter().enumerate() {
        if !posted_early(m.from, m.to, m.tag) {
            let op = recv(&mut c, m)?;
            recv_for.insert((host(m.to), op), i);
        }
    }

    let completions = |c: &ClusterSim| -> usize {
        by_rank
            .iter()
            .map(|h| {
                c.events(*h)
                    .iter()
                    .filter(|e| matches!(e, Event::Completed { .. }))
                    .count()
            })
            .sum()
    };
    let done = c.run_until(Duration::from_secs(120), |c| completions(c) >= 2 * messages);
    if !done {
        return Err(format!(
            "only {} of {} completions after {:?}",
            completions(&c),
            2 * messages,
            c.sim.elapsed()
        ));
    }

    let mut delivered: BTreeSet<usize> = BTreeSet::new();
    let mut sent: BTreeSet<usize> = BTreeSet::new();
    // Per (destination, source, tag): the message indices in completion order.
    let mut order: BTreeMap<(u32, u32, u64), Vec<usize>> = BTreeMap::new();
    for &h in &by_rank {
        for e in c.events(h) {
            let Event::Completed { op, outcome } = e else {
                if !matches!(e, Event::Ready { .. }) {
                    return Err(format!("{h}: unexpected {e:?}"));
                }
                continue;
            };
            match outcome {
                Ok(Outcome::Sent) => {
                    let i = send_ops.get(&(h, *op)).ok_or("Sent for an unknown op")?;
                    if !sent.insert(*i) {
                        return Err(format!("send {i} completed twice"));
                    }
                }
                Ok(Outcome::Received { from, tag, data }) => {
                    let i = *recv_for
                        .get(&(h, *op))
                        .ok_or("Received for an unknown op")?;
                    let m = &plan[i];
                    if (m.from, m.tag) != (*from, *tag) || *data != m.data {
                        return Err(format!(
                            "receive for message {i} ({} -> {} tag {}) got {} bytes from {from} \
                             tag {tag} (first 16: {:?})",
                            m.from,
                            m.to,
                            m.tag,
                            data.len(),
                            &data[..data.len().min(16)]
                        ));
                    }
                    if !delivered.insert(i) {
                        return Err(format!("message {i} delivered twice"));
                    }
                    order.entry((m.to, m.from, m.tag)).or_default().push(i);
                }
                Err(e) => return Err(format!("{h}: operation failed: {e}")),
                Ok(other) => return Err(format!("{h}: unexpected outcome {other:?}")),
            }
        }
    }
    if delivered.len() != messages || sent.len() != messages {
        return Err(format!(
            "{} delivered, {} sent",
            delivered.len(),
            sent.len()
        ));
    }
    for (key, indices) in &order {
        if indices.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("{key:?} delivered out of order: {indices:?}"));
        }
    }
    if c.sim.stats().dropped() == 0 {
        return Err("no datagram was lost: the fault model is not in effect".into());
    }
    Ok(())
}

#[test]
fn random_tagged_messages_arrive_once_and_in_order_under_loss() {
    run_seeds(16, random_traffic);
}

/// Many big and small messages at once on the same and different tags, with a 64 KiB
/// frame limit: a third are up to six frames long (sent in parts, which interleave with
/// everything else), the rest small. Under loss and reordering each is received exactly
/// once, intact, in order per (source, tag).
#[test]
fn big_and_small_messages_interleave_once_and_in_order_under_loss() {
    let shape = Shape {
        ranks: 4,
        messages: 120,
        len: |rng| match rng.below(3) {
            0 => 16 + rng.below(6 * FRAME as u64) as usize,
            _ => 16 + rng.below(2048) as usize,
        },
        config: |mut config| {
            config.limits.max_frame_len = FRAME;
            config.max_message_len = 6 * FRAME as usize + 16;
            config
        },
    };
    run_seeds(4, |seed| traffic(seed, &shape));
}

/// The frame limit of the tests of messages sent in parts.
const FRAME: u32 = 64 << 10;

/// A rank floods another that posts no receives. The receiver's unmatched buffer stays
/// bounded (it stops reading; QUIC flow control stops the sender), the sender's queue
/// fills and `send` refuses with `Backpressure`; nothing breaks. Once the receiver posts
/// receives, every message `send` accepted arrives, in order, and sending works again.
#[test]
fn flooding_a_rank_is_bounded_and_recovers() {
    const LIMIT: usize = 256 << 10;
    const MSG: usize = 64 << 10;
    const TAG: u64 = 9;
    let mut c = ClusterSim::new(5, 2, lan());
    let sender = c.add_worker(|mut config| {
        config.max_queued_bytes = LIMIT;
        config
    });
    let receiver = c.add_worker(|mut config| {
        config.max_unmatched_bytes = LIMIT;
        config
    });
    form(&mut c).unwrap();
    let (from, to) = (c.ready(sender).unwrap().0, c.ready(receiver).unwrap().0);
    let payload = |i: u32| tagged_payload(from, to, TAG, i, MSG);

    let peak = Cell::new(0);
    let watch = |c: &ClusterSim| {
        let unmatched = c.node(receiver).unwrap().stats().unmatched_bytes;
        peak.set(peak.get().max(unmatched));
        false
    };
    let mut accepted = 0u32;
    let refusal = loop {
        assert!(accepted < 4096, "no backpressure after {accepted} messages");
        let send = Command::Send {
            comm: CommId::WORLD,
            to,
            tag: TAG,
            data: payload(accepted),
        };
        match c.command(sender, send) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        c.run_until(Duration::from_millis(1), &watch);
    };
    assert!(
        matches!(refusal, CommandError::Backpressure { to: t, limit: LIMIT, .. } if t == to),
        "{refusal:?}"
    );
    // Stay flooded for a while: nothing moves, nothing grows, nobody fails.
    c.run_until(Duration::from_secs(2), &watch);
    let bound = LIMIT + MSG;
    let flooded = peak.get();
    assert!(
        flooded <= bound,
        "receiver held {flooded} B unmatched (bound {bound})"
    );
    assert!(
        flooded > LIMIT,
        "the receiver never filled its buffer: {flooded} B"
    );
    for h in [sender, receiver] {
        assert!(c.node(h).unwrap().is_ready());
        let failures: Vec<_> = c
            .events(h)
            .iter()
            .filter(|e| {
                !matches!(
                    e,
                    Event::Ready { .. } | Event::Completed { outcome: Ok(_), .. }
                )
            })
            .collect();
        assert!(failures.is_empty(), "{h}: {failures:?}");
    }

    // Drain one receive at a time, so the receiver keeps resuming and stopping its reads
    // with megabytes waiting in QUIC: the bound holds throughout, and every accepted
    // message arrives, in order.
    for k in 0..accepted {
        let op = c
            .command(
                receiver,
                Command::Recv {
                    comm: CommId::WORLD,
                    from,
                    tag: TAG,
                },
            )
            .unwrap();
        let got = |c: &ClusterSim| {
            c.events(receiver).iter().find_map(|e| match e {
                Event::Completed {
                    op: o,
                    outcome: Ok(Outcome::Received { data, .. }),
                } if *o == op => Some(data.clone()),
                _ => None,
            })
        };
        let done = c.run_until(Duration::from_secs(10), |c| {
            watch(c);
            got(c).is_some()
        });
        assert!(done, "receive {k} of {accepted} never completed");
        assert!(
            got(&c).unwrap() == payload(k),
            "message {k} is not the {k}th sent"
        );
    }
    c.run_until(Duration::from_millis(100), &watch);
    let drained = peak.get();
    assert!(
        drained <= bound,
        "receiver held {drained} B unmatched (bound {bound})"
    );
    assert_eq!(c.node(receiver).unwrap().stats().unmatched_bytes, 0);

    // The sender's refused message cost nothing: the next one goes through too.
    let op = c
        .command(
            sender,
            Command::Send {
                comm: CommId::WORLD,
                to,
                tag: TAG,
                data: payload(accepted),
            },
        )
        .unwrap();
    let recv = c
        .command(
            receiver,
            Command::Recv {
                comm: CommId::WORLD,
                from,
                tag: TAG,
            },
        )
        .unwrap();
    let last = |c: &ClusterSim| {
        c.events(receiver).iter().find_map(|e| match e {
            Event::Completed {
                op,
                outcome: Ok(Outcome::Received { data, .. }),
            } if *op == recv => Some(data.clone()),
            _ => None,
        })
    };
    assert!(
        c.run_until(Duration::from_secs(5), |c| last(c).is_some()),
        "the send after a refusal never arrived: receiver {:?}, sender {:?}",
        c.events(receiver).last(),
        c.events(sender).last()
    );
    assert!(last(&c).unwrap() == payload(accepted));
    assert!(c.events(sender).contains(&Event::Completed {
        op,
        outcome: Ok(Outcome::Sent)
    }));
    assert!(c.node(sender).unwrap().is_ready() && c.node(receiver).unwrap().is_ready());
}
