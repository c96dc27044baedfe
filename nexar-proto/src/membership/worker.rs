//! The worker's side of formation: prove the secret to a pinned seed, take the Welcome,
//! then build the peer mesh.
//!
//! Building the mesh itself (who dials whom, retries, replacing links) is in `mesh.rs`.
//!
//! The seed connection is retried the same way as a mesh dial (exponential backoff) when
//! it fails for a reason that may pass (the seed's join deadline expired during a lossy
//! handshake, it refused us while full, the connection timed out); a rejection for cause
//! (wrong secret, taken rank, ...) or an untrusted seed is final.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::mesh::{Link, FIRST_BACKOFF};
use super::{proof, Action, CLOSE_REJECT_BASE};
use crate::codec::{Hello, JoinRejected, Message, RejectReason, Welcome};
use crate::error::JoinError;
use crate::event::Event;
use crate::ticket::JoinTicket;
use crate::transport::{ConnId, LostReason};
use crate::PROTOCOL_VERSION;

const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A member's redial of the seed not connected by then is made afresh.
const SEED_REDIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// First wait before dialling the seed again (doubling, up to `MAX_BACKOFF`).
const SEED_BACKOFF: Duration = Duration::from_millis(100);

/// The wait before retry number `attempt + 1`.
pub(super) fn backoff(first: Duration, attempt: u32) -> Duration {
    first.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF)
}

/// How to reach the seed, and when to dial it again.
#[derive(Debug)]
struct SeedDial {
    /// The seed's address, its key's pin and the join secret.
    ticket: JoinTicket,
    /// Dial again at this instant (after a failure that may pass).
    retry: Option<Instant>,
    /// Dials made again so far.
    attempts: u32,
    /// After the Welcome: a redial not connected by then is abandoned and made again
    /// (a fresh handshake, instead of QUIC's backed-off retransmissions to a seed that
    /// was down when the dial started).
    abandon: Option<Instant>,
}

/// What a welcomed worker knows about the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) rank: u32,
    pub(crate) world_size: u32,
    pub(crate) epoch: u64,
    pub(crate) cluster_id: [u8; 16],
    pub(crate) addrs: BTreeMap<u32, SocketAddr>,
    /// Rank → member id (the name in its certificate, fixed for its life).
    pub(crate) ids: BTreeMap<u32, u32>,
}

impl Membership {
    /// The rank whose certificate names member `id`.
    pub(crate) fn rank_of_member(&self, id: u32) -> Option<u32> {
        self.ids.iter().find(|(_, m)| **m == id).map(|(r, _)| *r)
    }
}

#[derive(Debug)]
pub(super) enum Phase {
    Joining,
    Meshing,
    Ready,
    Failed,
}

/// The worker's membership state.
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub(super) phase: Phase,
    seed_conn: Option<ConnId>,
    deadline: Instant,
    /// Boxed: the worker's state lives inline in the node's role.
    seed: Box<SeedDial>,
    /// Until the seed first answers: the early warning, and the error naming it.
    silence: Box<super::seed_silence::SeedSilence>,
    /// The instant of the latest `dial_due`, which stamps the dials it asked for.
    pub(super) now: Instant,
    hello: Hello,
    pub(super) membership: Option<Membership>,
    pub(super) links: BTreeMap<u32, Link>,
    pub(super) conn_rank: BTreeMap<ConnId, u32>,
}

impl WorkerState {
    /// `hello` is complete except for the proof, which needs the live TLS session. The
    /// join fails at `deadline` (formation); if the seed never answered at all, with an
    /// error naming its address (`SeedSilence`).
    pub(crate) fn new(ticket: JoinTicket, hello: Hello, now: Instant, deadline: Instant) -> Self {
        let silence = super::seed_silence::SeedSilence::new(
            ticket.addr,
            now,
            deadline.saturating_duration_since(now),
        );
        Self {
            phase: Phase::Joining,
            seed_conn: None,
            deadline,
            silence: Box::new(silence),
            seed: Box::new(SeedDial {
                ticket,
                retry: None,
                attempts: 0,
                abandon: None,
            }),
            now,
            hello,
            membership: None,
            links: BTreeMap::new(),
            conn_rank: BTreeMap::new(),
        }
    }

