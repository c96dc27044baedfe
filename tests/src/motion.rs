//! Helpers for the membership-in-motion scenarios: short failure-detection timings, a
//! formed cluster under a recovery policy, and readers for the events that matter.

use std::time::Duration;

use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::collective::CommId;
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Command, Event, NodeConfig, OpError, OpId, Outcome, RecoveryPolicy};

use crate::collectives::{buffer, Case};
use crate::support::{form, lan};

/// Heartbeat every 100 ms; silent 500 ms means down.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(500);

/// Node config for these scenarios: fast detection, a long QUIC idle timeout underneath
/// (so silence, not QUIC, is what detects a crash), and `policy`.
pub fn timings(policy: RecoveryPolicy) -> impl Fn(NodeConfig) -> NodeConfig + Clone {
    move |mut c: NodeConfig| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = HEARTBEAT_TIMEOUT;
        c.recovery_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(10);
        c.keep_alive = Duration::from_secs(2);
        c.collective_timeout = Duration::from_secs(20);
        c.recovery = policy;
        c
    }
}

/// A formed cluster of `n` on a LAN under `policy`; hosts in rank order.
pub fn cluster(
    seed: u64,
    n: u32,
    policy: RecoveryPolicy,
) -> Result<(ClusterSim, Vec<HostId>), String> {
    let mut c = ClusterSim::with_workers_config(seed, n, lan(), timings(policy));
    let ranks = form(&mut c)?;
    Ok((c, ranks))
}

/// An f32 sum allreduce of `count` elements.
pub fn allreduce(count: usize) -> Case {
    Case {
        kind: CollectiveKind::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        root: 0,
        count,
    }
}

/// Issue `case` on each host (index = rank in the world they are in now).
pub fn issue(
    c: &mut ClusterSim,
    hosts: &[HostId],
    case: &Case,
) -> Result<Vec<(HostId, OpId)>, String> {
    let n = hosts.len() as u32;
    let mut ops = Vec::new();
    for (rank, h) in hosts.iter().enumerate() {
        let input = buffer(case.dtype, &case.input(rank as u32, n));
        let op = c
            .command(
                *h,
                Command::Collective {
                    comm: CommId::WORLD,
                    kind: case.kind,
                    op: case.op,
                    root: case.root,
                    count: case.count,
                    input,
                    timeout: None,
                },
            )
            .map_err(|e| format!("rank {rank}: command refused: {e}"))?;
        ops.push((*h, op));
    }
    Ok(ops)
}

/// Run `case` on `hosts` (rank order) and require the exact reference result everywhere.
pub fn correct_on(c: &mut ClusterSim, hosts: &[HostId], case: &Case) -> Result<(), String> {
    let ops = issue(c, hosts, case)?;
    let results = crate::collectives::wait_all(c, &ops, Duration::from_secs(20))?;
    let n = hosts.len() as u32;
    for (rank, r) in results.iter().enumerate() {
        match r {
            Ok(o) if is_correct(case, rank as u32, n, o) => {}
            other => return Err(format!("rank {rank} of {n}: {other:?}")),
        }
    }
    Ok(())
}

/// Whether `result` is exactly `case`'s output for `rank` of `n`.
pub fn is_correct(case: &Case, rank: u32, n: u32, result: &Outcome) -> bool {
    let Outcome::Collective { buffer: got } = result else {
        return false;
    };
    let want = buffer(case.dtype, &case.expected_output(rank, n));
    got.encode_range(0..got.len()) == want.encode_range(0..want.len())
}

/// The `PeerDown` ranks `host` reported, in order.
pub fn downs(c: &ClusterSim, host: HostId) -> Vec<u32> {
    c.events(host)
        .iter()
        .filter_map(|e| match e {
            Event::PeerDown { rank, .. } => Some(*rank),
            _ => None,
        })
        .collect()
}

/// One epoch change as a survivor saw it: (epoch, our rank, world size, dead).
pub type Change = (u64, u32, u32, Vec<u32>);

/// The epoch changes `host` reported, in order.
pub fn changes(c: &ClusterSim, host: HostId) -> Vec<Change> {
    c.events(host)
        .iter()
        .filter_map(|e| match e {
            Event::EpochChanged {
                epoch,
                rank,
                world_size,
                dead,
                ..
            } => Some((*epoch, *rank, *world_size, dead.clone())),
            _ => None,
        })
        .collect()
}

/// Whether `host` was told it is evicted.
pub fn evicted(c: &ClusterSim, host: HostId) -> bool {
    c.events(host)
        .iter()
        .any(|e| matches!(e, Event::Evicted { .. }))
}

/// Every survivor saw the same sequence of (epoch, world, dead), and in the last epoch
/// their ranks are exactly 0..n in their old order. Returns the hosts in new rank order.
pub fn check_agreement(c: &ClusterSim, survivors: &[HostId]) -> Result<Vec<HostId>, String> {
    let strip = |v: Vec<Change>| -> Vec<(u64, u32, Vec<u32>)> {
        v.into_iter().map(|(e, _, w, d)| (e, w, d)).collect()
    };
    let first = strip(changes(c, survivors[0]));
    for s in survivors {
        let mine = strip(changes(c, *s));
        if mine != first {
            return Err(format!("survivors disagree: {first:?} vs {mine:?}"));
        }
    }
    let last = |h: &HostId| changes(c, *h).last().map(|x| x.1);
    let ranks: Vec<Option<u32>> = survivors.iter().map(last).collect();
    let want: Vec<Option<u32>> = (0..survivors.len() as u32).map(Some).collect();
    if ranks != want {
        return Err(format!(
            "new ranks {ranks:?} are not dense in the old order"
        ));
    }
    Ok(survivors.to_vec())
}

/// Run until every survivor has reported `epochs` epoch changes (or `limit` passes).
pub fn run_until_epochs(
    c: &mut ClusterSim,
    survivors: &[HostId],
    epochs: usize,
    limit: Duration,
) -> bool {
    let s = survivors.to_vec();
    c.run_until(limit, move |c| {
        s.iter().all(|h| changes(c, *h).len() >= epochs)
    })
}

/// The error every failed result carries, if all failed ones agree.
pub fn common_error(results: &[Result<Outcome, OpError>]) -> Result<Option<OpError>, String> {
    let errors: Vec<&OpError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    match errors.first() {
        None => Ok(None),
        Some(e) if errors.iter().all(|x| x == e) => Ok(Some((*e).clone())),
        Some(_) => Err(format!("survivors failed differently: {errors:?}")),
    }
}
