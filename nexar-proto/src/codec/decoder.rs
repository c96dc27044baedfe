//! [`FrameDecoder`]: turns a byte stream, delivered in arbitrary pieces, into frames.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};

use super::{DecodeError, Frame, FrameHeader, Limits, Message, HEADER_LEN};

/// Smallest allocation for a partial payload, so that small frames split across pushes do
/// not reallocate byte by byte.
const MIN_ALLOC: usize = 256;

/// Incremental frame decoder for one stream.
///
/// Framing happens in [`push`](Self::push): each header is validated (magic, version,
/// flags, length against [`Limits::max_frame_len`], kind) as soon as its 9 bytes are in,
/// complete frames are queued, and [`poll_frame`](Self::poll_frame) hands them out in
/// order. Memory is bounded by what a peer actually sends, never by what it claims:
///
/// - a partial payload is collected in a buffer that grows geometrically with the bytes
///   pushed and is capped at the frame's validated length, so
///   [`capacity`](Self::capacity) never exceeds `max_frame_len` (nor about twice the
///   bytes received for the frame);
/// - a header that fails validation stops the decoder at once; the rest of that push and
///   all later pushes are discarded, so a 4 GiB claim costs nothing;
/// - complete frames wait in a queue until polled. The caller bounds that queue by
///   polling after each push (the driver's read size bounds one push), as the run-loop
///   contract requires; [`buffered`](Self::buffered) reports it.
///
/// Errors are final: once a bad header is reached (after the good frames before it have
/// been polled), or [`poll_message`](Self::poll_message) fails to decode a frame, every
/// later poll returns the same error. A stream cannot be resynchronised after a framing
/// error, so the connection must be closed.
pub struct FrameDecoder {
    limits: Limits,
    /// Bytes of the next header received so far.
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// The validated header whose payload is being collected.
    current: Option<FrameHeader>,
    /// The partial payload of `current`.
    payload: BytesMut,
    ready: VecDeque<Frame>,
    /// Wire bytes (headers included) of the frames in `ready`.
    ready_bytes: usize,
    /// The first error; reported once `ready` is drained, and forever after.
    error: Option<DecodeError>,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("limits", &self.limits)
            .field("current", &self.current)
            .field("buffered", &self.buffered())
            .field("capacity", &self.capacity())
            .field("ready", &self.ready.len())
            .field("error", &self.error)
            .finish()
    }
}

impl FrameDecoder {
    /// A decoder that refuses anything beyond `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            header: [0; HEADER_LEN],
            header_len: 0,
            current: None,
            payload: BytesMut::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
            error: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Feeds bytes received from the stream, copying them.
    ///
    /// Never fails: problems surface, in stream order, from [`poll_frame`](Self::poll_frame).
    pub fn push(&mut self, bytes: &[u8]) {
        self.feed(bytes, None);
    }

    /// Feeds bytes received from the stream; payloads that lie wholly inside `bytes` are
    /// handed out as slices of it instead of being copied (quinn-proto delivers stream
    /// data as `Bytes`).
    pub fn push_bytes(&mut self, bytes: Bytes) {
        self.feed(&bytes, Some(&bytes));
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or the stream's
    /// error once every frame before it has been returned.
    ///
    /// Frames of unknown kinds appear here only when marked ignorable
    /// ([`Frame::is_skippable`]); the caller drops them.
    pub fn poll_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(frame) = self.ready.pop_front() {
            self.ready_bytes -= HEADER_LEN + frame.payload.len();
            return Ok(Some(frame));
        }
        match &self.error {
            Some(error) => Err(error.clone()),
            None => Ok(None),
        }
    }

    /// The next decoded message, skipping ignorable frames of unknown kinds.
    ///
    /// A frame that fails to decode poisons the decoder like a framing error: a peer that
    /// sends malformed messages is broken or hostile, and the connection must be closed.
    pub fn poll_message(&mut self) -> Result<Option<Message>, DecodeError> {
        loop {
            let Some(frame) = self.poll_frame()? else {
                return Ok(None);
            };
            if frame.is_skippable() {
                continue;
            }
            match frame.message(&self.limits) {
                Ok(message) => return Ok(Some(message)),
                Err(error) => {
                    self.poison(error.clone());
                    return Err(error);
                }
            }
        }
    }

    /// Bytes held: queued frames (with headers) plus the frame being received.
    pub fn buffered(&self) -> usize {
        let current = if self.current.is_some() {
            HEADER_LEN
        } else {
            0
        };
        self.ready_bytes + self.header_len + current + self.payload.len()
    }

    /// Bytes reserved for the frame being received; at most `max_frame_len`, and
    /// proportional to the bytes actually received for it.
    ///
    /// Queued frames are not counted: they own their memory and leave with `poll_frame`.
    pub fn capacity(&self) -> usize {
        self.payload.capacity()
    }

    /// Whether the decoder has stopped on an error (possibly still holding earlier frames).
    pub fn is_poisoned(&self) -> bool {
        self.error.is_some()
    }

    /// Payload bytes of the frame being received, for the invariant checks in `fuzzing`.
    pub(crate) fn partial_len(&self) -> usize {
        self.payload.len()
    }

