//! Rogue clients: QUIC endpoints that pass the seed's pinned TLS handshake (they hold the
//! real ticket's pin, but not necessarily its secret) and then misbehave on purpose.
//!
//! They are built on quinn-proto directly, with nexar's public crypto builders, so the
//! handshake is real and deterministic; only what happens after it is hostile. A test
//! watches a rogue through the [`RogueStatus`] handle it gets back, since the simulator owns
//! the host itself.
//!
//! One rogue host may hold many connections from its one address ([`RogueClient::dial_many`]),
//! and [`InitialFlood`] sends first Initials and never answers, as a spoofing flood would.

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
    /// On every unidirectional stream the seed lets it open, a Hello header claiming
    /// `claim` payload bytes followed by `send` of them, never the rest: each stream holds
    /// a partial frame in the seed's decoder for as long as the seed lets it.
    HalfFrames { claim: u32, send: usize },
    /// Try to open a bidirectional stream (and write a header on it if it can).
    OpenBidi,
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
    /// Unidirectional streams it could open.
    pub uni_opened: usize,
    /// Whether it could open a bidirectional stream.
    pub bidi_opened: bool,
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

/// One rogue connection and what it has left to write.
struct RogueConn {
    handle: ConnectionHandle,
    conn: quinn_proto::Connection,
    acted: bool,
    /// What is left of the behaviour's payload, per stream.
    pending: Vec<(quinn_proto::StreamId, Vec<u8>)>,
    status: StatusHandle,
}

/// A quinn-proto client that dials the seed with the pinned bootstrap configuration, once
/// or many times from its one address.
pub struct RogueClient {
    endpoint: Endpoint,
    conns: Vec<RogueConn>,
    behaviour: Behaviour,
    /// Stateless endpoint responses waiting to be sent.
    responses: VecDeque<(Transmit, Vec<u8>)>,
    /// Where the round robin of `poll_transmit` resumes.
    next_tx: usize,
}

impl std::fmt::Debug for RogueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RogueClient")
            .field("behaviour", &self.behaviour)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// The pinned client configuration and endpoint a rogue dials with.
fn rogue_endpoint(rng_seed: [u8; 32], pin: [u8; 32]) -> (Endpoint, quinn_proto::ClientConfig) {
    let mut params = TransportParams::default();
    // Long enough that the seed's deadlines, not idleness, end a silent rogue.
    params.idle_timeout = Duration::from_secs(120);
    let provider = crypto_provider(&rng_seed);
    let unix = UnixTime::since_unix_epoch(Duration::from_secs(SIM_UNIX_TIME));
    let endpoint_cfg = endpoint_config(&rng_seed, &params).expect("endpoint config");
    let client = bootstrap_client_config(&provider, pin, &rng_seed, unix, &params)
        .expect("bootstrap client config");
    (
        Endpoint::new(Arc::new(endpoint_cfg), None, true, None),
        client,
    )
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
        let (rogue, mut statuses) = Self::dial_many(rng_seed, pin, seed_addr, now, behaviour, 1);
        (rogue, statuses.remove(0))
    }

    /// `n` connections from one address, each behaving alike.
    ///
    /// # Panics
    /// As [`RogueClient::dial`].
    pub fn dial_many(
        rng_seed: [u8; 32],
        pin: [u8; 32],
        seed_addr: SocketAddr,
        now: Instant,
        behaviour: Behaviour,
        n: usize,
    ) -> (Self, Vec<StatusHandle>) {
        let (mut endpoint, client) = rogue_endpoint(rng_seed, pin);
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let (handle, conn) = endpoint
                .connect(now, client.clone(), seed_addr, BOOTSTRAP_SERVER_NAME)
                .expect("dial the seed");
            conns.push(RogueConn {
                handle,
                conn,
                acted: false,
                pending: Vec::new(),
                status: StatusHandle::default(),
            });
        }
        let statuses = conns.iter().map(|c| c.status.clone()).collect();
        let mut rogue = RogueClient {
            endpoint,
            conns,
            behaviour,
            responses: VecDeque::new(),
            next_tx: 0,
        };
        rogue.process();
        (rogue, statuses)
    }

    /// Exchange endpoint events, react to connection events, push pending bytes.
    fn process(&mut self) {
        for c in &mut self.conns {
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(c.handle, ev) {
                    c.conn.handle_event(back);
                }
            }
            while let Some(event) = c.conn.poll() {
                match event {
                    Event::Connected => {
                        c.status.borrow_mut().connected = true;
                        c.act(&self.behaviour);
                    }
                    Event::ConnectionLost { reason } => {
                        let lost = match reason {
                            ConnectionError::ApplicationClosed(c) => Lost::Application {
                                code: c.error_code.into_inner(),
                                reason: c.reason,
                            },
                            other => Lost::Other(other.to_string()),
                        };
                        c.status.borrow_mut().lost.get_or_insert(lost);
                    }
                    _ => {}
                }
            }
            c.flush();
        }
    }
}

