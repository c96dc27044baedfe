//! The fixed 9-byte frame header that precedes every message on a stream.

use std::fmt;

use bytes::BufMut;

use super::{DecodeError, Limits};

/// The two bytes every frame starts with; a cheap check that both ends speak nexar and
/// that the stream has not lost sync.
pub const MAGIC: [u8; 2] = *b"NX";

/// The frame format version this build writes and accepts.
pub const VERSION: u8 = 2;

/// Size of [`FrameHeader`] on the wire: magic (2), version (1), kind (1), flags (1), len (4).
///
/// Not padded: frames travel on QUIC streams, which have no alignment, and payload fields
/// are read with explicit little-endian loads.
pub const HEADER_LEN: usize = 9;

/// The message kind byte.
///
/// A newtype rather than an enum so that a frame of a kind this build does not know can
/// still be represented (and skipped when the sender marked it [`Flags::IGNORABLE`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind(pub u8);

impl Kind {
    /// [`Hello`](super::Hello): a joiner asks the seed to be admitted.
    pub const HELLO: Kind = Kind(0x01);
    /// [`Welcome`](super::Welcome): the seed admits a joiner.
    pub const WELCOME: Kind = Kind(0x02);
    /// [`JoinRejected`](super::JoinRejected): the seed refuses a joiner.
    pub const JOIN_REJECTED: Kind = Kind(0x03);
    /// [`Heartbeat`](super::Heartbeat).
    pub const HEARTBEAT: Kind = Kind(0x10);
    /// [`Leave`](super::Leave).
    pub const LEAVE: Kind = Kind(0x11);
    /// [`CheckpointRequest`](super::CheckpointRequest).
    pub const CHECKPOINT_REQUEST: Kind = Kind(0x12);
    /// [`CheckpointAgreed`](super::CheckpointAgreed).
    pub const CHECKPOINT_AGREED: Kind = Kind(0x13);
    /// [`RecoveryVote`](super::RecoveryVote).
    pub const RECOVERY_VOTE: Kind = Kind(0x14);
    /// [`RecoveryAgreed`](super::RecoveryAgreed).
    pub const RECOVERY_AGREED: Kind = Kind(0x15);
    /// [`Chunk`](super::Chunk): collective data.
    pub const CHUNK: Kind = Kind(0x20);
    /// [`Tagged`](super::Tagged): tagged point-to-point data.
    pub const TAGGED: Kind = Kind(0x21);
    /// [`RpcRequest`](super::RpcRequest).
    pub const RPC_REQUEST: Kind = Kind(0x22);
    /// [`RpcResponse`](super::RpcResponse).
    pub const RPC_RESPONSE: Kind = Kind(0x23);
    /// [`Relay`](super::Relay).
    pub const RELAY: Kind = Kind(0x24);
    /// [`TaggedStart`](super::TaggedStart): opens a tagged message sent in parts.
    pub const TAGGED_START: Kind = Kind(0x25);
    /// [`TaggedPart`](super::TaggedPart): part of a tagged message.
    pub const TAGGED_PART: Kind = Kind(0x26);

    /// Every kind this build can decode.
    pub const KNOWN: &'static [Kind] = &[
        Kind::HELLO,
        Kind::WELCOME,
        Kind::JOIN_REJECTED,
        Kind::HEARTBEAT,
        Kind::LEAVE,
        Kind::CHECKPOINT_REQUEST,
        Kind::CHECKPOINT_AGREED,
        Kind::RECOVERY_VOTE,
        Kind::RECOVERY_AGREED,
        Kind::CHUNK,
        Kind::TAGGED,
        Kind::RPC_REQUEST,
        Kind::RPC_RESPONSE,
        Kind::RELAY,
        Kind::TAGGED_START,
        Kind::TAGGED_PART,
    ];

    /// The message name, or `None` for a kind this build does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Kind::HELLO => "Hello",
            Kind::WELCOME => "Welcome",
            Kind::JOIN_REJECTED => "JoinRejected",
            Kind::HEARTBEAT => "Heartbeat",
            Kind::LEAVE => "Leave",
            Kind::CHECKPOINT_REQUEST => "CheckpointRequest",
            Kind::CHECKPOINT_AGREED => "CheckpointAgreed",
            Kind::RECOVERY_VOTE => "RecoveryVote",
            Kind::RECOVERY_AGREED => "RecoveryAgreed",
            Kind::CHUNK => "Chunk",
            Kind::TAGGED => "Tagged",
            Kind::RPC_REQUEST => "RpcRequest",
            Kind::RPC_RESPONSE => "RpcResponse",
            Kind::RELAY => "Relay",
            Kind::TAGGED_START => "TaggedStart",
            Kind::TAGGED_PART => "TaggedPart",
            _ => return None,
        })
    }

    /// Whether [`Message::decode`](super::Message::decode) understands this kind.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Kind({:#04x})", self.0),
        }
    }
}

