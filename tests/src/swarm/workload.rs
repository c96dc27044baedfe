//! Each rank's workload: the segments, the world they run on, and issuing their steps as
//! commands. Separate from the run loop because it is what the application does, not when.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nexar_proto::collective::CommId;
use nexar_proto::sim::HostId;
use nexar_proto::{Command, CommandError};

use super::driver::{Pending, Run, Wake, MAX_SEGMENTS};
use super::expect::Expect;
use super::program::{group, Segment, Step};
use crate::collectives::buffer;

impl Run<'_> {
    pub(super) fn can_progress(&self) -> bool {
        !self.aborted
    }

    /// Every live node has nothing left to issue and nothing blocking.
    pub(super) fn all_idle(&self) -> bool {
        self.hosts.values().all(|h| {
            let Some((seg, _)) = h.seg.and_then(|i| self.segs.get(&i)) else {
                return true;
            };
            h.gone || h.blocking == 0 && (self.broken || h.cursor >= seg.steps.len())
        })
    }

    /// The current world as the nodes report it, if they agree: hosts by rank.
    pub(super) fn world(&mut self) -> Option<Vec<HostId>> {
        let mut by_rank: BTreeMap<u32, HostId> = BTreeMap::new();
        let mut epochs = BTreeSet::new();
        let mut sizes = BTreeSet::new();
        for (&id, h) in &self.hosts {
            if h.gone || self.c.sim.is_crashed(id) {
                continue;
            }
            let Some(node) = self.c.node(id) else {
                continue;
            };
            if !node.is_ready() {
                continue;
            }
            if h.recovering {
                return None;
            }
            let (Some(rank), Some(size)) = (node.rank(), node.world_size()) else {
                continue;
            };
            if by_rank.insert(rank, id).is_some() {
                return None;
            }
            epochs.insert(node.epoch());
            sizes.insert(size);
        }
        let n = by_rank.len() as u32;
        let dense = by_rank.keys().copied().eq(0..n);
        (n > 0 && dense && epochs.len() == 1 && sizes.len() == 1 && sizes.contains(&n))
            .then(|| by_rank.into_values().collect())
    }

    /// A fresh segment on the world the nodes agree on (at the start, and after a
    /// failure cut the last one short).
    pub(super) fn start_segment(&mut self) {
        let Some(world) = self.world() else {
            return self.violate("no agreed world to start a segment on".into());
        };
        self.segs.clear();
        self.broken = false;
        for h in self.hosts.values_mut() {
            h.seg = None;
            h.rank = None;
        }
        let n = world.len() as u32;
        let index = self.new_segment(n);
        for (rank, id) in world.iter().enumerate() {
            self.enter(*id, index, rank as u32);
        }
    }

    /// Draw the next segment for a world of `n`; its joiners start now.
    pub(super) fn new_segment(&mut self, n: u32) -> u64 {
        let room = self.sc.max_world.saturating_sub(n);
        let len = (self.sc.steps - self.steps_started.min(self.sc.steps)).clamp(1, 6);
        let index = self.segments;
        let seg = Segment::generate(self.sc.seed, index, n, len, room);
        self.segments += 1;
        self.steps_started += seg.steps.len();
        if let Some(Step::Checkpoint { joiners, .. }) = seg.steps.last() {
            for _ in 0..*joiners {
                self.add_worker(true);
            }
        }
        self.note(format!(
            "segment {index} on {n} ranks: {} steps",
            seg.steps.len()
        ));
        self.segs.insert(index, (seg, self.c.sim.elapsed()));
        index
    }

    pub(super) fn enter(&mut self, id: HostId, index: u64, rank: u32) {
        let d = self.delay();
        let now = self.c.sim.elapsed();
        let h = self.hosts.get_mut(&id).expect("known host");
        h.seg = Some(index);
        h.rank = Some(rank);
        h.cursor = 0;
        h.comms.clear();
        h.ready_at = now + d;
    }

    /// A rank is in a new world after a checkpoint (or a joiner is ready in it): it goes
    /// on with the next segment at once, as an application would, without waiting for
    /// the other ranks to finish their checkpoints.
    pub(super) fn run_ahead(&mut self, id: HostId) {
        if self.broken {
            return;
        }
        let Some(node) = self.c.node(id) else { return };
        let (Some(rank), Some(n)) = (node.rank(), node.world_size()) else {
            return;
        };
        let epoch = node.epoch();
        let current = self.hosts[&id].seg;
        let known = self
            .segs
            .iter()
            .find(|(i, (seg, _))| Some(**i) > current && seg.epoch == Some(epoch))
            .map(|(i, _)| *i);
        let index = match known {
            Some(i) => i,
            None if self.steps_started < self.sc.steps && self.segments < MAX_SEGMENTS => {
                let i = self.new_segment(n);
                if let Some((seg, _)) = self.segs.get_mut(&i) {
                    seg.epoch = Some(epoch);
                }
                i
            }
            None => return,
        };
        if self.segs[&index].0.n != n {
            return self.violate(format!(
                "{id} is rank {rank} of {n} in epoch {epoch}, another rank saw {} ranks",
                self.segs[&index].0.n
            ));
        }
        self.enter(id, index, rank);
    }

    /// How late a rank starts its next step: mostly not at all.
    pub(super) fn delay(&mut self) -> Duration {
        match self.delays.below(20) {
            0..=15 => Duration::ZERO,
            16..=18 => Duration::from_micros(self.delays.below(50_000)),
            _ => Duration::from_millis(self.delays.below(1000)),
        }
    }

    pub(super) fn advance_programs(&mut self) {
        if self.broken {
            return self.skip_to_checkpoints();
        }
        let now = self.c.sim.elapsed();
        let ids: Vec<HostId> = self.hosts.keys().copied().collect();
        for id in ids {
            loop {
                let h = &self.hosts[&id];
                let (Some(index), Some(rank)) = (h.seg, h.rank) else {
                    break;
                };
                let Some((seg, _)) = self.segs.get(&index) else {
                    break;
                };
                if h.gone || h.blocking > 0 || h.ready_at > now || h.cursor >= seg.steps.len() {
                    break;
                }
                let i = h.cursor;
                let step = seg.steps[i].clone();
                let split = match &step {
                    Step::Coll {
                        comm: Some((s, _)), ..
                    } => seg.steps.get(*s).cloned(),
                    _ => None,
                };
                let n = seg.n;
                self.hosts.get_mut(&id).expect("known").cursor += 1;
                self.issue(id, rank, n, i, &step, split.as_ref());
                if self.broken || self.violation.is_some() {
                    break;
                }
                let d = self.delay();
                self.hosts.get_mut(&id).expect("known").ready_at = now + d;
            }
        }
    }

    /// After a failure cut the segment short, a rank issues nothing more of it but its
    /// closing checkpoint (or leave), as an application that meets an error goes on to
    /// its next checkpoint: the checkpoint outlives the recovery (it moves to the new
    /// epoch), so ranks that had already called it wait for the others to call it too.
    ///
    /// Only once some rank has called it: until then nobody waits on it, and a new
    /// segment starts on the new world as soon as everyone is idle.
    fn skip_to_checkpoints(&mut self) {
        let called = self
            .pending
            .values()
            .any(|p| matches!(p.expect, Expect::Checkpoint { .. }));
        if !called {
            return;
        }
        let ids: Vec<HostId> = self.hosts.keys().copied().collect();
        for id in ids {
            let h = &self.hosts[&id];
            let (Some(index), Some(rank)) = (h.seg, h.rank) else {
                continue;
            };
            let Some((seg, _)) = self.segs.get(&index) else {
                continue;
            };
            let last = seg.steps.len().saturating_sub(1);
            if h.gone || h.blocking > 0 || h.cursor > last {
                continue;
            }
            let step = seg.steps[last].clone();
            if !matches!(step, Step::Checkpoint { .. }) {
                continue;
            }
            let n = seg.n;
            self.hosts.get_mut(&id).expect("known").cursor = last + 1;
            self.issue(id, rank, n, last, &step, None);
            if self.violation.is_some() {
                return;
            }
        }
    }

    pub(super) fn issue(
        &mut self,
        id: HostId,
        rank: u32,
        n: u32,
        i: usize,
        step: &Step,
        split: Option<&Step>,
    ) {
        match step {
            Step::Coll { comm, case, wait } => {
                let (comm_id, crank, size) = match comm {
                    None => (CommId::WORLD, rank, n),
                    Some((s, color)) => {
                        let Some(Step::Split { colors, keys }) = split else {
                            return;
                        };
                        let g = group(colors, keys, *color);
                        let Some(pos) = g.iter().position(|r| *r == rank) else {
                            return;
                        };
                        let Some(cid) = self.hosts[&id].comms.get(&(*s, *color)).copied() else {
                            return self.violate(format!("{id}: no communicator from split {s}"));
                        };
                        (cid, pos as u32, g.len() as u32)
                    }
                };
                let input = buffer(case.dtype, &case.input(crank, size));
                let cmd = Command::Collective {
                    comm: comm_id,
                    kind: case.kind,
                    op: case.op,
                    root: case.root,
                    count: case.count,
                    input,
                    timeout: None,
                };
                let expect = Expect::Coll {
                    case: case.clone(),
                    rank: crank,
                    size,
                };
                self.command(id, cmd, expect, *wait);
            }
            Step::P2p { msgs } => {
                let recv_first = (rank as usize + i).is_multiple_of(2);
                let sends = msgs.iter().filter(|m| m.from == rank).map(|m| {
                    (
                        Command::Send {
                            comm: CommId::WORLD,
                            to: m.to,
                            tag: m.tag,
                            data: m.payload(),
                        },
                        Expect::Sent,
                    )
                });
                let recvs = msgs.iter().filter(|m| m.to == rank).map(|m| {
                    (
                        Command::Recv {
                            comm: CommId::WORLD,
                            from: m.from,
                            tag: m.tag,
                        },
                        Expect::Recv {
                            from: m.from,
                            tag: m.tag,
                            data: m.payload(),
                        },
                    )
                });
                let all: Vec<_> = if recv_first {
                    recvs.chain(sends).collect()
                } else {
                    sends.chain(recvs).collect()
                };
                for (cmd, expect) in all {
                    self.command(id, cmd, expect, true);
                }
            }
            Step::Rpc { calls } => {
                for call in calls.iter().filter(|c| c.from == rank) {
                    self.stalls.insert(call.payload.clone(), call.stall);
                    let cmd = Command::Rpc {
                        to: call.to,
                        fn_id: call.fn_id,
                        payload: call.payload.clone(),
                        timeout: call.timeout,
                    };
                    let expect = Expect::Rpc {
                        fn_id: call.fn_id,
                        payload: call.payload.clone(),
                        timeout: call.timeout,
                        stall: call.stall,
                    };
                    self.command(id, cmd, expect, true);
                }
            }
            Step::Split { colors, keys } => {
                let color = colors[rank as usize];
                let want = color.map(|c| {
                    let g = group(colors, keys, c);
                    let pos = g.iter().position(|r| *r == rank).unwrap_or(0);
                    (pos as u32, g.len() as u32)
                });
                let cmd = Command::Split {
                    comm: CommId::WORLD,
                    color,
                    key: keys[rank as usize],
                };
                self.command(id, cmd, Expect::Split { want }, true);
            }
            Step::Checkpoint { leavers, .. } => {
                if !self.checkpoint_seen {
                    self.checkpoint_seen = true;
                    let now = self.c.sim.elapsed();
                    for k in 0..self.sc.checkpoint_faults.len() {
                        let at = now + self.sc.checkpoint_faults[k].0;
                        self.wake(at, Wake::CheckpointFault(k));
                    }
                }
                let leave = leavers.contains(&rank);
                let cmd = if leave {
                    Command::Leave
                } else {
                    Command::Checkpoint
                };
                self.command(id, cmd, Expect::Checkpoint { leave }, true);
            }
        }
    }

    pub(super) fn command(&mut self, id: HostId, cmd: Command, expect: Expect, blocking: bool) {
        let label = expect.label();
        if self.verbose {
            self.note(format!("{id} issues {cmd:?}").chars().take(200).collect());
        }
        match self.c.command(id, cmd) {
            Ok(op) => {
                if self.verbose {
                    self.note(format!("{id} -> {op:?}"));
                }
                self.ops += 1;
                let segment = self.hosts[&id].seg.unwrap_or(u64::MAX);
                self.pending.insert(
                    (id, op),
                    Pending {
                        expect,
                        blocking,
                        issued: self.c.sim.elapsed(),
                        segment,
                    },
                );
                if blocking {
                    self.hosts.get_mut(&id).expect("known").blocking += 1;
                }
            }
            Err(e) => {
                match e {
                    CommandError::Aborted { .. } => self.aborted = true,
                    CommandError::Recovering => {
                        self.hosts.get_mut(&id).expect("known").recovering = true
                    }
                    _ => {}
                }
                self.refused(id, label, e)
            }
        }
    }

    pub(super) fn refused(&mut self, id: HostId, label: &str, e: CommandError) {
        let excused = self.harm
            && matches!(
                e,
                CommandError::Recovering
                    | CommandError::Aborted { .. }
                    | CommandError::NotMember
                    | CommandError::PeerUnavailable { .. }
                    | CommandError::UnknownCommunicator { .. }
                    | CommandError::UnknownRank { .. }
                    | CommandError::Backpressure { .. }
            );
        self.note(format!("{id} {label} refused: {e}"));
        if excused {
            self.broken = true;
        } else {
            self.violate(format!("{id}: {label} refused without cause: {e}"));
        }
    }
}