impl RogueConn {
    fn act(&mut self, behaviour: &Behaviour) {
        if self.acted {
            return;
        }
        self.acted = true;
        match behaviour {
            Behaviour::Silent => {}
            Behaviour::Write(bytes) => {
                if let Some(id) = self.conn.streams().open(Dir::Uni) {
                    self.status.borrow_mut().uni_opened += 1;
                    self.pending.push((id, bytes.clone()));
                }
            }
            Behaviour::HalfFrames { claim, send } => {
                let header = FrameHeader {
                    kind: Kind::HELLO,
                    flags: Flags::NONE,
                    len: *claim,
                };
                let mut bytes = header.to_bytes().to_vec();
                bytes.extend(std::iter::repeat_n(0x5a, *send));
                while let Some(id) = self.conn.streams().open(Dir::Uni) {
                    self.status.borrow_mut().uni_opened += 1;
                    self.pending.push((id, bytes.clone()));
                }
            }
            Behaviour::OpenBidi => {
                if let Some(id) = self.conn.streams().open(Dir::Bi) {
                    self.status.borrow_mut().bidi_opened = true;
                    let header = Behaviour::oversized_header(1024);
                    if let Behaviour::Write(bytes) = header {
                        self.pending.push((id, bytes));
                    }
                }
            }
        }
    }

    fn flush(&mut self) {
        for (id, rest) in &mut self.pending {
            if let Ok(n) = self.conn.send_stream(*id).write(rest) {
                rest.drain(..n);
                self.status.borrow_mut().written += n;
            }
        }
        self.pending.retain(|(_, rest)| !rest.is_empty());
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
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(c) = self.conns.iter_mut().find(|c| c.handle == h) {
                    c.conn.handle_event(ev);
                }
            }
            Some(DatagramEvent::Response(t)) => self.responses.push_back((convert(&t), buf)),
            // No server config: a rogue accepts nothing. Other handles cannot exist.
            _ => {}
        }
        self.process();
    }

    fn handle_timeout(&mut self, now: Instant) {
        for c in &mut self.conns {
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
            }
        }
        self.process();
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some((t, bytes)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            return Some(t);
        }
        let n = self.conns.len();
        for k in 0..n {
            let i = (self.next_tx + k) % n;
            buf.clear();
            if let Some(t) = self.conns[i].conn.poll_transmit(now, 1, buf) {
                self.next_tx = (i + 1) % n;
                self.process();
                return Some(convert(&t));
            }
        }
        None
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns
            .iter_mut()
            .filter_map(|c| c.conn.poll_timeout())
            .min()
    }
}

/// A host that opens a new QUIC connection to `target` every `interval`, sends its first
/// Initial and never answers anything (not even a Retry): the cost of a spoofed Initial to
/// the victim, from one address.
pub struct InitialFlood {
    endpoint: Endpoint,
    client: quinn_proto::ClientConfig,
    target: SocketAddr,
    interval: Duration,
    next: Instant,
    until: Instant,
    out: VecDeque<(Transmit, Vec<u8>)>,
    sent: Rc<RefCell<u64>>,
}

impl std::fmt::Debug for InitialFlood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialFlood")
            .field("target", &self.target)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl InitialFlood {
    /// A flood from `now` to `until`, one Initial per `interval`. The handle counts
    /// Initials sent.
    ///
    /// # Panics
    /// As [`RogueClient::dial`].
    pub fn new(
        rng_seed: [u8; 32],
        pin: [u8; 32],
        target: SocketAddr,
        now: Instant,
        interval: Duration,
        until: Instant,
    ) -> (Self, Rc<RefCell<u64>>) {
        let (endpoint, client) = rogue_endpoint(rng_seed, pin);
        let sent = Rc::new(RefCell::new(0));
        let flood = InitialFlood {
            endpoint,
            client,
            target,
            interval,
            next: now,
            until,
            out: VecDeque::new(),
            sent: sent.clone(),
        };
        (flood, sent)
    }
}

