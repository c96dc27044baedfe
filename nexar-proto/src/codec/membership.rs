//! Membership messages among members: liveness, leaving, checkpoints (planned epoch
//! changes) and recovery (epoch changes after failures).
//!
//! Every epoch change travels as one agreed message listing the new membership, so that
//! no node derives ranks by guesswork (DESIGN §4).

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};

use super::message::{Body, WireMessage};
use super::wire::{self, Reader, ADDR_MIN_LEN};
use super::{DecodeError, Kind, Limits};

/// Liveness probe; `epoch` lets the receiver notice a peer that missed an epoch change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sender's current epoch.
    pub epoch: u64,
    /// Per-connection sequence number, to measure loss and round-trips.
    pub seq: u64,
}

impl Body for Heartbeat {
    fn body_len(&self) -> usize {
        8 + 8
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u64_le(self.seq);
    }
}

impl WireMessage for Heartbeat {
    const KIND: Kind = Kind::HEARTBEAT;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Heartbeat {
            epoch: r.u64("heartbeat.epoch")?,
            seq: r.u64("heartbeat.seq")?,
        })
    }
}

/// A member announces that it is leaving cleanly (at the next checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    /// The sender's epoch.
    pub epoch: u64,
    /// The sender's rank at that epoch.
    pub rank: u32,
}

impl Body for Leave {
    fn body_len(&self) -> usize {
        8 + 4
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u32_le(self.rank);
    }
}

impl WireMessage for Leave {
    const KIND: Kind = Kind::LEAVE;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Leave {
            epoch: r.u64("leave.epoch")?,
            rank: r.u32("leave.rank")?,
        })
    }
}

/// A member reaches checkpoint `checkpoint` and asks for pending joins and leaves to be
/// applied there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRequest {
    /// The sender's epoch.
    pub epoch: u64,
    /// The sender's rank.
    pub rank: u32,
    /// The application's checkpoint counter.
    pub checkpoint: u64,
}

impl Body for CheckpointRequest {
    fn body_len(&self) -> usize {
        8 + 4 + 8
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u32_le(self.rank);
        out.put_u64_le(self.checkpoint);
    }
}

impl WireMessage for CheckpointRequest {
    const KIND: Kind = Kind::CHECKPOINT_REQUEST;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(CheckpointRequest {
            epoch: r.u64("checkpoint_request.epoch")?,
            rank: r.u32("checkpoint_request.rank")?,
            checkpoint: r.u64("checkpoint_request.checkpoint")?,
        })
    }
}

/// One member of the new epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// Rank in the old epoch; `None` for a node that joins at this checkpoint.
    pub old_rank: Option<u32>,
    /// Rank in the new epoch.
    pub new_rank: u32,
    /// Member id (the name in its certificate; see [`PeerEntry::member`](super::PeerEntry::member)).
    pub member: u32,
    /// Mesh address.
    pub addr: SocketAddr,
    /// Incarnation (see [`Hello::incarnation`](super::Hello::incarnation)).
    pub incarnation: u64,
}

impl MemberEntry {
    const MIN_LEN: usize = 1 + 4 + 4 + ADDR_MIN_LEN + 8;

    fn len(&self) -> usize {
        wire::opt_u32_len(self.old_rank) + 4 + 4 + wire::addr_len(&self.addr) + 8
    }

    fn put(&self, out: &mut BytesMut) {
        wire::put_opt_u32(out, self.old_rank);
        out.put_u32_le(self.new_rank);
        out.put_u32_le(self.member);
        wire::put_addr(out, &self.addr);
        out.put_u64_le(self.incarnation);
    }

    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(MemberEntry {
            old_rank: r.opt_u32("checkpoint_agreed.members.old_rank")?,
            new_rank: r.u32("checkpoint_agreed.members.new_rank")?,
            member: r.u32("checkpoint_agreed.members.member")?,
            addr: r.addr("checkpoint_agreed.members.addr")?,
            incarnation: r.u64("checkpoint_agreed.members.incarnation")?,
        })
    }
}

/// The agreed transition from `old_epoch` to `new_epoch` at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointAgreed {
    /// The epoch being left.
    pub old_epoch: u64,
    /// The epoch being entered.
    pub new_epoch: u64,
    /// Number of ranks in the new epoch.
    pub new_world_size: u32,
    /// Every member of the new epoch; at most [`Limits::max_peers`].
    pub members: Vec<MemberEntry>,
    /// Old ranks that left; at most [`Limits::max_peers`].
    pub leavers: Vec<u32>,
}

impl Body for CheckpointAgreed {
    fn body_len(&self) -> usize {
        8 + 8
            + 4
            + 4
            + self.members.iter().map(MemberEntry::len).sum::<usize>()
            + wire::u32_vec_len(&self.leavers)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.old_epoch);
        out.put_u64_le(self.new_epoch);
        out.put_u32_le(self.new_world_size);
        wire::put_len(out, self.members.len());
        for member in &self.members {
            member.put(out);
        }
        wire::put_u32_vec(out, &self.leavers);
    }
}

impl WireMessage for CheckpointAgreed {
    const KIND: Kind = Kind::CHECKPOINT_AGREED;

