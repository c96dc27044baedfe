//! Unauthenticated attackers over real UDP sockets (blocking, std only), for the
//! `hostile_client` measurement tool and the process tests against `nexar seed`.
//!
//! - [`HalfFrames`]: N connections that finish the pinned TLS handshake (they hold the
//!   ticket's pin, not its secret) and then, on every stream the seed grants, send a Hello
//!   header and all but the last byte of its payload, then stay silent; a connection the
//!   seed ends is dialled again, so the pressure lasts.
//! - [`flood_initials`]: first Initials at a given rate, each from a fresh socket (so a
//!   distinct local port), never answered. Plain sockets cannot spoof source addresses
//!   (that needs raw sockets); distinct ports are the closest, and they are enough to
//!   defeat any per-port accounting. Retry packets and handshake replies are never read.
//!
//! This file is also compiled into nexar-tokio's `hostile_client` test (`#[path]`), so it
//! uses only nexar-proto's public API, quinn-proto and std.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use nexar_proto::codec::{Flags, FrameHeader, Kind};
use nexar_proto::crypto::{
    bootstrap_client_config, crypto_provider, endpoint_config, TransportParams, UnixTime,
    BOOTSTRAP_SERVER_NAME,
};
use quinn_proto::{ClientConfig, ConnectionHandle, DatagramEvent, Dir, Endpoint, Event};

/// The pinned client configuration and an endpoint to dial from.
fn client(key: u64, pin: [u8; 32]) -> (Endpoint, ClientConfig) {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&key.to_le_bytes());
    seed[8] = 0x5a;
    let mut params = TransportParams::default();
    params.idle_timeout = Duration::from_secs(120);
    let unix = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let provider = crypto_provider(&seed);
    let endpoint = Endpoint::new(
        Arc::new(endpoint_config(&seed, &params).expect("endpoint config")),
        None,
        true,
        None,
    );
    let config =
        bootstrap_client_config(&provider, pin, &seed, unix, &params).expect("client config");
    (endpoint, config)
}

/// One attacking connection on its own socket.
struct Attacker {
    socket: UdpSocket,
    endpoint: Endpoint,
    config: ClientConfig,
    conn: Option<(ConnectionHandle, quinn_proto::Connection)>,
    /// The current connection finished its handshake.
    connected: bool,
    /// Streams still writing the frame, and how much of it each has written.
    pending: Vec<(quinn_proto::StreamId, usize)>,
}

/// What a [`HalfFrames`] run has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HalfFrameStats {
    /// Connections now through the TLS handshake and not yet ended.
    pub established: usize,
    /// Handshakes completed in all.
    pub handshakes: u64,
    /// Connections the seed ended (rejected, evicted, timed out).
    pub ended: u64,
    /// Partial-frame bytes quinn accepted onto streams.
    pub bytes_written: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
}

/// N connections streaming partial Hello frames (see the module docs).
#[allow(missing_debug_implementations)]
pub struct HalfFrames {
    target: SocketAddr,
    attackers: Vec<Attacker>,
    frame: Vec<u8>,
    stats: HalfFrameStats,
    buf: Vec<u8>,
}

impl HalfFrames {
    /// `n` connections to `target` (pinned to `pin`); each stream gets a Hello header
    /// claiming `claim` bytes and `claim - 1` of them.
    ///
    /// # Panics
    /// If sockets cannot be bound on loopback.
    pub fn new(target: SocketAddr, pin: [u8; 32], n: usize, claim: u32) -> Self {
        Self::with_sources(target, pin, n, claim, false)
    }

