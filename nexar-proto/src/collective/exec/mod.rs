//! The executor: runs every collective of a node, whatever its plan.
//!
//! It owns the communicators and their sequence numbers, the operations in flight (many at
//! once: non-blocking collectives), a bounded window of chunks that arrive before their
//! operation starts, deadlines, and the flight recorder. Inputs are commands, chunks and
//! time; outputs are chunks to send, completions and read-pausing requests, all values.
//!
//! Mismatch detection: the first chunk a rank sends to each peer in an operation carries
//! its fingerprint. A rank that sees a different one fails the operation with `Mismatch`
//! and sends its own fingerprint to every member as an *abort* chunk (step `ABORT_STEP`);
//! a rank that receives any abort sends its own fingerprint to everyone once. So every
//! rank sees every differing fingerprint and fails with `Mismatch`, instead of hanging.

mod early;
mod mismatch;
mod start;
mod validate;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::buffer::Buffer;
use super::comm::{CommId, Communicator};
use super::flight::{FlightRecorder, FlightState};
use super::plan_cache::PlanCache;
use super::running::{InChunk, OutChunk, Running, Violation};
use super::select::CollectiveConfig;
use crate::codec::{Chunk, Fingerprint, Message, Pieces};
use crate::error::OpError;
use crate::event::{OpId, Outcome};

/// Step number of an abort chunk (no plan has this many steps).
pub(crate) const ABORT_STEP: u32 = u32::MAX;

/// What the executor asks the node to do.
#[derive(Debug)]
pub(crate) enum ExecOutput {
    /// Send a collective frame to a world rank: `frame` (header and fields), then `bulk`
    /// (the chunk's payload, possibly empty) on the same stream. Kept apart so the payload
    /// reaches QUIC's send buffer without being copied into the frame.
    Send { to: u32, frame: Bytes, bulk: Pieces },
    /// An operation finished.
    Completed {
        op: OpId,
        outcome: Result<Outcome, OpError>,
    },
    /// Stop or resume reading the collective stream from a world rank.
    SetReading { from: u32, on: bool },
}

/// Executor limits and policy.
#[derive(Debug, Clone)]
pub(crate) struct ExecConfig {
    pub(crate) collective: CollectiveConfig,
    pub(crate) timeout: Duration,
    pub(crate) max_early_bytes: usize,
}

/// What an operation is for: the user's result, or a split in progress.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    User,
    Split { parent_seq: u64 },
}

#[derive(Debug)]
struct Op {
    id: OpId,
    purpose: Purpose,
    deadline: Instant,
    run: Running,
}

/// An operation that ended here, kept a while to judge aborts that arrive after it.
#[derive(Debug)]
struct Ended {
    key: (u64, u64),
    fp: Fingerprint,
    /// Peers whose own fingerprint we checked (and found equal) in this operation.
    checked: BTreeSet<u32>,
    /// It failed here: the application has already had its error.
    failed: bool,
}

/// How many ended operations are kept for judging late aborts (as many as the flight
/// recorder shows).
const ENDED_LEN: usize = crate::collective::flight::FLIGHT_RECORD_LEN;

/// Counters a member's traffic can move.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ExecCounters {
    /// Abort chunks ignored: no fingerprint, for an operation too old to judge, or
    /// contradicting what the sender told us in that operation.
    pub(crate) aborts_ignored: u64,
}

pub(crate) struct Executor {
    me: u32,
    epoch: u64,
    config: ExecConfig,
    comms: BTreeMap<CommId, Communicator>,
    ops: BTreeMap<(u64, u64), Op>,
    early: early::Early,
    /// Mismatches seen for operations that had already finished here: the next
    /// operation on that communicator fails with it.
    poisoned: BTreeMap<u64, OpError>,
    ended: VecDeque<Ended>,
    counters: ExecCounters,
    aborts_sent: BTreeSet<(u64, u64)>,
    flight: FlightRecorder,
    plans: PlanCache,
    started: Instant,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("ops", &self.ops.len())
            .field("comms", &self.comms.len())
            .finish_non_exhaustive()
    }
}

