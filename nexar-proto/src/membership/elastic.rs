//! Elastic membership at the seed: the bounded pending-join queue and the checkpoint
//! that applies joins and leaves in one agreed message.
//!
//! A joiner that proves the secret after formation is not turned away: it waits in a
//! queue (bounded by `max_pending_joins`, and by `max_world_size` counting everyone
//! already coming) for the application's next `checkpoint()`. When every member has
//! asked for it (a `leave()` counts), the seed sends one `CheckpointAgreed` to every
//! member, leavers included, and a `Welcome` for the new epoch to each joiner. Stayers
//! keep their order and come first; joiners take the ranks after them, in queue order,
//! with fresh member ids (never reused), so their certificates can never be taken for
//! anyone who was a member before. A checkpoint that would leave fewer members than
//! `NodeConfig::min_world_size` waits for joiners instead of being agreed.

use std::time::Instant;

use bytes::Bytes;

use super::coordinator::{Member, PendingJoin};
use super::seed::SeedState;
use super::view::renumber;
use super::Action;
use crate::codec::{
    CheckpointAgreed, Hello, MemberEntry, Message, PeerEntry, RejectReason, Welcome,
};
use crate::event::Event;
use crate::transport::ConnId;

impl SeedState {
    /// A joiner proved the secret after formation: queue it for the next checkpoint, or
    /// refuse it if the world or the queue is full.
    pub(super) fn queue_join(&mut self, now: Instant, conn: ConnId, hello: Hello) -> Vec<Action> {
        let (max_world, max_pending) = self.elastic_limits();
        let coming = self.coord.world_size() as usize + self.coord.pending.len();
        if coming >= max_world as usize {
            return self.reject_joiner(conn, RejectReason::ClusterFull, u64::from(max_world));
        }
        if self.coord.pending.len() >= max_pending {
            return self.reject_joiner(conn, RejectReason::QueueFull, max_pending as u64);
        }
        let Some(remote) = self.take_joiner(conn) else {
            return Vec::new();
        };
        self.coord.pending.push(PendingJoin {
            conn,
            remote,
            hello,
        });
        self.try_checkpoint(now)
    }

    /// A member asks again for the checkpoint of the epoch just agreed: it missed the
    /// agreement (its seed connection broke and it dialled again), while the others
    /// already moved on. Send it the same agreement; without it that member would wait
    /// forever and its peers' next operations would time out on it.
    pub(super) fn agreed_again(&self, conn: ConnId, msg: &Message) -> Option<Vec<Action>> {
        let epoch = match msg {
            Message::CheckpointRequest(r) => r.epoch,
            Message::Leave(l) => l.epoch,
            _ => return None,
        };
        let agreed = self.last_agreed.as_ref()?;
        let Message::CheckpointAgreed(a) = agreed else {
            return None;
        };
        // A no-op agreement (nothing pending) leaves the epoch as it was: a request for
        // that epoch is then a new checkpoint, not a late copy of the old one.
        let moved = a.new_epoch != a.old_epoch;
        (moved && a.old_epoch == epoch && a.new_epoch == self.coord.epoch()).then(|| {
            vec![Action::Send {
                conn,
                msg: agreed.clone(),
            }]
        })
    }

    /// A member coming back that still names its rank from before the last checkpoint
    /// (it missed the agreement): its rank in the agreed epoch, if its key matches.
    pub(super) fn returning_renumbered(&self, key: &[u8; 32], old: Option<u32>) -> Option<u32> {
        let Some(Message::CheckpointAgreed(a)) = &self.last_agreed else {
            return None;
        };
        if a.new_epoch != self.coord.epoch() {
            return None;
        }
        let entry = a
            .members
            .iter()
            .find(|m| m.old_rank.is_some() && m.old_rank == old)?;
        self.coord.returning(key, Some(entry.new_rank))
    }

    /// A member that left at the last checkpoint dials again, naming its old rank: its
    /// seed connection broke before the agreement reached it, so it still waits for its
    /// `leave()`. It gets the agreement, which tells it it left. Queued as a joiner
    /// instead, it would be admitted at the next checkpoint and never come, and the
    /// others would wait for it.
    pub(super) fn left_again(
        &mut self,
        conn: ConnId,
        key: &[u8; 32],
        old: Option<u32>,
    ) -> Option<Vec<Action>> {
        let Some(Message::CheckpointAgreed(a)) = &self.last_agreed else {
            return None;
        };
        if a.new_epoch != self.coord.epoch() || self.last_leavers.get(&old?) != Some(key) {
            return None;
        }
        let msg = Message::CheckpointAgreed(a.clone());
        self.take_joiner(conn);
        Some(vec![Action::Send { conn, msg }])
    }

