//! Membership in motion on a worker: failure detection, the recovery policies, and moving
//! to the seed's agreed epochs.
//!
//! Rules that keep every survivor consistent:
//! - nothing in flight completes across an epoch change: when recovery starts, every
//!   operation fails with `PeerLost` naming the first dead rank, so no survivor returns a
//!   result computed on part of the world;
//! - the new membership comes only from the seed's `RecoveryAgreed` (never from local
//!   suspicion), so all survivors land on the same epoch, dead set and rank map;
//! - traffic stamped with the next epoch is held (bounded) and replayed once we get
//!   there; traffic from an earlier epoch, or from further ahead than the next one, is
//!   dropped and counted.
//!
//! Checkpoints and leaves, the planned epoch changes, are in `checkpoint.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::checkpoint::Checkpoint;
use super::{Command, Node, Role};
use crate::codec::{Heartbeat, Message, RecoveryAgreed, RecoveryVote};
use crate::config::{NodeConfig, RecoveryPolicy};
use crate::error::{CommandError, OpError};
use crate::event::{DownReason, Event, OpId, Outcome};
use crate::membership::liveness::Liveness;
use crate::membership::view::renumber;
use crate::transport::{StreamClass, TransportEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Normal,
    /// Waiting for the seed's verdict; commands are held until then.
    Recovering {
        deadline: Instant,
    },
    /// Abort policy: a peer died; nothing runs any more.
    Aborted {
        rank: u32,
    },
    /// Evicted, recovery failed (or left): no longer a member.
    Gone,
}

/// The worker's failure-detection and recovery state.
#[derive(Debug)]
pub(super) struct Motion {
    pub(super) policy: RecoveryPolicy,
    recovery_wait: Duration,
    pub(super) liveness: Liveness,
    pub(super) state: State,
    /// Ranks (in the current epoch) found down and not yet resolved by an epoch change.
    pub(super) suspected: BTreeSet<u32>,
    /// Commands issued after `checkpoint()`, started in order on the new world.
    pub(super) held: VecDeque<(OpId, Command)>,
    /// `Recover` commands waiting for the new epoch.
    pub(super) recover_ops: Vec<OpId>,
    /// Traffic from a later epoch than ours (or from ours while we are between epochs),
    /// by (epoch, arrival): replayed in arrival order once we are in that epoch.
    future: BTreeMap<(u64, u64), TransportEvent>,
    /// Arrival counter for `future`'s keys.
    future_seq: u64,
    /// What `future` holds, counted as payload plus [`HELD_OVERHEAD`] per message.
    future_bytes: usize,
    max_future_bytes: usize,
    /// Messages dropped because they belong to an earlier epoch.
    pub(super) stale: u64,
    /// Messages from a later epoch refused: too far ahead, or over `max_future_bytes`.
    pub(super) future_dropped: u64,
    pub(super) checkpoint: Option<Checkpoint>,
    /// Checkpoints requested so far (the counter sent to the seed).
    pub(super) checkpoints: u64,
}

impl Motion {
    pub(super) fn new(config: &NodeConfig) -> Self {
        Self {
            policy: config.recovery,
            // The seed waits `recovery_timeout` for votes; allow for that, a detection
            // window and the verdict's trip.
            recovery_wait: config.recovery_timeout * 2 + config.heartbeat_timeout,
            liveness: Liveness::new(config.heartbeat_interval, config.heartbeat_timeout),
            state: State::Normal,
            suspected: BTreeSet::new(),
            held: VecDeque::new(),
            recover_ops: Vec::new(),
            future: BTreeMap::new(),
            future_seq: 0,
            future_bytes: 0,
            max_future_bytes: config.max_early_bytes,
            stale: 0,
            future_dropped: 0,
            checkpoint: None,
            checkpoints: 0,
        }
    }

    /// `detect` as for [`Node::detecting`].
    pub(super) fn poll_timeout(&self, detect: bool) -> Option<Instant> {
        let recovery = match self.state {
            State::Recovering { deadline } => Some(deadline),
            _ => None,
        };
        match self.state {
            State::Gone | State::Aborted { .. } => None,
            _ => self
                .liveness
                .poll_timeout(detect)
                .into_iter()
                .chain(recovery)
                .min(),
        }
    }

