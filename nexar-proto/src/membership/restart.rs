//! The seed's persisted state: taking a snapshot of it and coming back from one.
//!
//! What must survive a seed crash is what cannot be re-derived or re-learnt: the cluster
//! identity (re-derived from the node's seed and start time), the join secret and limits,
//! and the membership (epoch, the next member id, every member in rank order with the
//! hash of its key). What is not kept is soft: connections (members redial), liveness
//! (it starts again when each member is back), recovery rounds and checkpoint requests
//! (members send their votes and requests again once reconnected), and joiners waiting
//! for a checkpoint (they redial, and are queued again).

use std::net::SocketAddr;
use std::time::Instant;

use super::coordinator::Member;
use super::seed::SeedState;
use crate::codec::{SeedSnapshot, SnapshotMember};

/// What a seed was built from: the part of its config the snapshot must carry.
#[derive(Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) rng_seed: [u8; 32],
    pub(crate) unix_time: u64,
    pub(crate) incarnation: u64,
    pub(crate) addr: SocketAddr,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("rng_seed", &crate::config::REDACTED)
            .field("unix_time", &self.unix_time)
            .field("incarnation", &self.incarnation)
            .field("addr", &self.addr)
            .finish()
    }
}

impl SeedState {
    pub(crate) fn set_origin(&mut self, origin: Origin) {
        self.origin = Some(origin);
    }

    /// The state to persist (see the module docs for what is left out, and why).
    pub(crate) fn snapshot(&self) -> Option<SeedSnapshot> {
        let origin = self.origin?;
        let (max_world_size, max_pending_joins) = self.elastic_limits();
        let formed = self.is_formed();
        Some(SeedSnapshot {
            rng_seed: origin.rng_seed,
            unix_time: origin.unix_time,
            incarnation: origin.incarnation,
            addr: origin.addr,
            secret: self.secret(),
            world_size: self.formation_size(),
            max_world_size,
            max_pending_joins: u32::try_from(max_pending_joins).unwrap_or(u32::MAX),
            formed,
            epoch: self.epoch(),
            next_member: if formed { self.coord.next_member } else { 0 },
            members: if formed {
                self.coord
                    .members()
                    .iter()
                    .map(|m| SnapshotMember {
                        id: m.id,
                        addr: m.addr,
                        incarnation: m.incarnation,
                        key_sha256: m.key_sha256,
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Come back formed at the snapshot's epoch, every member known but none connected.
    pub(crate) fn restore_formed(&mut self, now: Instant, snapshot: &SeedSnapshot) {
        if !snapshot.formed {
            return; // formation starts over: joiners keep no state at the seed
        }
        let members = snapshot
            .members
            .iter()
            .map(|m| Member {
                conn: None,
                id: m.id,
                addr: m.addr,
                incarnation: m.incarnation,
                key_sha256: m.key_sha256,
            })
            .collect();
        self.coord
            .restore(now, snapshot.epoch, snapshot.next_member, members);
        self.mark_formed();
    }
}
