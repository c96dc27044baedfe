//! One run: form the cluster, apply the faults, drive every rank's program, and check.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::RpcStatus;
use nexar_proto::collective::CommId;
use nexar_proto::sim::{ClusterHost, ClusterSim, HostId, SimConfig};
use nexar_proto::RpcRequestId;
use nexar_proto::{Command, CommandError, Event, Node, NodeConfig, OpId, RecoveryPolicy};

use super::expect::Expect;
use super::gen::{stream, FaultPlan, Scenario, DELAYS};
use super::program::{echo, fail_detail, group, Segment, Step, FN_ECHO, FN_FAIL, FN_STALL};
use super::Progress;
use crate::collectives::buffer;
use crate::support::TestRng;

/// Virtual time a formation may take.
const FORMATION: Duration = Duration::from_secs(60);
/// Virtual time the whole run may take after formation.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Most transport events one input may take a node through.
pub const MAX_PROCESS_STEPS: u64 = 100_000;
/// The simulator's guard: events at one virtual instant.
const LIVELOCK: u64 = 200_000;
/// Most segments a run starts.
const MAX_SEGMENTS: u64 = 12;

/// A timed action of the driver (not of the simulator).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Fault(usize),
    CheckpointFault(usize),
    Restore(HostId, HostId),
    Heal(HostId, HostId),
    SeedBack,
    Answer(HostId, u64),
}

/// Per node, what the program knows of it.
#[derive(Debug, Default)]
struct Host {
    /// Out of the cluster (crashed, evicted, left, failed).
    gone: bool,
    /// The segment this node is running, and its rank there.
    seg: Option<u64>,
    /// Its rank in that segment.
    rank: Option<u32>,
    /// Next step to issue.
    cursor: usize,
    /// Ops of the current step that block the next.
    blocking: usize,
    /// Not before this virtual time.
    ready_at: Duration,
    /// Split communicators of this segment: (split step, colour) -> id.
    comms: BTreeMap<(usize, u32), CommId>,
    /// Between a failure and the epoch change that resolves it (as its events tell).
    recovering: bool,
    /// Asked for a recovery (manual policy) in this epoch.
    asked: bool,
    /// RPC requests waiting for the stall handler: key -> (request, payload).
    stalled: BTreeMap<u64, (RpcRequestId, Bytes)>,
    /// Started after formation, to be admitted at a checkpoint.
    joiner: bool,
}

#[derive(Debug)]
struct Pending {
    expect: Expect,
    blocking: bool,
    issued: Duration,
    segment: u64,
}

/// The verdict of one run.
#[derive(Debug)]
pub struct Outcome {
    /// The first invariant violated, if any.
    pub violation: Option<String>,
    /// Fingerprint of everything the network did.
    pub trace_hash: [u8; 32],
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Operations checked.
    pub ops: u64,
    /// The last simulator events and driver actions, for the report.
    pub recent: Vec<String>,
}

pub(super) struct Run<'a> {
    sc: Scenario,
    c: ClusterSim,
    adjust: Box<dyn Fn(NodeConfig) -> NodeConfig>,
    hosts: BTreeMap<HostId, Host>,
    pending: BTreeMap<(HostId, OpId), Pending>,
    wakes: BTreeSet<(Duration, u64, Wake)>,
    wake_seq: u64,
    /// Segments being run: more than one when ranks that finished a checkpoint run
    /// ahead into the next world while others are still in the old one.
    segs: BTreeMap<u64, (Segment, Duration)>,
    segments: u64,
    steps_started: usize,
    broken: bool,
    /// A fault or failure has happened that may legitimately fail operations.
    harm: bool,
    /// Since when the nodes have disagreed on the world between segments.
    world_wait: Option<Duration>,
    /// A rank has called a checkpoint (the checkpoint faults are scheduled).
    checkpoint_seen: bool,
    /// Some node aborted (abort policy): no progress is expected after that.
    aborted: bool,
    /// A segment ran to its end after the last harmful fault.
    progressed: bool,
    last_fault_end: Duration,
    formed_at: Duration,
    snapshot: Option<Bytes>,
    stalls: BTreeMap<Bytes, Duration>,
    answer_seq: u64,
    delays: TestRng,
    violation: Option<String>,
    ops: u64,
    log: VecDeque<String>,
    /// Log every command and completion (`NEXAR_SWARM_VERBOSE`), to debug one seed.
    verbose: bool,
    progress: &'a Progress,
}

