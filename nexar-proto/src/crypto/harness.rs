//! Test-only: two or more quinn-proto endpoints wired together in memory on a virtual clock.
//!
//! Rules that make a run replayable: endpoints and connections are visited in a fixed order
//! (index, then `ConnectionHandle`), each `poll_transmit` yields one datagram, datagrams are
//! delivered in send order after a fixed latency, and time only moves to the next datagram
//! arrival or connection timeout. Every datagram is hashed with its virtual send time,
//! sender and length, so two runs can be compared bit for bit.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, Event,
    ServerConfig,
};
use sha2::{Digest, Sha256};

/// One-way delay of every datagram.
const LATENCY: Duration = Duration::from_micros(100);

/// One simulated host: an endpoint and its connections.
pub(crate) struct Host {
    pub(crate) addr: SocketAddr,
    pub(crate) endpoint: Endpoint,
    pub(crate) conns: BTreeMap<ConnectionHandle, Connection>,
    /// Application events, in the order they were polled.
    pub(crate) events: Vec<(ConnectionHandle, Event)>,
    /// Datagrams this host has sent.
    pub(crate) sent: u64,
}

/// A datagram on the wire.
struct InFlight {
    arrival: Instant,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The in-memory network.
pub(crate) struct Net {
    base: Instant,
    pub(crate) now: Instant,
    pub(crate) hosts: Vec<Host>,
    wire: VecDeque<InFlight>,
    trace: Sha256,
    pub(crate) datagrams: u64,
}

impl Net {
    /// An empty network whose clock starts at an arbitrary real instant.
    pub(crate) fn new() -> Self {
        // The only way to obtain an `Instant` is to read the clock once. Everything after
        // is `base + Duration`, and only offsets from `base` enter the trace hash.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        Self {
            base,
            now: base,
            hosts: Vec::new(),
            wire: VecDeque::new(),
            trace: Sha256::new(),
            datagrams: 0,
        }
    }

    /// Adds a host at 192.0.2.(index+1):4433 (a documentation address) and returns its index.
    pub(crate) fn add_host(
        &mut self,
        config: EndpointConfig,
        server: Option<ServerConfig>,
    ) -> usize {
        let index = self.hosts.len();
        let last_octet = u8::try_from(index + 1).expect("fewer than 255 hosts");
        self.hosts.push(Host {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last_octet)), 4433),
            endpoint: Endpoint::new(Arc::new(config), server.map(Arc::new), true, None),
            conns: BTreeMap::new(),
            events: Vec::new(),
            sent: 0,
        });
        index
    }

    /// Starts a connection from host `from` to host `to`, dialling `server_name`.
    pub(crate) fn connect(
        &mut self,
        from: usize,
        to: usize,
        config: ClientConfig,
        server_name: &str,
    ) -> ConnectionHandle {
        let remote = self.hosts[to].addr;
        let now = self.now;
        let host = &mut self.hosts[from];
        let (ch, conn) = host
            .endpoint
            .connect(now, config, remote, server_name)
            .expect("connect");
        host.conns.insert(ch, conn);
        ch
    }

    /// The connection `ch` of host `host`.
    pub(crate) fn conn(&mut self, host: usize, ch: ConnectionHandle) -> &mut Connection {
        self.hosts[host].conns.get_mut(&ch).expect("connection")
    }

    /// Processes everything due now, then advances the clock to the next arrival or timeout.
    /// Returns false if nothing is left to happen.
    pub(crate) fn step(&mut self) -> bool {
        self.process_now();
        let next_arrival = self.wire.front().map(|d| d.arrival);
        let next_timeout = self
            .hosts
            .iter_mut()
            .flat_map(|h| h.conns.values_mut().filter_map(|c| c.poll_timeout()))
            .min();
        match [next_arrival, next_timeout].into_iter().flatten().min() {
            Some(t) => {
                // Time never goes backwards.
                self.now = self.now.max(t);
                true
            }
            None => false,
        }
    }

    /// Steps until `done` holds (true) or the network goes idle / `max_steps` pass (false).
    pub(crate) fn run_until(
        &mut self,
        max_steps: usize,
        mut done: impl FnMut(&mut Net) -> bool,
    ) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        false
    }

    /// SHA-256 over every datagram sent so far, with its virtual time and sender.
    pub(crate) fn trace_hash(&self) -> [u8; 32] {
        self.trace.clone().finalize().into()
    }

    /// Whether host `host` has seen event `pred` on any connection.
    pub(crate) fn saw(&self, host: usize, pred: impl Fn(&Event) -> bool) -> bool {
        self.hosts[host].events.iter().any(|(_, e)| pred(e))
    }

    fn process_now(&mut self) {
        // Loop until quiescent at this instant: delivering a datagram can produce output.
        loop {
            let mut progressed = false;
            for i in 0..self.hosts.len() {
                progressed |= self.drive_host(i);
            }
            while self.wire.front().is_some_and(|d| d.arrival <= self.now) {
                let d = self.wire.pop_front().expect("front exists");
                self.deliver(d);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    /// Timeouts, endpoint events, app events and transmits of every connection of host `i`.
    fn drive_host(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut out = Vec::new();
        let mut progressed = false;
        let host = &mut self.hosts[i];
        let mut drained = Vec::new();
        for (&ch, conn) in host.conns.iter_mut() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
            while let Some(ev) = conn.poll_endpoint_events() {
                if let Some(reply) = host.endpoint.handle_event(ch, ev) {
                    conn.handle_event(reply);
                }
            }
            while let Some(ev) = conn.poll() {
                host.events.push((ch, ev));
                progressed = true;
            }
            let mut buf = Vec::new();
            while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
                out.push((t.destination, buf[..t.size].to_vec()));
                buf.clear();
            }
            if conn.is_drained() {
                drained.push(ch);
            }
        }
        for ch in drained {
            host.conns.remove(&ch);
        }
        let from = host.addr;
        for (to, bytes) in out {
            self.send(from, to, bytes);
            progressed = true;
        }
        progressed
    }

    fn deliver(&mut self, d: InFlight) {
        let now = self.now;
        let Some(i) = self.hosts.iter().position(|h| h.addr == d.to) else {
            return;
        };
        let host = &mut self.hosts[i];
        let mut buf = Vec::new();
        let data = BytesMut::from(&d.bytes[..]);
        let response = match host
            .endpoint
            .handle(now, d.from, None, None, data, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(conn) = host.conns.get_mut(&ch) {
                    conn.handle_event(ev);
                }
                None
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                match host.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((ch, conn)) => {
                        host.conns.insert(ch, conn);
                        None
                    }
                    Err(e) => e.response,
                }
            }
            Some(DatagramEvent::Response(t)) => Some(t),
            None => None,
        };
        if let Some(t) = response {
            let from = host.addr;
            self.send(from, t.destination, buf[..t.size].to_vec());
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let offset = self.now.duration_since(self.base);
        self.trace.update(offset.as_nanos().to_le_bytes());
        self.trace.update(from.to_string().as_bytes());
        self.trace.update((bytes.len() as u64).to_le_bytes());
        self.trace.update(&bytes);
        self.datagrams += 1;
        if let Some(host) = self.hosts.iter_mut().find(|h| h.addr == from) {
            host.sent += 1;
        }
        self.wire.push_back(InFlight {
            arrival: self.now + LATENCY,
            from,
            to,
            bytes,
        });
    }
}