    pub(crate) fn set_seed_conn(&mut self, conn: ConnId) {
        self.seed_conn = Some(conn);
        self.seed.retry = None;
    }

    pub(crate) fn seed_conn(&self) -> Option<ConnId> {
        self.seed_conn
    }

    /// A datagram arrived on the seed connection: the seed is there.
    pub(crate) fn seed_heard(&mut self) {
        self.silence.heard();
    }

    pub(crate) fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready)
    }

    /// The seed connection's handshake finished: prove the secret and say Hello.
    pub(crate) fn on_seed_connected(&mut self, exporter: Option<[u8; 32]>) -> Vec<Action> {
        let (Some(conn), Some(exporter)) = (self.seed_conn, exporter) else {
            return self.fail_with(JoinError::SeedUntrusted {
                detail: "TLS session offers no keying material".into(),
            });
        };
        let mut hello = self.hello.clone();
        hello.version = PROTOCOL_VERSION;
        hello.join_proof = proof::compute(&self.seed.ticket.secret, &exporter);
        let returning = self.membership.as_ref().map(|m| m.rank);
        if returning.is_some() {
            // A member coming back: the seed knows us by our key and current rank.
            hello.requested_rank = returning;
            self.seed.attempts = 0;
            self.seed.abandon = None;
        }
        let mut actions = vec![Action::Send {
            conn,
            msg: Message::Hello(hello),
        }];
        if returning.is_some() {
            actions.push(Action::SeedReattached);
        }
        actions
    }

    /// A control message from the seed. `check_cert` validates that the Welcome's
    /// certificate holds our public key and names the rank (a crypto question the node
    /// answers).
    pub(crate) fn on_seed_message(
        &mut self,
        now: Instant,
        msg: Message,
        check_cert: impl FnOnce(&Welcome) -> Result<(), String>,
    ) -> Vec<Action> {
        match msg {
            Message::Welcome(w) if matches!(self.phase, Phase::Joining) => {
                if let Err(detail) = check_cert(&w).and_then(|()| check_table(&w)) {
                    return self.fail_with(JoinError::BadWelcome { detail });
                }
                self.on_welcome(now, w)
            }
            Message::JoinRejected(JoinRejected { reason, .. }) => {
                self.fail_with(JoinError::Rejected { reason })
            }
            _ => Vec::new(),
        }
    }

    fn on_welcome(&mut self, now: Instant, w: Welcome) -> Vec<Action> {
        let addrs: BTreeMap<u32, SocketAddr> = w.peers.iter().map(|p| (p.rank, p.addr)).collect();
        let ids = w.peers.iter().map(|p| (p.rank, p.member)).collect();
        let me = w.rank;
        self.membership = Some(Membership {
            rank: me,
            world_size: w.world_size,
            epoch: w.epoch,
            cluster_id: w.cluster_id,
            addrs: addrs.clone(),
            ids,
        });
        self.phase = Phase::Meshing;
        let mut actions = vec![Action::Listen];
        for rank in addrs.keys().copied().filter(|r| *r != me) {
            if rank < me {
                self.links.insert(
                    rank,
                    Link::Backoff {
                        at: now,
                        attempt: 0,
                    },
                );
            } else {
                self.links.insert(rank, Link::Awaiting);
            }
        }
        actions.extend(self.dial_due(now));
        actions.extend(self.check_ready());
        actions
    }

    /// A connection ended. Returns the rank it belonged to if it was a live mesh link,
    /// so the node can fail what waited on that rank.
    pub(crate) fn on_lost(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: &LostReason,
    ) -> (Option<u32>, Vec<Action>) {
        if Some(conn) == self.seed_conn {
            self.seed_conn = None;
            if matches!(self.phase, Phase::Joining) {
                if seed_loss_may_pass(reason) {
                    // Dial again (with backoff) until the formation deadline, which then
                    // reports the join as timed out.
                    self.schedule_seed_dial(now);
                    return (None, Vec::new());
                }
                let error = match reason {
                    LostReason::ClosedByPeer { code, .. } if *code >= CLOSE_REJECT_BASE => {
                        match u8::try_from(code - CLOSE_REJECT_BASE)
                            .ok()
                            .and_then(|c| RejectReason::try_from(c).ok())
                        {
                            Some(reason) => JoinError::Rejected { reason },
                            None => JoinError::SeedLost {
                                detail: format!("closed with code {code}"),
                            },
                        }
                    }
                    LostReason::Transport(detail) => JoinError::SeedUntrusted {
                        detail: detail.clone(),
                    },
                    other => JoinError::SeedLost {
                        detail: format!("{other:?}"),
                    },
                };
                return (None, self.fail_with(error));
            }
            if matches!(self.phase, Phase::Meshing | Phase::Ready) {
                // Welcomed: collectives never need the seed, so keep working and dial it
                // again (with backoff, for as long as we are a member): it may be
                // restarting from its persisted state.
                self.schedule_seed_dial(now);
            }
            return (None, Vec::new());
        }
        let Some(rank) = self.conn_rank.remove(&conn) else {
            return (None, Vec::new());
        };
        match self.links.get(&rank).cloned() {
            Some(Link::Dialing {
                conn: c, attempt, ..
            }) if c == conn => {
                self.links.insert(
                    rank,
                    Link::Backoff {
                        at: now + backoff(FIRST_BACKOFF, attempt),
                        attempt: attempt + 1,
                    },
                );
                (None, Vec::new())
            }
            Some(Link::Connected { conn: c })
                if c == conn && matches!(self.phase, Phase::Meshing) =>
            {
                // Not Ready yet: establish the link again (we dial lower ranks, higher
                // ranks dial us).
                let me = self.membership.as_ref().map_or(0, |m| m.rank);
                let link = if rank < me {
                    Link::Backoff {
                        at: now + FIRST_BACKOFF,
                        attempt: 0,
                    }
                } else {
                    Link::Awaiting
                };
                self.links.insert(rank, link);
                (None, Vec::new())
            }
            Some(Link::Connected { conn: c }) if c == conn => {
                // Failure detection and recovery (the membership-in-motion layer) decide
                // what a lost live peer means; the link is simply gone here.
                self.links.remove(&rank);
                (Some(rank), Vec::new())
            }
            _ => (None, Vec::new()),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        // Ready: only the seed's redial is left to time; failed: nothing.
        if matches!(self.phase, Phase::Ready) {
            return self.seed_dial_due(now);
        }
        if !matches!(self.phase, Phase::Joining | Phase::Meshing) {
            return Vec::new();
        }
        if matches!(self.phase, Phase::Joining) {
            if let Some(error) = self.silence.check(now, self.deadline) {
                return self.fail_with(error);
            }
        }
        if now >= self.deadline {
            let missing = self
                .links
                .iter()
                .filter(|(_, l)| !matches!(l, Link::Connected { .. }))
                .map(|(r, _)| *r)
                .collect();
            return self.fail_with(JoinError::Timeout { missing });
        }
        let mut actions = self.seed_dial_due(now);
        actions.extend(self.abandon_stalled_dials(now));
        actions.extend(self.dial_due(now));
        actions
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Joining | Phase::Meshing => {
                let links = self.links.values().filter_map(|l| match l {
                    Link::Backoff { at, .. } => Some(*at),
                    Link::Dialing { deadline, .. } => Some(*deadline),
                    _ => None,
                });
                links
                    .chain(self.seed.retry)
                    .chain(self.seed.abandon)
                    .chain(self.silence.poll_timeout())
                    .chain(std::iter::once(self.deadline))
                    .min()
            }
            Phase::Ready => self.seed.retry.into_iter().chain(self.seed.abandon).min(),
            Phase::Failed => None,
        }
    }

    /// Dial the seed again at `now` plus the next backoff.
    fn schedule_seed_dial(&mut self, now: Instant) {
        let at = now + backoff(SEED_BACKOFF, self.seed.attempts);
        self.seed.attempts = self.seed.attempts.saturating_add(1);
        self.seed.retry = Some(at);
    }

    fn seed_dial_due(&mut self, now: Instant) -> Vec<Action> {
        if self.seed.abandon.is_some_and(|at| at <= now) {
            self.seed.abandon = None;
            if let Some(conn) = self.seed_conn.take() {
                self.schedule_seed_dial(now);
                return vec![Action::Close {
                    conn,
                    code: 0x2,
                    reason: bytes::Bytes::from_static(b"seed handshake timed out"),
                }];
            }
        }
        if self.seed.retry.is_some_and(|at| at <= now) {
            self.seed.retry = None;
            if self.membership.is_some() {
                self.seed.abandon = Some(now + SEED_REDIAL_TIMEOUT);
            }
            return vec![Action::DialSeed {
                addr: self.seed.ticket.addr,
                pin: self.seed.ticket.pin,
            }];
        }
        Vec::new()
    }

    /// Move to a new epoch in which the ranks in `map` (old → new) stay and the rest are
    /// gone: remap every link. Links to those who went are forgotten but not closed: a
    /// member evicted while paused or cut off must reach us to learn nothing more is
    /// accepted from it (its old-epoch messages are dropped and counted), and QUIC's idle
    /// timeout closes them once silent.
    pub(crate) fn renumber(&mut self, map: &BTreeMap<u32, u32>, new_epoch: u64) {
        let Some(m) = &mut self.membership else {
            return;
        };
        let Some(&me) = map.get(&m.rank) else {
            return;
        };
        let mut links = BTreeMap::new();
        for (old, link) in std::mem::take(&mut self.links) {
            match map.get(&old) {
                Some(&new) => {
                    links.insert(new, link);
                }
                None => {
                    if let Link::Dialing { conn, .. } | Link::Connected { conn } = link {
                        self.conn_rank.remove(&conn);
                    }
                }
            }
        }
        self.links = links;
        for rank in self.conn_rank.values_mut() {
            if let Some(&new) = map.get(rank) {
                *rank = new;
            }
        }
        m.addrs = remap(&m.addrs, map);
        m.ids = remap(&m.ids, map);
        m.rank = me;
        m.world_size = map.len() as u32;
        m.epoch = new_epoch;
    }

    /// After an epoch change while still meshing: the links to ranks that are gone no
    /// longer count, so the mesh may be complete now.
    pub(crate) fn mesh_settled(&mut self) -> Vec<Action> {
        self.check_ready()
    }

    /// Members who join at a checkpoint: (rank, member id, address). They have the ranks
    /// after ours and dial us; we await them.
    pub(crate) fn add_joiners(&mut self, joiners: &[(u32, u32, SocketAddr)]) {
        let Some(m) = &mut self.membership else {
            return;
        };
        for &(rank, id, addr) in joiners {
            m.addrs.insert(rank, addr);
            m.ids.insert(rank, id);
            if rank != m.rank {
                self.links.insert(rank, Link::Awaiting);
            }
        }
        m.world_size = m.addrs.len() as u32;
    }

    /// Close every connection this worker holds (mesh links, dials and the seed).
    pub(crate) fn close_all(&mut self, code: u64) -> Vec<Action> {
        self.phase = Phase::Failed;
        let actions = self.close_actions(code);
        self.links.clear();
        self.conn_rank.clear();
        actions
    }

    fn close_actions(&self, code: u64) -> Vec<Action> {
        self.links
            .values()
            .filter_map(|l| match l {
                Link::Dialing { conn, .. } | Link::Connected { conn } => Some(*conn),
                _ => None,
            })
            .chain(self.seed_conn)
            .map(|conn| Action::Close {
                conn,
                code,
                reason: bytes::Bytes::new(),
            })
            .collect()
    }

    /// The connected mesh links and the seed connection, for failure detection.
    pub(crate) fn live_conns(&self) -> Vec<ConnId> {
        self.links
            .values()
            .filter_map(|l| match l {
                Link::Connected { conn } => Some(*conn),
                _ => None,
            })
            .chain(self.seed_conn)
            .collect()
    }

    pub(crate) fn fail_with(&mut self, error: JoinError) -> Vec<Action> {
        if matches!(self.phase, Phase::Failed | Phase::Ready) {
            return Vec::new();
        }
        self.phase = Phase::Failed;
        let mut actions = self.close_actions(0);
        actions.push(Action::Event(Event::JoinFailed { error }));
        actions
    }
}

