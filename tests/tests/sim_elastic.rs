//! Elastic membership in the simulator: joins queued while allreduces run and applied at a
//! checkpoint, a graceful leave, and joins past the limits refused. 200 seeds each
//! (`NEXAR_SIM_SEED` replays one).

use std::time::Duration;

use nexar_proto::codec::RejectReason;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{Command, Event, JoinError, OpId, Outcome, RecoveryPolicy};
use nexar_tests::collectives::wait_all;
use nexar_tests::motion::{allreduce, changes, correct_on, downs, is_correct, issue, timings};
use nexar_tests::support::{form, lan};

const SEEDS: u64 = 200;
const LIMIT: Duration = Duration::from_secs(20);

/// A formed cluster of `n` whose seed admits up to `max_world` ranks and queues up to
/// `max_pending` joiners.
fn elastic(
    seed: u64,
    n: u32,
    max_world: u32,
    max_pending: usize,
) -> Result<(ClusterSim, Vec<HostId>), String> {
    let adjust = timings(RecoveryPolicy::Automatic);
    let mut c = ClusterSim::new_elastic(seed, n, lan(), &adjust, |mut s| {
        s.max_world_size = max_world;
        s.max_pending_joins = max_pending;
        s
    });
    for _ in 0..n {
        c.add_worker(&adjust);
    }
    let ranks = form(&mut c)?;
    Ok((c, ranks))
}

fn run_for(c: &mut ClusterSim, d: Duration) {
    c.run_until(d, |_| false);
}

/// Every host checkpoints; returns the outcomes.
fn checkpoint_all(c: &mut ClusterSim, hosts: &[HostId]) -> Result<Vec<Outcome>, String> {
    let mut ops: Vec<(HostId, OpId)> = Vec::new();
    for h in hosts {
        ops.push((
            *h,
            c.command(*h, Command::Checkpoint)
                .map_err(|e| e.to_string())?,
        ));
    }
    wait_all(c, &ops, LIMIT)?
        .into_iter()
        .map(|r| r.map_err(|e| format!("checkpoint failed: {e}")))
        .collect()
}

fn check_allreduce(c: &mut ClusterSim, hosts: &[HostId], count: usize) -> Result<(), String> {
    correct_on(c, hosts, &allreduce(count))
}

/// Two nodes join while the cluster keeps running allreduces; an allreduce is still in
/// flight when every rank calls checkpoint, and another is issued right after it.
#[test]
fn joins_while_allreduces_run() {
    run_seeds(SEEDS, |seed| {
        let (mut c, ranks) = elastic(seed, 3, 6, 4)?;
        let adjust = timings(RecoveryPolicy::Automatic);
        let joiners = [c.add_worker(&adjust), c.add_worker(&adjust)];
        for round in 0..3 {
            check_allreduce(&mut c, &ranks, 100 + round * 50)?;
        }
        // In flight across the checkpoint call, and queued after it.
        let before = allreduce(64 * 1024);
        let before_ops = issue(&mut c, &ranks, &before)?;
        let mut cp_ops = Vec::new();
        for h in &ranks {
            cp_ops.push((
                *h,
                c.command(*h, Command::Checkpoint)
                    .map_err(|e| e.to_string())?,
            ));
        }
        let after = allreduce(999);
        let after_ops = issue(&mut c, &ranks, &after)?;
        for (rank, r) in wait_all(&mut c, &before_ops, LIMIT)?.iter().enumerate() {
            match r {
                Ok(o) if is_correct(&before, rank as u32, 3, o) => {}
                other => return Err(format!("in-flight allreduce on rank {rank}: {other:?}")),
            }
        }
        for r in wait_all(&mut c, &cp_ops, LIMIT)? {
            match r {
                Ok(Outcome::Checkpoint {
                    world_size: 5,
                    epoch: 2,
                    rank: Some(_),
                }) => {}
                other => return Err(format!("checkpoint gave {other:?}")),
            }
        }
        if !c.run_until_ready(&joiners, LIMIT) {
            return Err(format!("joiners not ready: {:?}", c.events(joiners[0])));
        }
        for (i, j) in joiners.iter().enumerate() {
            if c.ready(*j) != Some((3 + i as u32, 5, 2)) {
                return Err(format!("joiner {i} ready as {:?}", c.ready(*j)));
            }
        }
        // The allreduce issued after checkpoint() ran on the new world of 5, with the
        // joiners taking part.
        let mut all: Vec<HostId> = ranks.clone();
        all.extend(joiners);
        let mut late_ops = after_ops.clone();
        for (i, j) in joiners.iter().enumerate() {
            let input =
                nexar_tests::collectives::buffer(after.dtype, &after.input(3 + i as u32, 5));
            let op = c
                .command(
                    *j,
                    Command::Collective {
                        comm: nexar_proto::collective::CommId::WORLD,
                        kind: after.kind,
                        op: after.op,
                        root: 0,
                        count: after.count,
                        input,
                        timeout: None,
                    },
                )
                .map_err(|e| e.to_string())?;
            late_ops.push((*j, op));
        }
        for (rank, r) in wait_all(&mut c, &late_ops, LIMIT)?.iter().enumerate() {
            match r {
                Ok(o) if is_correct(&after, rank as u32, 5, o) => {}
                other => return Err(format!("post-checkpoint allreduce rank {rank}: {other:?}")),
            }
        }
        for h in &ranks {
            let ch = changes(&c, *h);
            if ch.len() != 1 || ch[0].0 != 2 || ch[0].2 != 5 {
                return Err(format!("epoch changes {ch:?}"));
            }
        }
        check_allreduce(&mut c, &all, 4096)
    });
}

