//! Failure detection and the recovery policies in the simulator: crashes before and
//! during collectives, root crashes, one-way partitions, a second failure during
//! recovery, pauses, and restarts. Every scenario runs over 200 seeds (`NEXAR_SIM_SEED`
//! replays one) and a failure prints its seed.

use std::cell::Cell;
use std::time::Duration;

use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::collective::CommId;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{
    Command, CommandError, Event, JoinError, Node, OpError, Outcome, RecoveryPolicy,
};
use nexar_tests::collectives::{wait_all, Case};
use nexar_tests::motion::{
    allreduce, changes, check_agreement, cluster, common_error, correct_on, downs, evicted,
    is_correct, issue, run_until_epochs, timings, HEARTBEAT_TIMEOUT,
};
use nexar_tests::support::{form, lan};

const SEEDS: u64 = 200;
const LIMIT: Duration = Duration::from_secs(20);

/// Advance virtual time, collecting events as it goes.
fn run_for(c: &mut ClusterSim, d: Duration) {
    c.run_until(d, |_| false);
}

fn without(hosts: &[HostId], gone: &[HostId]) -> Vec<HostId> {
    hosts
        .iter()
        .copied()
        .filter(|h| !gone.contains(h))
        .collect()
}

fn crash_before_collective(seed: u64, policy: RecoveryPolicy) -> Result<(), String> {
    let n = 3 + (seed % 4) as u32;
    let (mut c, ranks) = cluster(seed, n, policy)?;
    let dead = (seed % u64::from(n)) as u32;
    c.sim.crash(ranks[dead as usize]);
    let survivors = without(&ranks, &[ranks[dead as usize]]);
    // Issue at once, before anyone can know: the operation must fail, naming the dead.
    let case = allreduce(64);
    let mut ops = Vec::new();
    for (i, h) in survivors.iter().enumerate() {
        let old_rank = if (i as u32) < dead { i } else { i + 1 } as u32;
        let input = nexar_tests::collectives::buffer(case.dtype, &case.input(old_rank, n));
        let op = c
            .command(
                *h,
                Command::Collective {
                    comm: nexar_proto::collective::CommId::WORLD,
                    kind: case.kind,
                    op: case.op,
                    root: 0,
                    count: case.count,
                    input,
                    timeout: None,
                },
            )
            .map_err(|e| format!("refused: {e}"))?;
        ops.push((*h, op));
    }
    let results = wait_all(&mut c, &ops, LIMIT)?;
    for r in &results {
        if r != &Err(OpError::PeerLost { rank: dead }) {
            return Err(format!("want PeerLost {{ rank: {dead} }}, got {r:?}"));
        }
    }
    for h in &survivors {
        if downs(&c, *h).first() != Some(&dead) {
            return Err(format!("a survivor named {:?}, not {dead}", downs(&c, *h)));
        }
    }
    match policy {
        RecoveryPolicy::Abort => {
            let refused = c.command(
                survivors[0],
                Command::Recv {
                    comm: CommId::WORLD,
                    from: 0,
                    tag: 0,
                },
            );
            if refused != Err(CommandError::Aborted { rank: dead }) {
                return Err(format!("after abort, a command gave {refused:?}"));
            }
        }
        _ => {
            if !run_until_epochs(&mut c, &survivors, 1, LIMIT) {
                return Err("no epoch change".into());
            }
            let order = check_agreement(&c, &survivors)?;
            let (_, _, world, gone) = changes(&c, order[0])[0].clone();
            if world != n - 1 || gone != vec![dead] {
                return Err(format!("new world {world}, dead {gone:?}"));
            }
            correct_on(&mut c, &order, &allreduce(1000))?;
        }
    }
    Ok(())
}

#[test]
fn crash_before_a_collective_abort() {
    run_seeds(SEEDS, |seed| {
        crash_before_collective(seed, RecoveryPolicy::Abort)
    });
}

