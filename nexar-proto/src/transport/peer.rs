//! One QUIC connection with its four framed stream classes in each direction.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{
    Connection, ConnectionError, Dir, Event, ReadError, StreamEvent, StreamId, TransportErrorCode,
};

use super::{varint, LostReason, SendError, TransportLimits, CLOSE_MALFORMED};
use crate::codec::{DecodeError, FrameDecoder, Limits, Message};

/// Most bytes taken from one stream in one read, so that a read (and what a paced stream
/// delivers before pausing) stays small whatever QUIC has reassembled.
const READ_CHUNK: usize = 64 * 1024;

/// What a stream carries; the stream's index among the sender's uni streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum StreamClass {
    /// Membership and liveness: Hello, Welcome, heartbeats, checkpoints, votes.
    Control = 0,
    /// Collective chunks.
    Collective = 1,
    /// Tagged point-to-point data.
    P2p = 2,
    /// RPC requests and responses: never paused, so a call is not stuck behind tagged
    /// data that waits for a receive (see `paced`).
    Rpc = 3,
}

/// How many stream classes there are (the per-class arrays below).
const CLASSES: usize = 4;

impl StreamClass {
    const ALL: [StreamClass; CLASSES] = [
        StreamClass::Control,
        StreamClass::Collective,
        StreamClass::P2p,
        StreamClass::Rpc,
    ];

    fn from_index(index: u64) -> Option<Self> {
        Self::ALL.get(usize::try_from(index).ok()?).copied()
    }

    /// Higher sends first: control never waits behind bulk.
    /// Whether reads of this class pause after each delivery until the layer above has
    /// seen it ([`Peer::resume_paced`]). Point-to-point data is paced so that a receiver
    /// that stops reading at its unmatched limit holds at most one message (or one read)
    /// beyond it, however much QUIC has buffered.
    fn paced(self) -> bool {
        matches!(self, StreamClass::P2p)
    }

    fn priority(self) -> i32 {
        match self {
            StreamClass::Control => 2,
            StreamClass::P2p | StreamClass::Rpc => 1,
            StreamClass::Collective => 0,
        }
    }
}

/// What processing a connection produced, in order.
pub(super) enum PeerOutput {
    Connected,
    Message(StreamClass, Message),
    Malformed(DecodeError),
    Lost(LostReason),
}

/// Our outgoing side of one class: the quinn stream once open, and what it has not taken.
#[derive(Default)]
struct Outgoing {
    id: Option<StreamId>,
    queue: VecDeque<Bytes>,
    queued: usize,
}

pub(super) struct Peer {
    pub(super) conn: Connection,
    pub(super) established: bool,
    /// We dialled: `Connected` waits for the handshake to be confirmed.
    dialer: bool,
    /// Whether the peer has proven who it is: we dialled it (its certificate was checked
    /// against the pin or CA), TLS checked its client certificate, or the layer above
    /// accepted its join proof ([`Peer::mark_proven`]). Until then only its control
    /// stream is read, with frames no larger than a Hello.
    proven: bool,
    /// Accepted on an endpoint whose TLS does not authenticate the client: the handshake
    /// alone does not prove it; the layer above must.
    needs_proof: bool,
    /// When we accepted it (the handshake deadline counts from here).
    pub(super) accepted_at: Option<Instant>,
    /// `Connected` has been reported upward.
    connected_reported: bool,
    limits: TransportLimits,
    out: [Outgoing; CLASSES],
    /// Incoming streams by id, each with its own decoder (frames never span streams).
    incoming: BTreeMap<StreamId, (StreamClass, FrameDecoder)>,
    reading: [bool; CLASSES],
    /// Incoming streams with data QUIC has not handed us yet (its `Readable` events, and
    /// streams we stopped reading early): only these are read, so a datagram costs one
    /// stream's read, not one per stream of the connection.
    readable: std::collections::BTreeSet<StreamId>,
    /// Paced classes whose reads paused after a delivery (see `StreamClass::paced`).
    paused: [bool; CLASSES],
    closed: bool,
    lost_reported: bool,
}

