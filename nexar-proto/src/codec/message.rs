//! The [`Message`] enum, the per-message encoding traits, and [`Frame`].

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::Reader;
use super::{
    CheckpointAgreed, CheckpointRequest, Chunk, DecodeError, Flags, FrameHeader, Heartbeat, Hello,
    JoinRejected, Kind, Leave, Limits, Pieces, RecoveryAgreed, RecoveryVote, Relay, RpcRequest,
    RpcResponse, Tagged, TaggedPart, TaggedStart, Welcome, HEADER_LEN,
};

/// How one message type writes its payload (the bytes after the frame header).
///
/// Object-safe so that [`Message`] can dispatch through `&dyn Body`.
pub(crate) trait Body {
    /// Exact encoded payload length.
    fn body_len(&self) -> usize;
    /// Writes the payload, except the bytes of [`Body::bulk`] (whose length prefix *is*
    /// written): the bulk field is always last so a driver can send it without copying.
    fn encode_fields(&self, out: &mut BytesMut);
    /// The trailing large byte field's bytes, in pieces (none if the message has none).
    fn bulk(&self) -> &[Bytes] {
        &[]
    }
}

/// A message type with its kind and decoder.
pub(crate) trait WireMessage: Body + Sized {
    const KIND: Kind;
    /// Reads the known fields; bytes left in `r` afterwards are ignored by the caller
    /// (forward compatibility: later versions append fields).
    fn decode_body(r: &mut Reader, limits: &Limits) -> Result<Self, DecodeError>;
}

macro_rules! messages {
    ($($variant:ident),+ $(,)?) => {
        /// Every message of the protocol.
        ///
        /// `#[non_exhaustive]`: new kinds are added in minor versions (and sent with the
        /// ignorable flag when older peers may safely drop them).
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Message {
            $(
                #[doc = concat!("See [`", stringify!($variant), "`].")]
                $variant($variant),
            )+
        }

        $(
            impl From<$variant> for Message {
                fn from(message: $variant) -> Message {
                    Message::$variant(message)
                }
            }
        )+

        impl Message {
            /// The kind byte this message is framed with.
            pub fn kind(&self) -> Kind {
                match self {
                    $( Message::$variant(_) => <$variant as WireMessage>::KIND, )+
                }
            }

            fn body(&self) -> &dyn Body {
                match self {
                    $( Message::$variant(m) => m, )+
                }
            }

            fn decode_known(kind: Kind, r: &mut Reader, limits: &Limits) -> Result<Message, DecodeError> {
                $(
                    if kind == <$variant as WireMessage>::KIND {
                        return Ok(Message::$variant(<$variant as WireMessage>::decode_body(r, limits)?));
                    }
                )+
                Err(DecodeError::UnknownKind { kind: kind.0 })
            }
        }
    };
}

messages! {
    Hello,
    Welcome,
    JoinRejected,
    Heartbeat,
    Leave,
    CheckpointRequest,
    CheckpointAgreed,
    RecoveryVote,
    RecoveryAgreed,
    Chunk,
    Tagged,
    RpcRequest,
    RpcResponse,
    Relay,
    TaggedStart,
    TaggedPart,
}

impl Message {
    /// Encoded payload length (without the frame header).
    pub fn payload_len(&self) -> usize {
        self.body().body_len()
    }

    /// Length of the whole frame: header plus payload.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Writes the whole frame (header and payload) to `out`.
    ///
    /// # Panics
    /// If the payload is longer than `u32::MAX` bytes. That is a caller bug (split large
    /// data into chunks of at most [`Chunk::max_payload`]); panicking beats writing a
    /// length that desynchronises the stream.
    pub fn encode(&self, out: &mut BytesMut) {
        let body = self.body();
        out.reserve(HEADER_LEN + body.body_len());
        let bulk = self.encode_prefix(out);
        for piece in bulk.parts() {
            out.put_slice(piece);
        }
    }

