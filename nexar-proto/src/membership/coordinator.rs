//! The seed after formation: the one place where epoch changes are decided.
//!
//! Why the seed: an epoch change must be one agreed message, and two deciders can
//! disagree (a one-way partition makes each side see the other dead). With a single
//! coordinator there is exactly one sequence of epochs, so there is no split brain by
//! construction; the price is that recovery needs the seed alive, as torchrun's
//! rendezvous needs its store. Collectives and point-to-point never touch the seed.
//!
//! A recovery round: a member (or the seed itself, under the automatic policy) reports
//! dead ranks; the seed opens a round for the current epoch, checks what members report
//! against what it sees itself (`round.rs`), and calls every member not yet known dead
//! for its vote (its own suspicions). When every such member has voted,
//! or at `recovery_timeout` (the silent ones are then counted dead too, which is how a
//! second failure during recovery converges), the seed sends `RecoveryAgreed` to every
//! member it can still reach, dead ones included so that a partitioned or paused node
//! learns it was evicted. Survivors renumber densely in their old order.
//!
//! Under the abort policy nothing recovers, so the seed takes no votes at all: a member
//! cannot turn a cluster that is meant to stop into one that shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::liveness::Liveness;
use super::round::Round;
use super::Action;
use crate::codec::{Heartbeat, Message, RecoveryAgreed, RecoveryVote};
use crate::config::RecoveryPolicy;
use crate::event::Event;
use crate::transport::ConnId;

/// One member as the seed knows it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Its control connection to the seed; `None` after a seed restart until it
    /// reconnects.
    pub(crate) conn: Option<ConnId>,
    /// The id its certificate names.
    pub(crate) id: u32,
    /// Where peers dial it.
    pub(crate) addr: SocketAddr,
    /// Its incarnation.
    pub(crate) incarnation: u64,
    /// SHA-256 of its public key: how it is recognised when it reconnects.
    pub(crate) key_sha256: [u8; 32],
}

/// A joiner admitted after formation, waiting for the next checkpoint.
#[derive(Debug)]
pub(crate) struct PendingJoin {
    pub(crate) conn: ConnId,
    pub(crate) remote: SocketAddr,
    pub(crate) hello: crate::codec::Hello,
}

/// The seed's view of the formed cluster.
#[derive(Debug)]
pub(crate) struct Coordinator {
    policy: RecoveryPolicy,
    recovery_timeout: Duration,
    liveness: Liveness,
    epoch: u64,
    /// Index = rank.
    members: Vec<Member>,
    /// Evicted members' connections. Not closed by us: an evicted node that was only
    /// paused or cut off must still hear the verdict, and its late messages must reach us
    /// to be rejected by epoch (a closed connection would answer with a stateless reset,
    /// which says nothing). QUIC's idle timeout ends them once they fall silent.
    evicted: BTreeSet<ConnId>,
    round: Option<Round>,
    /// Ranks the seed itself found down in this epoch (silent or disconnected), whether
    /// or not a round was open: they corroborate a vote naming them.
    down: BTreeSet<u32>,
    /// Control messages dropped: from an earlier epoch, or recovery votes refused (under
    /// the abort policy, or naming a rank out of range, the voter itself, or a repeat).
    stale: u64,
    /// Joiners waiting for the next checkpoint, in arrival order (bounded by the seed).
    pub(crate) pending: Vec<PendingJoin>,
    /// Ranks that asked for the checkpoint of this epoch.
    pub(crate) requested: BTreeSet<u32>,
    /// Ranks that asked to leave at it (they count as requesting it).
    pub(crate) leaving: BTreeSet<u32>,
    /// The next member id to give a joiner (ids are never reused).
    pub(crate) next_member: u32,
    /// After a restart: members not back by then are treated as silent.
    grace: Option<Instant>,
    heartbeat_timeout: Duration,
    /// Members that closed their seed connection to dial again (they stopped hearing
    /// us), by member id: suspected if not back by the deadline.
    away: BTreeMap<u32, Instant>,
    /// The last recovery verdict and the keys of the ranks it evicted (by old rank): an
    /// evicted member that missed it and dials again is told (see `evicted_again`).
    pub(crate) last_verdict: Option<(RecoveryAgreed, BTreeMap<u32, [u8; 32]>)>,
}

