//! The worker's peer mesh: dialling lower ranks and awaiting higher ones, retrying with
//! backoff, and knowing when every link is up (`Ready`).
//!
//! A module of its own because, once welcomed, the mesh follows rules of its own, apart
//! from joining through the seed (`worker.rs`): per-link states, dial timeouts and
//! backoff, and replacing a stale connection. Links are state of `WorkerState`; what
//! happens to them on a lost connection or an epoch change stays with the worker.
//!
//! Who dials: rank `i` dials every rank `j < i` and accepts from every rank above it, so
//! each pair has exactly one connection and no tie-breaking is needed. A dial that is
//! refused (the peer has not processed its own Welcome yet, so it is not listening) or
//! lost before the handshake completes is retried with exponential backoff until the
//! formation deadline. A dial whose handshake is not confirmed within `DIAL_TIMEOUT` is
//! abandoned and retried the same way: under heavy loss a handshake's retransmissions back
//! off exponentially (a minute is possible), and a fresh connection starts over quickly.
//! Until `Ready`, a lost link is re-established (the dialer dials again, the acceptor
//! awaits the new connection), and a newer connection from a rank replaces an older one.

use std::time::{Duration, Instant};

use super::worker::{backoff, Phase, WorkerState};
use super::Action;
use crate::event::Event;
use crate::transport::ConnId;

/// First wait before dialling a peer again (doubling, up to `MAX_BACKOFF`).
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// A mesh dial not confirmed by then is closed and dialled again.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Our link to one other rank during and after mesh formation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Link {
    /// We dialled; handshake in progress, abandoned at `deadline`.
    Dialing {
        conn: ConnId,
        attempt: u32,
        deadline: Instant,
    },
    /// The last dial failed; dial again at `at`.
    Backoff { at: Instant, attempt: u32 },
    /// A higher rank: it dials us.
    Awaiting,
    /// Handshake complete and identity checked.
    Connected { conn: ConnId },
}

impl WorkerState {
    /// The connection to `rank`, once the mesh link is up.
    pub(crate) fn conn_of(&self, rank: u32) -> Option<ConnId> {
        match self.links.get(&rank) {
            Some(Link::Connected { conn }) => Some(*conn),
            _ => None,
        }
    }

    /// The rank on the other end of a connected mesh link.
    pub(crate) fn rank_of(&self, conn: ConnId) -> Option<u32> {
        let rank = *self.conn_rank.get(&conn)?;
        (self.conn_of(rank) == Some(conn)).then_some(rank)
    }

    /// A mesh handshake completed. For connections we accepted, `cert_member` is the
    /// member id the peer's CA-signed certificate names.
    pub(crate) fn on_mesh_connected(
        &mut self,
        conn: ConnId,
        cert_member: Option<u32>,
    ) -> Vec<Action> {
        let Some(m) = &self.membership else {
            return Vec::new();
        };
        let cert_rank = cert_member.and_then(|id| m.rank_of_member(id));
        if let Some(&rank) = self.conn_rank.get(&conn) {
            // A dial of ours: webpki already checked the peer's name is this rank.
            if matches!(self.links.get(&rank), Some(Link::Dialing { conn: c, .. }) if *c == conn) {
                self.links.insert(rank, Link::Connected { conn });
            }
            return self.check_ready();
        }
        let meshing = matches!(self.phase, Phase::Meshing);
        match cert_rank {
            // Only higher ranks dial us, once; until Ready, again after giving up on a dial
            // whose loss may not have reached us yet: the newer connection replaces it.
            Some(rank) if rank > m.rank && rank < m.world_size => {
                let replaced = match self.links.get(&rank) {
                    Some(Link::Awaiting) => None,
                    Some(Link::Connected { conn: old }) if meshing => Some(*old),
                    _ => {
                        return vec![Action::Close {
                            conn,
                            code: 0x2,
                            reason: bytes::Bytes::from_static(b"duplicate mesh connection"),
                        }]
                    }
                };
                self.links.insert(rank, Link::Connected { conn });
                self.conn_rank.insert(conn, rank);
                let mut actions = Vec::new();
                if let Some(old) = replaced {
                    self.conn_rank.remove(&old);
                    actions.push(Action::Close {
                        conn: old,
                        code: 0x2,
                        reason: bytes::Bytes::from_static(b"replaced by a newer connection"),
                    });
                }
                actions.extend(self.check_ready());
                actions
            }
            _ => vec![Action::Close {
                conn,
                code: 0x2,
                reason: bytes::Bytes::from_static(b"unexpected peer identity"),
            }],
        }
    }

    /// Record a dial the node made for `rank`.
    pub(crate) fn on_dialed(&mut self, rank: u32, conn: ConnId, attempt: u32) {
        // Dials are made synchronously for the actions of the latest `dial_due`.
        let deadline = self.now + DIAL_TIMEOUT;
        self.links.insert(
            rank,
            Link::Dialing {
                conn,
                attempt,
                deadline,
            },
        );
        self.conn_rank.insert(conn, rank);
    }

    /// Close dials whose handshake is not confirmed by their deadline; dial again later.
    pub(super) fn abandon_stalled_dials(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for link in self.links.values_mut() {
            if let Link::Dialing {
                conn,
                attempt,
                deadline,
            } = *link
            {
                if deadline <= now {
                    // Its loss, when reported, finds the link no longer dialling `conn`.
                    *link = Link::Backoff {
                        at: now + backoff(FIRST_BACKOFF, attempt),
                        attempt: attempt + 1,
                    };
                    actions.push(Action::Close {
                        conn,
                        code: 0x2,
                        reason: bytes::Bytes::from_static(b"mesh handshake timed out"),
                    });
                }
            }
        }
        actions
    }

    pub(super) fn dial_due(&mut self, now: Instant) -> Vec<Action> {
        self.now = now;
        let Some(m) = &self.membership else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for (rank, link) in &self.links {
            if let Link::Backoff { at, attempt } = link {
                if *at <= now {
                    actions.push(Action::Dial {
                        rank: *rank,
                        addr: m.addrs[rank],
                        attempt: *attempt,
                    });
                }
            }
        }
        actions
    }

    pub(super) fn check_ready(&mut self) -> Vec<Action> {
        let Some(m) = &self.membership else {
            return Vec::new();
        };
        let all = self
            .links
            .values()
            .all(|l| matches!(l, Link::Connected { .. }));
        if matches!(self.phase, Phase::Meshing) && all {
            self.phase = Phase::Ready;
            return vec![Action::Event(Event::Ready {
                rank: m.rank,
                world_size: m.world_size,
                epoch: m.epoch,
            })];
        }
        Vec::new()
    }

    /// Whether every mesh link is up.
    pub(crate) fn all_connected(&self) -> bool {
        self.links
            .values()
            .all(|l| matches!(l, Link::Connected { .. }))
    }
}