    /// Whether `rank` was found down in this epoch.
    pub(super) fn is_down(&self, rank: u32) -> bool {
        self.suspected.contains(&rank)
    }

    pub(super) fn stale(&self) -> u64 {
        self.stale
    }

    /// Bytes held for later epochs (payload plus the per-message overhead).
    pub(super) fn future_bytes(&self) -> usize {
        self.future_bytes
    }

    /// The next held message that is due in `epoch`, if any. A message is due once we
    /// are in `Normal` at its epoch or later: `intercept` then routes it (same epoch) or
    /// drops it (earlier), and never holds it again, so each held message is replayed
    /// once and `Node::process` cannot spin on it.
    pub(super) fn take_replay(&mut self, epoch: u64) -> Option<TransportEvent> {
        if !matches!(self.state, State::Normal) {
            return None;
        }
        let entry = self.future.first_entry()?;
        if entry.key().0 > epoch {
            return None;
        }
        let event = entry.remove();
        self.future_bytes = self.future_bytes.saturating_sub(held_cost(&event));
        Some(event)
    }

    /// Hold `event`, stamped `msg_epoch`, for later; `false` if over the bound.
    fn hold_future(&mut self, msg_epoch: u64, mut event: TransportEvent) -> bool {
        if let TransportEvent::Message { msg, .. } = &mut event {
            match msg {
                Message::Tagged(t) => {
                    t.payload = crate::retain::bytes(std::mem::take(&mut t.payload));
                }
                Message::TaggedPart(t) => {
                    t.payload = crate::retain::bytes(std::mem::take(&mut t.payload));
                }
                Message::Chunk(c) => {
                    c.payload = crate::retain::pieces(std::mem::take(&mut c.payload));
                }
                _ => {}
            }
        }
        let cost = held_cost(&event);
        if self.future_bytes.saturating_add(cost) > self.max_future_bytes {
            return false;
        }
        self.future_bytes += cost;
        self.future.insert((msg_epoch, self.future_seq), event);
        self.future_seq += 1;
        true
    }

    pub(super) fn clear_future(&mut self) {
        self.future.clear();
        self.future_bytes = 0;
    }
}

/// What one held message costs beyond its payload: the event itself and its key, stored
/// in the map's nodes (which are not always full), and the payload's own allocation.
/// Counting it keeps a flood of empty messages bounded too.
pub(super) const HELD_OVERHEAD: usize =
    2 * std::mem::size_of::<((u64, u64), TransportEvent)>() + 64;

/// How far ahead of ours a peer's epoch may be for its traffic to be held. Every epoch
/// change (recovery verdict or checkpoint agreement) moves all members from `e` to
/// `e + 1`, and the next change needs every member of `e + 1` (a vote or a request from
/// each, or its eviction), so an honest peer is at most one epoch ahead of us.
pub(super) const FUTURE_EPOCHS: u64 = 1;

fn held_cost(event: &TransportEvent) -> usize {
    match event {
        TransportEvent::Message { msg, .. } => HELD_OVERHEAD + message_len(msg),
        _ => HELD_OVERHEAD,
    }
}

fn message_len(msg: &Message) -> usize {
    match msg {
        Message::Chunk(c) => c.payload.len(),
        Message::Tagged(t) => t.payload.len(),
        Message::TaggedPart(t) => t.payload.len(),
        _ => 0,
    }
}

impl Node {
    /// The next held message due now (see [`Motion::take_replay`]).
    pub(super) fn take_replay(&mut self) -> Option<TransportEvent> {
        let (_, _, epoch) = self.membership_now()?;
        self.motion.take_replay(epoch)
    }

    /// Whether a command may run now: `Ok(true)` to start it, `Ok(false)` to hold it
    /// (after `checkpoint()`, whose callers all stand at the same point of their
    /// programs). During a recovery commands are refused, not held: ranks may disagree on
    /// what completed before the failure, so only the application can line them up again
    /// on the new world (after `Event::EpochChanged`).
    pub(super) fn admit(&self) -> Result<bool, CommandError> {
        match self.motion.state {
            State::Normal => Ok(self.motion.checkpoint.is_none()),
            State::Recovering { .. } => Err(CommandError::Recovering),
            State::Aborted { rank } => Err(CommandError::Aborted { rank }),
            State::Gone => Err(CommandError::NotMember),
        }
    }

