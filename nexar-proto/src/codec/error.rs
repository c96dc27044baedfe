//! Decode errors: every way bytes from the network can be refused.

use thiserror::Error;

/// Why a frame or message was refused.
///
/// Every variant carries the offending values so that a log line or a `JoinRejected`
/// detail can say exactly what a peer sent. Any `DecodeError` from a stream means the
/// stream is no longer in sync (or the peer is hostile): the connection must be closed;
/// [`FrameDecoder`](super::FrameDecoder) enforces this by poisoning itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first two header bytes are not `b"NX"`: not a nexar stream, or lost sync.
    #[error("bad magic {found:02x?}, expected \"NX\"")]
    BadMagic {
        /// The two bytes found where the magic belongs.
        found: [u8; 2],
    },
    /// The header's protocol version is one this build cannot speak.
    #[error("unsupported protocol version {found} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version byte from the header.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// A reserved header flag bit is set; its meaning is unknown, so it cannot be ignored.
    #[error("reserved flag bits set in {flags:#04x}")]
    ReservedFlags {
        /// The whole flags byte.
        flags: u8,
    },
    /// A frame's payload length exceeds [`Limits::max_frame_len`](super::Limits).
    #[error("frame payload of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Length claimed by the header (or of the payload handed to `decode`).
        len: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A length or count inside a message exceeds its configured limit.
    #[error("field `{field}` has length {len}, over the limit of {limit}")]
    FieldTooLarge {
        /// Which field.
        field: &'static str,
        /// Claimed length (bytes) or count (elements).
        len: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A field runs past the end of the payload.
    #[error("truncated field `{field}`: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the field needs (for a vector: count times the smallest element).
        needed: usize,
        /// Bytes left in the payload at that point.
        available: usize,
        /// Which field.
        field: &'static str,
    },
    /// A kind this build does not know, without the ignorable flag.
    #[error("unknown message kind {kind:#04x} (not marked ignorable)")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A field holds a value outside its domain (unknown enum code, option tag, family).
    #[error("bad field `{field}`: {reason} (value {value})")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
        /// The offending value.
        value: u64,
    },
}

/// A one-byte code that names no variant of a vocabulary enum.
///
/// Returned by the `TryFrom<u8>` impls; the message decoder turns it into
/// [`DecodeError::BadField`] naming the field it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown {what} code {code}")]
pub struct UnknownCode {
    /// The vocabulary the code was meant for (e.g. `"DType"`).
    pub what: &'static str,
    /// The code.
    pub code: u8,
}
