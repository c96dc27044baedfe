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
}

/// The result of a finished operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// A tagged message was handed to QUIC (its buffer may be reused).
    Sent,
    /// A tagged message arrived.
    Received {
        /// Sender's rank.
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
    /// A split finished: the new communicator with our rank and its size, or `None` if
    /// we passed no colour.
    Split {
        /// (id, our rank in it, its size).
        comm: Option<(crate::collective::CommId, u32, u32)>,
    },
    /// An RPC was answered `Ok`: the handler's result.
    Rpc {
        /// The response payload.
        data: Bytes,
    },
}
