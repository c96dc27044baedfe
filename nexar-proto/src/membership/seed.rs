//! The seed's side of formation: one small state machine per joiner, rank assignment,
//! certificate issuance and the Welcome.
//!
//! Each joiner has its own deadline and is judged alone: a wrong secret, a malformed or
//! oversized frame, or silence ends that joiner with a typed rejection and nobody else
//! waits for it. The seed coordinates only; it is not a rank and carries no data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::coordinator::{Coordinator, Member};
use super::{proof, reject, Action};
use crate::codec::{DecodeError, Hello, Message, PeerEntry, RejectReason, Welcome};
use crate::crypto::ClusterCa;
use crate::event::Event;
use crate::transport::ConnId;
use crate::PROTOCOL_VERSION;

/// A connection that has not been welcomed yet.
#[derive(Debug)]
struct Joiner {
    remote: SocketAddr,
    /// Hello must arrive by then; cleared once the Hello is accepted (the joiner then
    /// waits for the rest of the world, which is not its fault).
    deadline: Option<Instant>,
    hello: Option<Hello>,
    /// Order of acceptance, which decides free-rank assignment.
    accepted_seq: Option<u64>,
}

/// The seed's membership state.
pub(crate) struct SeedState {
    world_size: u32,
    secret: [u8; 32],
    ca: ClusterCa,
    cluster_id: [u8; 16],
    epoch: u64,
    join_timeout: Duration,
    joiners: BTreeMap<ConnId, Joiner>,
    next_seq: u64,
    /// After formation: the members, their connections, and epoch changes.
    pub(crate) coord: Coordinator,
    formed: bool,
    max_world_size: u32,
    max_pending_joins: usize,
    /// A checkpoint never leaves fewer members than this (`NodeConfig::min_world_size`).
    pub(super) min_world_size: u32,
    /// What the seed was built from, for its snapshot.
    pub(super) origin: Option<super::restart::Origin>,
    /// The connection whose join proof the last message passed, for the node to tell
    /// the transport (which then stops treating it as an unauthenticated stranger).
    just_proven: Option<ConnId>,
    /// The last checkpoint agreement, for members that ask again for its epoch.
    pub(super) last_agreed: Option<Message>,
    /// The keys of the members that left at the last checkpoint, by their old rank: one
    /// that missed the agreement dials again and is told it left (see `left_again`).
    pub(super) last_leavers: BTreeMap<u32, [u8; 32]>,
}

impl SeedState {
    /// Where the seed's membership stands, for a failing simulation's report.
    #[cfg(feature = "sim")]
    pub(crate) fn describe(&self) -> String {
        let c = &self.coord;
        let conns: Vec<bool> = c.members().iter().map(|m| m.conn.is_some()).collect();
        format!(
            "seed: formed {}, epoch {}, members connected {conns:?}, round {:?}, \
             requested {:?}, leaving {:?}, pending joins {}",
            self.formed,
            c.epoch(),
            c.round_state(),
            c.requested,
            c.leaving,
            c.pending.len(),
        )
    }
}

impl std::fmt::Debug for SeedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedState")
            .field("world_size", &self.world_size)
            .field("joiners", &self.joiners.len())
            .field("formed", &self.formed)
            .finish_non_exhaustive()
    }
}

impl SeedState {
    pub(crate) fn new(
        world_size: u32,
        secret: [u8; 32],
        ca: ClusterCa,
        cluster_id: [u8; 16],
        join_timeout: Duration,
        coord: Coordinator,
    ) -> Self {
        Self {
            max_world_size: world_size,
            max_pending_joins: 0,
            min_world_size: 0,
            world_size,
            secret,
            ca,
            cluster_id,
            epoch: 1,
            join_timeout,
            joiners: BTreeMap::new(),
            next_seq: 0,
            coord,
            formed: false,
            origin: None,
            just_proven: None,
            last_agreed: None,
            last_leavers: BTreeMap::new(),
        }
    }

    pub(crate) fn is_formed(&self) -> bool {
        self.formed
    }