impl SimHost for InitialFlood {
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: Option<u8>, _: &[u8]) {}

    fn handle_timeout(&mut self, now: Instant) {
        while self.next <= now && self.next < self.until {
            self.next += self.interval;
            let Ok((_, mut conn)) =
                self.endpoint
                    .connect(now, self.client.clone(), self.target, BOOTSTRAP_SERVER_NAME)
            else {
                return;
            };
            let mut buf = Vec::new();
            if let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
                buf.truncate(t.size);
                self.out.push_back((convert(&t), buf));
                *self.sent.borrow_mut() += 1;
            }
        }
    }

    fn poll_transmit(&mut self, _: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (t, bytes) = self.out.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&bytes);
        Some(t)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        (self.next < self.until).then_some(self.next)
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

/// A UDP relay in front of the seed that answers a joiner's first `forge` Initials itself
/// with a forged Version Negotiation packet (listing no version the joiner speaks), and
/// relays everything else both ways. Anyone who sees a client's first Initial can forge
/// such an unauthenticated "go away" (or an Initial-space CONNECTION_CLOSE); the joiner
/// must take it as a reason to dial again, never as a final failure.
#[derive(Debug)]
pub struct ForgingProxy {
    seed: SocketAddr,
    joiner: Option<SocketAddr>,
    forge: u32,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    forged: Rc<RefCell<u32>>,
}

impl ForgingProxy {
    /// A relay to `seed` that forges its answer to the first `forge` Initials; the handle
    /// counts the forgeries sent.
    pub fn new(seed: SocketAddr, forge: u32) -> (Self, Rc<RefCell<u32>>) {
        let forged = Rc::new(RefCell::new(0));
        let proxy = ForgingProxy {
            seed,
            joiner: None,
            forge,
            out: VecDeque::new(),
            forged: forged.clone(),
        };
        (proxy, forged)
    }

    /// The Version Negotiation packet answering a long-header packet, if it is one.
    fn version_negotiation(initial: &[u8]) -> Option<Vec<u8>> {
        // Long header: flags, version (4), DCID length and DCID, SCID length and SCID.
        if initial.first()? & 0x80 == 0 {
            return None;
        }
        let dcid_len = usize::from(*initial.get(5)?);
        let dcid = initial.get(6..6 + dcid_len)?;
        let scid_len = usize::from(*initial.get(6 + dcid_len)?);
        let scid = initial.get(7 + dcid_len..7 + dcid_len + scid_len)?;
        let mut vn = vec![0x80 | 0x2a, 0, 0, 0, 0];
        vn.push(scid.len() as u8);
        vn.extend_from_slice(scid);
        vn.push(dcid.len() as u8);
        vn.extend_from_slice(dcid);
        // One reserved (greased) version only: nothing the joiner speaks.
        vn.extend_from_slice(&[0x1a, 0x2a, 0x3a, 0x4a]);
        Some(vn)
    }
}

impl SimHost for ForgingProxy {
    fn handle_datagram(&mut self, _: Instant, from: SocketAddr, _: Option<u8>, data: &[u8]) {
        if from == self.seed {
            if let Some(joiner) = self.joiner {
                self.out.push_back((joiner, data.to_vec()));
            }
            return;
        }
        self.joiner = Some(from);
        if self.forge > 0 {
            if let Some(vn) = Self::version_negotiation(data) {
                self.forge -= 1;
                *self.forged.borrow_mut() += 1;
                self.out.push_back((from, vn));
                return;
            }
        }
        self.out.push_back((self.seed, data.to_vec()));
    }

    fn handle_timeout(&mut self, _: Instant) {}

    fn poll_transmit(&mut self, _: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (to, bytes) = self.out.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&bytes);
        Some(Transmit {
            destination: to,
            size: bytes.len(),
            segment_size: None,
            ecn: None,
            src_ip: None,
        })
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}