#[test]
fn crash_before_a_collective_automatic() {
    run_seeds(SEEDS, |seed| {
        crash_before_collective(seed, RecoveryPolicy::Automatic)
    });
}

/// A 1 MiB allreduce, and a rank crashes somewhere in its middle.
fn crash_mid_allreduce(
    seed: u64,
    policy: RecoveryPolicy,
    errors: &Cell<u32>,
) -> Result<(), String> {
    let n = 4;
    let (mut c, ranks) = cluster(seed, n, policy)?;
    let case = allreduce(256 * 1024);
    let ops = issue(&mut c, &ranks, &case)?;
    let dead = (seed % u64::from(n)) as u32;
    // Somewhere from the start to well into the transfer (a 1 MiB ring allreduce takes
    // a few ms of virtual time on these links).
    run_for(&mut c, Duration::from_micros(300 + (seed * 137) % 4000));
    c.sim.crash(ranks[dead as usize]);
    let survivors = without(&ranks, &[ranks[dead as usize]]);
    let live_ops: Vec<_> = ops
        .iter()
        .copied()
        .filter(|(h, _)| *h != ranks[dead as usize])
        .collect();
    let results = wait_all(&mut c, &live_ops, LIMIT)?;
    for (i, r) in results.iter().enumerate() {
        let old_rank = if (i as u32) < dead { i } else { i + 1 } as u32;
        match r {
            Ok(o) if !is_correct(&case, old_rank, n, o) => {
                return Err(format!("rank {old_rank} returned Ok with wrong data"));
            }
            Ok(_) => {}
            Err(e) if *e != (OpError::PeerLost { rank: dead }) => {
                return Err(format!("rank {old_rank}: {e}"));
            }
            Err(_) => {}
        }
    }
    if let Some(_e) = common_error(&results)? {
        errors.set(errors.get() + 1);
    }
    if policy == RecoveryPolicy::Automatic {
        if !run_until_epochs(&mut c, &survivors, 1, LIMIT) {
            return Err("no epoch change".into());
        }
        let order = check_agreement(&c, &survivors)?;
        correct_on(&mut c, &order, &allreduce(256 * 1024))?;
    }
    Ok(())
}

#[test]
fn crash_in_the_middle_of_a_1mib_allreduce_abort() {
    let errors = Cell::new(0);
    run_seeds(SEEDS, |seed| {
        crash_mid_allreduce(seed, RecoveryPolicy::Abort, &errors)
    });
    // The crash must have hit operations in flight in most runs, or this tested nothing.
    assert!(errors.get() >= 100, "only {} runs failed", errors.get());
}

#[test]
fn crash_in_the_middle_of_a_1mib_allreduce_automatic() {
    let errors = Cell::new(0);
    run_seeds(SEEDS, |seed| {
        crash_mid_allreduce(seed, RecoveryPolicy::Automatic, &errors)
    });
    assert!(errors.get() >= 100, "only {} runs failed", errors.get());
}

/// The root of a broadcast, gather or scatter crashes just after the call: no survivor
/// hangs, and every one that fails names the root.
#[test]
fn root_crash_in_broadcast_gather_and_scatter() {
    run_seeds(SEEDS, |seed| {
        let n = 4;
        let (mut c, ranks) = cluster(seed, n, RecoveryPolicy::Abort)?;
        let kind = [
            CollectiveKind::Broadcast,
            CollectiveKind::Gather,
            CollectiveKind::Scatter,
        ][(seed % 3) as usize];
        let root = 1 + (seed % 3) as u32;
        let case = Case {
            kind,
            dtype: DType::I32,
            op: ReduceOp::None,
            root,
            count: 4096,
        };
        let ops = issue(&mut c, &ranks, &case)?;
        run_for(&mut c, Duration::from_micros((seed * 97) % 1500));
        c.sim.crash(ranks[root as usize]);
        let live: Vec<_> = ops
            .into_iter()
            .filter(|(h, _)| *h != ranks[root as usize])
            .collect();
        let results = wait_all(&mut c, &live, LIMIT)?;
        for (i, r) in results.iter().enumerate() {
            let rank = if (i as u32) < root { i } else { i + 1 } as u32;
            match r {
                Ok(o) if is_correct(&case, rank, n, o) => {}
                Err(OpError::PeerLost { rank: r }) if *r == root => {}
                other => return Err(format!("{kind:?} rank {rank}: {other:?}")),
            }
        }
        common_error(&results)?;
        Ok(())
    });
}

