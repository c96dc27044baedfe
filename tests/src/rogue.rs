//! Rogue clients: QUIC endpoints that pass the seed's pinned TLS handshake (they hold the
//! real ticket's pin, but not necessarily its secret) and then misbehave on purpose.
//!
//! They are built on quinn-proto directly, with nexar's public crypto builders, so the
//! handshake is real and deterministic; only what happens after it is hostile. A test
//! watches a rogue through the [`RogueStatus`] handle it gets back, since the simulator owns
//! the host itself.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nexar_proto::codec::{Flags, FrameHeader, Kind};
use nexar_proto::crypto::{
    bootstrap_client_config, crypto_provider, endpoint_config, TransportParams, UnixTime,
    BOOTSTRAP_SERVER_NAME,
};
use nexar_proto::sim::{SimHost, SIM_UNIX_TIME};
use nexar_proto::Transmit;
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint, Event,
};

/// What a rogue does once its TLS handshake with the seed has completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Nothing at all: it never says Hello (the seed's join deadline must cut it off).
    Silent,
    /// Open its first unidirectional stream (the control stream) and write these bytes.
    Write(Vec<u8>),
}

impl Behaviour {
    /// A lone frame header on the control stream claiming a `len`-byte Hello payload.
    pub fn oversized_header(len: u32) -> Self {
        let header = FrameHeader {
            kind: Kind::HELLO,
            flags: Flags::NONE,
            len,
        };
        Behaviour::Write(header.to_bytes().to_vec())
    }
}

/// What a rogue has seen, shared with the test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RogueStatus {
    /// The TLS handshake with the seed completed (the pin matched).
    pub connected: bool,
    /// Bytes of the behaviour's payload quinn accepted onto the stream.
    pub written: usize,
    /// How the connection ended, if it has.
    pub lost: Option<Lost>,
}

/// How a rogue's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The seed closed it with an application code and reason bytes (a join rejection).
    Application {
        /// The close code.
        code: u64,
        /// The reason bytes.
        reason: Bytes,
    },
    /// Anything else, as quinn described it.
    Other(String),
}

/// A shared view of a rogue's [`RogueStatus`].
pub type StatusHandle = Rc<RefCell<RogueStatus>>;

/// A quinn-proto client that dials the seed with the pinned bootstrap configuration.
pub struct RogueClient {
    endpoint: Endpoint,
    handle: ConnectionHandle,
    conn: quinn_proto::Connection,
    behaviour: Behaviour,
    acted: bool,
    /// What is left of the behaviour's payload and the stream it goes on.
    pending: Option<(quinn_proto::StreamId, Vec<u8>)>,
    /// Stateless endpoint responses waiting to be sent.
    responses: VecDeque<(Transmit, Vec<u8>)>,
    status: StatusHandle,
}

impl std::fmt::Debug for RogueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RogueClient")
            .field("behaviour", &self.behaviour)
            .field("status", &self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl RogueClient {
    /// A rogue whose randomness derives from `rng_seed`, dialling `seed_addr` now and
    /// accepting the server only if its key hashes to `pin`.
    ///
    /// # Panics
    /// If nexar's crypto builders refuse their defaults (a bug, not a test outcome).
    pub fn dial(
        rng_seed: [u8; 32],
        pin: [u8; 32],
        seed_addr: SocketAddr,
        now: Instant,
        behaviour: Behaviour,
    ) -> (Self, StatusHandle) {
        let mut params = TransportParams::default();
        // Long enough that the seed's join deadline, not idleness, ends a silent rogue.
        params.idle_timeout = Duration::from_secs(120);
        let provider = crypto_provider(&rng_seed);
        let unix = UnixTime::since_unix_epoch(Duration::from_secs(SIM_UNIX_TIME));
        let endpoint_cfg = endpoint_config(&rng_seed, &params).expect("endpoint config");
        let client = bootstrap_client_config(&provider, pin, &rng_seed, unix, &params)
            .expect("bootstrap client config");
        let mut endpoint = Endpoint::new(Arc::new(endpoint_cfg), None, true, None);
        let (handle, conn) = endpoint
            .connect(now, client, seed_addr, BOOTSTRAP_SERVER_NAME)
            .expect("dial the seed");
        let status = StatusHandle::default();
        let mut rogue = RogueClient {
            endpoint,
            handle,
            conn,
            behaviour,
            acted: false,
            pending: None,
            responses: VecDeque::new(),
            status: status.clone(),
        };
        rogue.process();
        (rogue, status)
    }

    /// Exchange endpoint events, react to connection events, push pending bytes.
    fn process(&mut self) {
        while let Some(ev) = self.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(self.handle, ev) {
                self.conn.handle_event(back);
            }
        }
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => {
                    self.status.borrow_mut().connected = true;
                    self.act();
                }
                Event::ConnectionLost { reason } => {
                    let lost = match reason {
                        ConnectionError::ApplicationClosed(c) => Lost::Application {
                            code: c.error_code.into_inner(),
                            reason: c.reason,
                        },
                        other => Lost::Other(other.to_string()),
                    };
                    self.status.borrow_mut().lost.get_or_insert(lost);
                }
                _ => {}
            }
        }
        self.flush();
    }

    fn act(&mut self) {
        if self.acted {
            return;
        }
        self.acted = true;
        if let Behaviour::Write(bytes) = &self.behaviour {
            if let Some(id) = self.conn.streams().open(Dir::Uni) {
                self.pending = Some((id, bytes.clone()));
            }
        }
    }

    fn flush(&mut self) {
        let Some((id, rest)) = &mut self.pending else {
            return;
        };
        if let Ok(n) = self.conn.send_stream(*id).write(rest) {
            rest.drain(..n);
            self.status.borrow_mut().written += n;
        }
        if rest.is_empty() {
            self.pending = None;
        }
    }
}

impl SimHost for RogueClient {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ecn: Option<u8>, data: &[u8]) {
        let ecn = ecn.and_then(EcnCodepoint::from_bits);
        let mut buf = Vec::new();
        match self
            .endpoint
            .handle(now, from, None, ecn, BytesMut::from(data), &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(h, ev)) if h == self.handle => {
                self.conn.handle_event(ev)
            }
            Some(DatagramEvent::Response(t)) => self.responses.push_back((convert(&t), buf)),
            // No server config: a rogue accepts nothing. Other handles cannot exist.
            _ => {}
        }
        self.process();
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        self.process();
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some((t, bytes)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(t);
        }
        buf.clear();
        let t = self.conn.poll_transmit(now, 1, buf)?;
        self.process();
        Some(convert(&t))
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn.poll_timeout()
    }
}

fn convert(t: &quinn_proto::Transmit) -> Transmit {
    Transmit {
        destination: t.destination,
        size: t.size,
        segment_size: t.segment_size,
        ecn: t.ecn.map(|e| e as u8),
        src_ip: t.src_ip,
    }
}
