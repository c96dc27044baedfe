//! Errors: the core's typed errors and the driver's own.

use super::*;

// ---- errors ------------------------------------------------------------------------

/// Everything a nexar call can fail with: the core's typed errors, unchanged, plus the
/// driver's own (I/O, a stopped driver, a caller's buffer of the wrong length).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NexarError {
    /// The node refused to start the command; nothing was sent.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The operation started but failed (a lost peer, a timeout, a mismatch).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The worker could not join the cluster.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A join ticket did not parse.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// A launcher environment variable was missing or malformed.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A socket or OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the driver was doing.
        context: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A caller's buffer does not have the length the collective needs on this rank.
    #[error("{what}: buffer has {got} elements, needs {expected}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Elements required.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The membership moved to another epoch between the moment the caller looked at it
    /// (its rank and world size) and the moment the node would have started the
    /// operation: nothing was started. Look again (`Client::rank`, `world_size`) and
    /// reissue. This fence is what keeps an operation built for one world from running
    /// on another.
    #[error("the membership is at epoch {current}; the operation was built for epoch {expected}")]
    EpochChanged {
        /// The epoch the caller saw.
        expected: u64,
        /// The node's epoch.
        current: u64,
    },
    /// A blocking call was made on a thread that runs async code (a tokio runtime's, or
    /// `nexar_smol::block_on_local`'s), where blocking would stall it: nothing was
    /// started. Use the async API there, or make the call from a thread of its own.
    #[error("a blocking nexar call was made inside an async runtime; use the async API there")]
    BlockingInAsync,
    /// The driver task is gone (its runtime shut down, or every handle was dropped while
    /// this operation was pending).
    #[error("the nexar driver task has stopped")]
    DriverStopped,
    /// A point-to-point message longer than the configured maximum
    /// (`NodeConfig::max_message_len`, [`Client::max_message`](crate::Client::max_message)).
    #[error("message of {len} bytes exceeds the largest point-to-point message, {max} bytes")]
    MessageTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload accepted.
        max: usize,
    },
    /// A received message was longer than the buffer given to
    /// [`Client::recv_into`](crate::Client::recv_into): the message is consumed, the buffer
    /// holds its first `capacity` bytes.
    #[error("received a message of {len} bytes into a buffer of {capacity}")]
    Truncated {
        /// The message's length.
        len: usize,
        /// The buffer's length.
        capacity: usize,
    },
    /// A file that holds secrets (the seed's state file, a ticket file) could have been
    /// read or planted by another local user: it is refused, not used.
    #[error("refusing {path}: {reason}")]
    InsecureFile {
        /// The file.
        path: std::path::PathBuf,
        /// Who else could read or write it.
        reason: String,
    },
    /// The compression math refused its input (a bad density or selection, a tensor whose
    /// length changed, malformed sparse data from a rank).
    #[error(transparent)]
    Compress(#[from] nexar_proto::compress::CompressError),
    /// A device integration failed to stage data in or out.
    #[error(transparent)]
    Device(#[from] super::device::DeviceError),
    /// A bucketed result was asked for a tensor it does not hold, or as another type.
    #[error("bucketed result: tensor {index} {detail}")]
    Tensor {
        /// The tensor's push index.
        index: usize,
        /// What is wrong.
        detail: &'static str,
    },
    /// The node answered with an outcome of another kind: a bug in nexar.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NexarError {
    /// An I/O error with what the driver was doing.
    pub fn io(context: &'static str, source: std::io::Error) -> Self {
        Self::Io { context, source }
    }
}

/// A launcher or tuning environment variable that nexar cannot use (see `LaunchEnv` for
/// the launcher's variables and their precedence, and `Config::from_env` for the knobs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The variable is set but its value is malformed.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tuning knob's value is a number outside its bounds (inclusive).
    #[error("{var}={value:?} is out of range: must be between {min} and {max}")]
    OutOfRange {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A `NEXAR_*` variable nexar does not know: most likely a misspelt knob.
    #[error("unknown variable {var}{}", closest.map(|c| format!(" (did you mean {c}?)")).unwrap_or_default())]
    Unknown {
        /// The variable.
        var: String,
        /// The knob whose name is nearest, if one is near.
        closest: Option<&'static str>,
    },
    /// Two knobs that are fine alone but not together.
    #[error("{} and {} conflict: {detail}", vars[0], vars[1])]
    Conflict {
        /// The variables involved.
        vars: [&'static str; 2],
        /// What is wrong.
        detail: String,
    },
    /// The rank is not below the world size.
    #[error(
        "rank {rank} (from {rank_var}) is not below world size {world_size} (from {world_var})"
    )]
    RankOutOfRange {
        /// The rank.
        rank: u32,
        /// Where it came from.
        rank_var: &'static str,
        /// The world size.
        world_size: u32,
        /// Where it came from.
        world_var: &'static str,
    },
    /// No ticket: neither `NEXAR_JOIN` nor `NEXAR_JOIN_FILE` is set. torchrun's and
    /// Slurm's variables carry no join secret, so they cannot replace a ticket.
    #[error("no join ticket: set NEXAR_JOIN (or NEXAR_JOIN_FILE to a file the seed wrote with --ticket-file); MASTER_ADDR/RANK/WORLD_SIZE give rank and size but carry no join secret")]
    MissingTicket,
    /// The ticket file could not be read.
    #[error("cannot read the join ticket file {path}: {detail}")]
    TicketFile {
        /// The path from `NEXAR_JOIN_FILE`.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// The cluster formed with another size than the environment announced.
    #[error("the environment says world size {expected} (from {var}) but the cluster has {actual} ranks")]
    WorldSizeMismatch {
        /// What the environment said.
        expected: u32,
        /// Which variable said it.
        var: &'static str,
        /// What the seed formed.
        actual: u32,
    },
}
