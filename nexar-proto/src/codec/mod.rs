//! The wire codec: frames, messages and the incremental [`FrameDecoder`].
//!
//! Every message travels as one frame: a fixed 9-byte [`FrameHeader`] (magic `NX`,
//! version, [`Kind`], [`Flags`], little-endian payload length) followed by the payload.
//! Payloads are hand-written little-endian fields; `PROTOCOL.md` at the crate root
//! documents every byte, and the pinned-layout tests keep it honest.
//!
//! Rules that make the codec safe to point at the network:
//! - every length and count is checked against [`Limits`] and against the bytes actually
//!   present *before* anything is allocated;
//! - any input yields a value or a typed [`DecodeError`], never a panic;
//! - a stream error is final ([`FrameDecoder`] poisons itself): the connection is closed;
//! - unknown kinds are errors unless the sender set [`Flags::IGNORABLE`]; bytes after a
//!   message's known fields are ignored, so later versions can append fields;
//! - large byte fields are zero-copy [`bytes::Bytes`] slices on decode (a chunk's payload
//!   stays in the [`Pieces`] it arrived in), and [`Message::encode_prefix`] lets a driver
//!   send them without copying on encode.
//!
//! The codec checks syntax and limits only; whether a rank is in range or an epoch is
//! current is the membership and collective layers' business.

#[macro_use]
mod code_enum;

mod collective;
mod decoder;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod join;
mod limits;
mod membership;
mod message;
mod p2p;
mod pieces;
mod snapshot;
#[cfg(test)]
mod strategies;
mod vocab;
mod wire;

pub use collective::{Chunk, ChunkHeader, Fingerprint};
pub use decoder::FrameDecoder;
pub use error::{DecodeError, UnknownCode};
pub use header::{Flags, FrameHeader, Kind, HEADER_LEN, MAGIC, VERSION};
pub use join::{Hello, JoinRejected, PeerEntry, RejectReason, Welcome};
pub use limits::Limits;
pub use membership::{
    CheckpointAgreed, CheckpointRequest, Heartbeat, Leave, MemberEntry, RecoveryAgreed,
    RecoveryVote,
};
pub use message::{Frame, Message};
pub use p2p::{Relay, RpcRequest, RpcResponse, RpcStatus, Tagged, TaggedPart, TaggedStart};
pub use pieces::Pieces;
pub use snapshot::{SeedSnapshot, SnapshotError, SnapshotMember};
pub use vocab::{Algorithm, CollectiveKind, DType, ReduceOp};