impl Executor {
    pub(crate) fn new(me: u32, world: u32, epoch: u64, config: ExecConfig, now: Instant) -> Self {
        let mut comms = BTreeMap::new();
        comms.insert(CommId::WORLD, Communicator::world(world, me));
        Self {
            me,
            epoch,
            config,
            comms,
            ops: BTreeMap::new(),
            early: early::Early::default(),
            poisoned: BTreeMap::new(),
            ended: VecDeque::new(),
            counters: ExecCounters::default(),
            aborts_sent: BTreeSet::new(),
            flight: FlightRecorder::default(),
            plans: PlanCache::default(),
            started: now,
        }
    }

    /// Size and our rank in a communicator.
    pub(crate) fn comm_info(&self, comm: CommId) -> Option<(u32, u32)> {
        self.comms.get(&comm).map(|c| (c.size(), c.me))
    }

    /// The world rank of each rank of a communicator, in its rank order.
    pub(crate) fn comm_members(&self, comm: CommId) -> Option<&[u32]> {
        self.comms.get(&comm).map(|c| c.members.as_slice())
    }

    /// A chunk from world rank `from`.
    pub(crate) fn on_chunk(&mut self, from: u32, chunk: Chunk, out: &mut Vec<ExecOutput>) {
        let h = chunk.header;
        if h.epoch != self.epoch {
            return; // from another membership epoch: stale by definition
        }
        let key = (h.comm, h.seq);
        let Some(comm) = self.comms.get(&CommId(h.comm)) else {
            return self.hold_early(from, chunk, out);
        };
        let Some(peer) = comm.rank_of(from) else {
            return;
        };
        if !self.ops.contains_key(&key) && h.seq >= comm.next_seq {
            // Not started here yet, aborts included: an abort is judged against the
            // operation it names once we run it, so it cannot fail any other one.
            return self.hold_early(from, chunk, out);
        }
        if h.step == ABORT_STEP {
            return self.on_abort(key, peer, chunk.fingerprint, out);
        }
        if !self.ops.contains_key(&key) {
            return; // a finished operation's straggler: nothing to do
        }
        let mut sends = Vec::new();
        let result = match self.ops.get_mut(&key) {
            Some(op) => op.run.on_chunk(
                InChunk {
                    from: peer,
                    step: h.step,
                    offset: h.offset,
                    fingerprint: chunk.fingerprint,
                    payload: chunk.payload,
                },
                &mut sends,
            ),
            None => Ok(()),
        };
        self.after_progress(h.comm, h.seq, sends, result, out);
    }

    /// Each peer's share of the early window.
    fn early_share(&self) -> usize {
        let peers = self
            .comms
            .get(&CommId::WORLD)
            .map_or(1, |c| c.size())
            .max(2)
            - 1;
        self.config.max_early_bytes / peers as usize
    }

    fn hold_early(&mut self, from: u32, chunk: Chunk, out: &mut Vec<ExecOutput>) {
        let share = self.early_share();
        if self.early.hold(from, chunk, share) {
            // Bounded window: stop reading this peer; QUIC flow control holds the rest.
            out.push(ExecOutput::SetReading { from, on: false });
        }
    }

    fn maybe_resume(&mut self, out: &mut Vec<ExecOutput>) {
        let share = self.early_share();
        for from in self.early.resumable(share) {
            out.push(ExecOutput::SetReading { from, on: true });
        }
    }

    /// Bytes held for operations not started here (payload plus a fixed overhead each).
    pub(crate) fn early_bytes(&self) -> usize {
        self.early.bytes()
    }

    pub(crate) fn counters(&self) -> ExecCounters {
        self.counters
    }

    /// Remember how an operation ended, for aborts that name it later.
    fn record_end(&mut self, key: (u64, u64), op: &Op, failed: bool) {
        if self.ended.len() == ENDED_LEN {
            if let Some(old) = self.ended.pop_front() {
                self.aborts_sent.remove(&old.key);
            }
        }
        self.ended.push_back(Ended {
            key,
            fp: op.run.fp,
            checked: op.run.fp_checked().clone(),
            failed,
        });
    }