impl Coordinator {
    pub(crate) fn new(
        policy: RecoveryPolicy,
        heartbeat_interval: Duration,
        heartbeat_timeout: Duration,
        recovery_timeout: Duration,
    ) -> Self {
        Self {
            policy,
            recovery_timeout,
            liveness: Liveness::new(heartbeat_interval, heartbeat_timeout),
            epoch: 0,
            members: Vec::new(),
            evicted: BTreeSet::new(),
            round: None,
            down: BTreeSet::new(),
            stale: 0,
            pending: Vec::new(),
            requested: BTreeSet::new(),
            leaving: BTreeSet::new(),
            next_member: 0,
            grace: None,
            heartbeat_timeout,
            away: BTreeMap::new(),
            last_verdict: None,
        }
    }

    /// The cluster formed at `epoch` with `members` in rank order.
    pub(crate) fn form(&mut self, now: Instant, epoch: u64, members: Vec<Member>) {
        for conn in members.iter().filter_map(|m| m.conn) {
            self.liveness.track(conn, now);
        }
        self.epoch = epoch;
        self.next_member = members.iter().map(|m| m.id + 1).max().unwrap_or(0);
        self.members = members;
    }

    /// The open recovery round, if any (for a simulation's report).
    #[cfg(feature = "sim")]
    pub(crate) fn round_state(&self) -> Option<&Round> {
        self.round.as_ref()
    }

    pub(crate) fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every member asked for the checkpoint (or to leave), and no recovery is open.
    pub(crate) fn checkpoint_due(&self) -> bool {
        self.round.is_none()
            && !self.members.is_empty()
            && (0..self.members.len() as u32)
                .all(|r| self.requested.contains(&r) || self.leaving.contains(&r))
    }

    /// Install the membership a checkpoint agreed (the seed built it); requests start over.
    pub(crate) fn install(&mut self, now: Instant, epoch: u64, members: Vec<Member>) {
        for conn in self.members.iter().filter_map(|m| m.conn) {
            if !members.iter().any(|n| n.conn == Some(conn)) {
                self.liveness.untrack(conn);
            }
        }
        for conn in members.iter().filter_map(|m| m.conn) {
            self.liveness.track(conn, now);
        }
        self.members = members;
        self.epoch = epoch;
        self.down.clear();
        self.requested.clear();
        self.leaving.clear();
    }