/// Traffic from `a` to `b` is dropped (the other way works): whoever is evicted, the
/// survivors end with one epoch, one dead set and one rank map, and the evicted know it.
#[test]
fn one_way_partition_has_no_split_brain() {
    run_seeds(SEEDS, |seed| {
        let n = 5;
        let (mut c, ranks) = cluster(seed, n, RecoveryPolicy::Automatic)?;
        let a = (seed % u64::from(n)) as usize;
        let b = (a + 1 + (seed / 5 % u64::from(n - 1)) as usize) % n as usize;
        c.sim.partition_oneway(ranks[a], ranks[b]);
        let all = ranks.clone();
        let settled = c.run_until(LIMIT, |c| {
            all.iter()
                .all(|h| evicted(c, *h) || !changes(c, *h).is_empty())
        });
        if !settled {
            return Err("no settlement".into());
        }
        // Let any follow-up round finish too.
        run_for(&mut c, Duration::from_secs(3));
        let gone: Vec<HostId> = ranks.iter().copied().filter(|h| evicted(&c, *h)).collect();
        let survivors = without(&ranks, &gone);
        if gone.is_empty() || survivors.len() < n as usize - 2 {
            return Err(format!("evicted {} of {n}", gone.len()));
        }
        let order = check_agreement(&c, &survivors)?;
        let dead: Vec<u32> = changes(&c, order[0])
            .iter()
            .flat_map(|x| x.3.clone())
            .collect();
        if dead.len() != gone.len() {
            return Err(format!("dead {dead:?} but {} evicted", gone.len()));
        }
        correct_on(&mut c, &order, &allreduce(777))
    });
}

/// A rank crashes, and while the survivors recover a second one crashes.
#[test]
fn a_second_failure_during_recovery_converges() {
    run_seeds(SEEDS, |seed| {
        let n = 5;
        let (mut c, ranks) = cluster(seed, n, RecoveryPolicy::Automatic)?;
        let first = (seed % u64::from(n)) as usize;
        let second = (first + 1 + (seed / 7 % u64::from(n - 1)) as usize) % n as usize;
        c.sim.crash(ranks[first]);
        let others = without(&ranks, &[ranks[first]]);
        let watch = others.clone();
        if !c.run_until(LIMIT, |c| watch.iter().any(|h| !downs(c, *h).is_empty())) {
            return Err("first failure not detected".into());
        }
        // A little later, within the round.
        run_for(&mut c, Duration::from_millis(seed % 150));
        c.sim.crash(ranks[second]);
        let survivors = without(&others, &[ranks[second]]);
        let s = survivors.clone();
        let done = c.run_until(LIMIT, |c| {
            s.iter()
                .all(|h| changes(c, *h).last().is_some_and(|x| x.2 == n - 2))
        });
        if !done {
            return Err(format!(
                "not converged: {:?}",
                survivors
                    .iter()
                    .map(|h| changes(&c, *h))
                    .collect::<Vec<_>>()
            ));
        }
        let order = check_agreement(&c, &survivors)?;
        correct_on(&mut c, &order, &allreduce(500))
    });
}

