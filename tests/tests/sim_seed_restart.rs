//! The seed restarted from its persisted state, in the simulator: the seed crashes, the
//! workers go on without it, it comes back at the same address from its last snapshot,
//! every worker reconnects, and the cluster recovers a crash and admits a joiner through
//! the restored seed. 200 seeds (`NEXAR_SIM_SEED` replays one).

use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::{Limits, SeedSnapshot};
use nexar_proto::sim::{run_seeds, ClusterHost, ClusterSim, HostId};
use nexar_proto::{Command, Event, Node, OpId, Outcome, RecoveryPolicy};
use nexar_tests::collectives::wait_all;
use nexar_tests::motion::{
    allreduce, changes, check_agreement, correct_on, evicted, run_until_epochs, timings,
};
use nexar_tests::support::{form, lan};

const SEEDS: u64 = 200;
const LIMIT: Duration = Duration::from_secs(20);

/// The seed's "state file": its snapshot as of its latest `SeedStateChanged`, as a
/// driver would have written it.
fn persisted(c: &ClusterSim, seed: HostId) -> Result<Bytes, String> {
    if !c
        .events(seed)
        .iter()
        .any(|e| matches!(e, Event::SeedStateChanged { .. }))
    {
        return Err("the seed never asked for its state to be written".into());
    }
    c.node(seed)
        .and_then(Node::seed_snapshot)
        .ok_or_else(|| "a seed has a snapshot".to_string())
}

#[test]
fn the_seed_restarts_from_its_snapshot() {
    run_seeds(SEEDS, |seed| {
        let n = 3 + (seed % 2) as u32;
        let adjust = timings(RecoveryPolicy::Automatic);
        let mut c = ClusterSim::new_elastic(seed, n, lan(), &adjust, |mut s| {
            s.max_pending_joins = 2;
            s
        });
        for _ in 0..n {
            c.add_worker(&adjust);
        }
        let ranks = form(&mut c)?;
        let file = persisted(&c, c.seed)?;
        let before = SeedSnapshot::decode(&file, &Limits::DEFAULT).map_err(|e| e.to_string())?;
        if !before.formed || before.epoch != 1 || before.members.len() != n as usize {
            return Err(format!("snapshot after formation: {before:?}"));
        }

        // The seed dies; collectives never needed it.
        c.sim.crash(c.seed);
        correct_on(&mut c, &ranks, &allreduce(1000))?;
        c.run_until(Duration::from_millis(200 + seed % 1500), |_| false);

        // Back at the same address from the file.
        let addr = c.sim.addr(c.seed);
        let config = adjust(ClusterSim::node_config(seed ^ 0x5eed, 999, addr));
        let node = Node::seed_restore(config, &file, c.sim.now()).map_err(|e| e.to_string())?;
        if node.ticket() != Some(c.ticket()) {
            return Err("the restored seed has another ticket".into());
        }
        c.sim.restart(c.seed, ClusterHost::Node(Box::new(node)));
        let grace = Duration::from_millis(500 + 500);
        c.run_until(grace + Duration::from_secs(2), |_| false);
        // Had anyone not come back within the grace period, the seed would have voted
        // it dead and every worker would have seen an epoch change.
        for h in &ranks {
            if !changes(&c, *h).is_empty() || evicted(&c, *h) {
                return Err(format!(
                    "a worker moved without a failure: {:?}",
                    c.events(*h)
                ));
            }
        }
        let after = persisted(&c, c.seed)?;
        let after = SeedSnapshot::decode(&after, &Limits::DEFAULT).map_err(|e| e.to_string())?;
        if after.incarnation != before.incarnation + 1 || after.members != before.members {
            return Err(format!("restored snapshot {after:?} vs {before:?}"));
        }

        // A worker crash is recovered through the restored seed.
        let k = (seed % u64::from(n)) as usize;
        c.sim.crash(ranks[k]);
        let survivors: Vec<HostId> = ranks.iter().copied().filter(|h| *h != ranks[k]).collect();
        if !run_until_epochs(&mut c, &survivors, 1, LIMIT) {
            return Err("no recovery after the seed's restart".into());
        }
        let order = check_agreement(&c, &survivors)?;
        let (epoch, _, world, dead) = changes(&c, order[0])[0].clone();
        if (epoch, world, dead.clone()) != (2, n - 1, vec![k as u32]) {
            return Err(format!(
                "recovery gave epoch {epoch}, world {world}, dead {dead:?}"
            ));
        }
        correct_on(&mut c, &order, &allreduce(500))?;

        // And a checkpoint admits a new member, with an id never given before.
        let joiner = c.add_worker(&adjust);
        c.run_until(Duration::from_millis(300), |_| false);
        let mut ops: Vec<(HostId, OpId)> = Vec::new();
        for h in &order {
            ops.push((
                *h,
                c.command(*h, Command::Checkpoint)
                    .map_err(|e| e.to_string())?,
            ));
        }
        for r in wait_all(&mut c, &ops, LIMIT)? {
            match r {
                Ok(Outcome::Checkpoint {
                    epoch: 3,
                    world_size,
                    rank: Some(_),
                }) if world_size == n => {}
                other => return Err(format!("checkpoint gave {other:?}")),
            }
        }
        if !c.run_until_ready(&[joiner], LIMIT) {
            return Err(format!("joiner not ready: {:?}", c.events(joiner)));
        }
        if c.ready(joiner) != Some((n - 1, n, 3)) {
            return Err(format!("joiner ready as {:?}", c.ready(joiner)));
        }
        let last = persisted(&c, c.seed)?;
        let last = SeedSnapshot::decode(&last, &Limits::DEFAULT).map_err(|e| e.to_string())?;
        let ids: Vec<u32> = last.members.iter().map(|m| m.id).collect();
        let mut want: Vec<u32> = (0..n).filter(|i| *i != k as u32).collect();
        want.push(n);
        if (last.epoch, ids.clone(), last.next_member) != (3, want.clone(), n + 1) {
            return Err(format!("final snapshot epoch {}, ids {ids:?}", last.epoch));
        }
        let mut all = order.clone();
        all.push(joiner);
        correct_on(&mut c, &all, &allreduce(777))
    });
}