    /// `Command::Recover`: start (or join) a recovery round now. With nothing found down
    /// in this epoch there is nothing to recover from: typically the round another rank
    /// asked for has already ended and moved us on, and this call, issued for the same
    /// failure, completes at once on the epoch it produced instead of starting another.
    pub(super) fn recover(&mut self, now: Instant, op: OpId) -> Result<(), CommandError> {
        if matches!(self.motion.state, State::Normal) && self.motion.suspected.is_empty() {
            if let Some((me, world, epoch)) = self.membership_now() {
                self.complete(
                    op,
                    Ok(Outcome::Checkpoint {
                        epoch,
                        rank: Some(me),
                        world_size: world,
                    }),
                );
                return Ok(());
            }
        }
        self.motion.recover_ops.push(op);
        if matches!(self.motion.state, State::Normal) {
            let blamed = self.motion.suspected.first().copied();
            self.start_recovery(now, blamed);
        }
        Ok(())
    }

    /// Heartbeat every link from the moment it is up (peers that are ready before us
    /// must hear from us while we finish our own mesh).
    pub(super) fn watch_links(&mut self, now: Instant) {
        if let Role::Worker(w) = &self.role {
            if w.membership().is_some() {
                for conn in w.live_conns() {
                    self.motion.liveness.track(conn, now);
                }
            }
        }
    }

    /// Formation is over: judge silence from now on.
    pub(super) fn on_ready(&mut self, now: Instant) {
        self.watch_links(now);
        self.motion.liveness.refresh(now);
    }

    /// Whether silence counts as failure now: once formed, and during a recovery. While
    /// the mesh forms (at the first join, or a joiner's) the join deadline owns the links.
    pub(super) fn detecting(&self) -> bool {
        self.is_ready() || matches!(self.motion.state, State::Recovering { .. })
    }

    /// Heartbeats and silence; the recovery deadline.
    pub(super) fn motion_tick(&mut self, now: Instant) {
        let detect = self.detecting();
        let tick = self.motion.liveness.handle_timeout(now, detect);
        let epoch = self.epoch();
        for (conn, seq) in tick.beats {
            let frame = Message::Heartbeat(Heartbeat { epoch, seq }).to_frame();
            let _ = self.transport.send(conn, StreamClass::Control, frame);
        }
        for conn in tick.silent {
            let rank = match &self.role {
                Role::Worker(w) => w.rank_of(conn),
                Role::Seed { .. } => None,
            };
            if let Some(rank) = rank {
                self.peer_down(now, rank, DownReason::Silent);
            } else {
                // A silent seed matters only to a recovery (whose own deadline covers
                // it) and to what we send it: give up the link and dial it again, as it
                // may be restarting from its persisted state.
                self.seed_silent(now, conn);
            }
        }
        if let State::Recovering { deadline } = self.motion.state {
            if deadline <= now {
                self.leave_cluster(
                    now,
                    Event::RecoveryFailed {
                        detail: "no agreement from the seed in time".into(),
                    },
                );
            }
        }
    }