    /// Send the chunks a step produced, then finish or fail the operation as it stands.
    fn after_progress(
        &mut self,
        comm: u64,
        seq: u64,
        sends: Vec<OutChunk>,
        mut result: Result<(), Violation>,
        out: &mut Vec<ExecOutput>,
    ) {
        // Our own chunks (a plan may send to itself) go straight back in, in order;
        // feeding one may complete a step and produce more.
        let mut queue: std::collections::VecDeque<OutChunk> = sends.into();
        while let Some(s) = queue.pop_front() {
            let to = self.world_rank(comm, s.to);
            if to != self.me {
                let (frame, bulk) = frame(s);
                out.push(ExecOutput::Send { to, frame, bulk });
                continue;
            }
            if result.is_err() {
                continue;
            }
            let me = self.comms.get(&CommId(comm)).map_or(0, |c| c.me);
            let mut more = Vec::new();
            if let Some(op) = self.ops.get_mut(&(comm, seq)) {
                result = op.run.on_chunk(
                    InChunk {
                        from: me,
                        step: s.header.step,
                        offset: s.header.offset,
                        fingerprint: s.fingerprint,
                        payload: s.payload,
                    },
                    &mut more,
                );
            }
            queue.extend(more);
        }
        match result {
            Err(Violation::Mismatch { peer, theirs }) => {
                let err = self.mismatch_error(comm, seq, peer, theirs);
                self.fail(comm, seq, err, out);
                self.send_abort(comm, seq, out);
            }
            Err(Violation::Protocol { peer, detail }) => {
                let rank = self.world_rank(comm, peer);
                self.fail(comm, seq, OpError::Protocol { rank, detail }, out);
            }
            Ok(()) => {
                if self.ops.get(&(comm, seq)).is_some_and(|o| o.run.is_done()) {
                    self.complete(comm, seq, out);
                }
            }
        }
    }

    fn complete(&mut self, comm: u64, seq: u64, out: &mut Vec<ExecOutput>) {
        let Some(op) = self.ops.remove(&(comm, seq)) else {
            return;
        };
        self.record_end((comm, seq), &op, false);
        self.flight.update(comm, seq, FlightState::Done);
        let size = self.comms.get(&CommId(comm)).map_or(1, Communicator::size);
        let buffer = op.run.finish(size);
        let outcome = match op.purpose {
            Purpose::User => Ok(Outcome::Collective { buffer }),
            Purpose::Split { parent_seq } => Ok(self.finish_split(comm, parent_seq, buffer)),
        };
        out.push(ExecOutput::Completed { op: op.id, outcome });
    }

    fn finish_split(&mut self, comm: u64, parent_seq: u64, gathered: Buffer) -> Outcome {
        let values = gathered.into_vec::<u64>().unwrap_or_default();
        let contributions: Vec<(Option<u32>, i64)> = values
            .chunks_exact(2)
            .map(|c| (u32::try_from(c[0]).ok(), c[1] as i64))
            .collect();
        let epoch = self.epoch;
        let none = Outcome::Split {
            comm: None,
            members: Vec::new(),
            epoch,
        };
        let Some(parent) = self.comms.get(&CommId(comm)) else {
            return none;
        };
        match parent.split(epoch, parent_seq, &contributions) {
            Some(child) => {
                let info = (child.id, child.me, child.size());
                let members = child.members.clone();
                self.comms.insert(child.id, child);
                Outcome::Split {
                    comm: Some(info),
                    members,
                    epoch,
                }
            }
            None => none,
        }
    }

    fn fail(&mut self, comm: u64, seq: u64, err: OpError, out: &mut Vec<ExecOutput>) {
        if let Some(op) = self.ops.remove(&(comm, seq)) {
            self.record_end((comm, seq), &op, true);
            self.flight.update(comm, seq, FlightState::Failed);
            out.push(ExecOutput::Completed {
                op: op.id,
                outcome: Err(err),
            });
        }
    }

    fn world_rank(&self, comm: u64, comm_rank: u32) -> u32 {
        world_rank(&self.comms, comm, comm_rank)
    }