    pub(crate) fn world_size(&self) -> u32 {
        if self.formed {
            self.coord.world_size()
        } else {
            self.world_size
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        if self.formed {
            self.coord.epoch()
        } else {
            self.epoch
        }
    }

    /// The world size formation waits for.
    pub(super) fn formation_size(&self) -> u32 {
        self.world_size
    }

    pub(super) fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// Restored formed: later Hellos are members coming back or joiners for a checkpoint.
    pub(super) fn mark_formed(&mut self) {
        self.formed = true;
    }

    /// The connection the last message proved (see `just_proven`), once.
    pub(crate) fn take_proven(&mut self) -> Option<ConnId> {
        self.just_proven.take()
    }

    /// Joiners still in progress (for stats and tests).
    /// Joiners still handshaking or proving the secret, and those queued for the next
    /// checkpoint.
    pub(crate) fn pending_joiners(&self) -> usize {
        self.joiners.len() + self.coord.pending.len()
    }

    pub(crate) fn on_incoming(&mut self, now: Instant, conn: ConnId, remote: SocketAddr) {
        self.joiners.insert(
            conn,
            Joiner {
                remote,
                deadline: Some(now + self.join_timeout),
                hello: None,
                accepted_seq: None,
            },
        );
    }

    /// A control message on `conn`. `exporter` is the session's keying material for the
    /// join proof (None if the TLS layer could not give it, which fails the proof).
    pub(crate) fn on_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        msg: Message,
        exporter: Option<[u8; 32]>,
    ) -> Vec<Action> {
        if self.coord.is_member_conn(conn) {
            if let Some(actions) = self.agreed_again(conn, &msg) {
                return actions;
            }
            // Members' control traffic: heartbeats, votes, leaves and checkpoints.
            let mut actions = self.coord.on_message(now, conn, msg);
            actions.extend(self.try_checkpoint(now));
            return actions;
        }
        let Some(joiner) = self.joiners.get(&conn) else {
            return Vec::new();
        };
        let hello = match msg {
            Message::Hello(h) if joiner.hello.is_none() => h,
            // Anything but one Hello from a joiner is a protocol violation.
            _ => return self.reject(conn, RejectReason::Malformed, 0),
        };
        if hello.version != PROTOCOL_VERSION {
            return self.reject(conn, RejectReason::BadVersion, u64::from(hello.version));
        }
        let proven = exporter.is_some_and(|e| proof::verify(&self.secret, &e, &hello.join_proof));
        if !proven {
            return self.reject(conn, RejectReason::BadProof, 0);
        }
        self.just_proven = Some(conn);
        if self.formed {
            let Ok(key) = crate::crypto::csr_key_sha256(&hello.csr_der) else {
                return self.reject(conn, RejectReason::BadCertificateRequest, 0);
            };
            // A member coming back (the seed restarted, or its seed connection broke).
            let rank = self
                .coord
                .returning(&key, hello.requested_rank)
                .or_else(|| self.returning_renumbered(&key, hello.requested_rank));
            if let Some(rank) = rank {
                self.joiners.remove(&conn);
                return self.coord.reattach(now, rank, conn);
            }
            if let Some(actions) = self.left_again(conn, &key, hello.requested_rank) {
                return actions;
            }
            if let Some(actions) = self.evicted_again(conn, &key, hello.requested_rank) {
                return actions;
            }
            // Ranks are assigned at the checkpoint; a requested one cannot be honoured.
            if self.ca.sign_request(&hello.csr_der, 0, 0).is_err() {
                return self.reject(conn, RejectReason::BadCertificateRequest, 0);
            }
            return self.queue_join(now, conn, hello);
        }
        if let Some(r) = hello.requested_rank {
            if r >= self.world_size {
                return self.reject(conn, RejectReason::RankOutOfRange, u64::from(r));
            }
            let taken = self.joiners.values().any(|j| {
                j.hello
                    .as_ref()
                    .is_some_and(|h| h.requested_rank == Some(r))
            });
            if taken {
                return self.reject(conn, RejectReason::RankTaken, u64::from(r));
            }
        }
        // Refuse a request we could never sign now, not at formation time.
        if self.ca.sign_request(&hello.csr_der, 0, 0).is_err() {
            return self.reject(conn, RejectReason::BadCertificateRequest, 0);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(j) = self.joiners.get_mut(&conn) {
            j.hello = Some(hello);
            j.deadline = None;
            j.accepted_seq = Some(seq);
        }
        self.try_form(now)
    }

    /// The joiner's bytes could not be decoded (the transport already stopped reading).
    pub(crate) fn on_malformed(&mut self, conn: ConnId, error: &DecodeError) -> Vec<Action> {
        if !self.joiners.contains_key(&conn) {
            return Vec::new();
        }
        match error {
            DecodeError::TooLarge { len, .. } => {
                self.reject(conn, RejectReason::FrameTooLarge, *len)
            }
            _ => self.reject(conn, RejectReason::Malformed, 0),
        }
    }

    pub(crate) fn on_lost(&mut self, now: Instant, conn: ConnId, redialling: bool) -> Vec<Action> {
        // A joiner that leaves before formation (or before its checkpoint) frees its slot.
        self.joiners.remove(&conn);
        self.coord.drop_pending(conn);
        let mut actions = self.coord.on_lost(now, conn, redialling);
        actions.extend(self.try_checkpoint(now));
        actions
    }

    /// Elastic limits: (largest world, most pending joins).
    pub(super) fn elastic_limits(&self) -> (u32, usize) {
        (self.max_world_size, self.max_pending_joins)
    }

    /// Set the elastic limits (from `SeedConfig`, and the minimum from `NodeConfig`).
    pub(crate) fn set_elastic_limits(
        &mut self,
        max_world_size: u32,
        max_pending_joins: usize,
        min_world_size: u32,
    ) -> Result<(), crate::error::ConfigError> {
        self.max_world_size = max_world_size.max(self.world_size);
        self.max_pending_joins = max_pending_joins;
        if min_world_size > self.max_world_size {
            return Err(crate::error::ConfigError::MinWorldSize {
                min: min_world_size,
                max: self.max_world_size,
            });
        }
        self.min_world_size = min_world_size;
        Ok(())
    }

    /// Refuse a joiner (it is told why; nobody else is affected).
    pub(super) fn reject_joiner(
        &mut self,
        conn: ConnId,
        reason: RejectReason,
        detail: u64,
    ) -> Vec<Action> {
        self.reject(conn, reason, detail)
    }

    /// Take a joiner out of the formation table (it moves to the pending queue).
    pub(super) fn take_joiner(&mut self, conn: ConnId) -> Option<SocketAddr> {
        self.joiners.remove(&conn).map(|j| j.remote)
    }

    pub(super) fn sign(&self, csr_der: &[u8], member: u32, serial: u64) -> Result<Vec<u8>, ()> {
        self.ca
            .sign_request(csr_der, member, serial)
            .map(|c| c.to_vec())
            .map_err(|_| ())
    }

    pub(super) fn ca_cert_der(&self) -> Vec<u8> {
        self.ca.cert_der().to_vec()
    }

    pub(super) fn cluster_id(&self) -> [u8; 16] {
        self.cluster_id
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = self.coord.handle_timeout(now);
        let expired: Vec<ConnId> = self
            .joiners
            .iter()
            .filter(|(_, j)| j.deadline.is_some_and(|d| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in expired {
            let ms = u64::try_from(self.join_timeout.as_millis()).unwrap_or(u64::MAX);
            actions.extend(self.reject(conn, RejectReason::Timeout, ms));
        }
        actions
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.joiners
            .values()
            .filter_map(|j| j.deadline)
            .chain(self.coord.poll_timeout())
            .min()
    }

    fn reject(&mut self, conn: ConnId, reason: RejectReason, detail: u64) -> Vec<Action> {
        let Some(joiner) = self.joiners.remove(&conn) else {
            return Vec::new();
        };
        vec![
            reject(conn, reason, detail),
            Action::Event(Event::JoinerRejected {
                remote: joiner.remote,
                reason,
            }),
        ]
    }

    /// Once `world_size` joiners are accepted: assign ranks, issue certificates, welcome.
    fn try_form(&mut self, now: Instant) -> Vec<Action> {
        let mut accepted: Vec<(u64, ConnId)> = self
            .joiners
            .iter()
            .filter_map(|(c, j)| j.accepted_seq.map(|s| (s, *c)))
            .collect();
        if accepted.len() < self.world_size as usize {
            return Vec::new();
        }
        accepted.sort();
        // Requested ranks first; the rest take the free ranks in order of acceptance.
        let mut by_rank: BTreeMap<u32, ConnId> = BTreeMap::new();
        for (_, c) in &accepted {
            if let Some(r) = self.joiners[c]
                .hello
                .as_ref()
                .and_then(|h| h.requested_rank)
            {
                by_rank.insert(r, *c);
            }
        }
        let mut free: std::collections::VecDeque<u32> = (0..self.world_size)
            .filter(|r| !by_rank.contains_key(r))
            .collect();
        for (_, c) in &accepted {
            let requested = self.joiners[c]
                .hello
                .as_ref()
                .and_then(|h| h.requested_rank);
            if requested.is_none() {
                if let Some(r) = free.pop_front() {
                    by_rank.insert(r, *c);
                }
            }
        }
        let peers: Vec<PeerEntry> = by_rank
            .iter()
            .map(|(rank, c)| {
                let j = &self.joiners[c];
                let hello = j.hello.as_ref().expect("accepted joiners have a Hello");
                PeerEntry {
                    rank: *rank,
                    member: *rank,
                    addr: advertised(hello.listen_addr, j.remote),
                    incarnation: hello.incarnation,
                }
            })
            .collect();
        let mut certs = Vec::with_capacity(by_rank.len());
        for (rank, c) in &by_rank {
            let hello = self.joiners[c]
                .hello
                .as_ref()
                .expect("accepted joiners have a Hello");
            let serial = (self.epoch << 32) | u64::from(*rank);
            match self.ca.sign_request(&hello.csr_der, *rank, serial) {
                Ok(cert) => certs.push((*rank, *c, cert)),
                // Checked at Hello time, so this cannot fail unless the CA is broken; if it
                // does, refuse that joiner and wait for another rather than form wrongly.
                Err(_) => return self.reject(*c, RejectReason::BadCertificateRequest, 0),
            }
        }
        let ca_cert_der = Bytes::from(self.ca.cert_der().to_vec());
        let mut actions = Vec::with_capacity(certs.len() + 1);
        let mut roster = Vec::with_capacity(certs.len());
        for (p, (_, conn, _)) in peers.iter().zip(&certs) {
            let hello = self.joiners[conn]
                .hello
                .as_ref()
                .expect("accepted joiners have a Hello");
            // Signed above, so the request parses; a failure would be a broken CA.
            let Ok(key_sha256) = crate::crypto::csr_key_sha256(&hello.csr_der) else {
                return self.reject(*conn, RejectReason::BadCertificateRequest, 0);
            };
            roster.push(Member {
                conn: Some(*conn),
                id: p.member,
                addr: p.addr,
                incarnation: p.incarnation,
                key_sha256,
            });
        }
        self.coord.form(now, self.epoch, roster);
        for (rank, conn, cert) in certs {
            actions.push(Action::Send {
                conn,
                msg: Message::Welcome(Welcome {
                    rank,
                    world_size: self.world_size,
                    epoch: self.epoch,
                    cluster_id: self.cluster_id,
                    peers: peers.clone(),
                    ca_cert_der: ca_cert_der.clone(),
                    node_cert_der: Bytes::from(cert.to_vec()),
                }),
            });
            self.joiners.remove(&conn);
        }
        self.formed = true;
        actions.push(Action::Event(Event::ClusterFormed {
            world_size: self.world_size,
            epoch: self.epoch,
        }));
        actions.push(Action::Event(Event::SeedStateChanged { epoch: self.epoch }));
        actions
    }
}

/// The address other ranks should dial: the advertised one, with an unspecified IP
/// replaced by the IP the seed saw the connection come from.
pub(super) fn advertised(listen: SocketAddr, remote: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(remote.ip(), listen.port())
    } else {
        listen
    }
}