    fn decode_body(r: &mut Reader, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(CheckpointAgreed {
            old_epoch: r.u64("checkpoint_agreed.old_epoch")?,
            new_epoch: r.u64("checkpoint_agreed.new_epoch")?,
            new_world_size: r.u32("checkpoint_agreed.new_world_size")?,
            members: r.vec(
                "checkpoint_agreed.members",
                MemberEntry::MIN_LEN,
                limits.max_peers,
                MemberEntry::read,
            )?,
            leavers: r.u32_vec("checkpoint_agreed.leavers", limits.max_peers)?,
        })
    }
}

/// A member's view of which ranks have failed, sent during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryVote {
    /// The epoch the failures happened in.
    pub epoch: u64,
    /// The voter's rank; [`RecoveryVote::COORDINATOR`] when the seed opens a round and
    /// calls for every member's vote (`dead` then holds the dead set so far).
    pub voter: u32,
    /// Ranks the voter believes dead; at most [`Limits::max_peers`].
    pub dead: Vec<u32>,
}

impl RecoveryVote {
    /// The `voter` of the seed's call for votes (no rank can be `u32::MAX`).
    pub const COORDINATOR: u32 = u32::MAX;
}

impl Body for RecoveryVote {
    fn body_len(&self) -> usize {
        8 + 4 + wire::u32_vec_len(&self.dead)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u32_le(self.voter);
        wire::put_u32_vec(out, &self.dead);
    }
}

impl WireMessage for RecoveryVote {
    const KIND: Kind = Kind::RECOVERY_VOTE;

    fn decode_body(r: &mut Reader, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(RecoveryVote {
            epoch: r.u64("recovery_vote.epoch")?,
            voter: r.u32("recovery_vote.voter")?,
            dead: r.u32_vec("recovery_vote.dead", limits.max_peers)?,
        })
    }
}

/// The agreed outcome of recovery: `dead` are removed and survivors move to `new_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryAgreed {
    /// The epoch the failures happened in.
    pub old_epoch: u64,
    /// The epoch survivors enter.
    pub new_epoch: u64,
    /// Old ranks removed; at most [`Limits::max_peers`].
    pub dead: Vec<u32>,
}

impl Body for RecoveryAgreed {
    fn body_len(&self) -> usize {
        8 + 8 + wire::u32_vec_len(&self.dead)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.old_epoch);
        out.put_u64_le(self.new_epoch);
        wire::put_u32_vec(out, &self.dead);
    }
}

impl WireMessage for RecoveryAgreed {
    const KIND: Kind = Kind::RECOVERY_AGREED;

    fn decode_body(r: &mut Reader, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(RecoveryAgreed {
            old_epoch: r.u64("recovery_agreed.old_epoch")?,
            new_epoch: r.u64("recovery_agreed.new_epoch")?,
            dead: r.u32_vec("recovery_agreed.dead", limits.max_peers)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Message;

    #[test]
    fn heartbeat_layout_is_pinned() {
        let frame = Message::Heartbeat(Heartbeat {
            epoch: 2,
            seq: 0x0102,
        })
        .to_frame();
        assert_eq!(
            &frame[..],
            &[b'N', b'X', 2, 0x10, 0, 16, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn a_count_of_four_billion_is_refused_without_allocating() {
        let mut payload = BytesMut::new();
        payload.put_u64_le(1);
        payload.put_u64_le(2);
        payload.put_u32_le(u32::MAX);
        let payload = payload.freeze();
        assert_eq!(
            Message::decode(Kind::RECOVERY_AGREED, payload.clone(), &Limits::default()),
            Err(DecodeError::FieldTooLarge {
                field: "recovery_agreed.dead",
                len: u32::MAX.into(),
                limit: 65_536
            })
        );
        // Even with the count limit lifted, the count is checked against the bytes present
        // before the vector is allocated (16 GiB would abort the test if it were not).
        let unlimited = Limits {
            max_peers: u32::MAX,
            ..Limits::default()
        };
        assert_eq!(
            Message::decode(Kind::RECOVERY_AGREED, payload, &unlimited),
            Err(DecodeError::Truncated {
                needed: 4 * u32::MAX as usize,
                available: 0,
                field: "recovery_agreed.dead"
            })
        );
        let mut payload = BytesMut::new();
        payload.put_u64_le(1);
        payload.put_u64_le(2);
        payload.put_u32_le(7);
        payload.put_u32_le(u32::MAX);
        assert!(matches!(
            Message::decode(Kind::CHECKPOINT_AGREED, payload.freeze(), &unlimited),
            Err(DecodeError::Truncated {
                field: "checkpoint_agreed.members",
                ..
            })
        ));
    }

    #[test]
    fn bad_option_tag_is_refused() {
        let mut payload = BytesMut::new();
        payload.put_u64_le(1);
        payload.put_u64_le(2);
        payload.put_u32_le(3);
        payload.put_u32_le(1);
        payload.put_u8(2);
        payload.put_slice(&[0; 32]);
        assert_eq!(
            Message::decode(
                Kind::CHECKPOINT_AGREED,
                payload.freeze(),
                &Limits::default()
            ),
            Err(DecodeError::BadField {
                field: "checkpoint_agreed.members.old_rank",
                reason: "presence byte is neither 0 nor 1",
                value: 2
            })
        );
    }
}
