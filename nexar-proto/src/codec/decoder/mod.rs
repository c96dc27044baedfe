//! [`FrameDecoder`]: turns a byte stream, delivered in arbitrary pieces, into frames.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};

use super::{Chunk, DecodeError, Frame, FrameHeader, Kind, Limits, Message, Pieces, HEADER_LEN};

/// Smallest allocation for a partial payload, so that small frames split across pushes do
/// not reallocate byte by byte.
const MIN_ALLOC: usize = 256;

/// Fewest bytes a pushed slice must contribute to a chunk frame to be kept by reference;
/// shorter runs are copied (a slice keeps its whole receive buffer alive).
const MIN_PIECE: usize = 1024;

/// Most pieces a chunk frame's payload is kept in; past that its bytes are copied. This
/// bounds how many receive buffers one partial frame can keep alive (15: one piece is the
/// copied bytes), whatever the peer sends (on loopback a 256 KiB chunk arrives in five).
const MAX_PIECES: usize = 16;

/// A complete frame waiting to be polled.
enum Ready {
    Frame(Frame),
    /// A chunk frame whose payload arrived in several slices, kept as they came.
    Chunk(FrameHeader, Pieces),
}

impl Ready {
    fn wire_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Ready::Frame(f) => f.payload.len(),
                Ready::Chunk(_, p) => p.len(),
            }
    }
}

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
/// - a chunk frame's payload is not joined: slices of at least 1 KiB pushed through
///   [`push_bytes`](Self::push_bytes) are kept by reference, at most 15 per frame (so one
///   frame keeps at most 15 receive buffers alive), and the collective layer copies them
///   straight into the operation's buffer ([`Pieces`]);
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
    /// Slices of `current`'s payload kept by reference (chunk frames only), then...
    pieces: Vec<Bytes>,
    /// ...their total length, then...
    pieces_len: usize,
    /// ...the bytes of `current` received after them, copied.
    payload: BytesMut,
    ready: VecDeque<Ready>,
    /// See [`MIN_PIECE`] and [`MAX_PIECES`] (smaller in the fuzz checks, to reach every path).
    min_piece: usize,
    max_pieces: usize,
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
            pieces: Vec::new(),
            pieces_len: 0,
            payload: BytesMut::new(),
            ready: VecDeque::new(),
            min_piece: MIN_PIECE,
            max_pieces: MAX_PIECES,
            ready_bytes: 0,
            error: None,
        }
    }

    /// A decoder that keeps chunk slices of at least `min_piece` bytes, at most
    /// `max_pieces` per frame (the fuzz checks use tiny values to reach every path).
    pub(crate) fn with_piece_policy(limits: Limits, min_piece: usize, max_pieces: usize) -> Self {
        FrameDecoder {
            min_piece: min_piece.max(1),
            max_pieces,
            ..FrameDecoder::new(limits)
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Enforce `limits` from the next header on (a header already accepted keeps the
    /// limit it was checked against). The transport reads a peer with small limits until
    /// it proves who it is, then raises them on the same stream.
    pub(crate) fn raise_limits(&mut self, limits: Limits) {
        self.limits = limits;
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
    ///
    /// A chunk frame that arrived in pieces is joined here (a copy);
    /// [`poll_message`](Self::poll_message) decodes it without joining.
    pub fn poll_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        Ok(self.poll_ready()?.map(|ready| match ready {
            Ready::Frame(frame) => frame,
            Ready::Chunk(header, pieces) => Frame {
                header,
                payload: pieces.to_bytes(),
            },
        }))
    }

    fn poll_ready(&mut self) -> Result<Option<Ready>, DecodeError> {
        if let Some(ready) = self.ready.pop_front() {
            self.ready_bytes -= ready.wire_len();
            return Ok(Some(ready));
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
            let decoded = match self.poll_ready()? {
                None => return Ok(None),
                Some(Ready::Frame(frame)) if frame.is_skippable() => continue,
                Some(Ready::Frame(frame)) => frame.message(&self.limits),
                Some(Ready::Chunk(_, pieces)) => Chunk::decode_pieces(&pieces).map(Message::Chunk),
            };
            match decoded {
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
        self.ready_bytes + self.header_len + current + self.partial_len()
    }

    /// Bytes reserved for the frame being received (slices kept by reference count at
    /// their length); at most `max_frame_len`, and proportional to the bytes actually
    /// received for it.
    ///
    /// Queued frames are not counted: they own their memory and leave with `poll_frame`.
    pub fn capacity(&self) -> usize {
        self.pieces_len + self.payload.capacity()
    }

    /// Whether the decoder has stopped on an error (possibly still holding earlier frames).
    pub fn is_poisoned(&self) -> bool {
        self.error.is_some()
    }

    /// Payload bytes of the frame being received, for the invariant checks in `fuzzing`.
    pub(crate) fn partial_len(&self) -> usize {
        self.pieces_len + self.payload.len()
    }

    fn poison(&mut self, error: DecodeError) {
        self.ready.clear();
        self.ready_bytes = 0;
        self.current = None;
        self.header_len = 0;
        self.pieces = Vec::new();
        self.pieces_len = 0;
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
            let take = (frame_len - self.partial_len()).min(rest.len());
            match owner {
                Some(owner) if take == frame_len => {
                    self.emit(header, owner.slice(pos..pos + take));
                    pos += take;
                    continue;
                }
                Some(owner) if header.kind == Kind::CHUNK && self.may_keep(take) => {
                    self.seal_copied();
                    self.pieces_len += take;
                    self.pieces.push(owner.slice(pos..pos + take));
                }
                _ => {
                    self.grow(take, frame_len - self.pieces_len);
                    self.payload.extend_from_slice(&rest[..take]);
                }
            }
            pos += take;
            if self.partial_len() == frame_len {
                self.finish(header);
            }
        }
    }

    /// Whether a slice of `take` bytes of a chunk frame may be kept by reference: long
    /// enough, and room for it, for sealing the copied bytes before it, and for the copied
    /// bytes that may follow (so a payload is at most `max_pieces` pieces).
    fn may_keep(&self, take: usize) -> bool {
        let slots = 1 + usize::from(!self.payload.is_empty());
        take >= self.min_piece && self.pieces.len() + slots < self.max_pieces
    }

    /// The bytes copied so far become a piece of their own, so that a slice kept by
    /// reference can follow them in order. Re-allocated to their length if the buffer
    /// had grown past it, so that [`capacity`](Self::capacity) stays exact.
    fn seal_copied(&mut self) {
        if !self.payload.is_empty() {
            let copied = match self.payload.capacity() > self.payload.len() {
                true => Bytes::copy_from_slice(&self.payload),
                false => self.payload.split().freeze(),
            };
            self.payload = BytesMut::new();
            self.pieces_len += copied.len();
            self.pieces.push(copied);
        }
    }

    /// `current`'s payload is complete: queue it, joined only if it was copied whole.
    fn finish(&mut self, header: FrameHeader) {
        if self.pieces.is_empty() {
            let payload = std::mem::take(&mut self.payload).freeze();
            return self.emit(header, payload);
        }
        self.seal_copied();
        let pieces = Pieces::from_parts(std::mem::take(&mut self.pieces));
        self.pieces_len = 0;
        self.current = None;
        self.ready_bytes += HEADER_LEN + pieces.len();
        self.ready.push_back(Ready::Chunk(header, pieces));
    }

    fn emit(&mut self, header: FrameHeader, payload: Bytes) {
        self.current = None;
        self.ready_bytes += HEADER_LEN + payload.len();
        self.ready
            .push_back(Ready::Frame(Frame { header, payload }));
    }

    /// Makes room for `additional` more copied bytes, doubling but never past `cap` (what
    /// is left of a frame whose length `FrameHeader::parse` checked against the limit).
    /// Grows by hand because `BytesMut::reserve` may round past the cap.
    fn grow(&mut self, additional: usize, cap: usize) {
        let needed = self.payload.len() + additional;
        if needed <= self.payload.capacity() {
            return;
        }
        // No minimum after kept slices: the copied bytes then stay within twice their
        // length, and the whole partial frame within twice what was received.
        let floor = if self.pieces.is_empty() { MIN_ALLOC } else { 0 };
        let target = needed
            .max(self.payload.capacity().saturating_mul(2))
            .max(floor)
            .min(cap);
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
mod tests;