/// A stall shorter than the timeout is no failure; one three times as long evicts the
/// node, and what it sends after waking is rejected by epoch.
#[test]
fn pauses_short_and_long() {
    run_seeds(SEEDS, |seed| {
        let n = 4;
        let (mut c, ranks) = cluster(seed, n, RecoveryPolicy::Automatic)?;
        let k = (seed % u64::from(n)) as usize;
        c.sim.pause(ranks[k], HEARTBEAT_TIMEOUT * 2 / 5);
        run_for(&mut c, HEARTBEAT_TIMEOUT * 4);
        for h in ranks.iter().chain([&c.seed]) {
            if !downs(&c, *h).is_empty() || !changes(&c, *h).is_empty() {
                return Err(format!("a 0.4x pause caused a failure: {:?}", c.events(*h)));
            }
        }
        correct_on(&mut c, &ranks, &allreduce(300))?;

        // Now the long pause, in the middle of a 1 MiB allreduce: what the sleeper had
        // queued or forwards on waking carries the old epoch.
        let big = allreduce(256 * 1024);
        let ops = issue(&mut c, &ranks, &big)?;
        run_for(&mut c, Duration::from_micros(500));
        c.sim.pause(ranks[k], HEARTBEAT_TIMEOUT * 3);
        let survivors = without(&ranks, &[ranks[k]]);
        if !run_until_epochs(&mut c, &survivors, 1, LIMIT) {
            return Err("the paused node was not evicted".into());
        }
        let order = check_agreement(&c, &survivors)?;
        let live: Vec<_> = ops.into_iter().filter(|(h, _)| *h != ranks[k]).collect();
        let rs = wait_all(&mut c, &live, LIMIT)?;
        for r in rs {
            if r != Err(OpError::PeerLost { rank: k as u32 }) && r.is_err() {
                return Err(format!("a survivor's allreduce gave {r:?}"));
            }
        }
        let stale = |c: &ClusterSim| -> u64 {
            survivors
                .iter()
                .chain([&c.seed])
                .map(|h| c.node(*h).map_or(0, |n| n.stats().stale_dropped))
                .sum()
        };
        let stale_before = stale(&c);
        let pk = ranks[k];
        if !c.run_until(LIMIT, |c| evicted(c, pk)) {
            return Err(format!("the paused node never learned: {:?}", c.events(pk)));
        }
        run_for(&mut c, HEARTBEAT_TIMEOUT);
        if stale(&c) <= stale_before {
            return Err("the woken node's old-epoch messages were not seen and rejected".into());
        }
        if c.command(
            pk,
            Command::Recv {
                comm: CommId::WORLD,
                from: 0,
                tag: 1,
            },
        ) != Err(CommandError::NotMember)
        {
            return Err("the evicted node still takes commands".into());
        }
        correct_on(&mut c, &order, &allreduce(300))
    });
}