/// A rank leaves at a checkpoint: nobody's failure detection trips, the rest renumber
/// densely and go on.
#[test]
fn a_graceful_leave() {
    run_seeds(SEEDS, |seed| {
        let n = 4;
        let (mut c, ranks) = elastic(seed, n, n, 0)?;
        let k = (seed % u64::from(n)) as usize;
        let mut ops = Vec::new();
        for (i, h) in ranks.iter().enumerate() {
            let cmd = if i == k {
                Command::Leave
            } else {
                Command::Checkpoint
            };
            ops.push((*h, c.command(*h, cmd).map_err(|e| e.to_string())?));
        }
        let results = wait_all(&mut c, &ops, LIMIT)?;
        for (i, r) in results.iter().enumerate() {
            let want_rank = if i == k {
                None
            } else {
                Some(if i < k { i } else { i - 1 } as u32)
            };
            match r {
                Ok(Outcome::Checkpoint {
                    rank,
                    world_size: 3,
                    ..
                }) if *rank == want_rank => {}
                other => return Err(format!("rank {i}: {other:?}")),
            }
        }
        let stayers: Vec<HostId> = ranks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, h)| *h)
            .collect();
        // Long enough for any detector to have fired.
        run_for(&mut c, Duration::from_secs(3));
        for h in &stayers {
            if !downs(&c, *h).is_empty() {
                return Err(format!(
                    "a leave tripped failure detection: {:?}",
                    downs(&c, *h)
                ));
            }
            let ch = changes(&c, *h);
            if ch.len() != 1 || ch[0].2 != 3 {
                return Err(format!("changes {ch:?}"));
            }
        }
        let left = c.events(stayers[0]).iter().find_map(|e| match e {
            Event::EpochChanged { left, .. } => Some(left.clone()),
            _ => None,
        });
        if left != Some(vec![k as u32]) {
            return Err(format!("left {left:?}"));
        }
        if c.node(c.seed).and_then(|s| s.world_size()) != Some(3) {
            return Err("the seed's world is not 3".into());
        }
        check_allreduce(&mut c, &stayers, 1000)
    });
}

fn rejected(c: &ClusterSim, h: HostId) -> Option<RejectReason> {
    c.events(h).iter().find_map(|e| match e {
        Event::JoinFailed {
            error: JoinError::Rejected { reason },
        } => Some(*reason),
        _ => None,
    })
}

/// Joins past the queue's capacity or the largest world are refused with the reason
/// (a full queue may clear, so that joiner retries; a full world is final); the queued one
/// is admitted at the checkpoint.
#[test]
fn joins_past_the_limits_are_refused() {
    run_seeds(SEEDS, |seed| {
        let (mut c, ranks) = elastic(seed, 3, 5, 1)?;
        let adjust = timings(RecoveryPolicy::Automatic);
        let first = c.add_worker(&adjust);
        run_for(&mut c, Duration::from_millis(200));
        let second = c.add_worker(&adjust);
        let seed_host = c.seed;
        let queue_full = |c: &ClusterSim| {
            c.events(seed_host).iter().any(|e| {
                matches!(
                    e,
                    Event::JoinerRejected {
                        reason: RejectReason::QueueFull,
                        ..
                    }
                )
            })
        };
        if !c.run_until(LIMIT, queue_full) {
            return Err("the second joiner was not refused for a full queue".into());
        }
        checkpoint_all(&mut c, &ranks)?;
        if !c.run_until_ready(&[first], LIMIT) {
            return Err("the queued joiner was not admitted".into());
        }
        let mut all = ranks.clone();
        all.push(first);
        // World 4 of at most 5: one of the second (retrying) and a third joiner gets the
        // last place; the other is refused for good.
        let third = c.add_worker(&adjust);
        let pair = [second, third];
        if !c.run_until(LIMIT, |c| pair.iter().any(|h| rejected(c, *h).is_some())) {
            return Err("nobody was refused a full world".into());
        }
        let refused: Vec<_> = pair.iter().map(|h| rejected(&c, *h)).collect();
        let (out, inn) = match refused.as_slice() {
            [Some(RejectReason::ClusterFull), None] => (second, third),
            [None, Some(RejectReason::ClusterFull)] => (third, second),
            other => return Err(format!("refusals {other:?}")),
        };
        run_for(&mut c, Duration::from_secs(2));
        checkpoint_all(&mut c, &all)?;
        if !c.run_until_ready(&[inn], LIMIT) {
            return Err(format!(
                "the last joiner was not admitted: {:?}",
                c.events(inn)
            ));
        }
        if c.ready(out).is_some() {
            return Err("a refused joiner became ready".into());
        }
        all.push(inn);
        check_allreduce(&mut c, &all, 300)
    });
}

