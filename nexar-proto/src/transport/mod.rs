//! The quinn-proto layer: one `Endpoint`, its `Connection`s, and framed streams over them.
//!
//! Everything above this module speaks in whole protocol messages per connection and
//! stream class; everything below is quinn-proto's datagrams and stream bytes. The layer
//! has the same verbs as the `Node` (`handle_*` in, `poll_*` out) and exchanges values,
//! never references, so the membership and collective layers never see quinn types.
//!
//! Stream layout on every connection (both directions, each side opens its own):
//! the first four unidirectional streams a side opens are, by stream index, `Control`
//! (0), `Collective` (1), `P2p` (2) and `Rpc` (3). The index alone names the class, so no stream
//! preamble is needed, and quinn-proto's in-order stream opening guarantees the indices.
//! Control has the highest send priority so that heartbeats and membership messages never
//! queue behind bulk data; tagged point-to-point data has its own stream so that a flood
//! of unmatched messages, which we stop reading (backpressure), never blocks collectives,
//! and RPC has its own so that a call never waits behind that paused tagged data.

mod admission;
mod peer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, ConnectionHandle, DatagramEvent, EcnCodepoint, Endpoint, EndpointConfig,
    ServerConfig, VarInt,
};

use crate::codec::{DecodeError, Limits, Message};
use crate::Transmit;
pub(crate) use admission::{AdmissionStats, CLOSE_EVICTED, CLOSE_HANDSHAKE_TIMEOUT};
pub(crate) use peer::StreamClass;
use peer::{Peer, PeerOutput};

/// Our name for a connection: quinn's handle, kept opaque to the layers above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub(crate) usize);

impl ConnId {
    fn handle(self) -> ConnectionHandle {
        ConnectionHandle(self.0)
    }
}

/// Why a connection ended, reduced to what the layers above act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LostReason {
    /// The peer closed with an application code (e.g. a join rejection) and reason bytes.
    ClosedByPeer { code: u64, reason: Bytes },
    /// We closed it.
    ClosedLocally,
    /// No packet from the peer within the idle timeout.
    TimedOut,
    /// The peer ended the connection without an application reason: QUIC
    /// `APPLICATION_ERROR` (how an application close sent before the handshake completed
    /// travels), `CONNECTION_REFUSED`, or a stateless reset (it no longer knows the
    /// connection). It gave up on us or turned us away; nothing says its identity is wrong.
    Aborted(String),
    /// TLS or QUIC failure (certificate refused, protocol violation); the text says which.
    Transport(String),
    /// The "peer" ended the connection before the handshake authenticated it (a close or
    /// version negotiation in the Initial space, or a reset): anyone who saw our first
    /// packet could have forged it, so it says nothing for sure and may pass.
    Unauthenticated(String),
}

/// What the transport reports upward.
#[derive(Debug)]
pub(crate) enum TransportEvent {
    /// A peer dialled us and we accepted the QUIC handshake (not yet complete).
    Incoming { conn: ConnId, remote: SocketAddr },
    /// The handshake (including certificate checks) completed. For connections we dialled
    /// it is reported once the handshake is confirmed (the server's HANDSHAKE_DONE), so
    /// that the acceptor has completed it too.
    Connected { conn: ConnId },
    /// One whole, decoded message arrived on a stream of this class.
    Message {
        conn: ConnId,
        class: StreamClass,
        msg: Message,
    },
    /// The peer sent bytes we cannot decode; the connection has been closed.
    Malformed { conn: ConnId, error: DecodeError },
    /// The connection is gone; no more events for it.
    Lost { conn: ConnId, reason: LostReason },
}

/// Knobs the transport needs; the node derives them from its config.
#[derive(Debug, Clone)]
pub(crate) struct TransportLimits {
    /// Decoder limits for every incoming stream of a proven peer.
    pub codec: Limits,
    /// Decoder limits until a peer is proven: frames no larger than a Hello.
    pub pre_proof: Limits,
    /// Most bytes we queue per (connection, class) beyond what quinn already buffers.
    pub max_queued_bytes: usize,
    /// Most accepted connections not yet proven (handshaking or established).
    pub max_unproven: usize,
    /// The same, per remote IP address.
    pub max_unproven_per_ip: usize,
    /// An accepted connection not through its handshake by then is closed.
    pub handshake_timeout: Duration,
    /// With this many accepted connections handshaking, unvalidated ones get a Retry.
    pub retry_above_handshaking: usize,
}

