//! Errors returned by commands and carried by events.

use crate::codec::RejectReason;

/// A command the node cannot start; nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The node has not emitted `Ready` yet (or it is a seed, which carries no data).
    #[error("node is not ready (no rank yet, or this is the seed)")]
    NotReady,
    /// The rank is not in this world.
    #[error("rank {rank} is out of range for world size {world_size}")]
    UnknownRank {
        /// The rank asked for.
        rank: u32,
        /// The current world size.
        world_size: u32,
    },
    /// The peer is not draining its stream as fast as we queue; try again later.
    #[error("send queue to rank {to} is full ({queued} bytes queued, limit {limit})")]
    Backpressure {
        /// The destination rank.
        to: u32,
        /// Bytes already queued.
        queued: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No such communicator here (never split, split excluded us, or it belonged to an
    /// earlier epoch: an epoch change ends every split communicator).
    #[error("unknown communicator {comm:?}")]
    UnknownCommunicator {
        /// The id given.
        comm: crate::collective::CommId,
    },
    /// A point-to-point command named a rank a split communicator does not have.
    #[error("rank {rank} is out of range for communicator {comm:?} of size {size}")]
    NotInCommunicator {
        /// The communicator.
        comm: crate::collective::CommId,
        /// The rank asked for.
        rank: u32,
        /// The communicator's size.
        size: u32,
    },
    /// The collective's parameters make no sense (op for kind or dtype, root, ...).
    #[error("invalid collective: {detail}")]
    InvalidCollective {
        /// What is wrong.
        detail: String,
    },
    /// The buffer's length is not what the collective needs from this rank.
    #[error("buffer has {got} elements, this collective needs {expected}")]
    BufferLength {
        /// Elements required.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The message is larger than a frame may be; split it.
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest accepted (`Node::max_message`).
        limit: usize,
    },
    /// The connection to the rank is gone.
    #[error("no connection to rank {rank}")]
    PeerUnavailable {
        /// The unreachable rank.
        rank: u32,
    },
    /// Under the abort policy a peer died; this node runs nothing more.
    #[error("the cluster aborted after rank {rank} was lost")]
    Aborted {
        /// The rank whose loss aborted it.
        rank: u32,
    },
    /// The node has left the cluster, was evicted, or its recovery failed.
    #[error("this node is no longer a member")]
    NotMember,
    /// A recovery is under way: wait for `Event::EpochChanged` (the world's new ranks)
    /// and issue the command on it.
    #[error("the membership is recovering from a failure; wait for the new epoch")]
    Recovering,
    /// A checkpoint or leave is already in progress.
    #[error("a checkpoint or leave is already in progress")]
    MembershipBusy,
    /// No request with this id waits for an answer: it was answered already, or its
    /// caller was lost.
    #[error("no pending RPC request {request:?}")]
    UnknownRpcRequest {
        /// The id given.
        request: crate::rpc::RpcRequestId,
    },
}

/// Why an operation that had started failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The connection to this rank was lost while the operation needed it.
    #[error("peer rank {rank} lost")]
    PeerLost {
        /// The lost rank.
        rank: u32,
    },
    /// Ranks called different collectives at the same point: `field` (kind, dtype, count,
    /// root, op) differs between this rank and `peer`.
    #[error("collective mismatch on comm {comm} seq {seq}: {field} differs between rank {rank} and rank {peer}")]
    Mismatch {
        /// Communicator id.
        comm: u64,
        /// Sequence number on it.
        seq: u64,
        /// The first differing field.
        field: &'static str,
        /// This rank (world rank).
        rank: u32,
        /// The rank that differs (world rank).
        peer: u32,
        /// This node's recent operations.
        flight: crate::collective::FlightRecord,
    },
    /// The operation did not finish by its deadline.
    #[error(
        "collective {op:?} (comm {comm} seq {seq}) timed out waiting for ranks {waiting_for:?}"
    )]
    Timeout {
        /// The operation.
        op: crate::event::OpId,
        /// Communicator id.
        comm: u64,
        /// Sequence number on it.
        seq: u64,
        /// World ranks whose data had not arrived.
        waiting_for: Vec<u32>,
        /// This node's recent operations.
        flight: crate::collective::FlightRecord,
    },
    /// A command held while the membership changed could not start on the new world.
    #[error("could not start on the new membership: {error}")]
    Refused {
        /// Why it was refused.
        error: CommandError,
    },
    /// A receive posted before a checkpoint that renumbered the ranks; post it again.
    #[error("the membership moved to epoch {epoch}; the receive was withdrawn")]
    EpochChanged {
        /// The new epoch.
        epoch: u64,
    },
    /// This node was evicted, left, or its recovery failed, before the operation ended.
    #[error("this node is no longer a member")]
    NotMember,
    /// A peer broke the protocol (a chunk that does not fit the plan).
    #[error("protocol violation by rank {rank}: {detail}")]
    Protocol {
        /// The offending world rank.
        rank: u32,
        /// What it did.
        detail: String,
    },
    /// The RPC reached rank `rank` and was answered with a status other than `Ok`: no
    /// function registered under `fn_id` there, the handler failed (`detail` is its error
    /// payload), or the target refused the call (`Overloaded`, `ShuttingDown`).
    #[error("rpc of function {fn_id} on rank {rank} failed: {status:?} ({} bytes of detail)", detail.len())]
    RpcFailed {
        /// The target rank.
        rank: u32,
        /// The function called.
        fn_id: u32,
        /// What the target answered.
        status: crate::codec::RpcStatus,
        /// The response payload (the handler's error, or empty).
        detail: bytes::Bytes,
    },
    /// No answer to the RPC arrived before its deadline. (Not `Timeout`, which names a
    /// collective's communicator and sequence number.) A late answer is ignored.
    #[error("rpc of function {fn_id} on rank {rank} timed out")]
    RpcTimeout {
        /// The target rank.
        rank: u32,
        /// The function called.
        fn_id: u32,
    },
}