    /// Writes the frame except the trailing bulk bytes, and returns those bytes (cheap
    /// reference-counted clones; empty for messages without a bulk field).
    ///
    /// Writing `out` and then the returned bytes produces exactly [`Message::encode`]'s
    /// output, so a driver can hand large chunk payloads to the transport without copying
    /// them into the frame buffer.
    ///
    /// # Panics
    /// As [`Message::encode`].
    pub fn encode_prefix(&self, out: &mut BytesMut) -> Pieces {
        let body = self.body();
        let body_len = body.body_len();
        let Ok(len) = u32::try_from(body_len) else {
            panic!(
                "{:?} payload of {body_len} bytes does not fit a frame",
                self.kind()
            );
        };
        let bulk = Pieces::from_parts(body.bulk().iter().cloned());
        out.reserve(HEADER_LEN + body_len - bulk.len());
        FrameHeader {
            kind: self.kind(),
            flags: Flags::NONE,
            len,
        }
        .encode(out);
        let start = out.len();
        body.encode_fields(out);
        debug_assert_eq!(
            out.len() - start + bulk.len(),
            body_len,
            "body_len disagrees with encode_fields"
        );
        bulk
    }

    /// The whole frame as one buffer.
    pub fn to_frame(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes the payload of a frame of kind `kind`.
    ///
    /// Byte fields of the result are zero-copy slices of `payload`. Bytes after the last
    /// field this version knows are ignored (newer peers append fields); a field cut short
    /// is [`DecodeError::Truncated`]. Unknown kinds are [`DecodeError::UnknownKind`] here
    /// whatever the flags: skipping ignorable frames is the framing layer's decision
    /// (see [`Frame::is_skippable`]).
    pub fn decode(kind: Kind, payload: Bytes, limits: &Limits) -> Result<Message, DecodeError> {
        if payload.len() as u64 > u64::from(limits.max_frame_len) {
            return Err(DecodeError::TooLarge {
                len: payload.len() as u64,
                limit: limits.max_frame_len.into(),
            });
        }
        Message::decode_known(kind, &mut Reader::new(payload), limits)
    }
}

/// One framed unit from a stream: a validated header and exactly `header.len` payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The validated header.
    pub header: FrameHeader,
    /// The payload, not yet interpreted.
    pub payload: Bytes,
}

impl Frame {
    /// A frame around an arbitrary payload, e.g. for kinds added after this build.
    ///
    /// # Panics
    /// If the payload is longer than `u32::MAX` bytes (a caller bug, as in
    /// [`Message::encode`]).
    pub fn new(kind: Kind, flags: Flags, payload: Bytes) -> Frame {
        let Ok(len) = u32::try_from(payload.len()) else {
            panic!(
                "frame payload of {} bytes does not fit a frame",
                payload.len()
            );
        };
        Frame {
            header: FrameHeader { kind, flags, len },
            payload,
        }
    }

    /// Whether the receiver should drop this frame unread: its kind is unknown to this
    /// build and the sender marked it ignorable.
    pub fn is_skippable(&self) -> bool {
        !self.header.kind.is_known() && self.header.flags.is_ignorable()
    }

    /// Decodes the payload as a [`Message`]; see [`Message::decode`].
    pub fn message(&self, limits: &Limits) -> Result<Message, DecodeError> {
        Message::decode(self.header.kind, self.payload.clone(), limits)
    }

    /// Writes header and payload; the header's length is taken from the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.payload.len());
        FrameHeader {
            len: self.payload.len() as u32,
            ..self.header
        }
        .encode(out);
        out.put_slice(&self.payload);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::strategies::arb_message;
    use crate::codec::{fuzzing, FrameDecoder};