impl<'a> Run<'a> {
    pub(super) fn new(sc: Scenario, progress: &'a Progress) -> Self {
        let p = sc.clone();
        let adjust = move |mut c: NodeConfig| {
            c.heartbeat_interval = p.heartbeat_interval;
            c.heartbeat_timeout = p.heartbeat_timeout;
            c.recovery_timeout = p.recovery_timeout;
            c.collective_timeout = p.collective_timeout;
            c.idle_timeout = p.heartbeat_timeout * 20;
            c.keep_alive = p.heartbeat_timeout * 4;
            c.recovery = p.policy;
            c
        };
        let mut config = SimConfig::with_seed(sc.seed);
        config.default_link = sc.link;
        config.trace_log = 48;
        config.livelock_limit = LIVELOCK;
        let (world, max_world) = (sc.world, sc.max_world);
        let c = ClusterSim::new_configured(config, world, adjust, |mut s| {
            s.max_world_size = max_world;
            s.max_pending_joins = 8;
            s
        });
        let delays = stream(sc.seed, DELAYS);
        let mut run = Run {
            sc,
            c,
            adjust: Box::new(adjust),
            hosts: BTreeMap::new(),
            pending: BTreeMap::new(),
            wakes: BTreeSet::new(),
            wake_seq: 0,
            segs: BTreeMap::new(),
            segments: 0,
            steps_started: 0,
            broken: false,
            harm: false,
            world_wait: None,
            aborted: false,
            checkpoint_seen: false,
            progressed: false,
            last_fault_end: Duration::ZERO,
            formed_at: Duration::ZERO,
            snapshot: None,
            stalls: BTreeMap::new(),
            answer_seq: 0,
            delays,
            violation: None,
            ops: 0,
            log: VecDeque::new(),
            verbose: std::env::var_os("NEXAR_SWARM_VERBOSE").is_some(),
            progress,
        };
        for _ in 0..world {
            run.add_worker(false);
        }
        run
    }

    fn add_worker(&mut self, joiner: bool) -> HostId {
        let id = self.c.add_worker(&*self.adjust);
        if let Some(node) = self.c.node_mut(id) {
            for f in [FN_ECHO, FN_FAIL, FN_STALL] {
                node.register_rpc(f);
            }
        }
        self.hosts.insert(
            id,
            Host {
                joiner,
                ..Host::default()
            },
        );
        id
    }