    /// A member the last recovery evicted dials again, naming its old rank: it missed the
    /// verdict (cut off, or paused, while it was decided). It gets the verdict, which
    /// tells it it is out, rather than a place in the queue it would never take.
    pub(super) fn evicted_again(
        &mut self,
        conn: ConnId,
        key: &[u8; 32],
        old: Option<u32>,
    ) -> Option<Vec<Action>> {
        let (verdict, keys) = self.coord.last_verdict.as_ref()?;
        if keys.get(&old?) != Some(key) {
            return None;
        }
        let msg = Message::RecoveryAgreed(verdict.clone());
        self.take_joiner(conn);
        Some(vec![Action::Send { conn, msg }])
    }

    /// Apply the checkpoint if every member asked for it.
    pub(super) fn try_checkpoint(&mut self, now: Instant) -> Vec<Action> {
        if !self.coord.checkpoint_due() {
            return Vec::new();
        }
        let old_epoch = self.coord.epoch();
        let members = self.coord.members().to_vec();
        let leaving = self.coord.leaving.clone();
        let stay = members.len() - leaving.len();
        let (max_world, _) = self.elastic_limits();
        let room = (max_world as usize).saturating_sub(stay);
        let take = self.coord.pending.len().min(room);
        if ((stay + take) as u64) < u64::from(self.min_world_size) {
            // Below the minimum: the requests stay recorded, and the next joiner queued
            // (`queue_join`) tries again.
            return Vec::new();
        }
        let joiners: Vec<PendingJoin> = self.coord.pending.drain(..take).collect();
        let changed = !leaving.is_empty() || !joiners.is_empty();
        let new_epoch = if changed { old_epoch + 1 } else { old_epoch };
        let map = renumber(members.len() as u32, &leaving);

        // The new roster: stayers in their old order, then joiners.
        let mut roster: Vec<Member> = Vec::with_capacity(stay + joiners.len());
        let mut entries: Vec<MemberEntry> = Vec::with_capacity(roster.capacity());
        for (old, m) in members.iter().enumerate() {
            if let Some(&new) = map.get(&(old as u32)) {
                entries.push(MemberEntry {
                    old_rank: Some(old as u32),
                    new_rank: new,
                    member: m.id,
                    addr: m.addr,
                    incarnation: m.incarnation,
                });
                roster.push(m.clone());
            }
        }
        let mut welcomes = Vec::new();
        for j in joiners {
            let id = self.coord.next_member;
            self.coord.next_member += 1;
            let serial = (new_epoch << 32) | u64::from(id);
            let cert = match self.sign(&j.hello.csr_der, id, serial) {
                Ok(cert) => cert,
                // Checked when it was queued; a CA that fails now refuses this joiner
                // alone.
                Err(_) => {
                    welcomes.push((j.conn, None));
                    continue;
                }
            };
            let Ok(key_sha256) = crate::crypto::csr_key_sha256(&j.hello.csr_der) else {
                welcomes.push((j.conn, None));
                continue;
            };
            let new_rank = roster.len() as u32;
            let addr = super::seed::advertised(j.hello.listen_addr, j.remote);
            entries.push(MemberEntry {
                old_rank: None,
                new_rank,
                member: id,
                addr,
                incarnation: j.hello.incarnation,
            });
            roster.push(Member {
                conn: Some(j.conn),
                id,
                addr,
                incarnation: j.hello.incarnation,
                key_sha256,
            });
            welcomes.push((j.conn, Some((new_rank, cert))));
        }
        let world = roster.len() as u32;
        let agreed = Message::CheckpointAgreed(CheckpointAgreed {
            old_epoch,
            new_epoch,
            new_world_size: world,
            members: entries.clone(),
            leavers: leaving.iter().copied().collect(),
        });
        self.last_agreed = Some(agreed.clone());
        self.last_leavers = leaving
            .iter()
            .filter_map(|&r| Some((r, members.get(r as usize)?.key_sha256)))
            .collect();
        let mut actions: Vec<Action> = members
            .iter()
            .filter_map(|m| m.conn)
            .map(|conn| Action::Send {
                conn,
                msg: agreed.clone(),
            })
            .collect();
        let peers: Vec<PeerEntry> = entries
            .iter()
            .map(|e| PeerEntry {
                rank: e.new_rank,
                member: e.member,
                addr: e.addr,
                incarnation: e.incarnation,
            })
            .collect();
        let ca_cert = Bytes::from(self.ca_cert_der());
        for (conn, admitted) in welcomes {
            match admitted {
                Some((rank, cert)) => actions.push(Action::Send {
                    conn,
                    msg: Message::Welcome(Welcome {
                        rank,
                        world_size: world,
                        epoch: new_epoch,
                        cluster_id: self.cluster_id(),
                        peers: peers.clone(),
                        ca_cert_der: ca_cert.clone(),
                        node_cert_der: Bytes::from(cert),
                    }),
                }),
                None => actions.push(super::reject(conn, RejectReason::BadCertificateRequest, 0)),
            }
        }
        self.coord.install(now, new_epoch, roster);
        if changed {
            actions.push(Action::Event(Event::MembershipChanged {
                epoch: new_epoch,
                world_size: world,
            }));
            actions.push(Action::Event(Event::SeedStateChanged { epoch: new_epoch }));
        }
        actions
    }
}