    /// Fail operations whose deadline passed, naming whom they waited for.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<ExecOutput>) {
        let expired: Vec<(u64, u64)> = self
            .ops
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for (comm, seq) in expired {
            let Some(op) = self.ops.get(&(comm, seq)) else {
                continue;
            };
            let waiting_for = op
                .run
                .waiting_for()
                .into_iter()
                .map(|r| self.world_rank(comm, r))
                .collect();
            let step = op.run.step();
            self.flight.update(comm, seq, FlightState::Running { step });
            let err = OpError::Timeout {
                op: op.id,
                comm,
                seq,
                waiting_for,
                flight: self.flight.snapshot(),
            };
            self.fail(comm, seq, err, out);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.ops.values().map(|o| o.deadline).min()
    }

    /// The membership is changing: every operation fails with `err` (none may finish on
    /// a world that no longer exists, nor with part of the data).
    pub(crate) fn fail_all(&mut self, err: &OpError, out: &mut Vec<ExecOutput>) {
        let all: Vec<(u64, u64)> = self.ops.keys().copied().collect();
        for (comm, seq) in all {
            self.fail(comm, seq, err.clone(), out);
        }
    }

    /// Whether any operation has chunks waiting for room on a connection.
    pub(crate) fn has_deferred(&self) -> bool {
        self.ops.values().any(|o| o.run.has_deferred())
    }

    /// Encode waiting chunks while `room(world_rank, bytes)` accepts them: operations in
    /// start order, each in plan order, a peer that refuses once skipped from then on
    /// (so chunks keep their order on its stream). Call whenever room may have appeared.
    pub(crate) fn pump_sends(
        &mut self,
        room: &mut dyn FnMut(u32, usize) -> bool,
        out: &mut Vec<ExecOutput>,
    ) {
        let mut blocked = BTreeSet::new();
        let mut sends = Vec::new();
        for ((comm, _), op) in self.ops.iter_mut() {
            if !op.run.has_deferred() {
                continue;
            }
            let world = |r: u32| world_rank(&self.comms, *comm, r);
            let mut room = |to: u32, bytes: usize| {
                let w = world(to);
                if blocked.contains(&w) || !room(w, bytes) {
                    blocked.insert(w);
                    return false;
                }
                true
            };
            op.run.take_sends(&mut room, &mut sends);
            for s in sends.drain(..) {
                let to = world(s.to);
                let (frame, bulk) = frame(s);
                out.push(ExecOutput::Send { to, frame, bulk });
            }
        }
        // An operation whose steps had all run completes once its last send is encoded.
        let done: Vec<(u64, u64)> = self
            .ops
            .iter()
            .filter(|(_, op)| op.run.is_done())
            .map(|(k, _)| *k)
            .collect();
        for (comm, seq) in done {
            self.complete(comm, seq, out);
        }
    }

    /// Operations in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// A world rank is gone: every operation on a communicator that holds it fails.
    pub(crate) fn on_peer_lost(&mut self, rank: u32, out: &mut Vec<ExecOutput>) {
        let affected: Vec<(u64, u64)> = self
            .ops
            .keys()
            .filter(|(c, _)| {
                self.comms
                    .get(&CommId(*c))
                    .is_some_and(|c| c.rank_of(rank).is_some())
            })
            .copied()
            .collect();
        for (comm, seq) in affected {
            self.fail(comm, seq, OpError::PeerLost { rank }, out);
        }
    }
}

/// The world rank of `comm_rank` in communicator `comm` (itself if the comm is unknown).
/// A free function so that `pump_sends` can map ranks while it holds the operations.
fn world_rank(comms: &BTreeMap<CommId, Communicator>, comm: u64, comm_rank: u32) -> u32 {
    comms
        .get(&CommId(comm))
        .and_then(|c| c.members.get(comm_rank as usize).copied())
        .unwrap_or(comm_rank)
}

/// The chunk's frame without its payload, and the payload (see `ExecOutput::Send`).
fn frame(s: OutChunk) -> (Bytes, Pieces) {
    let mut head = bytes::BytesMut::new();
    let bulk = Message::Chunk(Chunk {
        header: s.header,
        fingerprint: s.fingerprint,
        payload: s.payload,
    })
    .encode_prefix(&mut head);
    (head.freeze(), bulk)
}