impl Peer {
    /// `needs_proof`: accepted on an endpoint that does not authenticate clients (see
    /// the field). Dialled connections are proven from the start.
    pub(super) fn new(
        conn: Connection,
        limits: TransportLimits,
        dialer: bool,
        needs_proof: bool,
        now: Instant,
    ) -> Self {
        Self {
            conn,
            established: false,
            dialer,
            proven: dialer,
            needs_proof: !dialer && needs_proof,
            accepted_at: (!dialer).then_some(now),
            connected_reported: false,
            limits,
            out: Default::default(),
            incoming: BTreeMap::new(),
            reading: [true; CLASSES],
            readable: std::collections::BTreeSet::new(),
            paused: [false; CLASSES],
            closed: false,
            lost_reported: false,
        }
    }

    pub(super) fn buffered(&self) -> usize {
        self.incoming.values().map(|(_, d)| d.capacity()).sum()
    }

    /// An accepted connection that has not proven itself and is not closing: what the
    /// admission limits count.
    pub(super) fn unproven(&self) -> bool {
        !self.proven && !self.closed
    }

    /// Accepted, not closing, handshake not complete.
    pub(super) fn handshaking(&self) -> bool {
        !self.dialer && !self.established && !self.closed
    }

    /// The layer above accepted the peer's proof: read it with the full limits from now on.
    pub(super) fn mark_proven(&mut self) {
        if self.proven {
            return;
        }
        self.proven = true;
        for (_, decoder) in self.incoming.values_mut() {
            decoder.raise_limits(self.limits.codec);
        }
        // A stream stopped on the class rule below is read from now on.
        self.readable.extend(self.incoming.keys().copied());
    }

    /// The decoder limits for this peer's streams now.
    fn stream_limits(&self) -> Limits {
        if self.proven {
            self.limits.codec
        } else {
            self.limits.pre_proof
        }
    }

    /// Bytes of `class` QUIC has not taken yet (its send window is full).
    pub(super) fn queued(&self, class: StreamClass) -> usize {
        self.out[class as usize].queued
    }