/// A crashed node restarted at the same address (new incarnation, new keys) is a new
/// node. Restarted at once, while the old one is still a member, it is refused (the
/// world is full) and the old one is still dropped; restarted after the old one was
/// dropped, it joins at the next checkpoint as a new member with the last rank.
#[test]
fn a_restarted_node_is_a_new_incarnation() {
    run_seeds(SEEDS, |seed| {
        let n = 4;
        let adjust = timings(RecoveryPolicy::Automatic);
        let mut c = ClusterSim::new_elastic(seed, n, lan(), &adjust, |mut s| {
            s.max_world_size = n;
            s.max_pending_joins = 2;
            s
        });
        for _ in 0..n {
            c.add_worker(&adjust);
        }
        let ranks = form(&mut c)?;
        let k = (seed % u64::from(n)) as usize;
        let early = seed % 2 == 0;
        c.sim.crash(ranks[k]);
        let survivors = without(&ranks, &[ranks[k]]);
        let restart = |c: &mut ClusterSim| -> Result<(), String> {
            let ticket = c.ticket().clone();
            let addr = c.sim.addr(ranks[k]);
            let mut config = adjust(ClusterSim::node_config(seed ^ 0xdead, 1000, addr));
            config.incarnation = 1;
            let node = Node::worker(config, &ticket, c.sim.now()).map_err(|e| e.to_string())?;
            c.sim.restart(
                ranks[k],
                nexar_proto::sim::ClusterHost::Node(Box::new(node)),
            );
            Ok(())
        };
        if early {
            restart(&mut c)?;
        }
        if !run_until_epochs(&mut c, &survivors, 1, LIMIT) {
            return Err("the old incarnation was not dropped".into());
        }
        let order = check_agreement(&c, &survivors)?;
        if changes(&c, order[0])[0].3 != vec![k as u32] {
            return Err("wrong dead set".into());
        }
        let rk = ranks[k];
        if early {
            c.run_until(LIMIT, |c| {
                c.events(rk)
                    .iter()
                    .any(|e| matches!(e, Event::JoinFailed { .. } | Event::Ready { .. }))
            });
            let refused = c.events(rk).iter().any(|e| {
                matches!(
                    e,
                    Event::JoinFailed {
                        error: JoinError::Rejected { .. }
                    }
                )
            });
            if !refused {
                return Err(format!("the new incarnation: {:?}", c.events(rk)));
            }
            return correct_on(&mut c, &order, &allreduce(100));
        }
        restart(&mut c)?;
        run_for(&mut c, Duration::from_millis(300));
        let mut ops = Vec::new();
        for h in &order {
            ops.push((
                *h,
                c.command(*h, Command::Checkpoint)
                    .map_err(|e| e.to_string())?,
            ));
        }
        wait_all(&mut c, &ops, LIMIT)?;
        // The host's log holds the old incarnation's Ready first.
        let readies = |c: &ClusterSim| -> Vec<(u32, u32, u64)> {
            c.events(rk)
                .iter()
                .filter_map(|e| match e {
                    Event::Ready {
                        rank,
                        world_size,
                        epoch,
                    } => Some((*rank, *world_size, *epoch)),
                    _ => None,
                })
                .collect()
        };
        if !c.run_until(LIMIT, |c| readies(c).len() >= 2) {
            return Err(format!(
                "the new incarnation never joined: {:?}",
                c.events(rk)
            ));
        }
        if readies(&c).last() != Some(&(n - 1, n, 3)) {
            return Err(format!("the new incarnation is {:?}", readies(&c)));
        }
        let peers = c.node(rk).and_then(|x| x.peers()).unwrap_or_default();
        if peers.len() != n as usize {
            return Err(format!("peer table {peers:?}"));
        }
        let mut all = order.clone();
        all.push(rk);
        correct_on(&mut c, &all, &allreduce(100))
    });
}

/// Under the manual policy the survivors get `PeerDown` and decide: here, to recover.
#[test]
fn manual_policy_reports_and_waits_for_the_application() {
    run_seeds(SEEDS, |seed| {
        let n = 4;
        let (mut c, ranks) = cluster(seed, n, RecoveryPolicy::Manual)?;
        let k = (seed % u64::from(n)) as usize;
        c.sim.crash(ranks[k]);
        let survivors = without(&ranks, &[ranks[k]]);
        let s = survivors.clone();
        if !c.run_until(LIMIT, |c| s.iter().all(|h| !downs(c, *h).is_empty())) {
            return Err("not reported".into());
        }
        run_for(&mut c, HEARTBEAT_TIMEOUT * 4);
        if survivors.iter().any(|h| !changes(&c, *h).is_empty()) {
            return Err("manual policy changed the epoch by itself".into());
        }
        let mut ops = Vec::new();
        for h in &survivors {
            ops.push((
                *h,
                c.command(*h, Command::Recover).map_err(|e| e.to_string())?,
            ));
        }
        let results = wait_all(&mut c, &ops, LIMIT)?;
        for r in results {
            match r {
                Ok(Outcome::Checkpoint { world_size, .. }) if world_size == n - 1 => {}
                other => return Err(format!("recover gave {other:?}")),
            }
        }
        let order = check_agreement(&c, &survivors)?;
        correct_on(&mut c, &order, &allreduce(100))
    });
}
