//! Point-to-point messages on split communicators in the simulator: a split message and a
//! world message with the same tag between the same two nodes each reach their own
//! receive (under loss and reordering), ranks outside a communicator are typed errors,
//! and an epoch change ends every split communicator: after a recovery and after a
//! checkpoint that only admits a joiner (the world's ranks stay), the old id is unknown,
//! its posted receives fail with `EpochChanged` and its unclaimed messages are dropped,
//! while the world's are kept. Messages longer than a frame, in parts, are matched per
//! communicator too. A split on the new epoch gets a new id even with the same
//! members.

use std::time::Duration;

use bytes::Bytes;
use nexar_proto::collective::CommId;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{Command, CommandError, NodeConfig, OpError, OpId, Outcome, RecoveryPolicy};
use nexar_tests::collectives::wait_all;
use nexar_tests::motion::{cluster, run_until_epochs, timings};
use nexar_tests::support::{form, lan, lossy};

const LIMIT: Duration = Duration::from_secs(20);

/// Split `hosts` (in world rank order) by `color(rank)`, key = -rank; each rank's new
/// communicator with its members.
fn split(
    c: &mut ClusterSim,
    hosts: &[HostId],
    color: impl Fn(u32) -> u32,
) -> Result<Vec<(CommId, Vec<u32>)>, String> {
    let mut ops = Vec::new();
    for (r, h) in hosts.iter().enumerate() {
        let command = Command::Split {
            comm: CommId::WORLD,
            color: Some(color(r as u32)),
            key: -(r as i64),
        };
        ops.push((*h, c.command(*h, command).map_err(|e| e.to_string())?));
    }
    let mut comms = Vec::new();
    for (r, got) in wait_all(c, &ops, LIMIT)?.into_iter().enumerate() {
        match got {
            Ok(Outcome::Split {
                comm: Some((id, me, size)),
                members,
                ..
            }) if members.len() == size as usize && members[me as usize] == r as u32 => {
                comms.push((id, members))
            }
            other => return Err(format!("split on rank {r}: {other:?}")),
        }
    }
    Ok(comms)
}

fn send(c: &mut ClusterSim, h: HostId, comm: CommId, to: u32, tag: u64, data: &'static [u8]) {
    let data = Bytes::from_static(data);
    let command = Command::Send {
        comm,
        to,
        tag,
        data,
    };
    c.command(h, command).expect("send accepted");
}

fn recv(c: &mut ClusterSim, h: HostId, comm: CommId, from: u32, tag: u64) -> OpId {
    c.command(h, Command::Recv { comm, from, tag })
        .expect("receive accepted")
}