    pub(super) fn send(&mut self, class: StreamClass, frame: Bytes) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closing);
        }
        let out = &mut self.out[class as usize];
        // Collective chunks are copies of buffers the caller already holds for operations
        // it started, so their memory is bounded by those operations; only point-to-point
        // sends and RPC, which a caller can issue without limit, get a queue bound.
        let bounded = matches!(class, StreamClass::P2p | StreamClass::Rpc);
        if bounded && out.queued + frame.len() > self.limits.max_queued_bytes && out.queued > 0 {
            return Err(SendError::QueueFull {
                queued: out.queued,
                limit: self.limits.max_queued_bytes,
            });
        }
        out.queued += frame.len();
        out.queue.push_back(frame);
        Ok(())
    }

    pub(super) fn set_reading(&mut self, class: StreamClass, on: bool) {
        self.reading[class as usize] = on;
        if on {
            self.paused[class as usize] = false;
        }
    }

    /// Close the connection. Returns true the first time the connection ends, so the
    /// transport reports the loss: quinn emits no `ConnectionLost` for a local close, and
    /// without it operations waiting on this peer would wait forever.
    pub(super) fn close(&mut self, now: Instant, code: u64, reason: Bytes) -> bool {
        if !self.closed {
            self.closed = true;
            self.conn.close(now, varint(code), reason);
            self.drop_incoming();
        }
        !std::mem::replace(&mut self.lost_reported, true)
    }

    /// Drain quinn's events for this connection, read streams, flush queues.
    pub(super) fn process(&mut self) -> Vec<PeerOutput> {
        let mut outputs = Vec::new();
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => {
                    self.established = true;
                    // TLS checked the client's certificate on this endpoint.
                    if !self.needs_proof {
                        self.proven = true;
                    }
                    self.open_streams();
                }
                Event::ConnectionLost { reason } => self.report_lost(reason, &mut outputs),
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => self.accept_streams(),
                // The peer granted more streams than at the handshake: open the rest.
                Event::Stream(StreamEvent::Available { dir: Dir::Uni }) if self.established => {
                    self.open_streams()
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    self.readable.insert(id);
                }
                Event::Stream(_) | Event::HandshakeDataReady => {}
                Event::DatagramReceived | Event::DatagramsUnblocked => {}
            }
        }
        // A client's handshake completes when it sends its Finished, which may yet be lost
        // (and under heavy loss its retransmission can back off for a minute); only word
        // from the server proves the acceptor completed it too: its HANDSHAKE_DONE, or
        // stream data, which it sends only once its handshake completed (our acceptor opens
        // streams on `Connected`), just as RFC 9001 §4.1.2 lets an acknowledged 1-RTT packet
        // confirm it. Waiting for HANDSHAKE_DONE alone abandoned dials the acceptor already
        // counted as its link when that one packet was lost and its retransmission waited
        // behind an inflated RTT estimate. A server's handshake is confirmed when it
        // completes.
        if self.established && !self.connected_reported && !self.closed {
            let confirmed = !self.dialer || {
                let rx = &self.conn.stats().frame_rx;
                rx.handshake_done > 0 || rx.stream > 0
            };
            if confirmed {
                self.connected_reported = true;
                outputs.push(PeerOutput::Connected);
            }
        }
        if !self.closed {
            self.accept_streams();
            // Nothing is read before `Connected` is reported: the layer above does not know
            // the connection yet and would drop what it said.
            if self.connected_reported {
                self.read_streams(&mut outputs);
            }
            self.flush();
        }
        outputs
    }

    /// Nothing more is read from a closed connection: free its partial frames now rather
    /// than when quinn has drained it (evicted strangers would hold them meanwhile).
    fn drop_incoming(&mut self) {
        self.incoming.clear();
        self.readable.clear();
    }

    fn report_lost(&mut self, reason: ConnectionError, outputs: &mut Vec<PeerOutput>) {
        self.closed = true;
        self.drop_incoming();
        if self.lost_reported {
            return;
        }
        self.lost_reported = true;
        let reason = match reason {
            // Before the handshake completes nothing the "peer" says is authenticated: an
            // Initial-space CONNECTION_CLOSE or a Version Negotiation packet can be forged
            // by anyone who sees our first packet, so it must never end a dial for good.
            ConnectionError::ConnectionClosed(_)
            | ConnectionError::ApplicationClosed(_)
            | ConnectionError::VersionMismatch
            | ConnectionError::Reset
                if !self.established =>
            {
                LostReason::Unauthenticated(reason.to_string())
            }
            ConnectionError::ApplicationClosed(c) => LostReason::ClosedByPeer {
                code: c.error_code.into_inner(),
                reason: c.reason,
            },
            ConnectionError::LocallyClosed => LostReason::ClosedLocally,
            ConnectionError::TimedOut => LostReason::TimedOut,
            ConnectionError::ConnectionClosed(c)
                if c.error_code == TransportErrorCode::APPLICATION_ERROR
                    || c.error_code == TransportErrorCode::CONNECTION_REFUSED =>
            {
                LostReason::Aborted(c.to_string())
            }
            // The peer no longer knows the connection (it closed it and our copy of the
            // close was lost, or it restarted).
            ConnectionError::Reset => LostReason::Aborted("reset by peer".into()),
            other => LostReason::Transport(other.to_string()),
        };
        outputs.push(PeerOutput::Lost(reason));
    }

    fn open_streams(&mut self) {
        for class in StreamClass::ALL {
            let out = &mut self.out[class as usize];
            if out.id.is_none() {
                // The peer grants at least four uni streams (our transport config);
                // if it grants fewer we retry on the next process() call.
                if let Some(id) = self.conn.streams().open(Dir::Uni) {
                    let _ = self.conn.send_stream(id).set_priority(class.priority());
                    out.id = Some(id);
                } else {
                    return;
                }
            }
        }
    }

    fn accept_streams(&mut self) {
        while let Some(id) = self.conn.streams().accept(Dir::Uni) {
            match StreamClass::from_index(id.index()) {
                Some(class) => {
                    let decoder = FrameDecoder::new(self.stream_limits());
                    self.incoming.insert(id, (class, decoder));
                    self.readable.insert(id);
                }
                // A fifth stream is not part of the protocol; refuse its bytes.
                None => {
                    let _ = self.conn.recv_stream(id).stop(varint(CLOSE_MALFORMED));
                }
            }
        }
    }

    fn read_streams(&mut self, outputs: &mut Vec<PeerOutput>) {
        let ids: Vec<StreamId> = self.readable.iter().copied().collect();
        for id in ids {
            if self.closed {
                return;
            }
            let Some((class, decoder)) = self.incoming.get_mut(&id) else {
                self.readable.remove(&id);
                continue;
            };
            let class = *class;
            if !self.reading[class as usize] || self.paused[class as usize] {
                continue;
            }
            // Until proven, only the control stream (the Hello) is read; the bootstrap
            // endpoint grants no other stream anyway (see `node::tls`).
            if !self.proven && class != StreamClass::Control {
                continue;
            }
            let mut failure = None;
            let mut finished = false;
            let mut stream = self.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                self.readable.remove(&id);
                continue;
            };
            loop {
                match chunks.next(READ_CHUNK) {
                    Ok(Some(chunk)) => {
                        decoder.push_bytes(chunk.bytes);
                        // Decode as we go so the decoder never holds more than one
                        // frame plus one chunk, whatever the peer's window allows.
                        let before = outputs.len();
                        if let Err(e) = drain_frames(decoder, class, outputs) {
                            failure = Some(e);
                            break;
                        }
                        if class.paced() && outputs.len() > before {
                            self.paused[class as usize] = true;
                            break;
                        }
                    }
                    Ok(None) => {
                        finished = true;
                        break;
                    }
                    Err(ReadError::Blocked) => {
                        // Everything QUIC had is read; its next `Readable` brings us back.
                        self.readable.remove(&id);
                        break;
                    }
                    Err(ReadError::Reset(_)) => {
                        finished = true;
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
            if let Some(error) = failure {
                // Nothing after a framing error can be trusted: stop reading the stream
                // (its bytes are discarded) and let the node close the connection with
                // the reason it chooses, e.g. a typed join rejection.
                let _ = self.conn.recv_stream(id).stop(varint(CLOSE_MALFORMED));
                self.incoming.remove(&id);
                self.readable.remove(&id);
                outputs.push(PeerOutput::Malformed(error));
                return;
            }
            if finished {
                self.incoming.remove(&id);
                self.readable.remove(&id);
            }
        }
    }

    /// Un-pause paced streams that are still to be read; true if any was (the caller
    /// processes the peer again).
    pub(super) fn resume_paced(&mut self) -> bool {
        let mut any = false;
        for class in StreamClass::ALL {
            let i = class as usize;
            if self.paused[i] && self.reading[i] {
                self.paused[i] = false;
                any = true;
            }
        }
        any
    }

    fn flush(&mut self) {
        for class in StreamClass::ALL {
            let out = &mut self.out[class as usize];
            let Some(id) = out.id else { continue };
            if out.queue.is_empty() {
                continue;
            }
            let chunks = out.queue.make_contiguous();
            match self.conn.send_stream(id).write_chunks(chunks) {
                Ok(written) => {
                    out.queued -= written.bytes;
                    for _ in 0..written.chunks {
                        out.queue.pop_front();
                    }
                }
                Err(_) => {
                    // Blocked by flow control (we retry on the next event) or stopped by
                    // the peer (the connection is going away; Lost will follow).
                }
            }
        }
    }
}

/// Pull every whole message out of a decoder (ignorable unknown kinds are skipped).
fn drain_frames(
    decoder: &mut FrameDecoder,
    class: StreamClass,
    outputs: &mut Vec<PeerOutput>,
) -> Result<(), DecodeError> {
    while let Some(msg) = decoder.poll_message()? {
        outputs.push(PeerOutput::Message(class, msg));
    }
    Ok(())
}