/// Why a worker could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The seed refused us, and said why.
    #[error("seed rejected the join: {reason:?}")]
    Rejected {
        /// The seed's reason.
        reason: RejectReason,
    },
    /// The TLS handshake with the seed failed: most often the seed's key does not match
    /// the ticket's pin (a man in the middle, or a stale ticket).
    #[error("could not establish a trusted connection to the seed: {detail}")]
    SeedUntrusted {
        /// What TLS or QUIC said.
        detail: String,
    },
    /// Nothing ever came back from the seed's address within `formation_timeout`: no
    /// seed runs there, or it is unreachable from here (a wrong address in the ticket, a
    /// firewall, a seed never started).
    #[error("no answer from the seed at {addr} after {waited:?} of dialling: is it running, and reachable from here?")]
    SeedUnreachable {
        /// The address dialled (the ticket's).
        addr: std::net::SocketAddr,
        /// How long the worker dialled it.
        waited: std::time::Duration,
    },
    /// The connection to the seed was lost before we were welcomed.
    #[error("lost the connection to the seed: {detail}")]
    SeedLost {
        /// What happened.
        detail: String,
    },
    /// The seed's Welcome did not make sense (e.g. a certificate that is not ours).
    #[error("invalid welcome from the seed: {detail}")]
    BadWelcome {
        /// What was wrong.
        detail: String,
    },
    /// Not welcomed and meshed within `formation_timeout`.
    #[error("formation timed out; still missing ranks {missing:?}")]
    Timeout {
        /// Ranks we had no connection to yet (empty if not welcomed at all).
        missing: Vec<u32>,
    },
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// world_size must be at least 1.
    #[error("world size must be at least 1")]
    EmptyWorld,
    /// Building TLS or QUIC configuration failed.
    #[error("crypto setup failed: {0}")]
    Crypto(String),
    /// `min_world_size` is above the largest world the seed may have.
    #[error("min world size {min} exceeds the max world size {max}")]
    MinWorldSize {
        /// `NodeConfig::min_world_size`.
        min: u32,
        /// The seed's max world size (at least its formation size).
        max: u32,
    },
    /// A seed snapshot to restore from was refused.
    #[error("cannot restore the seed: {0}")]
    BadSnapshot(#[from] crate::codec::SnapshotError),
}
