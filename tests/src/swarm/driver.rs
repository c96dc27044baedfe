//! One run: its state, forming the cluster, and the loop that interleaves the simulator's
//! events with the driver's timed actions until the run is finished or stuck. The rest of a
//! run lives in sibling modules: [`super::workload`], [`super::events`], [`super::faults`],
//! [`super::checks`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::collective::CommId;
use nexar_proto::sim::{ClusterSim, HostId, SimConfig};
use nexar_proto::RpcRequestId;
use nexar_proto::{Event, Node, NodeConfig, OpId};

use super::expect::Expect;
use super::gen::{stream, Scenario, DELAYS};
use super::program::{Segment, FN_ECHO, FN_FAIL, FN_STALL};
use super::Progress;
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
pub(super) const MAX_SEGMENTS: u64 = 12;

/// A timed action of the driver (not of the simulator).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Wake {
    Fault(usize),
    CheckpointFault(usize),
    Restore(HostId, HostId),
    Heal(HostId, HostId),
    SeedBack,
    Answer(HostId, u64),
}

/// Per node, what the program knows of it.
#[derive(Debug, Default)]
pub(super) struct Host {
    /// Out of the cluster (crashed, evicted, left, failed).
    pub(super) gone: bool,
    /// The segment this node is running, and its rank there.
    pub(super) seg: Option<u64>,
    /// Its rank in that segment.
    pub(super) rank: Option<u32>,
    /// Next step to issue.
    pub(super) cursor: usize,
    /// Ops of the current step that block the next.
    pub(super) blocking: usize,
    /// Not before this virtual time.
    pub(super) ready_at: Duration,
    /// Split communicators of this segment: (split step, colour) -> id.
    pub(super) comms: BTreeMap<(usize, u32), CommId>,
    /// Between a failure and the epoch change that resolves it (as its events tell).
    pub(super) recovering: bool,
    /// Asked for a recovery (manual policy) in this epoch.
    pub(super) asked: bool,
    /// RPC requests waiting for the stall handler: key -> (request, payload).
    pub(super) stalled: BTreeMap<u64, (RpcRequestId, Bytes)>,
    /// Started after formation, to be admitted at a checkpoint.
    pub(super) joiner: bool,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) expect: Expect,
    pub(super) blocking: bool,
    pub(super) issued: Duration,
    pub(super) segment: u64,
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
    pub(super) sc: Scenario,
    pub(super) c: ClusterSim,
    pub(super) adjust: Box<dyn Fn(NodeConfig) -> NodeConfig>,
    pub(super) hosts: BTreeMap<HostId, Host>,
    pub(super) pending: BTreeMap<(HostId, OpId), Pending>,
    pub(super) wakes: BTreeSet<(Duration, u64, Wake)>,
    pub(super) wake_seq: u64,
    /// Segments being run: more than one when ranks that finished a checkpoint run
    /// ahead into the next world while others are still in the old one.
    pub(super) segs: BTreeMap<u64, (Segment, Duration)>,
    pub(super) segments: u64,
    pub(super) steps_started: usize,
    pub(super) broken: bool,
    /// A fault or failure has happened that may legitimately fail operations.
    pub(super) harm: bool,
    /// Since when the nodes have disagreed on the world between segments.
    pub(super) world_wait: Option<Duration>,
    /// A rank has called a checkpoint (the checkpoint faults are scheduled).
    pub(super) checkpoint_seen: bool,
    /// Some node aborted (abort policy): no progress is expected after that.
    pub(super) aborted: bool,
    /// A segment ran to its end after the last harmful fault.
    pub(super) progressed: bool,
    pub(super) last_fault_end: Duration,
    pub(super) formed_at: Duration,
    pub(super) snapshot: Option<Bytes>,
    pub(super) stalls: BTreeMap<Bytes, Duration>,
    pub(super) answer_seq: u64,
    pub(super) delays: TestRng,
    pub(super) violation: Option<String>,
    pub(super) ops: u64,
    pub(super) log: VecDeque<String>,
    /// Log every command and completion (`NEXAR_SWARM_VERBOSE`), to debug one seed.
    pub(super) verbose: bool,
    pub(super) progress: &'a Progress,
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

    pub(super) fn add_worker(&mut self, joiner: bool) -> HostId {
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

    pub(super) fn note(&mut self, what: String) {
        if self.log.len() == if self.verbose { 400 } else { 24 } {
            self.log.pop_front();
        }
        self.log
            .push_back(format!("{:?} {what}", self.c.sim.elapsed()));
    }

    pub(super) fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("at {:?}: {what}", self.c.sim.elapsed()));
        }
    }

    pub(super) fn wake(&mut self, at: Duration, w: Wake) {
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
            .chain(self.describe_nodes())
            .collect();
        Outcome {
            violation: self.violation,
            trace_hash: self.c.sim.trace_hash(),
            virtual_time: self.c.sim.elapsed(),
            ops: self.ops,
            recent,
        }
    }

    /// Each live node's membership state, when the run failed (for the report).
    fn describe_nodes(&self) -> Vec<String> {
        if self.violation.is_none() {
            return Vec::new();
        }
        std::iter::once(self.c.seed)
            .chain(self.c.workers.iter().copied())
            .filter_map(|h| Some(format!("state {h}: {}", self.c.node(h)?.describe())))
            .collect()
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
}