    fn poison(&mut self, error: DecodeError) {
        self.ready.clear();
        self.ready_bytes = 0;
        self.current = None;
        self.header_len = 0;
        self.payload = BytesMut::new();
        self.error = Some(error);
    }

    /// `owner`, when present, is the `Bytes` that `input` borrows from.
    fn feed(&mut self, input: &[u8], owner: Option<&Bytes>) {
        let mut pos = 0;
        while pos < input.len() && self.error.is_none() {
            let rest = &input[pos..];
            let Some(header) = self.current else {
                let take = (HEADER_LEN - self.header_len).min(rest.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&rest[..take]);
                self.header_len += take;
                pos += take;
                if self.header_len == HEADER_LEN {
                    self.header_len = 0;
                    match FrameHeader::parse(&self.header, &self.limits) {
                        Ok(header) if header.len == 0 => self.emit(header, Bytes::new()),
                        Ok(header) => self.current = Some(header),
                        Err(error) => self.error = Some(error),
                    }
                }
                continue;
            };
            let frame_len = header.len as usize;
            let take = (frame_len - self.payload.len()).min(rest.len());
            if let (Some(owner), true) = (owner, self.payload.is_empty() && take == frame_len) {
                self.emit(header, owner.slice(pos..pos + take));
            } else {
                self.grow(take, frame_len);
                self.payload.extend_from_slice(&rest[..take]);
                if self.payload.len() == frame_len {
                    let payload = std::mem::take(&mut self.payload).freeze();
                    self.emit(header, payload);
                }
            }
            pos += take;
        }
    }

    fn emit(&mut self, header: FrameHeader, payload: Bytes) {
        self.current = None;
        self.ready_bytes += HEADER_LEN + payload.len();
        self.ready.push_back(Frame { header, payload });
    }

    /// Makes room for `additional` more payload bytes, doubling but never past `frame_len`
    /// (which `FrameHeader::parse` checked against the limit). Grows by hand because
    /// `BytesMut::reserve` may round past the cap.
    fn grow(&mut self, additional: usize, frame_len: usize) {
        let needed = self.payload.len() + additional;
        if needed <= self.payload.capacity() {
            return;
        }
        let target = needed
            .max(self.payload.capacity().saturating_mul(2))
            .max(MIN_ALLOC)
            .min(frame_len);
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.payload);
        self.payload = grown;
    }
}