/// Most bytes one GSO batch may carry: Linux refuses a UDP GSO send whose total payload
/// does not fit one IP datagram (65 535 bytes less the IPv6 and UDP headers).
pub(crate) const MAX_GSO_BYTES: usize = 65_000;

/// Application close code used when a peer violates the framing rules.
pub(crate) const CLOSE_MALFORMED: u64 = 0x1;

/// Error returned by [`Transport::send`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    #[error("no such connection")]
    UnknownConnection,
    #[error("connection is closing")]
    Closing,
    #[error("send queue full: {queued} bytes queued, limit {limit}")]
    QueueFull { queued: usize, limit: usize },
}

/// One quinn-proto endpoint and its connections.
pub(crate) struct Transport {
    endpoint: Endpoint,
    peers: BTreeMap<ConnId, Peer>,
    /// Stateless responses from the endpoint (version negotiation, refusals, resets).
    responses: VecDeque<(Transmit, Vec<u8>)>,
    events: VecDeque<TransportEvent>,
    /// Connections touched since the last drive; processed in id order for determinism.
    dirty: BTreeSet<ConnId>,
    limits: TransportLimits,
    server_config: Option<Arc<ServerConfig>>,
    /// The server config's TLS does not authenticate clients (the seed's bootstrap
    /// endpoint): accepted connections wait for [`Transport::mark_proven`].
    accept_needs_proof: bool,
    admission: AdmissionStats,
    /// Where the round-robin over connections in `poll_transmit` resumes.
    next_tx: ConnId,
    /// Connections that may have a datagram to send: every input reaches a connection
    /// through `drive`, which adds it; it leaves once quinn says it has nothing. Asking
    /// only these saves a full `poll_transmit` per idle connection per datagram sent.
    tx_ready: BTreeSet<ConnId>,
    /// Test hook: the latest control frames and close reasons sent (see
    /// [`Transport::sent_control_frames`]).
    #[cfg(feature = "sim")]
    sent_control: VecDeque<Bytes>,
}