/// The header's flag byte.
///
/// Only bit 0 is defined. The other bits are reserved and must be zero: a future flag may
/// change how the payload is read (compression, say), so a receiver that ignored it would
/// misread the frame. The field is private so that a `Flags` value is always valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(u8);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// Bit 0: a receiver that does not know this frame's kind may drop it instead of
    /// closing the connection. Lets a newer peer send optional messages to an older one.
    pub const IGNORABLE: Flags = Flags(0x01);
    /// The bits that must be zero in this version.
    pub const RESERVED_MASK: u8 = !0x01;

    /// The flag byte as written on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Flags from a wire byte, or `None` when a reserved bit is set.
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & Flags::RESERVED_MASK == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// Whether [`Flags::IGNORABLE`] is set.
    pub const fn is_ignorable(self) -> bool {
        self.0 & Flags::IGNORABLE.0 != 0
    }
}

/// A validated frame header; `len` payload bytes follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload is.
    pub kind: Kind,
    /// Frame flags.
    pub flags: Flags,
    /// Payload length in bytes (not counting the header).
    pub len: u32,
}

impl FrameHeader {
    /// Writes the 9 header bytes.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_slice(&self.to_bytes());
    }

    /// The 9 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let len = self.len.to_le_bytes();
        [
            MAGIC[0],
            MAGIC[1],
            VERSION,
            self.kind.0,
            self.flags.bits(),
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }

    /// Parses and validates a header, checking the length against `limits` so that the
    /// caller can safely buffer `len` bytes afterwards.
    ///
    /// Checks, in order: magic, version, reserved flags, length, and that the kind is
    /// known or marked ignorable.
    pub fn parse(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<FrameHeader, DecodeError> {
        let [m0, m1, version, kind, flags, l0, l1, l2, l3] = *bytes;
        if [m0, m1] != MAGIC {
            return Err(DecodeError::BadMagic { found: [m0, m1] });
        }
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let Some(flags) = Flags::from_bits(flags) else {
            return Err(DecodeError::ReservedFlags { flags });
        };
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        if len > limits.max_frame_len {
            return Err(DecodeError::TooLarge {
                len: len.into(),
                limit: limits.max_frame_len.into(),
            });
        }
        let kind = Kind(kind);
        if !kind.is_known() && !flags.is_ignorable() {
            return Err(DecodeError::UnknownKind { kind: kind.0 });
        }
        Ok(FrameHeader { kind, flags, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, flags: u8, len: u32) -> [u8; HEADER_LEN] {
        let l = len.to_le_bytes();
        [b'N', b'X', 2, kind, flags, l[0], l[1], l[2], l[3]]
    }

    #[test]
    fn layout_is_pinned() {
        let h = FrameHeader {
            kind: Kind::HEARTBEAT,
            flags: Flags::IGNORABLE,
            len: 0x0102_0304,
        };
        assert_eq!(h.to_bytes(), [b'N', b'X', 2, 0x10, 0x01, 4, 3, 2, 1]);
        assert_eq!(
            FrameHeader::parse(
                &h.to_bytes(),
                &Limits {
                    max_frame_len: u32::MAX,
                    ..Limits::DEFAULT
                }
            ),
            Ok(h)
        );
    }

    #[test]
    fn every_check_reports_its_values() {
        let limits = Limits::default();
        let mut bad = header(0x10, 0, 0);
        bad[0] = b'Q';
        assert_eq!(
            FrameHeader::parse(&bad, &limits),
            Err(DecodeError::BadMagic { found: *b"QX" })
        );
        // A later version, and the earlier one (whose `Tagged` had no `comm`).
        for found in [7, 1] {
            let mut bad = header(0x10, 0, 0);
            bad[2] = found;
            assert_eq!(
                FrameHeader::parse(&bad, &limits),
                Err(DecodeError::UnsupportedVersion {
                    found,
                    supported: 2
                })
            );
        }
        assert_eq!(
            FrameHeader::parse(&header(0x10, 0x82, 0), &limits),
            Err(DecodeError::ReservedFlags { flags: 0x82 })
        );
        assert_eq!(
            FrameHeader::parse(&header(0x10, 0, u32::MAX), &limits),
            Err(DecodeError::TooLarge {
                len: u32::MAX.into(),
                limit: limits.max_frame_len.into()
            })
        );
        assert_eq!(
            FrameHeader::parse(&header(0x7f, 0, 3), &limits),
            Err(DecodeError::UnknownKind { kind: 0x7f })
        );
        let skippable = FrameHeader::parse(&header(0x7f, 1, 3), &limits).unwrap();
        assert_eq!((skippable.kind, skippable.len), (Kind(0x7f), 3));
    }

    #[test]
    fn names_cover_known_kinds() {
        for kind in Kind::KNOWN {
            assert!(kind.is_known(), "{kind:?}");
        }
        let known = (0..=u8::MAX).filter(|&k| Kind(k).is_known()).count();
        assert_eq!(known, Kind::KNOWN.len());
        assert_eq!(format!("{:?}", Kind(0xee)), "Kind(0xee)");
    }
}