/// Most bytes [`FrameDecoder::capacity`] may report while holding `partial` payload bytes
/// of the frame being received; checked by the fuzz helpers.
pub(crate) fn capacity_bound(partial: usize) -> usize {
    partial.saturating_mul(2).max(MIN_ALLOC)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::strategies::arb_message;
    use crate::codec::{fuzzing, Flags, Heartbeat, Kind};

    #[test]
    fn a_four_gib_claim_is_refused_without_reserving() {
        let limits = Limits::default();
        let mut decoder = FrameDecoder::new(limits);
        let mut bytes = vec![b'N', b'X', 1, Kind::CHUNK.0, 0];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&vec![0u8; 1 << 20]);
        decoder.push(&bytes);
        let refused = DecodeError::TooLarge {
            len: u32::MAX.into(),
            limit: limits.max_frame_len.into(),
        };
        assert_eq!(decoder.poll_frame(), Err(refused.clone()));
        assert!(decoder.capacity() <= limits.max_frame_len as usize + HEADER_LEN);
        assert_eq!(decoder.capacity(), 0);
        assert_eq!(decoder.buffered(), 0);
        // Poisoned: later input is ignored and the error repeats.
        decoder.push(&Message::Heartbeat(Heartbeat { epoch: 1, seq: 1 }).to_frame());
        assert_eq!(decoder.poll_frame(), Err(refused.clone()));
        assert_eq!(decoder.poll_message(), Err(refused));
        assert!(decoder.is_poisoned());
    }

    #[test]
    fn capacity_follows_bytes_received_not_bytes_claimed() {
        let limits = Limits {
            max_frame_len: u32::MAX,
            ..Limits::default()
        };
        let mut decoder = FrameDecoder::new(limits);
        let mut bytes = vec![b'N', b'X', 1, Kind::CHUNK.0, 0];
        bytes.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        decoder.push(&bytes);
        assert_eq!(decoder.capacity(), 0);
        for _ in 0..100 {
            decoder.push(&[0u8; 1000]);
            assert!(
                decoder.capacity() <= 2 * decoder.partial_len(),
                "{}",
                decoder.capacity()
            );
        }
        assert_eq!(decoder.buffered(), HEADER_LEN + 100_000);
        assert_eq!(decoder.poll_frame(), Ok(None));
    }

    #[test]
    fn errors_come_after_the_good_frames_before_them() {
        let good = Message::Heartbeat(Heartbeat { epoch: 1, seq: 2 });
        let mut stream = good.to_frame().to_vec();
        stream.extend_from_slice(b"XX garbage");
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&stream);
        assert_eq!(decoder.poll_message(), Ok(Some(good)));
        let bad = DecodeError::BadMagic { found: *b"XX" };
        assert_eq!(decoder.poll_message(), Err(bad.clone()));
        assert_eq!(decoder.poll_frame(), Err(bad));
    }

    #[test]
    fn unknown_kinds_are_skipped_only_when_ignorable() {
        let hb = Message::Heartbeat(Heartbeat { epoch: 3, seq: 4 });
        let mut stream = BytesMut::new();
        Frame::new(Kind(0x7f), Flags::IGNORABLE, Bytes::from_static(b"future")).encode(&mut stream);
        hb.encode(&mut stream);
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&stream);
        assert_eq!(decoder.poll_message(), Ok(Some(hb.clone())));

        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&stream);
        let skipped = decoder.poll_frame().unwrap().unwrap();
        assert!(skipped.is_skippable());
        assert_eq!(&skipped.payload[..], b"future");
        assert_eq!(
            skipped.message(decoder.limits()),
            Err(DecodeError::UnknownKind { kind: 0x7f })
        );

        let mut stream = BytesMut::new();
        Frame::new(Kind(0x7f), Flags::NONE, Bytes::from_static(b"future")).encode(&mut stream);
        hb.encode(&mut stream);
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&stream);
        assert_eq!(
            decoder.poll_message(),
            Err(DecodeError::UnknownKind { kind: 0x7f })
        );
        assert_eq!(
            decoder.poll_message(),
            Err(DecodeError::UnknownKind { kind: 0x7f })
        );
    }

    #[test]
    fn a_malformed_message_poisons_the_decoder() {
        let mut stream = BytesMut::new();
        Frame::new(Kind::HEARTBEAT, Flags::NONE, Bytes::from_static(&[1, 2, 3]))
            .encode(&mut stream);
        Message::Heartbeat(Heartbeat { epoch: 1, seq: 1 }).encode(&mut stream);
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&stream);
        let error = decoder.poll_message().unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Truncated {
                field: "heartbeat.epoch",
                ..
            }
        ));
        assert_eq!(decoder.poll_message(), Err(error));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn push_bytes_slices_whole_payloads() {
        let frame = Message::Tagged(crate::codec::Tagged {
            epoch: 1,
            tag: 2,
            seq: 3,
            payload: Bytes::from(vec![5; 100]),
        })
        .to_frame();
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push_bytes(frame.clone());
        let got = decoder.poll_frame().unwrap().unwrap();
        assert_eq!(got.payload.as_ptr(), frame[HEADER_LEN..].as_ptr());
    }

    /// A header with valid magic and version around random bytes: the kind is known or
    /// not, the flags usually valid, and the length usually but not always the payload's.
    fn arb_raw_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![3 => prop::sample::select(Kind::KNOWN).prop_map(|k| k.0), 1 => any::<u8>()],
            prop_oneof![4 => 0u8..=1, 1 => any::<u8>()],
            prop::collection::vec(any::<u8>(), 0..300),
            prop_oneof![4 => Just(0i64), 1 => -4i64..4, 1 => Just(i64::from(u32::MAX))],
        )
            .prop_map(|(kind, flags, payload, skew)| {
                let len = (payload.len() as i64 + skew).clamp(0, i64::from(u32::MAX)) as u32;
                let mut frame = vec![b'N', b'X', 1, kind, flags];
                frame.extend_from_slice(&len.to_le_bytes());
                frame.extend_from_slice(&payload);
                frame
            })
    }

    fn stream_of(messages: &[Message]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for m in messages {
            m.encode(&mut out);
        }
        out.to_vec()
    }

    proptest! {
        #[test]
        fn any_split_decodes_like_the_whole(
            messages in prop::collection::vec(arb_message(), 1..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            zero_copy in any::<bool>(),
        ) {
            let stream = stream_of(&messages);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = FrameDecoder::new(Limits::default());
            let mut decoded = Vec::new();
            let mut start = 0;
            for end in cuts.into_iter().chain([stream.len()]) {
                if zero_copy {
                    decoder.push_bytes(Bytes::copy_from_slice(&stream[start..end]));
                } else {
                    decoder.push(&stream[start..end]);
                }
                start = end;
                prop_assert!(decoder.capacity() <= Limits::default().max_frame_len as usize);
                while let Some(m) = decoder.poll_message().unwrap() {
                    decoded.push(m);
                }
            }
            prop_assert_eq!(decoded, messages);
            prop_assert_eq!(decoder.buffered(), 0);
            fuzzing::check_stream(&stream);
        }

        #[test]
        fn arbitrary_streams_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            fuzzing::check_stream(&data);
        }

        #[test]
        fn frame_shaped_noise_never_panics(frames in prop::collection::vec(arb_raw_frame(), 0..6)) {
            fuzzing::check_stream(&frames.concat());
        }

        #[test]
        fn mostly_valid_streams_never_panic(
            messages in prop::collection::vec(arb_message(), 1..4),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut stream = stream_of(&messages);
            for (at, byte) in flips {
                let at = at.index(stream.len());
                stream[at] = byte;
            }
            fuzzing::check_stream(&stream);
        }
    }
}