    /// As [`HalfFrames::new`]; with `spread` (IPv4 loopback targets only) connection `i`
    /// binds to its own address in 127.0.0.0/8 (127.1.x.y), so the victim sees `n`
    /// distinct source IPs, as from `n` attacking hosts.
    ///
    /// # Panics
    /// If sockets cannot be bound.
    pub fn with_sources(
        target: SocketAddr,
        pin: [u8; 32],
        n: usize,
        claim: u32,
        spread: bool,
    ) -> Self {
        let header = FrameHeader {
            kind: Kind::HELLO,
            flags: Flags::NONE,
            len: claim,
        };
        let mut frame = header.to_bytes().to_vec();
        frame.resize(frame.len() + claim.saturating_sub(1) as usize, 0x5a);
        let attackers = (0..n)
            .map(|i| {
                let bind: SocketAddr = match (target.is_ipv4(), spread) {
                    (true, true) => {
                        SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250 + 1) as u8], 0))
                    }
                    (true, false) => "127.0.0.1:0".parse().unwrap(),
                    (false, _) => "[::1]:0".parse().unwrap(),
                };
                let socket = UdpSocket::bind(bind).expect("bind");
                socket.set_nonblocking(true).expect("nonblocking");
                let (endpoint, config) = client(i as u64 + 1, pin);
                Attacker {
                    socket,
                    endpoint,
                    config,
                    conn: None,
                    connected: false,
                    pending: Vec::new(),
                }
            })
            .collect();
        HalfFrames {
            target,
            attackers,
            frame,
            stats: HalfFrameStats::default(),
            buf: Vec::with_capacity(64 << 10),
        }
    }

    /// What has happened so far.
    pub fn stats(&self) -> HalfFrameStats {
        self.stats
    }

    /// Drive every connection until `until`, sleeping briefly when idle.
    pub fn run_until(&mut self, until: Instant) {
        while Instant::now() < until {
            if !self.step() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// One pass over every connection; true if anything moved.
    pub fn step(&mut self) -> bool {
        let now = Instant::now();
        let mut moved = false;
        let mut recv = vec![0u8; 65_536];
        for a in &mut self.attackers {
            if a.conn.is_none() {
                let Ok((h, c)) =
                    a.endpoint
                        .connect(now, a.config.clone(), self.target, BOOTSTRAP_SERVER_NAME)
                else {
                    continue;
                };
                a.conn = Some((h, c));
                a.pending.clear();
                moved = true;
            }
            let Some((handle, conn)) = a.conn.as_mut() else {
                continue;
            };
            while let Ok((n, from)) = a.socket.recv_from(&mut recv) {
                moved = true;
                let mut out = Vec::new();
                if let Some(DatagramEvent::ConnectionEvent(h, ev)) =
                    a.endpoint
                        .handle(now, from, None, None, BytesMut::from(&recv[..n]), &mut out)
                {
                    if h == *handle {
                        conn.handle_event(ev);
                    }
                }
            }
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
            while let Some(ev) = conn.poll_endpoint_events() {
                if let Some(back) = a.endpoint.handle_event(*handle, ev) {
                    conn.handle_event(back);
                }
            }
            let mut ended = false;
            while let Some(ev) = conn.poll() {
                match ev {
                    Event::Connected => {
                        a.connected = true;
                        self.stats.handshakes += 1;
                        self.stats.established += 1;
                        while let Some(id) = conn.streams().open(Dir::Uni) {
                            a.pending.push((id, 0));
                        }
                    }
                    Event::ConnectionLost { .. } => ended = true,
                    _ => {}
                }
            }
            for (id, done) in &mut a.pending {
                if let Ok(n) = conn.send_stream(*id).write(&self.frame[*done..]) {
                    *done += n;
                    self.stats.bytes_written += n as u64;
                    moved |= n > 0;
                }
            }
            let len = self.frame.len();
            a.pending.retain(|(_, done)| *done < len);
            loop {
                self.buf.clear();
                let Some(t) = conn.poll_transmit(now, 1, &mut self.buf) else {
                    break;
                };
                if a.socket.send_to(&self.buf[..t.size], t.destination).is_ok() {
                    self.stats.bytes_sent += t.size as u64;
                }
                moved = true;
            }
            if ended {
                if std::mem::take(&mut a.connected) {
                    self.stats.established -= 1;
                }
                self.stats.ended += 1;
                a.conn = None;
            }
        }
        moved
    }
}

/// Send first Initials to `target` at `rate` per second for `duration`, each from a new
/// socket (a new local port). Returns how many were sent.
///
/// # Panics
/// If sockets cannot be bound on loopback.
pub fn flood_initials(target: SocketAddr, pin: [u8; 32], rate: u32, duration: Duration) -> u64 {
    let (mut endpoint, config) = client(u64::MAX, pin);
    let interval = Duration::from_secs(1) / rate.max(1);
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    let mut buf = Vec::new();
    // Keep the last sockets open a moment so replies find a port (and are dropped unread)
    // rather than drawing ICMP errors; bounded so the flood holds few descriptors.
    let mut open: VecDeque<UdpSocket> = VecDeque::new();
    while start.elapsed() < duration {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        next += interval;
        let Ok((_, mut conn)) =
            endpoint.connect(now, config.clone(), target, BOOTSTRAP_SERVER_NAME)
        else {
            continue;
        };
        buf.clear();
        if let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            let bind: SocketAddr = if target.is_ipv4() {
                "127.0.0.1:0".parse().unwrap()
            } else {
                "[::1]:0".parse().unwrap()
            };
            let socket = UdpSocket::bind(bind).expect("bind");
            if socket.send_to(&buf[..t.size], target).is_ok() {
                sent += 1;
            }
            open.push_back(socket);
            if open.len() > 256 {
                open.pop_front();
            }
        }
        // The connection is dropped: it never answers anything.
    }
    sent
}

/// Peak and current resident memory of process `pid` in KiB (`VmHWM`, `VmRSS` from
/// `/proc/PID/status`), if readable.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