/// How many control frames the `sim` test hook keeps.
#[cfg(feature = "sim")]
const SENT_CONTROL_LOG: usize = 64;

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("connections", &self.peers.len())
            .field("queued_responses", &self.responses.len())
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(config: EndpointConfig, limits: TransportLimits) -> Self {
        // MTU discovery is safe: drivers set don't-fragment, and the simulator drops
        // datagrams above the link MTU exactly as a DF path would.
        let endpoint = Endpoint::new(Arc::new(config), None, true, None);
        Self {
            endpoint,
            peers: BTreeMap::new(),
            responses: VecDeque::new(),
            events: VecDeque::new(),
            dirty: BTreeSet::new(),
            limits,
            server_config: None,
            accept_needs_proof: false,
            admission: AdmissionStats::default(),
            next_tx: ConnId(0),
            tx_ready: BTreeSet::new(),
            #[cfg(feature = "sim")]
            sent_control: VecDeque::new(),
        }
    }

    /// Start (or change) accepting connections. `None` refuses every new connection.
    /// `needs_proof`: the config's TLS does not authenticate clients, so connections it
    /// accepts stay unproven (read only for a Hello) until [`Transport::mark_proven`].
    pub(crate) fn set_server_config(
        &mut self,
        config: Option<Arc<ServerConfig>>,
        needs_proof: bool,
    ) {
        self.server_config = config.clone();
        self.accept_needs_proof = needs_proof;
        self.endpoint.set_server_config(config);
    }

    /// The layer above accepted `conn`'s proof (the join secret): it no longer counts
    /// against the admission limits and is read with the full frame limits.
    pub(crate) fn mark_proven(&mut self, conn: ConnId) {
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.mark_proven();
            self.dirty.insert(conn);
            self.drive();
        }
    }

    /// Feed one datagram; returns the existing connection it was for, if any.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<u8>,
        data: BytesMut,
    ) -> Option<ConnId> {
        let ecn = ecn.and_then(EcnCodepoint::from_bits);
        let mut buf = Vec::new();
        let mut existing = None;
        match self.endpoint.handle(now, from, None, ecn, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                let id = ConnId(ch.0);
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.conn.handle_event(event);
                    self.dirty.insert(id);
                    existing = Some(id);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                // Not admitted: nothing more to do for this datagram.
                let incoming = self.admit(now, incoming, &mut buf)?;
                match self
                    .endpoint
                    .accept(incoming, now, &mut buf, self.server_config.clone())
                {
                    Ok((ch, conn)) => {
                        let id = ConnId(ch.0);
                        let remote = conn.remote_address();
                        let peer = Peer::new(
                            conn,
                            self.limits.clone(),
                            false,
                            self.accept_needs_proof,
                            now,
                        );
                        self.peers.insert(id, peer);
                        self.events
                            .push_back(TransportEvent::Incoming { conn: id, remote });
                        self.dirty.insert(id);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.responses.push_back((convert(&t), buf));
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.responses.push_back((convert(&t), buf)),
            None => {}
        }
        self.drive();
        existing
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for (id, peer) in self.peers.iter_mut() {
            if peer.conn.poll_timeout().is_some_and(|t| t <= now) {
                peer.conn.handle_timeout(now);
                self.dirty.insert(*id);
            }
        }
        self.drive();
        self.close_late_handshakes(now);
    }

    /// Dial `remote`. The handshake result arrives as `Connected` or `Lost`.
    pub(crate) fn connect(
        &mut self,
        now: Instant,
        config: ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnId, quinn_proto::ConnectError> {
        let (ch, conn) = self.endpoint.connect(now, config, remote, server_name)?;
        let id = ConnId(ch.0);
        self.peers
            .insert(id, Peer::new(conn, self.limits.clone(), true, false, now));
        self.dirty.insert(id);
        self.drive();
        Ok(id)
    }

    /// Queue one encoded frame on the connection's stream of `class`.
    ///
    /// Frames on one class arrive whole and in order. The queue beyond quinn's own send
    /// buffer is bounded: a caller that outruns the peer gets `QueueFull`, never memory
    /// growth without limit.
    pub(crate) fn send(
        &mut self,
        conn: ConnId,
        class: StreamClass,
        frame: Bytes,
    ) -> Result<(), SendError> {
        let peer = self
            .peers
            .get_mut(&conn)
            .ok_or(SendError::UnknownConnection)?;
        #[cfg(feature = "sim")]
        let logged = (class == StreamClass::Control).then(|| frame.clone());
        peer.send(class, frame)?;
        #[cfg(feature = "sim")]
        if let Some(frame) = logged {
            self.log_control(frame);
        }
        self.dirty.insert(conn);
        self.drive();
        Ok(())
    }

    /// Stop or resume reading a class's stream from `conn`. Stopping leaves the bytes in
    /// quinn, so QUIC flow control pushes back on the sender instead of us buffering.
    pub(crate) fn set_reading(&mut self, conn: ConnId, class: StreamClass, on: bool) {
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.set_reading(class, on);
            self.dirty.insert(conn);
            self.drive();
        }
    }

    /// Read on from paced streams (point-to-point) that paused after delivering messages
    /// and are still to be read. Returns whether any was resumed (new events may follow).
    pub(crate) fn resume_paced(&mut self) -> bool {
        let mut any = false;
        for (id, peer) in self.peers.iter_mut() {
            if peer.resume_paced() {
                self.dirty.insert(*id);
                any = true;
            }
        }
        if any {
            self.drive();
        }
        any
    }

    /// Close with an application code; the peer sees `ClosedByPeer { code, reason }`.
    pub(crate) fn close(&mut self, now: Instant, conn: ConnId, code: u64, reason: Bytes) {
        if let Some(peer) = self.peers.get_mut(&conn) {
            #[cfg(feature = "sim")]
            let logged = reason.clone();
            if peer.close(now, code, reason) {
                self.events.push_back(TransportEvent::Lost {
                    conn,
                    reason: LostReason::ClosedLocally,
                });
            }
            #[cfg(feature = "sim")]
            if !logged.is_empty() {
                self.log_control(logged);
            }
            self.dirty.insert(conn);
            self.drive();
        }
    }

    /// Keying material bound to this TLS session (RFC 5705 exporter), for the join proof.
    pub(crate) fn export_keying_material(&self, conn: ConnId, label: &[u8]) -> Option<[u8; 32]> {
        let peer = self.peers.get(&conn)?;
        let mut out = [0u8; 32];
        peer.conn
            .crypto_session()
            .export_keying_material(&mut out, label, b"")
            .ok()?;
        Some(out)
    }

    /// The peer's certificate chain (end-entity first), once the handshake is complete.
    pub(crate) fn peer_certificates(
        &self,
        conn: ConnId,
    ) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
        let peer = self.peers.get(&conn)?;
        let any = peer.conn.crypto_session().peer_identity()?;
        any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
            .map(|b| *b)
    }

    /// Test hook (feature `sim`): the latest frames queued on control streams and reason
    /// bytes of application closes, oldest first, at most `SENT_CONTROL_LOG` of them.
    #[cfg(feature = "sim")]
    pub(crate) fn sent_control_frames(&self) -> Vec<Bytes> {
        self.sent_control.iter().cloned().collect()
    }

    #[cfg(feature = "sim")]
    fn log_control(&mut self, frame: Bytes) {
        if self.sent_control.len() == SENT_CONTROL_LOG {
            self.sent_control.pop_front();
        }
        self.sent_control.push_back(frame);
    }

    /// Bytes held in stream decoders, summed over connections (reserved capacity).
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.peers.values().map(Peer::buffered).sum()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.peers.len()
    }

    /// Bytes of `class` queued for `conn` beyond what QUIC has taken (`None`: no such
    /// connection).
    pub(crate) fn queued(&self, conn: ConnId, class: StreamClass) -> Option<usize> {
        self.peers.get(&conn).map(|p| p.queued(class))
    }

    /// Whether events wait in [`Transport::poll_event`].
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub(crate) fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let handshakes = self
            .peers
            .values()
            .filter_map(|p| self.handshake_deadline(p))
            .min();
        self.peers
            .values_mut()
            .filter_map(|p| p.conn.poll_timeout())
            .chain(handshakes)
            .min()
    }

    /// One transmit per call, round-robin over connections so none starves the rest: a
    /// single datagram, or with `max_datagrams > 1` a GSO batch of up to that many
    /// equal-sized datagrams to one destination (`Transmit::segment_size`).
    ///
    /// A batch never exceeds [`MAX_GSO_BYTES`] in total, whatever the path MTU: the kernel
    /// refuses larger GSO sends outright, which would lose every datagram in them.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        if let Some((t, bytes)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(t);
        }
        // Round robin from the connection after the last one that sent, without collecting
        // the ids: this runs once per datagram sent and once more to learn there is none.
        let mut cursor = self.next_tx;
        for _ in 0..self.tx_ready.len() {
            let next = self.tx_ready.range(cursor..).next();
            let id = *next.or_else(|| self.tx_ready.first())?;
            cursor = ConnId(id.0.wrapping_add(1));
            let Some(peer) = self.peers.get_mut(&id) else {
                self.tx_ready.remove(&id);
                continue;
            };
            buf.clear();
            let mtu = usize::from(peer.conn.current_mtu()).max(1);
            let max = max_datagrams.min(MAX_GSO_BYTES / mtu).max(1);
            if let Some(t) = peer.conn.poll_transmit(now, max, buf) {
                self.next_tx = cursor;
                // Sending may have produced endpoint events (e.g. retired CIDs).
                self.dirty.insert(id);
                self.drive();
                return Some(convert(&t));
            }
            self.tx_ready.remove(&id);
        }
        None
    }

    /// Process everything the touched connections have to say, in id order.
    fn drive(&mut self) {
        while let Some(id) = self.dirty.pop_first() {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            self.tx_ready.insert(id);
            // Endpoint events (CID issuance, drained) may feed back into the connection.
            while let Some(ev) = peer.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(id.handle(), ev) {
                    peer.conn.handle_event(back);
                }
            }
            for out in peer.process() {
                match out {
                    PeerOutput::Connected => self
                        .events
                        .push_back(TransportEvent::Connected { conn: id }),
                    PeerOutput::Message(class, msg) => {
                        self.events.push_back(TransportEvent::Message {
                            conn: id,
                            class,
                            msg,
                        })
                    }
                    PeerOutput::Malformed(error) => self
                        .events
                        .push_back(TransportEvent::Malformed { conn: id, error }),
                    PeerOutput::Lost(reason) => self
                        .events
                        .push_back(TransportEvent::Lost { conn: id, reason }),
                }
            }
            if peer.conn.is_drained() {
                self.peers.remove(&id);
            }
        }
    }
}

/// Translate quinn's transmit into ours.
fn convert(t: &quinn_proto::Transmit) -> Transmit {
    Transmit {
        destination: t.destination,
        size: t.size,
        segment_size: t.segment_size,
        ecn: t.ecn.map(|e| e as u8),
        src_ip: t.src_ip,
    }
}

/// An application close code as quinn wants it; codes above 2^62 are clamped.
pub(crate) fn varint(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::MAX)
}