/// With `min_world_size`, a checkpoint whose leave would take the world below it is not
/// agreed (nobody's `checkpoint()` or `leave()` completes) until a joiner makes up the
/// difference; then the leave and the join are one epoch change.
#[test]
fn a_checkpoint_below_the_minimum_waits_for_a_joiner() {
    run_seeds(SEEDS, |seed| {
        let n = 3;
        let adjust = timings(RecoveryPolicy::Automatic);
        let floor = adjust.clone();
        let mut c = ClusterSim::new_elastic(
            seed,
            n,
            lan(),
            move |cfg| {
                let mut cfg = floor(cfg);
                cfg.min_world_size = n;
                cfg
            },
            |mut s| {
                s.max_world_size = n + 1;
                s.max_pending_joins = 4;
                s
            },
        );
        for _ in 0..n {
            c.add_worker(&adjust);
        }
        let ranks = form(&mut c)?;
        let formed = c.node(c.seed).map(|s| s.epoch()).ok_or("no seed")?;
        let k = (seed % u64::from(n)) as usize;
        let mut ops = Vec::new();
        for (i, h) in ranks.iter().enumerate() {
            let cmd = if i == k {
                Command::Leave
            } else {
                Command::Checkpoint
            };
            ops.push((*h, c.command(*h, cmd).map_err(|e| e.to_string())?));
        }
        // Many checkpoint round trips: below the minimum, none may complete.
        run_for(&mut c, Duration::from_secs(3));
        for (h, op) in &ops {
            let done = c
                .events(*h)
                .iter()
                .any(|e| matches!(e, Event::Completed { op: o, .. } if o == op));
            if done {
                return Err(format!("a checkpoint below the minimum completed on {h:?}"));
            }
        }
        if c.node(c.seed).and_then(|s| s.world_size()) != Some(n) {
            return Err("the seed's world changed while waiting".into());
        }
        let joiner = c.add_worker(&adjust);
        let results = wait_all(&mut c, &ops, LIMIT)?;
        for (i, r) in results.iter().enumerate() {
            let want_rank = match i.cmp(&k) {
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Less => Some(i as u32),
                std::cmp::Ordering::Greater => Some(i as u32 - 1),
            };
            match r {
                Ok(Outcome::Checkpoint {
                    rank,
                    world_size,
                    epoch,
                }) if *rank == want_rank && *world_size == n && *epoch == formed + 1 => {}
                other => return Err(format!("rank {i}: {other:?}")),
            }
        }
        if !c.run_until_ready(&[joiner], LIMIT) {
            return Err("the joiner that made up the minimum was not admitted".into());
        }
        let mut world: Vec<HostId> = ranks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, h)| *h)
            .collect();
        world.push(joiner);
        check_allreduce(&mut c, &world, 500)
    });
}

/// A minimum no checkpoint could ever reach is refused when the seed is built: at the
/// maximum it is accepted, one past it is not.
#[test]
fn a_minimum_above_the_maximum_world_is_refused() {
    use nexar_proto::{ConfigError, Node, NodeConfig, SeedConfig};
    let now = std::time::Instant::now();
    let addr = "127.0.0.1:4000".parse().unwrap();
    let mut config = NodeConfig::new([1; 32], 1_700_000_000, addr);
    let mut seed = SeedConfig::new(3, [2; 32]);
    seed.max_world_size = 5;
    config.min_world_size = 5;
    assert!(Node::seed(config.clone(), seed.clone(), now).is_ok());
    config.min_world_size = 6;
    assert_eq!(
        Node::seed(config, seed, now).err(),
        Some(ConfigError::MinWorldSize { min: 6, max: 5 })
    );
}