/// Pairs {0, 2} and {1, 3} (higher world rank first): every rank sends its partner, with
/// tag 3, split, world, split, world; the partner takes the world ones with world
/// receives and the split ones with split receives, posted before or after the sends.
fn same_tag_on_world_and_split(seed: u64) -> Result<(), String> {
    let link = lossy(0.05, 0.01, Duration::from_millis(2));
    let mut c = ClusterSim::with_workers(seed, 4, link);
    let hosts = form(&mut c)?;
    let comms = split(&mut c, &hosts, |r| r % 2)?;
    let early = seed.is_multiple_of(2);
    let post = |c: &mut ClusterSim, ops: &mut Vec<(HostId, OpId, &'static [u8], u32)>| {
        for r in 0..4u32 {
            let (sub, members) = &comms[r as usize];
            let partner = (r + 2) % 4;
            let partner_sub = members.iter().position(|&m| m == partner).unwrap() as u32;
            let h = hosts[r as usize];
            for (want, from) in [(b"w0", partner), (b"w1", partner)] {
                ops.push((h, recv(c, h, CommId::WORLD, from, 3), want, from));
            }
            for want in [b"s0", b"s1"] {
                ops.push((h, recv(c, h, *sub, partner_sub, 3), want, partner_sub));
            }
        }
    };
    let mut ops = Vec::new();
    if early {
        post(&mut c, &mut ops);
    }
    for r in 0..4u32 {
        let (sub, members) = comms[r as usize].clone();
        let partner = (r + 2) % 4;
        let partner_sub = members.iter().position(|&m| m == partner).unwrap() as u32;
        let h = hosts[r as usize];
        send(&mut c, h, sub, partner_sub, 3, b"s0");
        send(&mut c, h, CommId::WORLD, partner, 3, b"w0");
        send(&mut c, h, sub, partner_sub, 3, b"s1");
        send(&mut c, h, CommId::WORLD, partner, 3, b"w1");
    }
    if !early {
        c.run_until(Duration::from_secs(2), |_| false);
        post(&mut c, &mut ops);
    }
    let ids: Vec<(HostId, OpId)> = ops.iter().map(|(h, op, _, _)| (*h, *op)).collect();
    let results = wait_all(&mut c, &ids, LIMIT)?;
    for ((_, _, want, want_from), got) in ops.iter().zip(results) {
        match got {
            Ok(Outcome::Received { from, tag: 3, data })
                if data == want[..] && from == *want_from => {}
            other => return Err(format!("want {want:?} from {want_from}, got {other:?}")),
        }
    }
    // Ranks a split communicator does not have, and communicators this node lacks.
    let (sub, _) = comms[0].clone();
    let h = hosts[0];
    let outside = CommandError::NotInCommunicator {
        comm: sub,
        rank: 2,
        size: 2,
    };
    let data = Bytes::new();
    let got = c.command(
        h,
        Command::Send {
            comm: sub,
            to: 2,
            tag: 0,
            data,
        },
    );
    if got != Err(outside.clone()) {
        return Err(format!("send outside: {got:?}"));
    }
    let got = c.command(
        h,
        Command::Recv {
            comm: sub,
            from: 2,
            tag: 0,
        },
    );
    if got != Err(outside) {
        return Err(format!("recv outside: {got:?}"));
    }
    let other = comms[1].0;
    let got = c.command(
        h,
        Command::Recv {
            comm: other,
            from: 0,
            tag: 0,
        },
    );
    if got != Err(CommandError::UnknownCommunicator { comm: other }) {
        return Err(format!("recv on a communicator we are not in: {got:?}"));
    }
    Ok(())
}

#[test]
fn split_and_world_messages_with_one_tag_do_not_mix() {
    run_seeds(40, same_tag_on_world_and_split);
}