    proptest! {
        #[test]
        fn every_message_round_trips(message in arb_message()) {
            let limits = Limits::default();
            let frame = message.to_frame();
            prop_assert_eq!(frame.len(), message.encoded_len());

            let mut decoder = FrameDecoder::new(limits);
            decoder.push(&frame);
            let decoded = decoder.poll_message().unwrap().expect("one whole frame was pushed");
            prop_assert_eq!(&decoded, &message);
            prop_assert_eq!(decoded.to_frame(), frame.clone());
            prop_assert_eq!(decoder.poll_message(), Ok(None));
            prop_assert_eq!(decoder.buffered(), 0);

            let mut prefix = BytesMut::new();
            let bulk = message.encode_prefix(&mut prefix);
            prefix.extend_from_slice(&bulk.to_bytes());
            prop_assert_eq!(prefix.freeze(), frame.clone());

            fuzzing::check_message(message.kind().0, &frame[HEADER_LEN..]);
        }

        #[test]
        fn trailing_bytes_are_ignored(message in arb_message(), extra in prop::collection::vec(any::<u8>(), 1..64)) {
            let frame = message.to_frame();
            let mut payload = BytesMut::from(&frame[HEADER_LEN..]);
            payload.extend_from_slice(&extra);
            let decoded = Message::decode(message.kind(), payload.freeze(), &Limits::default());
            prop_assert_eq!(decoded, Ok(message));
        }

        #[test]
        fn every_truncation_is_refused(message in arb_message(), cut in any::<prop::sample::Index>()) {
            let frame = message.to_frame();
            let payload = frame.slice(HEADER_LEN..);
            prop_assume!(!payload.is_empty());
            let cut = cut.index(payload.len());
            let result = Message::decode(message.kind(), payload.slice(..cut), &Limits::default());
            prop_assert!(matches!(result, Err(DecodeError::Truncated { .. })), "{:?}", result);
        }

        #[test]
        fn arbitrary_payloads_never_panic(
            kind in prop_oneof![prop::sample::select(Kind::KNOWN).prop_map(|k| k.0), any::<u8>()],
            data in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            fuzzing::check_message(kind, &data);
        }
    }

    proptest! {
        /// Random bytes rarely get past the first length field; mutating valid encodings
        /// reaches the checks deep inside each message (presence bytes, codes, counts).
        #[test]
        fn mutated_payloads_keep_the_properties(
            message in arb_message(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut payload = message.to_frame()[HEADER_LEN..].to_vec();
            prop_assume!(!payload.is_empty());
            for (at, byte) in flips {
                let at = at.index(payload.len());
                payload[at] = byte;
            }
            fuzzing::check_message(message.kind().0, &payload);
        }
    }

    #[test]
    fn byte_fields_are_zero_copy() {
        let message = Message::Tagged(crate::codec::Tagged {
            epoch: 1,
            comm: 0,
            tag: 2,
            seq: 3,
            payload: Bytes::from_static(b"payload"),
        });
        let frame = message.to_frame();
        let payload = frame.slice(HEADER_LEN..);
        let Ok(Message::Tagged(tagged)) =
            Message::decode(Kind::TAGGED, payload.clone(), &Limits::default())
        else {
            panic!("tagged frame did not decode");
        };
        assert_eq!(
            tagged.payload.as_ptr(),
            payload[payload.len() - 7..].as_ptr()
        );
    }

    #[test]
    fn unknown_kinds_are_refused_by_decode() {
        assert_eq!(
            Message::decode(Kind(0x7e), Bytes::new(), &Limits::default()),
            Err(DecodeError::UnknownKind { kind: 0x7e })
        );
        let frame = Frame::new(Kind(0x7e), Flags::IGNORABLE, Bytes::from_static(b"x"));
        assert!(frame.is_skippable());
        assert!(!Frame::new(Kind::HEARTBEAT, Flags::IGNORABLE, Bytes::new()).is_skippable());
    }

    #[test]
    fn oversize_payload_is_refused_by_decode() {
        let limits = Limits {
            max_frame_len: 4,
            ..Limits::default()
        };
        assert_eq!(
            Message::decode(Kind::HEARTBEAT, Bytes::from_static(&[0; 5]), &limits),
            Err(DecodeError::TooLarge { len: 5, limit: 4 })
        );
    }
}
