//! What the node tells its driver, through `Node::poll_event`.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::codec::RejectReason;
use crate::error::{JoinError, OpError};

/// Names one command's operation; unique for the life of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Something the application (through its driver) must learn.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Worker: welcomed, and connected to every other rank. Collectives and point-to-point
    /// work from now on.
    Ready {
        /// This node's rank, 0..world_size.
        rank: u32,
        /// Number of ranks.
        world_size: u32,
        /// Membership epoch the rank belongs to.
        epoch: u64,
    },
    /// Seed: every rank has been welcomed.
    ClusterFormed {
        /// Number of ranks.
        world_size: u32,
        /// Membership epoch.
        epoch: u64,
    },
    /// Seed: one joiner was refused; nobody else is affected.
    JoinerRejected {
        /// Where the joiner connected from.
        remote: SocketAddr,
        /// Why, as the joiner was told.
        reason: RejectReason,
    },
    /// Worker: the join failed; the node will do nothing more.
    JoinFailed {
        /// What went wrong.
        error: JoinError,
    },
    /// Worker: a peer is down: its link was silent past `heartbeat_timeout`, or its
    /// connection was lost. What follows depends on the recovery policy.
    PeerDown {
        /// Its rank in the current epoch.
        rank: u32,
        /// How we know.
        reason: DownReason,
    },
    /// Worker: the membership moved to a new epoch (after a recovery or a checkpoint).
    /// Ranks are dense and keep their old order; collectives run on the new world.
    EpochChanged {
        /// The new epoch.
        epoch: u64,
        /// Our rank in it.
        rank: u32,
        /// Its size.
        world_size: u32,
        /// Ranks (in the old epoch) that were dropped as dead.
        dead: Vec<u32>,
        /// Ranks (in the old epoch) that left on request.
        left: Vec<u32>,
        /// Members that joined (their new ranks).
        joined: Vec<u32>,
    },
    /// Worker: the others agreed we are dead (we were silent too long, or partitioned
    /// away). Every operation fails; the node does nothing more. Rejoin as a new node.
    Evicted {
        /// The epoch that excluded us.
        epoch: u64,
    },
    /// Worker: a recovery could not complete (the seed is unreachable, or no agreement
    /// came within `recovery_timeout`). The node does nothing more.
    RecoveryFailed {
        /// What went wrong.
        detail: String,
    },
    /// Seed: the membership moved to a new epoch.
    MembershipChanged {
        /// The new epoch.
        epoch: u64,
        /// Its size.
        world_size: u32,
    },
    /// An operation started by a command has finished.
    Completed {
        /// The id `command` returned.
        op: OpId,
        /// What it produced, or why it failed.
        outcome: Result<Outcome, OpError>,
    },
    /// A rank (possibly this one) called a function registered here
    /// (`Node::register_rpc`). Answer with `Command::RpcRespond` naming `request`; until
    /// then it counts against the caller's bound of unanswered requests.
    RpcRequest {
        /// The caller's rank.
        from: u32,
        /// What to name in the answer.
        request: crate::rpc::RpcRequestId,
        /// The function called.
        fn_id: u32,
        /// The arguments, as the caller sent them.
        payload: Bytes,
    },
    /// Seed: what its snapshot holds changed (formation, an epoch change, a member id
    /// given out, a restart): write [`Node::seed_snapshot`](crate::Node::seed_snapshot)
    /// to stable storage now if the seed is to survive a crash.
    SeedStateChanged {
        /// The membership epoch now.
        epoch: u64,
    },
}

/// How a peer was found down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// Nothing heard from it within `heartbeat_timeout`.
    Silent,
    /// Its QUIC connection ended (closed, reset, or timed out).
    ConnectionLost,
    /// The seed's recovery round named it dead before we noticed ourselves.
    Agreed,
    /// Rank `by` aborted because of it and closed its link to us saying so (the abort
    /// policy). `by` is the witness: a member could name anyone here.
    Relayed {
        /// The rank that told us.
        by: u32,
    },
}

/// The result of a finished operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// A tagged message was handed to QUIC (its buffer may be reused).
    Sent,
    /// A tagged message arrived.
    Received {
        /// Sender's rank in the receive's communicator.
        from: u32,
        /// The tag it was sent with.
        tag: u64,
        /// The payload, exactly as sent.
        data: Bytes,
    },
    /// A collective finished; this rank's output (see each kind for its length).
    Collective {
        /// The output buffer.
        buffer: crate::collective::Buffer,
    },
    /// A checkpoint (or a leave) took effect: the membership from now on.
    Checkpoint {
        /// The epoch after the checkpoint (unchanged if nothing was pending).
        epoch: u64,
        /// Our rank in it (`None` after a leave).
        rank: Option<u32>,
        /// Its size.
        world_size: u32,
    },
    /// A split finished: the new communicator with our rank and its size, or `None` if
    /// we passed no colour. The communicator lives until the epoch changes (a recovery
    /// or a checkpoint): the node then forgets it, and commands naming it are refused
    /// with `CommandError::UnknownCommunicator` (its id, derived from the epoch too, is
    /// never reused by a later split).
    Split {
        /// (id, our rank in it, its size).
        comm: Option<(crate::collective::CommId, u32, u32)>,
        /// The world rank of each of its ranks, in its rank order (empty for `None`).
        members: Vec<u32>,
        /// The epoch it was made in, and the only one it lives in.
        epoch: u64,
    },
    /// An RPC was answered `Ok`: the handler's result.
    Rpc {
        /// The response payload.
        data: Bytes,
    },
}