    /// Look at a transport event before routing: liveness, the seed's verdicts, and
    /// traffic from other epochs. Returns the event if routing should still see it.
    pub(super) fn intercept(
        &mut self,
        now: Instant,
        event: TransportEvent,
    ) -> Option<TransportEvent> {
        let TransportEvent::Message { conn, msg, class } = &event else {
            return Some(event);
        };
        self.motion.liveness.heard(*conn, now);
        let Role::Worker(w) = &self.role else {
            return Some(event);
        };
        let Some(epoch) = w.membership().map(|m| m.epoch) else {
            return Some(event);
        };
        let from_seed = w.seed_conn() == Some(*conn);
        let msg_epoch = match msg {
            Message::Heartbeat(h) => {
                // Only from someone who missed an epoch change: an evicted member that
                // was paused or cut off (or a peer a moment behind us).
                if h.epoch < epoch {
                    self.motion.stale += 1;
                }
                return None;
            }
            Message::RecoveryVote(v) if from_seed => {
                let v = v.clone();
                self.on_call(now, v);
                return None;
            }
            Message::RecoveryAgreed(a) if from_seed => {
                let a = a.clone();
                self.on_verdict(now, a);
                return None;
            }
            Message::CheckpointAgreed(a) if from_seed => {
                let a = a.clone();
                self.on_agreed(now, a);
                return None;
            }
            Message::Chunk(c) if *class == StreamClass::Collective => c.header.epoch,
            Message::Tagged(t) => t.epoch,
            Message::TaggedStart(t) => t.epoch,
            // A part belongs to its message, which carries the epoch it was sent in:
            // while that message is arriving here the part goes to it, even if this
            // node has moved to a later epoch since the message started.
            Message::TaggedPart(t)
                if w.rank_of(*conn)
                    .is_some_and(|from| self.p2p.is_arriving((from, t.comm, t.tag), t.seq)) =>
            {
                return Some(event);
            }
            Message::TaggedPart(t) => t.epoch,
            _ => return Some(event),
        };
        if msg_epoch < epoch {
            self.motion.stale += 1;
            return None;
        }
        if msg_epoch - epoch > FUTURE_EPOCHS {
            // No honest member gets there before us (see `FUTURE_EPOCHS`).
            self.motion.future_dropped += 1;
            return None;
        }
        if msg_epoch > epoch || !matches!(self.motion.state, State::Normal) {
            // A peer is ahead of us (it applied the verdict first), or we are between
            // epochs: keep it for when we get there, within a bound.
            if !self.motion.hold_future(msg_epoch, event) {
                self.motion.future_dropped += 1;
            }
            return None;
        }
        Some(event)
    }

    /// A mesh peer is down (silent, or its connection lost).
    pub(super) fn peer_down(&mut self, now: Instant, rank: u32, reason: DownReason) {
        if matches!(self.motion.state, State::Gone) || !self.motion.suspected.insert(rank) {
            return;
        }
        self.events.push_back(Event::PeerDown { rank, reason });
        match self.motion.state {
            State::Normal => match self.motion.policy {
                RecoveryPolicy::Abort => self.abort(now, rank),
                RecoveryPolicy::Automatic => self.start_recovery(now, Some(rank)),
                _ => self.fail_waiting_on(rank),
            },
            State::Recovering { .. } => self.send_vote(),
            State::Aborted { .. } | State::Gone => {}
        }
    }

    pub(super) fn start_recovery(&mut self, now: Instant, blamed: Option<u32>) {
        self.motion.state = State::Recovering {
            deadline: now + self.motion.recovery_wait,
        };
        if let Some(rank) = blamed {
            self.fail_everything(&OpError::PeerLost { rank });
        }
        self.send_vote();
    }

    fn send_vote(&mut self) {
        let Role::Worker(w) = &self.role else {
            return;
        };
        let (Some(conn), Some(m)) = (w.seed_conn(), w.membership()) else {
            return; // no seed: the recovery deadline reports it
        };
        let vote = Message::RecoveryVote(RecoveryVote {
            epoch: m.epoch,
            voter: m.rank,
            dead: self.motion.suspected.iter().copied().collect(),
        });
        let _ = self
            .transport
            .send(conn, StreamClass::Control, vote.to_frame());
    }

    /// The seed connection is back: whatever it may have missed goes again (a restarted
    /// seed kept no round and no checkpoint requests; a duplicate is harmless to one
    /// that did).
    pub(super) fn seed_reattached(&mut self) {
        if matches!(self.motion.state, State::Recovering { .. }) {
            self.send_vote();
        }
        if let Some(cp) = &mut self.motion.checkpoint {
            // Once agreed (waiting for the new mesh) there is nothing left to ask.
            cp.sent = cp.meshing;
        }
    }