/// Messages several frames long on a split communicator are matched per (sender,
/// communicator, tag) like small ones: every rank sends its partner a long message on
/// the split and another on the world, same tag, interleaved with small ones on both;
/// each receive (posted before or after) gets its own message intact, and a split one
/// reports the sender's rank in the split.
fn long_messages_on_world_and_split(seed: u64) -> Result<(), String> {
    const FRAME: u32 = 16 << 10;
    let small_frames = |mut config: NodeConfig| {
        config.limits.max_frame_len = FRAME;
        config
    };
    let link = lossy(0.05, 0.01, Duration::from_millis(2));
    let mut c = ClusterSim::with_workers_config(seed, 4, link, small_frames);
    let hosts = form(&mut c)?;
    let comms = split(&mut c, &hosts, |r| r % 2)?;
    // Distinct bytes per (sender, communicator): a message matched to the wrong receive,
    // or a part placed in the wrong message, changes the comparison.
    let long = |r: u32, on_split: bool| -> Bytes {
        let salt = u64::from(r) * 2 + u64::from(on_split);
        (0..3 * FRAME as u64 + 11)
            .map(|i| (i.wrapping_mul(2654435761) ^ salt.wrapping_mul(0x9e37)) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    let early = seed.is_multiple_of(2);
    // (host, receive, wanted bytes, wanted sender rank)
    let mut ops: Vec<(HostId, OpId, Bytes, u32)> = Vec::new();
    let post = |c: &mut ClusterSim, ops: &mut Vec<(HostId, OpId, Bytes, u32)>| {
        for r in 0..4u32 {
            let (sub, members) = &comms[r as usize];
            let partner = (r + 2) % 4;
            let partner_sub = members.iter().position(|&m| m == partner).unwrap() as u32;
            let h = hosts[r as usize];
            let recvs = [
                (CommId::WORLD, partner, long(partner, false)),
                (*sub, partner_sub, long(partner, true)),
                (CommId::WORLD, partner, Bytes::from_static(b"w")),
                (*sub, partner_sub, Bytes::from_static(b"s")),
            ];
            for (comm, from, want) in recvs {
                ops.push((h, recv(c, h, comm, from, 4), want, from));
            }
        }
    };
    if early {
        post(&mut c, &mut ops);
    }
    for r in 0..4u32 {
        let (sub, members) = comms[r as usize].clone();
        let partner = (r + 2) % 4;
        let partner_sub = members.iter().position(|&m| m == partner).unwrap() as u32;
        let h = hosts[r as usize];
        let sends = [
            (sub, partner_sub, long(r, true)),
            (CommId::WORLD, partner, long(r, false)),
            (sub, partner_sub, Bytes::from_static(b"s")),
            (CommId::WORLD, partner, Bytes::from_static(b"w")),
        ];
        for (comm, to, data) in sends {
            let command = Command::Send {
                comm,
                to,
                tag: 4,
                data,
            };
            c.command(h, command).map_err(|e| e.to_string())?;
        }
    }
    if !early {
        c.run_until(Duration::from_secs(2), |_| false);
        post(&mut c, &mut ops);
    }
    let ids: Vec<(HostId, OpId)> = ops.iter().map(|(h, op, _, _)| (*h, *op)).collect();
    let results = wait_all(&mut c, &ids, LIMIT)?;
    for ((_, _, want, want_from), got) in ops.iter().zip(results) {
        match got {
            Ok(Outcome::Received { from, tag: 4, data }) if data == want && from == *want_from => {}
            other => {
                let got = other.map(|o| match o {
                    Outcome::Received { from, data, .. } => {
                        format!("{} bytes from {from}", data.len())
                    }
                    o => format!("{o:?}"),
                });
                return Err(format!(
                    "want {} bytes from {want_from}, got {got:?}",
                    want.len()
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn long_split_and_world_messages_with_one_tag_do_not_mix() {
    run_seeds(12, long_messages_on_world_and_split);
}

/// A recovery (rank 3 crashes) ends the split communicators: the receive posted on one
/// fails, the old id is unknown on the new epoch, and the same split again makes a new
/// communicator, on which messages flow.
fn recovery_ends_splits(seed: u64) -> Result<(), String> {
    let (mut c, hosts) = cluster(seed, 4, RecoveryPolicy::Automatic)?;
    let comms = split(&mut c, &hosts, |r| r % 2)?;
    let (old, members) = comms[0].clone();
    let waiting = recv(&mut c, hosts[0], old, 0, 1);
    c.sim.crash(hosts[3]);
    let survivors = hosts[..3].to_vec();
    if !run_until_epochs(&mut c, &survivors, 1, LIMIT) {
        return Err("no epoch change".into());
    }
    match wait_all(&mut c, &[(hosts[0], waiting)], LIMIT)?.remove(0) {
        Err(OpError::PeerLost { rank: 3 } | OpError::EpochChanged { .. }) => {}
        other => return Err(format!("the posted split receive gave {other:?}")),
    }
    let data = Bytes::from_static(b"late");
    let got = c.command(
        hosts[0],
        Command::Send {
            comm: old,
            to: 0,
            tag: 1,
            data,
        },
    );
    if got != Err(CommandError::UnknownCommunicator { comm: old }) {
        return Err(format!("a send on the old split: {got:?}"));
    }
    let again = split(&mut c, &survivors, |r| r % 2)?;
    let (new, new_members) = again[0].clone();
    if new_members != members || new == old {
        return Err(format!(
            "new split {new:?} {new_members:?} vs {old:?} {members:?}"
        ));
    }
    send(&mut c, hosts[2], again[2].0, 1, 6, b"new");
    let op = recv(&mut c, hosts[0], new, 0, 6);
    match wait_all(&mut c, &[(hosts[0], op)], LIMIT)?.remove(0) {
        Ok(Outcome::Received { from: 0, data, .. }) if data == b"new"[..] => Ok(()),
        other => Err(format!("on the new split: {other:?}")),
    }
}

#[test]
fn a_recovery_ends_split_communicators() {
    run_seeds(40, recovery_ends_splits);
}

/// A checkpoint that only admits a joiner keeps the world's ranks and its unclaimed
/// messages, but ends the split communicator: its posted receive fails with
/// `EpochChanged`, its unclaimed message no longer counts, and its id is unknown.
fn joiner_checkpoint_ends_splits(seed: u64) -> Result<(), String> {
    let adjust = timings(RecoveryPolicy::Automatic);
    let mut c = ClusterSim::new_elastic(seed, 3, lan(), &adjust, |mut s| {
        s.max_world_size = 4;
        s
    });
    for _ in 0..3 {
        c.add_worker(&adjust);
    }
    let hosts = form(&mut c)?;
    // One communicator of all three, in reverse world order.
    let comms = split(&mut c, &hosts, |_| 0)?;
    let sub = comms[0].0;
    // Rank 1 (split rank 1) leaves one split and one world message at rank 0 unclaimed;
    // rank 2 waits on the split for a message that never comes.
    send(&mut c, hosts[1], sub, 2, 4, b"split");
    send(&mut c, hosts[1], CommId::WORLD, 0, 4, b"world");
    let waiting = recv(&mut c, hosts[2], sub, 0, 8);
    let unmatched = |c: &ClusterSim| c.node(hosts[0]).map_or(0, |n| n.stats().unmatched_bytes);
    let both = c.run_until(LIMIT, |c| unmatched(c) >= 2 * (256 + 5));
    if !both {
        return Err(format!("unclaimed bytes at rank 0: {}", unmatched(&c)));
    }
    c.add_worker(&adjust);
    c.run_until(Duration::from_secs(1), |_| false);
    let mut ops = Vec::new();
    for h in &hosts {
        ops.push((
            *h,
            c.command(*h, Command::Checkpoint)
                .map_err(|e| e.to_string())?,
        ));
    }
    let mut epoch = 0;
    for got in wait_all(&mut c, &ops, LIMIT)? {
        match got {
            Ok(Outcome::Checkpoint {
                epoch: e,
                world_size: 4,
                ..
            }) => epoch = e,
            other => return Err(format!("checkpoint: {other:?}")),
        }
    }
    match wait_all(&mut c, &[(hosts[2], waiting)], LIMIT)?.remove(0) {
        Err(OpError::EpochChanged { epoch: e }) if e == epoch => {}
        other => return Err(format!("the posted split receive gave {other:?}")),
    }
    let got = c.command(
        hosts[0],
        Command::Recv {
            comm: sub,
            from: 1,
            tag: 4,
        },
    );
    if got != Err(CommandError::UnknownCommunicator { comm: sub }) {
        return Err(format!("a receive on the old split: {got:?}"));
    }
    // The world message survived the checkpoint; the split one's bytes are gone.
    let op = recv(&mut c, hosts[0], CommId::WORLD, 1, 4);
    match wait_all(&mut c, &[(hosts[0], op)], LIMIT)?.remove(0) {
        Ok(Outcome::Received { from: 1, data, .. }) if data == b"world"[..] => {}
        other => return Err(format!("the world message: {other:?}")),
    }
    match unmatched(&c) {
        0 => Ok(()),
        left => Err(format!("{left} unclaimed bytes left at rank 0")),
    }
}

#[test]
fn a_checkpoint_admitting_a_joiner_ends_split_communicators() {
    run_seeds(20, joiner_checkpoint_ends_splits);
}