fn remap<V: Clone>(by_rank: &BTreeMap<u32, V>, map: &BTreeMap<u32, u32>) -> BTreeMap<u32, V> {
    by_rank
        .iter()
        .filter_map(|(old, v)| map.get(old).map(|new| (*new, v.clone())))
        .collect()
}

/// Whether losing the seed connection before the Welcome is worth another dial: the seed
/// gave up on a slow handshake (its join deadline or handshake deadline, aborting the
/// handshake or rejecting with `Timeout`), turned us away while full (`QueueFull`, a QUIC
/// refusal, or evicting us for newer unproven connections), the connection timed out, or
/// something ended it before the handshake authenticated the seed (which may be forged).
/// Rejections for cause and TLS failures (an untrusted seed) are final.
fn seed_loss_may_pass(reason: &LostReason) -> bool {
    match reason {
        LostReason::TimedOut | LostReason::Aborted(_) | LostReason::Unauthenticated(_) => true,
        LostReason::ClosedByPeer { code, .. } => {
            let timeout = CLOSE_REJECT_BASE + u64::from(RejectReason::Timeout as u8);
            let full = CLOSE_REJECT_BASE + u64::from(RejectReason::QueueFull as u8);
            *code == timeout
                || *code == full
                || *code == crate::transport::CLOSE_EVICTED
                || *code == crate::transport::CLOSE_HANDSHAKE_TIMEOUT
        }
        LostReason::ClosedLocally | LostReason::Transport(_) => false,
    }
}