    /// The seed opened a round and asks for our vote.
    fn on_call(&mut self, now: Instant, call: RecoveryVote) {
        if call.voter != RecoveryVote::COORDINATOR || call.epoch != self.epoch() {
            self.motion.stale += 1;
            return;
        }
        for &rank in &call.dead {
            if self.motion.suspected.insert(rank) {
                self.events.push_back(Event::PeerDown {
                    rank,
                    reason: DownReason::Agreed,
                });
            }
        }
        let blamed = call.dead.first().copied();
        match (self.motion.state, self.motion.policy) {
            (State::Normal, RecoveryPolicy::Abort) => {
                if let Some(rank) = blamed {
                    self.abort(now, rank);
                }
            }
            (State::Normal, _) => self.start_recovery(now, blamed),
            (State::Recovering { .. }, _) => self.send_vote(),
            _ => {}
        }
    }

    /// The seed's verdict: move to the new epoch, or learn we were evicted.
    fn on_verdict(&mut self, now: Instant, verdict: RecoveryAgreed) {
        let Some((me, world, epoch)) = self.membership_now() else {
            return;
        };
        if verdict.old_epoch != epoch || matches!(self.motion.state, State::Gone) {
            self.motion.stale += 1;
            return;
        }
        if matches!(self.motion.state, State::Aborted { .. }) {
            return; // the abort policy does not continue on a smaller world
        }
        let dead: BTreeSet<u32> = verdict.dead.iter().copied().collect();
        if dead.contains(&me) {
            self.leave_cluster(
                now,
                Event::Evicted {
                    epoch: verdict.new_epoch,
                },
            );
            return;
        }
        if let Some(&first) = dead.first() {
            if matches!(self.motion.state, State::Normal) {
                self.fail_everything(&OpError::PeerLost { rank: first });
            }
        }
        let map = renumber(world, &dead);
        match &mut self.role {
            Role::Worker(w) => w.renumber(&map, verdict.new_epoch),
            Role::Seed { .. } => return,
        }
        self.enter_epoch(now, &map, true);
        self.events.push_back(Event::EpochChanged {
            epoch: verdict.new_epoch,
            rank: map[&me],
            world_size: map.len() as u32,
            dead: dead.into_iter().collect(),
            left: Vec::new(),
            joined: Vec::new(),
        });
        self.settle_mesh(now);
        self.finish_change(now);
    }

    /// Stop being a member: fail everything, close every connection, say why.
    fn leave_cluster(&mut self, now: Instant, why: Event) {
        self.stop(now, 0, Some(why));
    }

    pub(super) fn stop(&mut self, now: Instant, code: u64, why: Option<Event>) {
        self.motion.state = State::Gone;
        if let Some(cp) = self.motion.checkpoint.take() {
            self.complete(cp.op, Err(OpError::NotMember));
        }
        self.fail_everything(&OpError::NotMember);
        for (op, _) in std::mem::take(&mut self.motion.held) {
            self.complete(op, Err(OpError::NotMember));
        }
        for op in std::mem::take(&mut self.motion.recover_ops) {
            self.complete(op, Err(OpError::NotMember));
        }
        self.motion.clear_future();
        let actions = match &mut self.role {
            Role::Worker(w) => w.close_all(code),
            Role::Seed { .. } => Vec::new(),
        };
        self.apply(now, actions);
        if let Some(why) = why {
            self.events.push_back(why);
        }
    }

    /// Fail every collective, posted receive and RPC call with `err`.
    pub(super) fn fail_everything(&mut self, err: &OpError) {
        self.rpc_reset(err);
        for op in self.p2p.take_all_posted() {
            self.complete(op, Err(err.clone()));
        }
        if let Some(exec) = &mut self.exec {
            let mut out = Vec::new();
            exec.fail_all(err, &mut out);
            self.apply_exec(out);
        }
    }

    pub(super) fn complete(&mut self, op: OpId, outcome: Result<Outcome, OpError>) {
        self.events.push_back(Event::Completed { op, outcome });
    }

    /// (rank, world size, epoch) once welcomed.
    pub(super) fn membership_now(&self) -> Option<(u32, u32, u64)> {
        match &self.role {
            Role::Worker(w) => w.membership().map(|m| (m.rank, m.world_size, m.epoch)),
            Role::Seed { .. } => None,
        }
    }
}