    fn note(&mut self, what: String) {
        if self.log.len() == if self.verbose { 400 } else { 24 } {
            self.log.pop_front();
        }
        self.log
            .push_back(format!("{:?} {what}", self.c.sim.elapsed()));
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("at {:?}: {what}", self.c.sim.elapsed()));
        }
    }

    fn wake(&mut self, at: Duration, w: Wake) {
        self.wake_seq += 1;
        self.wakes.insert((at, self.wake_seq, w));
    }

    pub(super) fn run(mut self) -> Outcome {
        self.form();
        if self.violation.is_none() {
            self.formed_at = self.c.sim.elapsed();
            for i in 0..self.sc.faults.len() {
                let at = self.formed_at + self.sc.faults[i].0;
                self.wake(at, Wake::Fault(i));
            }
            self.main_loop();
        }
        let recent = self
            .c
            .sim
            .trace_log()
            .map(|e| format!("sim {e}"))
            .chain(self.log.iter().map(|l| format!("driver {l}")))
            .collect();
        Outcome {
            violation: self.violation,
            trace_hash: self.c.sim.trace_hash(),
            virtual_time: self.c.sim.elapsed(),
            ops: self.ops,
            recent,
        }
    }

    fn form(&mut self) {
        let workers = self.c.workers.clone();
        let progress = self.progress;
        let ok = self.c.run_until(FORMATION, |c| {
            progress.at(c.sim.elapsed());
            workers.iter().all(|w| c.ready(*w).is_some())
        });
        if !ok {
            self.violate(format!(
                "{} workers not formed within {FORMATION:?}",
                workers
                    .iter()
                    .filter(|w| self.c.ready(**w).is_none())
                    .count()
            ));
            return;
        }
        if let Err(e) = crate::support::check_formed(&self.c, &workers) {
            self.violate(format!("formation: {e}"));
        }
        if let Some(snap) = self.c.node(self.c.seed).and_then(Node::seed_snapshot) {
            self.snapshot = Some(snap);
        }
        for &w in &workers {
            for e in self.c.take_events(w) {
                if let Event::Ready { .. } = e {
                    continue;
                }
                self.on_event(w, e);
            }
        }
        self.c.take_events(self.c.seed);
        self.start_segment();
    }

    fn main_loop(&mut self) {
        let limit = self.formed_at + RUN_LIMIT;
        let mut iterations = 0u64;
        loop {
            iterations += 1;
            self.drain_events();
            if iterations.is_multiple_of(512) {
                self.check_nodes();
            }
            self.advance_programs();
            if self.violation.is_some() {
                return;
            }
            if self.finished() {
                self.check_nodes();
                self.final_checks();
                return;
            }
            let now = self.c.sim.elapsed();
            if now > limit {
                self.report_stuck(limit);
                return;
            }
            let next_wake = self.wakes.first().map(|w| w.0);
            let next_event = self.c.sim.next_event_time();
            match (next_wake, next_event) {
                (Some(w), e) if e.is_none_or(|e| w <= e) => {
                    let (at, seq, wake) = self.wakes.pop_first().expect("peeked");
                    let _ = seq;
                    self.c.sim.run_until(at.max(now));
                    self.on_wake(wake);
                }
                (_, Some(_)) => {
                    self.progress.at(now);
                    self.c.sim.step();
                }
                _ => {
                    // Nothing left to happen; `finished` judges what is pending.
                    if !self.pending.is_empty() {
                        self.report_stuck(now);
                    } else {
                        self.final_checks();
                    }
                    return;
                }
            }
        }
    }

    fn report_stuck(&mut self, at: Duration) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.issued)
            .map(|((h, op), p)| {
                format!("{h} {op:?} {} issued at {:?}", p.expect.label(), p.issued)
            });
        self.violate(format!(
            "liveness: by {at:?}, {} operations pending (oldest: {oldest:?}), {} segments; (host, segment, cursor, blocking) {:?}",
            self.pending.len(),
            self.segments,
            self.hosts
                .iter()
                .filter(|(_, h)| h.rank.is_some() && !h.gone)
                .map(|(id, h)| (id.0, h.seg, h.cursor, h.blocking))
                .collect::<Vec<_>>()
        ));
    }

    fn finished(&mut self) -> bool {
        let busy_wake = self.wakes.iter().any(|w| !matches!(w.2, Wake::Answer(..)));
        if !self.pending.is_empty() || busy_wake || !self.all_idle() {
            return false;
        }
        let now = self.c.sim.elapsed();
        if !self.broken && self.harm {
            if let Some((_, started)) = self.segs.last_key_value().map(|(_, v)| v) {
                if *started > self.last_fault_end {
                    self.progressed = true;
                }
            }
        }
        // Start another segment while there is budget, and once the faults are over one
        // more, to show the cluster still makes progress.
        let need_progress = self.harm && !self.progressed && self.can_progress();
        // An application whose rank aborted stops (under the abort policy it is over).
        let budget_left = self.steps_started < self.sc.steps && !self.aborted;
        if !(budget_left || need_progress) || self.segments >= MAX_SEGMENTS {
            return true;
        }
        if !budget_left && now <= self.last_fault_end {
            return false; // let the faults play out first
        }
        if self.world().is_some() {
            self.world_wait = None;
            self.start_segment();
            return false;
        }
        // A checkpoint's mesh or a recovery may still be under way: wait, within a bound.
        let since = *self.world_wait.get_or_insert(now);
        let bound =
            self.sc.heartbeat_timeout * 4 + self.sc.recovery_timeout * 6 + Duration::from_secs(5);
        if now < since + bound && self.c.sim.next_event_time().is_some() {
            return false;
        }
        if !self.harm {
            self.violate(format!(
                "the nodes disagree on the world for {bound:?} with no fault to explain it: {}",
                self.world_view()
            ));
        }
        true
    }

    /// Every ready node's (rank, world size, epoch), for messages.
    fn world_view(&self) -> String {
        let v: Vec<_> = self
            .hosts
            .iter()
            .filter(|(id, h)| !h.gone && !self.c.sim.is_crashed(**id))
            .filter_map(|(id, _)| {
                let n = self.c.node(*id)?;
                Some((id.0, n.is_ready(), n.rank(), n.world_size(), n.epoch()))
            })
            .collect();
        format!("(host, ready, rank, size, epoch): {v:?}")
    }

    /// Whether the live nodes could still run a segment (nobody aborted).
    fn can_progress(&self) -> bool {
        !self.aborted
    }

    /// Every live node has nothing left to issue and nothing blocking.
    fn all_idle(&self) -> bool {
        self.hosts.values().all(|h| {
            let Some((seg, _)) = h.seg.and_then(|i| self.segs.get(&i)) else {
                return true;
            };
            h.gone || h.blocking == 0 && (self.broken || h.cursor >= seg.steps.len())
        })
    }

    /// The current world as the nodes report it, if they agree: hosts by rank.
    fn world(&mut self) -> Option<Vec<HostId>> {
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
    fn start_segment(&mut self) {
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
    fn new_segment(&mut self, n: u32) -> u64 {
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

    fn enter(&mut self, id: HostId, index: u64, rank: u32) {
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
    fn run_ahead(&mut self, id: HostId) {
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
    fn delay(&mut self) -> Duration {
        match self.delays.below(20) {
            0..=15 => Duration::ZERO,
            16..=18 => Duration::from_micros(self.delays.below(50_000)),
            _ => Duration::from_millis(self.delays.below(1000)),
        }
    }

    fn advance_programs(&mut self) {
        if self.broken {
            return;
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

    fn issue(
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

    fn command(&mut self, id: HostId, cmd: Command, expect: Expect, blocking: bool) {
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

    fn refused(&mut self, id: HostId, label: &str, e: CommandError) {
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

    fn drain_events(&mut self) {
        let ids: Vec<HostId> = self.c.sim.host_ids().collect();
        for id in ids {
            while let Some(e) = self.c.poll_event(id) {
                self.on_event(id, e);
            }
        }
    }

    fn on_event(&mut self, id: HostId, e: Event) {
        match e {
            Event::Ready { .. } if self.hosts.get(&id).is_some_and(|h| h.joiner) => {
                self.run_ahead(id)
            }
            Event::Completed { op, outcome } => {
                if self.verbose {
                    let text = format!("{id} {op:?} completed {outcome:?}");
                    self.note(text.chars().take(200).collect());
                }
                let Some(p) = self.pending.remove(&(id, op)) else {
                    return; // answers to stalled RPCs, recoveries of past segments
                };
                if p.blocking {
                    if let Some(h) = self.hosts.get_mut(&id) {
                        h.blocking = h.blocking.saturating_sub(1);
                    }
                }
                match p.expect.judge(&outcome) {
                    Ok(true) => {
                        if let (
                            Expect::Split { .. },
                            Ok(nexar_proto::Outcome::Split {
                                comm: Some((cid, _, _)),
                            }),
                        ) = (&p.expect, &outcome)
                        {
                            self.remember_comm(id, p.segment, *cid);
                        }
                        match p.expect {
                            Expect::Checkpoint { leave: true } => {
                                self.hosts.get_mut(&id).expect("known").gone = true;
                            }
                            Expect::Checkpoint { leave: false } => self.run_ahead(id),
                            _ => {}
                        }
                    }
                    Ok(false) => {
                        let err = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                        self.note(format!("{id} {} failed: {err}", p.expect.label()));
                        if self.harm {
                            self.broken = true;
                        } else {
                            self.violate(format!(
                                "{id}: {} failed with no fault to explain it: {err}",
                                p.expect.label()
                            ));
                        }
                    }
                    Err(wrong) => self.violate(format!("{id}: wrong result: {wrong}")),
                }
            }
            Event::RpcRequest {
                request,
                fn_id,
                payload,
                ..
            } => self.on_rpc(id, request, fn_id, payload),
            Event::PeerDown { rank, reason } => {
                self.note(format!("{id} peer {rank} down ({reason:?})"));
                self.suffer(id, "PeerDown");
                if self.sc.policy == RecoveryPolicy::Abort {
                    self.aborted = true;
                }
                let manual = self.sc.policy == RecoveryPolicy::Manual;
                let h = self.hosts.get_mut(&id).expect("known");
                if self.sc.policy != RecoveryPolicy::Abort {
                    h.recovering = true;
                }
                if manual && !h.asked && !h.gone {
                    h.asked = true;
                    self.command(id, Command::Recover, Expect::Recover, false);
                }
            }
            Event::EpochChanged { epoch, dead, .. } => {
                self.note(format!("{id} epoch {epoch} dead {dead:?}"));
                if !dead.is_empty() {
                    self.suffer(id, "EpochChanged after a failure");
                }
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.recovering = false;
                    h.asked = false;
                }
            }
            // A joiner that missed its checkpoint waits in the queue until its formation
            // deadline: typed, and nobody else's business.
            Event::JoinFailed { .. } if self.hosts.get(&id).is_some_and(|h| h.joiner) => {
                self.note(format!("{id} out: {e:?}"));
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.gone = true;
                }
            }
            Event::Evicted { .. } | Event::RecoveryFailed { .. } | Event::JoinFailed { .. } => {
                self.note(format!("{id} out: {e:?}"));
                self.suffer(id, "left the cluster");
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.gone = true;
                }
            }
            Event::SeedStateChanged { .. } => {
                if let Some(snap) = self.c.node(id).and_then(Node::seed_snapshot) {
                    self.snapshot = Some(snap);
                }
            }
            _ => {}
        }
    }

    /// Something failed: fine after a harmful fault, a violation otherwise.
    fn suffer(&mut self, id: HostId, what: &str) {
        self.broken = true;
        if !self.harm {
            self.violate(format!("{id}: {what} with no fault to explain it"));
        }
    }

    fn remember_comm(&mut self, id: HostId, segment: u64, cid: CommId) {
        if self.hosts[&id].seg != Some(segment) {
            return;
        }
        let Some((seg, _)) = self.segs.get(&segment) else {
            return;
        };
        let Some(rank) = self.hosts[&id].rank else {
            return;
        };
        // The split step this rank issued most recently.
        let h = &self.hosts[&id];
        let found = seg.steps[..h.cursor]
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, s)| match s {
                Step::Split { colors, .. } => Some((i, colors[rank as usize])),
                _ => None,
            });
        if let Some((i, Some(color))) = found {
            self.hosts
                .get_mut(&id)
                .expect("known")
                .comms
                .insert((i, color), cid);
        }
    }

    fn on_rpc(&mut self, id: HostId, request: RpcRequestId, fn_id: u32, payload: Bytes) {
        if self.verbose {
            self.note(format!(
                "{id} rpc request {request:?} fn {fn_id} {} B",
                payload.len()
            ));
        }
        match fn_id {
            FN_ECHO => self.respond(id, request, RpcStatus::Ok, echo(&payload), false),
            FN_FAIL => {
                let detail = fail_detail(&payload);
                self.respond(id, request, RpcStatus::HandlerError, detail, false)
            }
            FN_STALL => {
                let stall = self.stalls.get(&payload).copied().unwrap_or_default();
                self.answer_seq += 1;
                let key = self.answer_seq;
                self.hosts
                    .get_mut(&id)
                    .expect("known")
                    .stalled
                    .insert(key, (request, payload));
                let at = self.c.sim.elapsed() + stall;
                self.wake(at, Wake::Answer(id, key));
            }
            other => self.violate(format!("{id}: request for unregistered fn {other}")),
        }
    }

    /// Answer a request; `late`: after a stall, when an epoch change may have withdrawn
    /// the request (the caller's call failed with it), which is no fault.
    fn respond(
        &mut self,
        id: HostId,
        request: RpcRequestId,
        status: RpcStatus,
        payload: Bytes,
        late: bool,
    ) {
        if self.hosts.get(&id).is_none_or(|h| h.gone) || self.c.sim.is_crashed(id) {
            return;
        }
        let cmd = Command::RpcRespond {
            request,
            status,
            payload,
        };
        match self.c.command(id, cmd) {
            Ok(op) => {
                self.pending.insert(
                    (id, op),
                    Pending {
                        expect: Expect::Sent,
                        blocking: false,
                        issued: self.c.sim.elapsed(),
                        segment: u64::MAX,
                    },
                );
            }
            // The caller went away (lost, or the epoch moved on): nothing to answer.
            Err(CommandError::UnknownRpcRequest { .. }) if self.harm || late => {}
            Err(e) => self.refused(id, "rpc answer", e),
        }
    }

    fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Fault(i) => {
                let plan = self.sc.faults[i].1.clone();
                self.apply_fault(plan);
            }
            Wake::CheckpointFault(i) => {
                let plan = self.sc.checkpoint_faults[i].1.clone();
                self.apply_fault(plan);
            }
            Wake::Restore(a, b) => {
                let link = self.sc.link;
                self.c.sim.set_link_both(a, b, link);
            }
            Wake::Heal(a, b) => self.c.sim.heal(a, b),
            Wake::SeedBack => self.restart_seed(),
            Wake::Answer(id, key) => {
                if let Some((request, payload)) =
                    self.hosts.get_mut(&id).and_then(|h| h.stalled.remove(&key))
                {
                    self.respond(id, request, RpcStatus::Ok, echo(&payload), true);
                }
            }
        }
    }

    fn apply_fault(&mut self, plan: FaultPlan) {
        let now = self.c.sim.elapsed();
        let host = |i: usize| HostId(i);
        if !plan.benign(self.sc.heartbeat_timeout) {
            self.harm = true;
        }
        self.note(format!("fault {plan:?}"));
        let end = match plan {
            FaultPlan::LossBurst { a, b, loss, len } => {
                let mut l = self.sc.link;
                l.loss = nexar_proto::sim::LossModel::Bernoulli(loss);
                self.c.sim.set_link_both(host(a), host(b), l);
                self.wake(now + len, Wake::Restore(host(a), host(b)));
                now + len
            }
            FaultPlan::Partition { a, b, oneway, len } => {
                if oneway {
                    self.c.sim.partition_oneway(host(a), host(b));
                } else {
                    self.c.sim.partition(host(a), host(b));
                }
                self.wake(now + len, Wake::Heal(host(a), host(b)));
                now + len
            }
            FaultPlan::Pause { host: h, len } => {
                if !self.c.sim.is_crashed(host(h)) {
                    self.c.sim.pause(host(h), len);
                }
                now + len
            }
            FaultPlan::Crash { host: h, replace } => {
                if !self.c.sim.is_crashed(host(h)) {
                    self.c.sim.crash(host(h));
                    if let Some(x) = self.hosts.get_mut(&host(h)) {
                        x.gone = true;
                    }
                    // What it had in flight is gone with it.
                    self.pending.retain(|(id, _), _| *id != host(h));
                    if replace {
                        self.add_worker(true);
                    }
                }
                now
            }
            FaultPlan::SeedRestart { down } => {
                let seed = self.c.seed;
                if !self.c.sim.is_crashed(seed) {
                    self.c.sim.crash(seed);
                    self.wake(now + down, Wake::SeedBack);
                }
                now + down
            }
        };
        // Detection and a recovery round may follow the end of a fault.
        let settle = self.sc.heartbeat_timeout * 2 + self.sc.recovery_timeout * 3;
        self.last_fault_end = self.last_fault_end.max(end + settle);
    }

    fn restart_seed(&mut self) {
        let Some(snap) = self.snapshot.clone() else {
            return self.violate("the seed never produced a snapshot".into());
        };
        let seed = self.c.seed;
        let addr = self.c.sim.addr(seed);
        let config = (self.adjust)(ClusterSim::node_config(self.sc.seed ^ 0x5eed, 999, addr));
        match Node::seed_restore(config, &snap, self.c.sim.now()) {
            Ok(node) => {
                self.c.sim.restart(seed, ClusterHost::Node(Box::new(node)));
                self.note("seed restarted from its snapshot".into());
            }
            Err(e) => self.violate(format!("seed_restore refused its own snapshot: {e}")),
        }
    }

    /// Per node: spinning, memory held against the configured limits.
    fn check_nodes(&mut self) {
        let ids: Vec<HostId> = self.c.sim.host_ids().collect();
        for id in ids {
            if self.c.sim.is_crashed(id) {
                continue;
            }
            let Some(node) = self.c.node(id) else {
                continue;
            };
            let s = node.stats();
            let peers = node.world_size().unwrap_or(1).max(1) as usize;
            let max_message = node.max_message();
            let limit = NodeConfig::new([0; 32], 0, self.c.sim.addr(id)).max_unmatched_bytes;
            if s.max_process_steps > MAX_PROCESS_STEPS {
                self.violate(format!(
                    "{id} spun: {} transport events in one input (limit {MAX_PROCESS_STEPS})",
                    s.max_process_steps
                ));
            }
            if s.unmatched_bytes > (limit + max_message) * peers {
                self.violate(format!(
                    "{id} holds {} B of unmatched messages, over {peers} x {limit} B",
                    s.unmatched_bytes
                ));
            }
            if s.rpc_requests > 64 * peers {
                self.violate(format!("{id} holds {} RPC requests", s.rpc_requests));
            }
        }
    }

    fn final_checks(&mut self) {
        if !self.harm && self.steps_started < self.sc.steps && self.segments >= MAX_SEGMENTS {
            self.violate(format!(
                "no fault, yet only {} of {} steps ran in {} segments",
                self.steps_started, self.sc.steps, self.segments
            ));
        }
        let members = self.hosts.iter().any(|(id, h)| {
            !h.gone && !self.c.sim.is_crashed(*id) && self.c.node(*id).is_some_and(Node::is_ready)
        });
        if self.harm && !self.progressed && self.can_progress() && members {
            self.violate(format!(
                "no segment ran after the faults ended ({:?}) in {} segments; {}",
                self.last_fault_end,
                self.segments,
                self.world_view()
            ));
        }
    }
}