/// The peer table must list ranks 0..world_size exactly once, including ours.
fn check_table(w: &Welcome) -> Result<(), String> {
    if w.world_size == 0 || w.rank >= w.world_size {
        return Err(format!("rank {} outside world of {}", w.rank, w.world_size));
    }
    let ranks: Vec<u32> = w.peers.iter().map(|p| p.rank).collect();
    let expected: Vec<u32> = (0..w.world_size).collect();
    let mut sorted = ranks.clone();
    sorted.sort_unstable();
    if sorted != expected {
        return Err(format!(
            "peer table ranks {ranks:?} are not 0..{}",
            w.world_size
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_seed_losses_are_retried() {
        let retried = |r: LostReason| seed_loss_may_pass(&r);
        // Unauthenticated "go away" before the handshake: may be forged, so retried.
        assert!(retried(LostReason::Unauthenticated(
            "closed by peer".into()
        )));
        assert!(retried(LostReason::Aborted("refused".into())));
        assert!(retried(LostReason::TimedOut));
        for code in [
            crate::transport::CLOSE_EVICTED,
            crate::transport::CLOSE_HANDSHAKE_TIMEOUT,
            CLOSE_REJECT_BASE + u64::from(RejectReason::Timeout as u8),
            CLOSE_REJECT_BASE + u64::from(RejectReason::QueueFull as u8),
        ] {
            let reason = bytes::Bytes::new();
            assert!(retried(LostReason::ClosedByPeer { code, reason }), "{code}");
        }
        // Authenticated rejections for cause and our own TLS verdicts are final.
        let bad_proof = CLOSE_REJECT_BASE + u64::from(RejectReason::BadProof as u8);
        assert!(!retried(LostReason::ClosedByPeer {
            code: bad_proof,
            reason: bytes::Bytes::new()
        }));
        assert!(!retried(LostReason::Transport("pin mismatch".into())));
        assert!(!retried(LostReason::ClosedLocally));
    }
}