    /// A pending joiner's connection ended.
    pub(crate) fn drop_pending(&mut self, conn: ConnId) {
        self.pending.retain(|p| p.conn != conn);
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn world_size(&self) -> u32 {
        self.members.len() as u32
    }

    /// Stale control messages dropped so far (from an older epoch or an evicted member).
    pub(crate) fn stale(&self) -> u64 {
        self.stale
    }

    pub(crate) fn is_member_conn(&self, conn: ConnId) -> bool {
        self.rank_of(conn).is_some() || self.evicted.contains(&conn)
    }

    fn rank_of(&self, conn: ConnId) -> Option<u32> {
        self.members
            .iter()
            .position(|m| m.conn == Some(conn))
            .map(|r| r as u32)
    }

    pub(crate) fn on_message(&mut self, now: Instant, conn: ConnId, msg: Message) -> Vec<Action> {
        self.liveness.heard(conn, now);
        let Some(rank) = self.rank_of(conn) else {
            // An evicted member still talking: its epoch is over.
            self.stale += 1;
            return Vec::new();
        };
        match msg {
            Message::Heartbeat(_) => Vec::new(),
            Message::RecoveryVote(v) if v.epoch == self.epoch && v.voter == rank => {
                if !self.acceptable(rank, &v.dead) {
                    self.stale += 1;
                    tracing::warn!(rank, epoch = self.epoch, "recovery vote refused");
                    return Vec::new();
                }
                self.member_vote(now, rank, &v.dead)
            }
            Message::RecoveryVote(_) => {
                self.stale += 1;
                Vec::new()
            }
            Message::CheckpointRequest(r) if r.epoch == self.epoch && r.rank == rank => {
                self.requested.insert(rank);
                Vec::new()
            }
            Message::Leave(l) if l.epoch == self.epoch && l.rank == rank => {
                self.leaving.insert(rank);
                Vec::new()
            }
            Message::CheckpointRequest(_) | Message::Leave(_) => {
                self.stale += 1;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// A member's connection to the seed ended. Within a grace period (after a restart,
    /// or after the seed itself slept) the member is only away: members redial a seed
    /// they stopped hearing, and the ones not back when the grace ends are suspected.
    /// `redialling`: the member closed it itself because it stopped hearing us; it is
    /// dialling again, and suspected only if not back within a recovery's time.
    pub(crate) fn on_lost(&mut self, now: Instant, conn: ConnId, redialling: bool) -> Vec<Action> {
        self.liveness.untrack(conn);
        if self.evicted.remove(&conn) {
            return Vec::new();
        }
        match self.rank_of(conn) {
            Some(rank) if self.grace.is_some() => {
                self.members[rank as usize].conn = None;
                Vec::new()
            }
            Some(rank) if redialling => {
                let m = &mut self.members[rank as usize];
                m.conn = None;
                let back_by = now + self.heartbeat_timeout + self.recovery_timeout;
                self.away.insert(m.id, back_by);
                Vec::new()
            }
            Some(rank) => self.suspect(now, rank),
            None => Vec::new(),
        }
    }

    /// The seed's last input was at `last` and this one is at `now`: past
    /// `heartbeat_timeout`, the seed was not running (see `Node::input_clock`), and the
    /// silence and broken connections it finds now are its own doing. Every member gets
    /// a fresh window, and a grace period to reconnect, as after a restart.
    pub(crate) fn woke(&mut self, last: Instant, now: Instant) {
        if self.members.is_empty() || now.saturating_duration_since(last) <= self.heartbeat_timeout
        {
            return;
        }
        self.liveness.refresh(now);
        let until = now + self.recovery_timeout + self.heartbeat_timeout;
        self.grace = Some(self.grace.map_or(until, |g| g.max(until)));
        if let Some(deadline) = self.round.as_mut().and_then(|r| r.deadline.as_mut()) {
            *deadline = (*deadline).max(now + self.recovery_timeout);
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let tick = self.liveness.handle_timeout(now, true);
        let mut actions: Vec<Action> = tick
            .beats
            .into_iter()
            .map(|(conn, seq)| Action::Send {
                conn,
                msg: Message::Heartbeat(Heartbeat {
                    epoch: self.epoch,
                    seq,
                }),
            })
            .collect();
        for conn in tick.silent {
            if let Some(rank) = self.rank_of(conn) {
                actions.extend(self.suspect(now, rank));
            }
        }
        actions.extend(self.end_grace(now));
        actions.extend(self.end_away(now));
        actions.extend(self.progress(now));
        actions
    }

    /// Members that went away to redial and are not back by their deadline are down.
    fn end_away(&mut self, now: Instant) -> Vec<Action> {
        let due: Vec<u32> = self
            .away
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut actions = Vec::new();
        for id in due {
            self.away.remove(&id);
            if let Some(rank) = self.members.iter().position(|m| m.id == id) {
                actions.extend(self.suspect(now, rank as u32));
            }
        }
        actions
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let world = self.members.len() as u32;
        // The round's deadline counts the silent dead; once nobody is silent (all voted,
        // or the deadline came and killed them) it has nothing left to do, and a past
        // deadline still returned here would have the driver call back at once, forever.
        let deadline = self
            .round
            .as_ref()
            .filter(|r| !r.silent(world).is_empty())
            .and_then(|r| r.deadline);
        self.liveness
            .poll_timeout(true)
            .into_iter()
            .chain(deadline)
            .chain(self.round.as_ref().and_then(Round::next_probe))
            .chain(self.grace)
            .chain(self.away.values().copied())
            .min()
    }

    /// A restarted seed: the persisted epoch and members, none of them connected yet.
    /// Members not back within `recovery_timeout + heartbeat_timeout` are then treated
    /// as silent ones (under the automatic policy, voted dead by the seed itself).
    pub(crate) fn restore(
        &mut self,
        now: Instant,
        epoch: u64,
        next_member: u32,
        members: Vec<Member>,
    ) {
        self.epoch = epoch;
        self.next_member = next_member;
        self.members = members;
        self.grace = Some(now + self.recovery_timeout + self.heartbeat_timeout);
    }

    /// The rank of the member holding the key `key_sha256`, if `requested` names it.
    pub(crate) fn returning(&self, key_sha256: &[u8; 32], requested: Option<u32>) -> Option<u32> {
        let rank = self
            .members
            .iter()
            .position(|m| &m.key_sha256 == key_sha256)? as u32;
        (requested == Some(rank)).then_some(rank)
    }

    /// A member came back on `conn` (after a seed restart, or a lost seed connection):
    /// its control traffic and liveness move to it. If a recovery round is open and it
    /// has not voted, it is called (the first call went nowhere).
    pub(crate) fn reattach(&mut self, now: Instant, rank: u32, conn: ConnId) -> Vec<Action> {
        let Some(m) = self.members.get_mut(rank as usize) else {
            return Vec::new();
        };
        if let Some(old) = m.conn.replace(conn) {
            self.liveness.untrack(old);
        }
        self.liveness.track(conn, now);
        self.down.remove(&rank);
        let id = m.id;
        self.away.remove(&id);
        match &self.round {
            Some(round)
                if round.called()
                    && !round.dead.contains(&rank)
                    && !round.voted.contains(&rank) =>
            {
                vec![Action::Send {
                    conn,
                    msg: Message::RecoveryVote(RecoveryVote {
                        epoch: self.epoch,
                        voter: RecoveryVote::COORDINATOR,
                        dead: round.dead.iter().copied().collect(),
                    }),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// The restart's grace period is over: members still away are silent.
    fn end_grace(&mut self, now: Instant) -> Vec<Action> {
        if self.grace.is_none_or(|g| g > now) {
            return Vec::new();
        }
        self.grace = None;
        let away: Vec<u32> = (0..self.members.len() as u32)
            .filter(|r| self.members[*r as usize].conn.is_none())
            .collect();
        let mut actions = Vec::new();
        for rank in away {
            actions.extend(self.suspect(now, rank));
        }
        actions
    }

    /// The seed itself finds `rank` dead (silent, or its connection lost).
    fn suspect(&mut self, now: Instant, rank: u32) -> Vec<Action> {
        self.down.insert(rank);
        // Under abort and manual, the members decide whether to recover; the seed only
        // adds what it knows to a round someone opened.
        if self.policy == RecoveryPolicy::Automatic || self.round.is_some() {
            self.round_mut().kill(rank);
            self.progress(now)
        } else {
            Vec::new()
        }
    }

    /// Whether a vote from `voter` naming `dead` may count: never under the abort
    /// policy; only ranks of this epoch, each once, and not the voter.
    fn acceptable(&self, voter: u32, dead: &[u32]) -> bool {
        let world = self.members.len() as u32;
        let distinct: BTreeSet<u32> = dead.iter().copied().collect();
        self.policy != RecoveryPolicy::Abort
            && distinct.len() == dead.len()
            && dead.iter().all(|r| *r < world && *r != voter)
    }

    fn round_mut(&mut self) -> &mut Round {
        let probe = self.heartbeat_timeout;
        self.round.get_or_insert_with(|| Round::new(probe))
    }

    /// A member's vote naming `dead` (checked by `acceptable`).
    fn member_vote(&mut self, now: Instant, voter: u32, dead: &[u32]) -> Vec<Action> {
        if self.round.as_ref().is_some_and(|r| r.dead.contains(&voter)) {
            return Vec::new(); // already out of this round
        }
        let down = std::mem::take(&mut self.down);
        self.round_mut().vote(now, voter, dead, &down);
        self.down = down;
        self.progress(now)
    }

    /// Move the round on at `now`: settle accusations due, call members once there is
    /// something to report (again when the dead set grows), count the silent dead at the
    /// deadline, and commit when nothing is left open.
    fn progress(&mut self, now: Instant) -> Vec<Action> {
        let world = self.members.len() as u32;
        let Some(round) = &mut self.round else {
            return Vec::new();
        };
        let before = round.dead.len();
        let (members, liveness) = (&self.members, &self.liveness);
        round.resolve(now, |rank, since| {
            members
                .get(rank as usize)
                .and_then(|m| m.conn)
                .and_then(|c| liveness.last_heard(c))
                .is_some_and(|t| t > since)
        });
        let opening = !round.called() && round.callable();
        if opening {
            round.deadline = Some(now + self.recovery_timeout);
        }
        let mut actions = Vec::new();
        if opening || (round.called() && round.dead.len() > before) {
            let call = Message::RecoveryVote(RecoveryVote {
                epoch: self.epoch,
                voter: RecoveryVote::COORDINATOR,
                dead: round.dead.iter().copied().collect(),
            });
            for rank in round.silent(world) {
                if let Some(conn) = self.members[rank as usize].conn {
                    actions.push(Action::Send {
                        conn,
                        msg: call.clone(),
                    });
                }
            }
        }
        if round.deadline.is_some_and(|d| d <= now) {
            // The silent are dead too: that is how a second failure converges.
            for rank in round.silent(world) {
                round.kill(rank);
            }
        }
        if round.complete(world) {
            actions.extend(self.commit(now));
        }
        actions
    }

    /// Decide the round: everyone still reachable hears the same verdict.
    fn commit(&mut self, _now: Instant) -> Vec<Action> {
        let Some(round) = self.round.take() else {
            return Vec::new();
        };
        let new_epoch = self.epoch + 1;
        let agreed = RecoveryAgreed {
            old_epoch: self.epoch,
            new_epoch,
            dead: round.dead.iter().copied().collect(),
        };
        let verdict = Message::RecoveryAgreed(agreed.clone());
        let mut actions: Vec<Action> = self
            .members
            .iter()
            .filter_map(|m| m.conn)
            .map(|conn| Action::Send {
                conn,
                msg: verdict.clone(),
            })
            .collect();
        let members = std::mem::take(&mut self.members);
        let keys = round
            .dead
            .iter()
            .filter_map(|&r| Some((r, members.get(r as usize)?.key_sha256)))
            .collect();
        self.last_verdict = Some((agreed, keys));
        for (rank, m) in members.into_iter().enumerate() {
            if round.dead.contains(&(rank as u32)) {
                if let Some(conn) = m.conn {
                    self.liveness.untrack(conn);
                    self.evicted.insert(conn);
                }
            } else {
                self.members.push(m);
            }
        }
        self.epoch = new_epoch;
        self.down.clear();
        // Checkpoint requests were for the old epoch; members send them again.
        self.requested.clear();
        self.leaving.clear();
        actions.push(Action::Event(Event::MembershipChanged {
            epoch: new_epoch,
            world_size: self.members.len() as u32,
        }));
        actions.push(Action::Event(Event::SeedStateChanged { epoch: new_epoch }));
        actions
    }
}
