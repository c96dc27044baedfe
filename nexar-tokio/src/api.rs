//! The runtime-agnostic user API: typed handles that talk to a driver task over a channel.
//!
//! This file is shared by the drivers: `nexar-tokio` compiles it as `mod api`, and
//! `nexar-smol` includes the very same file with
//! `#[path = "../../nexar-tokio/src/api.rs"] mod api;`. It therefore names no runtime
//! type: it depends only on `nexar-proto`, `futures-channel`, `bytes`, `thiserror` and
//! `tracing` (and `getrandom` for the OS random source), and asks the including crate for one
//! function in `crate::driver`:
//!
//! - `pub(crate) fn spawn(socket: std::net::UdpSocket, host: NodeHost, inbox: Inbox)
//!   -> Result<(), NexarError>`: run `host` on `socket` in one task of the runtime, as the
//!   loop in [`NodeHost`]'s docs describes, until [`NodeHost::should_exit`]
//!   (with the socket-buffer, datagram and burst sizes defined here, shared by both).
//!
//! Everything that is not moving bytes or time (which request waits for which event,
//! turning buffers back into typed vectors, the shutdown linger) lives here, so the two
//! drivers stay a socket, a timer and a `select`.
//!
//! Ordering: every handle of one node feeds one FIFO channel, and the node starts commands
//! in the order they arrive. The `*_start` methods enqueue at once (program order); the
//! `async fn`s enqueue when first polled. All ranks must issue the collectives of a
//! communicator in the same order (as in MPI); if they do not, they get
//! [`OpError::Mismatch`] rather than a hang.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_channel::{mpsc, oneshot};
use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::{Buffer, CommId, Element};
use nexar_proto::{
    Command, CommandError, ConfigError, Event, JoinError, JoinTicket, Node, NodeConfig, NodeStats,
    OpError, OpId, Outcome, SeedConfig, TicketError,
};

// ---- errors ------------------------------------------------------------------------

/// Everything a nexar call can fail with: the core's typed errors, unchanged, plus the
/// driver's own (I/O, a stopped driver, a caller's buffer of the wrong length).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NexarError {
    /// The node refused to start the command; nothing was sent.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The operation started but failed (a lost peer, a timeout, a mismatch).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The worker could not join the cluster.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A join ticket did not parse.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// A launcher environment variable was missing or malformed.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A socket or OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the driver was doing.
        context: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A caller's buffer does not have the length the collective needs on this rank.
    #[error("{what}: buffer has {got} elements, needs {expected}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Elements required.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The driver task is gone (its runtime shut down, or every handle was dropped while
    /// this operation was pending).
    #[error("the nexar driver task has stopped")]
    DriverStopped,
    /// A point-to-point message larger than one frame may carry (the core's
    /// `limits.max_frame_len` less the message header); send it in pieces.
    #[error("message of {len} bytes exceeds the largest point-to-point message, {max} bytes")]
    MessageTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload accepted.
        max: usize,
    },
    /// The node answered with an outcome of another kind: a bug in nexar.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NexarError {
    /// An I/O error with what the driver was doing.
    pub fn io(context: &'static str, source: std::io::Error) -> Self {
        Self::Io { context, source }
    }
}

/// A launcher environment variable that nexar cannot use (see the `env` module for the
/// variables and their precedence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The variable is set but its value is malformed.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The rank is not below the world size.
    #[error(
        "rank {rank} (from {rank_var}) is not below world size {world_size} (from {world_var})"
    )]
    RankOutOfRange {
        /// The rank.
        rank: u32,
        /// Where it came from.
        rank_var: &'static str,
        /// The world size.
        world_size: u32,
        /// Where it came from.
        world_var: &'static str,
    },
    /// No ticket: neither `NEXAR_JOIN` nor `NEXAR_JOIN_FILE` is set. torchrun's and
    /// Slurm's variables carry no join secret, so they cannot replace a ticket.
    #[error("no join ticket: set NEXAR_JOIN (or NEXAR_JOIN_FILE to a file the seed wrote with --ticket-file); MASTER_ADDR/RANK/WORLD_SIZE give rank and size but carry no join secret")]
    MissingTicket,
    /// The ticket file could not be read.
    #[error("cannot read the join ticket file {path}: {detail}")]
    TicketFile {
        /// The path from `NEXAR_JOIN_FILE`.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// The cluster formed with another size than the environment announced.
    #[error("the environment says world size {expected} (from {var}) but the cluster has {actual} ranks")]
    WorldSizeMismatch {
        /// What the environment said.
        expected: u32,
        /// Which variable said it.
        var: &'static str,
        /// What the seed formed.
        actual: u32,
    },
}

// ---- configuration -----------------------------------------------------------------

/// How to start a seed or a worker.
///
/// `node` carries every knob of the core (timeouts, limits, collective thresholds). The
/// driver overwrites the three fields that come from the process rather than from the
/// user: `rng_seed` (the OS CSPRNG, or [`Config::rng_seed`]), `unix_time` (the wall clock)
/// and `listen_addr` (the bound socket, or [`Config::advertise`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The core's configuration (see [`NodeConfig`]); the fields named above are replaced.
    pub node: NodeConfig,
    /// Worker: the local address to bind. `None` binds port 0 on the loopback address if
    /// the seed is on loopback, else on the unspecified address of the seed's family.
    pub bind: Option<SocketAddr>,
    /// The address peers should dial, when the socket's own address is not it (NAT, or a
    /// socket bound to `0.0.0.0`). A worker may leave the IP unspecified: the seed fills in
    /// the IP it sees the worker connect from.
    pub advertise: Option<SocketAddr>,
    /// A fixed RNG seed instead of the OS CSPRNG: reproducible keys and connection IDs for
    /// tests. Never use it in production: the seed derives the node's identity key.
    pub rng_seed: Option<[u8; 32]>,
    /// After the last handle is dropped, the driver goes on answering the network until no
    /// datagram moved for [`LINGER_QUIET`] or for at most this long, so that QUIC can
    /// still retransmit the last data peers need. `Duration::ZERO` stops at once (a crash,
    /// as far as peers can tell).
    pub linger: Duration,
}

/// How long without any datagram in or out ends a linger early: long past a loopback or
/// LAN probe timeout, so data still unacknowledged would have been resent by then.
pub const LINGER_QUIET: Duration = Duration::from_millis(100);

/// The UDP payload ceiling (and initial MTU) of [`Config::with_loopback_transport`]:
/// loopback's MTU is 64 KiB.
pub const LOOPBACK_MAX_UDP_PAYLOAD: u16 = 65_000;

/// The round-trip time [`Config::with_loopback_transport`] lets QUIC assume before it
/// measures one: a handshake packet lost to a dial that raced the peer's listener is then
/// resent after about 30 ms instead of a second.
pub const LOOPBACK_INITIAL_RTT: Duration = Duration::from_millis(10);

impl Default for Config {
    fn default() -> Self {
        Self {
            node: NodeConfig::new([0; 32], 0, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            bind: None,
            advertise: None,
            rng_seed: None,
            linger: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// Ask the seed for this rank (what a launcher such as Slurm or torchrun assigned).
    pub fn with_requested_rank(mut self, rank: Option<u32>) -> Self {
        self.node.requested_rank = rank;
        self
    }

    /// QUIC idle timeout: a peer silent this long is lost (keep-alive set to a third).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.node.idle_timeout = timeout;
        self.node.keep_alive = timeout / 3;
        self
    }

    /// Every collective must finish within this, or fails with `OpError::Timeout`.
    pub fn with_collective_timeout(mut self, timeout: Duration) -> Self {
        self.node.collective_timeout = timeout;
        self
    }

    /// The linger after the last handle is dropped (see [`Config::linger`]).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Transport settings for a cluster whose members all run on this host and talk over
    /// loopback (what [`bootstrap_local`] uses; call it for `Seed::bind`/`Client::join` on
    /// 127.0.0.1 too). Loopback carries 64 KiB datagrams and never fragments, so QUIC
    /// starts at [`LOOPBACK_MAX_UDP_PAYLOAD`] instead of probing up from 1200 bytes (each
    /// datagram is a syscall: about 5x the throughput of Ethernet-sized packets, and a
    /// 16-rank cluster forms in tens of milliseconds instead of seconds of MTU probes),
    /// and assumes a [`LOOPBACK_INITIAL_RTT`] round trip until it measures one. On any
    /// other network these would send datagrams the path may drop: do not use it there.
    pub fn with_loopback_transport(mut self) -> Self {
        self.node.max_udp_payload = self.node.max_udp_payload.max(LOOPBACK_MAX_UDP_PAYLOAD);
        self.node.initial_mtu = self.node.max_udp_payload;
        self.node.initial_rtt = self.node.initial_rtt.min(LOOPBACK_INITIAL_RTT);
        self
    }

    /// The local address to bind (see [`Config::bind`]).
    pub fn with_bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    fn node_config(&self, local: SocketAddr) -> Result<NodeConfig, NexarError> {
        let mut node = self.node.clone();
        node.rng_seed = match self.rng_seed {
            Some(seed) => seed,
            None => os_random()?,
        };
        node.unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        node.listen_addr = self.advertise.unwrap_or(local);
        Ok(node)
    }
}

// ---- the host: the node plus the bookkeeping every driver needs ----------------------

/// One transmit from [`NodeHost::poll_transmit`]: `bytes` holds one datagram, or several
/// of `segment` bytes each (the last may be shorter) for one GSO send.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) to: SocketAddr,
    pub(crate) segment: usize,
    pub(crate) ecn: Option<u8>,
    pub(crate) bytes: &'a [u8],
}

/// A reply slot for one command.
type Reply = oneshot::Sender<Result<Outcome, NexarError>>;

/// What a handle asks of its node's driver task.
#[derive(Debug)]
pub(crate) enum Request {
    /// Start a command; the outcome goes to `reply` when `Event::Completed` names it.
    Command { command: Command, reply: Reply },
    /// The node's counters.
    Stats { reply: oneshot::Sender<NodeStats> },
    /// Seed: the world size once the cluster has formed.
    Formed { reply: oneshot::Sender<u32> },
    /// Never answered: the sender is dropped with the host, which tells the waiter that
    /// the driver has stopped.
    Stopped { watcher: oneshot::Sender<()> },
}

/// The receiving end of a node's request channel; the driver polls it with `recv()`.
pub(crate) type Inbox = mpsc::UnboundedReceiver<Request>;
type Outbox = mpsc::UnboundedSender<Request>;

/// A [`Node`] with the waiting requests it will answer: what a driver task owns.
///
/// A driver runs it like this (the run-loop contract of `nexar-proto`, plus the inbox):
/// ```text
/// loop {
///     now = clock();
///     loop { send every host.poll_transmit(now); if !host.drain_events(now) { break } }
///     if host.should_exit(now) { break }
///     wait for one of: a datagram -> handle_datagram, a request -> handle_request
///                      (inbox closed -> close_inbox), host.poll_timeout() -> handle_timeout
/// }
/// ```
#[derive(Debug)]
pub(crate) struct NodeHost {
    node: Node,
    /// Replies for started operations, by the id the node gave them.
    pending: BTreeMap<OpId, Reply>,
    /// Sends the node refused with `Backpressure`, retried in order after each input.
    /// Later sends queue behind them so that per-destination order is kept.
    parked: VecDeque<(Command, Reply)>,
    /// Worker: who waits for `Ready` (`Client::join`).
    ready: Option<oneshot::Sender<Result<(u32, u32), NexarError>>>,
    /// Seed: the world size once formed, and who waits for it.
    formed: Option<u32>,
    formed_waiters: Vec<oneshot::Sender<u32>>,
    /// Dropped with the host (see `Request::Stopped`).
    stop_watchers: Vec<oneshot::Sender<()>>,
    span: tracing::Span,
    out: Vec<u8>,
    /// Datagrams per transmit (GSO); see [`NodeHost::set_max_datagrams`].
    max_datagrams: usize,
    linger: Duration,
    /// Since when every handle is gone, if they are.
    closing: Option<Instant>,
    last_io: Instant,
}

impl NodeHost {
    fn new(node: Node, span: tracing::Span, linger: Duration, now: Instant) -> Self {
        Self {
            node,
            pending: BTreeMap::new(),
            parked: VecDeque::new(),
            ready: None,
            formed: None,
            formed_waiters: Vec::new(),
            stop_watchers: Vec::new(),
            span,
            out: Vec::with_capacity(64 * 1024),
            max_datagrams: 1,
            linger,
            closing: None,
            last_io: now,
        }
    }

    /// The span the driver task runs in (one per node; workers record their rank in it).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A datagram arrived, with the ECN bits of its IP header if the socket reads them.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<u8>,
        data: BytesMut,
    ) {
        self.last_io = now;
        self.node.handle_datagram(now, from, ecn, data);
    }

    /// The timer fired (or any time: an early call is harmless).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
    }

    /// A handle asked for something.
    pub(crate) fn handle_request(&mut self, now: Instant, request: Request) {
        match request {
            Request::Command { command, reply } => {
                if !self.parked.is_empty() && matches!(command, Command::Send { .. }) {
                    self.parked.push_back((command, reply));
                } else {
                    self.start(now, command, reply);
                }
            }
            Request::Stats { reply } => {
                let _ = reply.send(self.node.stats());
            }
            Request::Formed { reply } => match self.formed {
                Some(world) => {
                    let _ = reply.send(world);
                }
                None => self.formed_waiters.push(reply),
            },
            Request::Stopped { watcher } => self.stop_watchers.push(watcher),
        }
    }

    /// Every handle is gone: serve on for the linger, then stop.
    pub(crate) fn close_inbox(&mut self, now: Instant) {
        self.closing.get_or_insert(now);
    }

    /// The next transmit and its bytes: one datagram, or a GSO batch of up to
    /// `max_datagrams` (see [`NodeHost::set_max_datagrams`]) cut every `segment` bytes.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Outgoing<'_>> {
        let t = self
            .node
            .poll_transmit_batch(now, self.max_datagrams, &mut self.out)?;
        self.last_io = now;
        Some(Outgoing {
            to: t.destination,
            segment: t.segment_size.unwrap_or(t.size).max(1),
            ecn: t.ecn,
            bytes: &self.out[..t.size],
        })
    }

    /// How many datagrams one transmit may batch: what the socket can send in one GSO
    /// call (1, the default, for a socket without offload).
    pub(crate) fn set_max_datagrams(&mut self, n: usize) {
        self.max_datagrams = n.max(1);
    }

    /// Deliver every pending event to whoever waits for it, and retry parked sends.
    /// Returns whether anything happened (then transmits may be due again).
    pub(crate) fn drain_events(&mut self, now: Instant) -> bool {
        let mut any = self.retry_parked(now);
        while let Some(event) = self.node.poll_event() {
            any = true;
            self.on_event(event);
        }
        any
    }

    /// When to call `handle_timeout`: the node's deadline, or the end of the linger.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let node = self.node.poll_timeout();
        let linger = self
            .closing
            .map(|since| (since + self.linger).min((self.last_io + LINGER_QUIET).max(since)));
        node.into_iter().chain(linger).min()
    }

    /// Whether the driver should stop: every handle is gone and the linger is over.
    pub(crate) fn should_exit(&self, now: Instant) -> bool {
        self.closing.is_some_and(|since| {
            now >= since + self.linger || now >= (self.last_io + LINGER_QUIET).max(since)
        })
    }

    fn start(&mut self, now: Instant, command: Command, reply: Reply) {
        // Only a send can be refused for backpressure and retried, and cloning it clones
        // a `Bytes` handle; a collective's buffer moves into the node uncopied.
        let retry = matches!(command, Command::Send { .. }).then(|| command.clone());
        match self.node.command(now, command) {
            Ok(op) => {
                self.pending.insert(op, reply);
            }
            Err(CommandError::Backpressure { .. }) if retry.is_some() => {
                // Not an error for an async caller: wait until QUIC drains the queue.
                if let Some(command) = retry {
                    self.parked.push_back((command, reply));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn retry_parked(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some((command, reply)) = self.parked.pop_front() {
            // Parked commands are sends: the clone is a `Bytes` handle.
            match self.node.command(now, command.clone()) {
                Ok(op) => {
                    self.pending.insert(op, reply);
                    any = true;
                }
                Err(CommandError::Backpressure { .. }) => {
                    self.parked.push_front((command, reply));
                    break;
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    any = true;
                }
            }
        }
        any
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Completed { op, outcome } => {
                tracing::trace!(op = op.0, ok = outcome.is_ok(), "completed");
                if let Some(reply) = self.pending.remove(&op) {
                    // The caller may have dropped its future; nothing to do then.
                    let _ = reply.send(outcome.map_err(NexarError::from));
                }
            }
            Event::Ready {
                rank, world_size, ..
            } => {
                self.span.record("rank", rank);
                tracing::info!(rank, world_size, "ready");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok((rank, world_size)));
                }
            }
            Event::JoinFailed { error } => {
                tracing::warn!(%error, "join failed");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(error.into()));
                }
            }
            Event::ClusterFormed { world_size, epoch } => {
                tracing::info!(world_size, epoch, "cluster formed");
                self.formed = Some(world_size);
                for waiter in self.formed_waiters.drain(..) {
                    let _ = waiter.send(world_size);
                }
            }
            Event::JoinerRejected { remote, reason } => {
                tracing::warn!(%remote, ?reason, "joiner rejected");
            }
            other => tracing::debug!(?other, "event"),
        }
    }
}

// ---- shared by both drivers -----------------------------------------------------------

/// Socket buffer size we ask for: a collective bursts a whole congestion window at a peer,
/// and the kernel's default (about 200 KiB) drops most of it on loopback. The kernel caps
/// the request at `net.core.{r,w}mem_max`, which is fine: it is only a hint.
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;

/// Largest UDP payload we accept; QUIC never sends more than its path MTU.
pub(crate) const MAX_DATAGRAM: usize = 64 * 1024;

/// Datagrams read back-to-back after the one that woke the loop (bounded, so that requests
/// and the timer are never starved by a flood).
pub(crate) const RECV_BURST: usize = 32;

/// 32 bytes from the OS CSPRNG: node RNG seeds and the seed's join secret.
pub(crate) fn os_random() -> Result<[u8; 32], NexarError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        NexarError::io(
            "reading the OS random source",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(bytes)
}

fn bind(addr: SocketAddr) -> Result<(UdpSocket, SocketAddr), NexarError> {
    let socket = UdpSocket::bind(addr).map_err(|e| NexarError::io("binding the UDP socket", e))?;
    let local = socket
        .local_addr()
        .map_err(|e| NexarError::io("reading the socket address", e))?;
    Ok((socket, local))
}

/// Port 0 on loopback for a seed on loopback, else on the unspecified address of the
/// seed's family (the seed then fills in the IP it sees us connect from).
fn default_bind(seed: SocketAddr) -> SocketAddr {
    let ip = match seed.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

// ---- the seed ----------------------------------------------------------------------

/// A running seed: it forms the cluster and hands out the join ticket. It carries no
/// data; once every rank is welcomed the workers no longer need it. Dropping the handle
/// stops it (after the linger).
#[derive(Debug)]
pub struct Seed {
    tx: Outbox,
    ticket: JoinTicket,
    local_addr: SocketAddr,
}

impl Seed {
    /// Bind `addr` and start a seed for `world_size` ranks. The join secret and the
    /// node's RNG seed come from the OS CSPRNG. Must be called within the runtime.
    pub async fn bind(
        addr: SocketAddr,
        world_size: u32,
        config: Config,
    ) -> Result<Seed, NexarError> {
        let (socket, local) = bind(addr)?;
        let node_config = config.node_config(local)?;
        let secret = os_random()?;
        let now = Instant::now();
        let node = Node::seed(node_config, SeedConfig::new(world_size, secret), now)?;
        let ticket = node
            .ticket()
            .cloned()
            .ok_or_else(|| NexarError::Internal("a seed without a ticket".into()))?;
        let span = tracing::info_span!("nexar", role = "seed", %local);
        let host = NodeHost::new(node, span, config.linger, now);
        let (tx, inbox) = mpsc::unbounded();
        crate::driver::spawn(socket, host, inbox)?;
        Ok(Seed {
            tx,
            ticket,
            local_addr: local,
        })
    }

    /// What workers need to join (print it, or put it in `NEXAR_JOIN`); a secret.
    pub fn ticket(&self) -> &JoinTicket {
        &self.ticket
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Wait until every rank has been welcomed; gives the world size.
    pub async fn formed(&self) -> Result<u32, NexarError> {
        let (reply, rx) = oneshot::channel();
        send(&self.tx, Request::Formed { reply });
        rx.await.map_err(|_| NexarError::DriverStopped)
    }

    /// The seed's counters (`connections` drops to 0 once every worker has gone).
    pub async fn stats(&self) -> Result<NodeStats, NexarError> {
        stats(&self.tx).await
    }

    /// Drop the handle and wait until the driver has stopped (after its linger).
    pub async fn shutdown(self) {
        shutdown(self.tx).await
    }
}

fn send(tx: &Outbox, request: Request) {
    // A closed channel drops the request and with it the reply sender, so the caller's
    // receiver resolves to `Canceled`, which becomes `DriverStopped`.
    let _ = tx.unbounded_send(request);
}

/// Drop `tx` and wait until the driver task ends, which it does once every handle of
/// the node is gone and the linger is over. Needed before a runtime shuts down, which
/// would otherwise cut the linger short.
async fn shutdown(tx: Outbox) {
    let (watcher, stopped) = oneshot::channel();
    send(&tx, Request::Stopped { watcher });
    drop(tx);
    let _ = stopped.await;
}

async fn stats(tx: &Outbox) -> Result<NodeStats, NexarError> {
    let (reply, rx) = oneshot::channel();
    send(tx, Request::Stats { reply });
    rx.await.map_err(|_| NexarError::DriverStopped)
}

// ---- the client (one rank) -----------------------------------------------------------

/// One rank of a formed cluster. Dereferences to the world [`Communicator`], so every
/// collective is a method on the client (on `CommId::WORLD`); point-to-point messages use
/// world ranks. Dropping the last handle of the node stops it (after the linger).
#[derive(Debug)]
pub struct Client {
    world: Communicator,
    max_message: usize,
}

/// Bytes of a tagged frame's payload that are not the message (epoch, tag, sequence),
/// with room to spare.
const TAGGED_OVERHEAD: usize = 64;

/// A worker whose driver runs, waiting for the cluster to form.
#[derive(Debug)]
pub(crate) struct Joining {
    tx: Outbox,
    ready: oneshot::Receiver<Result<(u32, u32), NexarError>>,
    max_message: usize,
}

impl Joining {
    /// Bind, build the worker node and start its driver; the join proceeds in the
    /// background, so several can be started before any is awaited.
    pub(crate) fn start(ticket: &JoinTicket, config: &Config) -> Result<Self, NexarError> {
        let (socket, local) = bind(config.bind.unwrap_or_else(|| default_bind(ticket.addr)))?;
        let node_config = config.node_config(local)?;
        let now = Instant::now();
        let node = Node::worker(node_config, ticket, now)?;
        let span =
            tracing::info_span!("nexar", role = "worker", rank = tracing::field::Empty, %local);
        let mut host = NodeHost::new(node, span, config.linger, now);
        let (ready_tx, ready) = oneshot::channel();
        host.ready = Some(ready_tx);
        let (tx, inbox) = mpsc::unbounded();
        crate::driver::spawn(socket, host, inbox)?;
        let max_message =
            (config.node.limits.max_frame_len as usize).saturating_sub(TAGGED_OVERHEAD);
        Ok(Self {
            tx,
            ready,
            max_message,
        })
    }

    /// Wait for `Ready`.
    pub(crate) async fn finish(self) -> Result<Client, NexarError> {
        let (rank, size) = self.ready.await.map_err(|_| NexarError::DriverStopped)??;
        Ok(Client {
            world: Communicator {
                tx: self.tx,
                id: CommId::WORLD,
                rank,
                size,
                world_rank: rank,
            },
            max_message: self.max_message,
        })
    }
}

impl Client {
    /// Join the cluster the ticket names and wait until this rank is connected to every
    /// other (or the join fails: rejected, untrusted seed, `formation_timeout`).
    pub async fn join(ticket: &JoinTicket, config: Config) -> Result<Client, NexarError> {
        Joining::start(ticket, &config)?.finish().await
    }

    /// This node's rank in the world.
    pub fn rank(&self) -> u32 {
        self.world.rank
    }

    /// The number of ranks in the world.
    pub fn world_size(&self) -> u32 {
        self.world.size
    }

    /// The world communicator.
    pub fn world(&self) -> &Communicator {
        &self.world
    }

    /// Send `data` to world rank `to` under `tag`; returns once QUIC has taken the bytes
    /// (waiting while the send queue to `to` is full). One message carries at most
    /// [`max_message`](Self::max_message) bytes.
    pub async fn send(&self, to: u32, tag: u64, data: &[u8]) -> Result<(), NexarError> {
        self.send_bytes(to, tag, Bytes::copy_from_slice(data)).await
    }

    /// [`send`](Self::send) without copying the payload.
    pub async fn send_bytes(&self, to: u32, tag: u64, data: Bytes) -> Result<(), NexarError> {
        self.send_start(to, tag, data).await
    }

    /// The largest payload of one point-to-point message, in bytes.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Start a send and return at once; await the handle later.
    pub fn send_start(&self, to: u32, tag: u64, data: Bytes) -> Pending<()> {
        if data.len() > self.max_message {
            // The receiver would refuse the frame and drop the connection.
            return Pending::failed(NexarError::MessageTooLarge {
                len: data.len(),
                max: self.max_message,
            });
        }
        let span = tracing::debug_span!("send", rank = self.world.rank, to, tag, len = data.len());
        self.world
            .submit(Command::Send { to, tag, data }, span, |o| match o {
                Outcome::Sent => Ok(()),
                other => Err(unexpected("Sent", &other)),
            })
    }

    /// The next message from world rank `from` under `tag`, in the order it was sent.
    pub async fn recv(&self, from: u32, tag: u64) -> Result<Bytes, NexarError> {
        self.recv_start(from, tag).await
    }

    /// Post a receive and return at once; await the handle later.
    pub fn recv_start(&self, from: u32, tag: u64) -> Pending<Bytes> {
        let span = tracing::debug_span!("recv", rank = self.world.rank, from, tag);
        self.world
            .submit(Command::Recv { from, tag }, span, |o| match o {
                Outcome::Received { data, .. } => Ok(data),
                other => Err(unexpected("Received", &other)),
            })
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<NodeStats, NexarError> {
        stats(&self.world.tx).await
    }

    /// Drop this handle and wait until the node's driver has stopped: after every other
    /// handle of the node (communicators from `split`) is dropped too, and the linger is
    /// over. Call it before the runtime shuts down so that peers still get the last data.
    pub async fn shutdown(self) {
        shutdown(self.world.tx).await
    }
}

impl Deref for Client {
    type Target = Communicator;

    fn deref(&self) -> &Communicator {
        &self.world
    }
}

/// Start a seed on loopback and `n` workers in this process, and wait until the cluster
/// has formed. Returns the seed (keep it or drop it: the workers no longer need it) and
/// the clients ordered by rank.
pub async fn bootstrap_local(n: u32) -> Result<(Seed, Vec<Client>), NexarError> {
    bootstrap_local_with(n, Config::default()).await
}

/// [`bootstrap_local`] with a configuration for the seed and every worker.
pub async fn bootstrap_local_with(
    n: u32,
    config: Config,
) -> Result<(Seed, Vec<Client>), NexarError> {
    let config = config.with_loopback_transport();
    let seed = Seed::bind(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        n,
        config.clone(),
    )
    .await?;
    // Every join must be under way before any is awaited: none completes alone.
    let joining = (0..n)
        .map(|_| Joining::start(seed.ticket(), &config))
        .collect::<Result<Vec<_>, _>>()?;
    let mut clients = Vec::with_capacity(n as usize);
    for j in joining {
        clients.push(j.finish().await?);
    }
    clients.sort_by_key(Client::rank);
    Ok((seed, clients))
}

// ---- communicators and their collectives ---------------------------------------------

/// A group of ranks that run collectives together: the world, or one made by
/// [`split`](Communicator::split). Ranks and roots in its methods are ranks within it.
///
/// Each collective has two forms. The `async fn` takes slices and copies in and out
/// (safe, and the caller keeps its memory). The `*_start` form takes an owned `Vec`, moves
/// it to the node without a copy, and returns a [`Pending`] to await later, so a rank can
/// overlap several operations or its own computation with communication.
#[derive(Debug)]
pub struct Communicator {
    tx: Outbox,
    id: CommId,
    rank: u32,
    size: u32,
    /// This node's world rank (for spans).
    world_rank: u32,
}

impl Communicator {
    /// The communicator's id (`CommId::WORLD` for the world).
    pub fn id(&self) -> CommId {
        self.id
    }

    /// Our rank within it.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Its number of ranks.
    pub fn size(&self) -> u32 {
        self.size
    }

    fn submit<R>(
        &self,
        command: Command,
        span: tracing::Span,
        map: fn(Outcome) -> Result<R, NexarError>,
    ) -> Pending<R> {
        let (reply, rx) = oneshot::channel();
        span.in_scope(|| tracing::trace!("submit"));
        send(&self.tx, Request::Command { command, reply });
        Pending {
            state: Ok(rx),
            map,
            span,
        }
    }

    fn collective<T: Element>(
        &self,
        kind: CollectiveKind,
        op: ReduceOp,
        root: u32,
        count: usize,
        input: Vec<T>,
    ) -> PendingCollective<T> {
        let span = tracing::debug_span!(
            "collective",
            rank = self.world_rank,
            comm = self.id.0,
            ?kind,
            dtype = ?T::DTYPE,
            count
        );
        let command = Command::Collective {
            comm: self.id,
            kind,
            op,
            root,
            count,
            input: Buffer::from_vec(input),
        };
        self.submit(command, span, typed_output::<T>)
    }

    fn blocks(&self, what: &'static str, len: usize) -> Result<usize, NexarError> {
        let size = self.size as usize;
        if len % size == 0 {
            Ok(len / size)
        } else {
            Err(NexarError::Length {
                what,
                expected: len.next_multiple_of(size),
                got: len,
            })
        }
    }

    // -- non-blocking forms (owned buffers) --

    /// Start an all-reduce; resolves to the reduced vector.
    pub fn all_reduce_start<T: Element>(&self, data: Vec<T>, op: ReduceOp) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::AllReduce, op, 0, count, data)
    }

    /// Start a broadcast of `root`'s vector. Every rank passes a vector of the same length;
    /// only the root's contents are used. Resolves to the root's data.
    pub fn broadcast_start<T: Element>(&self, data: Vec<T>, root: u32) -> PendingCollective<T> {
        let count = data.len();
        let input = if self.rank == root { data } else { Vec::new() };
        self.collective(
            CollectiveKind::Broadcast,
            ReduceOp::None,
            root,
            count,
            input,
        )
    }

    /// Start a reduce to `root`; resolves to the reduction at the root and to an empty
    /// vector elsewhere.
    pub fn reduce_start<T: Element>(
        &self,
        data: Vec<T>,
        op: ReduceOp,
        root: u32,
    ) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::Reduce, op, root, count, data)
    }

    /// Start an all-gather of every rank's `data` (same length everywhere); resolves to
    /// the `size × len` concatenation in rank order.
    pub fn all_gather_start<T: Element>(&self, data: Vec<T>) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::AllGather, ReduceOp::None, 0, count, data)
    }

    /// Start a reduce-scatter: `data` holds `size` blocks; resolves to this rank's block
    /// of the reduction.
    pub fn reduce_scatter_start<T: Element>(
        &self,
        data: Vec<T>,
        op: ReduceOp,
    ) -> PendingCollective<T> {
        match self.blocks("reduce_scatter input", data.len()) {
            Ok(count) => self.collective(CollectiveKind::ReduceScatter, op, 0, count, data),
            Err(e) => Pending::failed(e),
        }
    }

    /// Start a gather to `root`; resolves to the `size × len` concatenation at the root
    /// and to an empty vector elsewhere.
    pub fn gather_start<T: Element>(&self, data: Vec<T>, root: u32) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::Gather, ReduceOp::None, root, count, data)
    }

    /// Start a scatter from `root` of blocks of `count` elements: the root passes
    /// `size × count` elements, the others pass anything (it is not sent). Resolves to this
    /// rank's block.
    pub fn scatter_start<T: Element>(
        &self,
        data: Vec<T>,
        count: usize,
        root: u32,
    ) -> PendingCollective<T> {
        let input = if self.rank == root { data } else { Vec::new() };
        self.collective(CollectiveKind::Scatter, ReduceOp::None, root, count, input)
    }

    /// Start an all-to-all: `data` holds `size` blocks, block `d` for rank `d`; resolves
    /// to `size` blocks, block `s` from rank `s`.
    pub fn all_to_all_start<T: Element>(&self, data: Vec<T>) -> PendingCollective<T> {
        match self.blocks("all_to_all input", data.len()) {
            Ok(count) => self.collective(CollectiveKind::AllToAll, ReduceOp::None, 0, count, data),
            Err(e) => Pending::failed(e),
        }
    }

    /// Start an inclusive scan: rank r gets `op` over ranks 0..=r.
    pub fn scan_start<T: Element>(&self, data: Vec<T>, op: ReduceOp) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::Scan, op, 0, count, data)
    }

    /// Start an exclusive scan: rank r gets `op` over ranks 0..r (rank 0: the identity).
    pub fn exclusive_scan_start<T: Element>(
        &self,
        data: Vec<T>,
        op: ReduceOp,
    ) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::ExclusiveScan, op, 0, count, data)
    }

    /// Start a barrier.
    pub fn barrier_start(&self) -> Pending<()> {
        let span = tracing::debug_span!("barrier", rank = self.world_rank, comm = self.id.0);
        let command = Command::Collective {
            comm: self.id,
            kind: CollectiveKind::Barrier,
            op: ReduceOp::None,
            root: 0,
            count: 0,
            input: Buffer::from_vec(Vec::<u8>::new()),
        };
        self.submit(command, span, |o| match o {
            Outcome::Collective { .. } => Ok(()),
            other => Err(unexpected("Collective", &other)),
        })
    }

    // -- slice forms --

    /// Reduce `data` across all ranks in place.
    pub async fn all_reduce<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        let out = self.all_reduce_start(data.to_vec(), op).await?;
        copy_out("all_reduce output", data, &out)
    }

    /// Copy `root`'s `data` to every rank's `data` (same length everywhere).
    pub async fn broadcast<T: Element>(&self, data: &mut [T], root: u32) -> Result<(), NexarError> {
        let input = if self.rank == root {
            data.to_vec()
        } else {
            Vec::new()
        };
        let count = data.len();
        let out = self
            .collective(
                CollectiveKind::Broadcast,
                ReduceOp::None,
                root,
                count,
                input,
            )
            .await?;
        copy_out("broadcast output", data, &out)
    }

    /// Reduce every rank's `data` into the root's `data` (others' are left unchanged).
    pub async fn reduce<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
        root: u32,
    ) -> Result<(), NexarError> {
        let out = self.reduce_start(data.to_vec(), op, root).await?;
        if self.rank == root {
            copy_out("reduce output", data, &out)?;
        }
        Ok(())
    }

    /// Concatenate every rank's `send` into every rank's `recv` (`size × send.len()`).
    pub async fn all_gather<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), NexarError> {
        check_len(
            "all_gather recv",
            recv.len(),
            send.len() * self.size as usize,
        )?;
        let out = self.all_gather_start(send.to_vec()).await?;
        copy_out("all_gather recv", recv, &out)
    }

    /// Reduce every rank's `send` (`size × recv.len()`) and give block r to rank r's `recv`.
    pub async fn reduce_scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        check_len(
            "reduce_scatter send",
            send.len(),
            recv.len() * self.size as usize,
        )?;
        let out = self.reduce_scatter_start(send.to_vec(), op).await?;
        copy_out("reduce_scatter recv", recv, &out)
    }

    /// Concatenate every rank's `send` into the root's `recv` (`size × send.len()`);
    /// `recv` is only used at the root (others may pass an empty slice).
    pub async fn gather<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: u32,
    ) -> Result<(), NexarError> {
        if self.rank == root {
            check_len("gather recv", recv.len(), send.len() * self.size as usize)?;
        }
        let out = self.gather_start(send.to_vec(), root).await?;
        if self.rank == root {
            copy_out("gather recv", recv, &out)?;
        }
        Ok(())
    }

    /// Split the root's `send` (`size × recv.len()`) into blocks, block r to rank r's
    /// `recv`; `send` is only used at the root.
    pub async fn scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: u32,
    ) -> Result<(), NexarError> {
        let input = if self.rank == root {
            check_len("scatter send", send.len(), recv.len() * self.size as usize)?;
            send.to_vec()
        } else {
            Vec::new()
        };
        let out = self
            .collective(
                CollectiveKind::Scatter,
                ReduceOp::None,
                root,
                recv.len(),
                input,
            )
            .await?;
        copy_out("scatter recv", recv, &out)
    }

    /// Exchange blocks: block d of `send` goes to rank d, block s of `recv` comes from
    /// rank s (`send.len() == recv.len()`, a multiple of the size).
    pub async fn all_to_all<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), NexarError> {
        check_len("all_to_all recv", recv.len(), send.len())?;
        let out = self.all_to_all_start(send.to_vec()).await?;
        copy_out("all_to_all recv", recv, &out)
    }

    /// Inclusive prefix reduction in place: rank r gets `op` over ranks 0..=r.
    pub async fn scan<T: Element>(&self, data: &mut [T], op: ReduceOp) -> Result<(), NexarError> {
        let out = self.scan_start(data.to_vec(), op).await?;
        copy_out("scan output", data, &out)
    }

    /// Exclusive prefix reduction in place: rank r gets `op` over ranks 0..r, rank 0 the
    /// identity of `op`.
    pub async fn exclusive_scan<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        let out = self.exclusive_scan_start(data.to_vec(), op).await?;
        copy_out("exclusive_scan output", data, &out)
    }

    /// Wait until every rank of the communicator has reached the barrier.
    pub async fn barrier(&self) -> Result<(), NexarError> {
        self.barrier_start().await
    }

    /// MPI_Comm_split: ranks passing the same `color` form a new communicator, ordered by
    /// (`key`, rank here); `None` joins none and gets `None`. Every rank must call it.
    pub async fn split(
        &self,
        color: Option<u32>,
        key: i64,
    ) -> Result<Option<Communicator>, NexarError> {
        let span = tracing::debug_span!(
            "split",
            rank = self.world_rank,
            comm = self.id.0,
            ?color,
            key
        );
        let command = Command::Split {
            comm: self.id,
            color,
            key,
        };
        let made = self
            .submit(command, span, |o| match o {
                Outcome::Split { comm } => Ok(comm),
                other => Err(unexpected("Split", &other)),
            })
            .await?;
        Ok(made.map(|(id, rank, size)| Communicator {
            tx: self.tx.clone(),
            id,
            rank,
            size,
            world_rank: self.world_rank,
        }))
    }
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), NexarError> {
    if got == expected {
        Ok(())
    } else {
        Err(NexarError::Length {
            what,
            expected,
            got,
        })
    }
}

fn copy_out<T: Copy>(what: &'static str, dst: &mut [T], src: &[T]) -> Result<(), NexarError> {
    if dst.len() != src.len() {
        return Err(NexarError::Internal(format!(
            "{what}: the node returned {} elements for a buffer of {}",
            src.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(src);
    Ok(())
}

fn typed_output<T: Element>(outcome: Outcome) -> Result<Vec<T>, NexarError> {
    match outcome {
        Outcome::Collective { buffer } => buffer.into_vec::<T>().map_err(|b| {
            NexarError::Internal(format!("collective returned {:?} elements", b.dtype()))
        }),
        other => Err(unexpected("Collective", &other)),
    }
}

fn unexpected(wanted: &str, got: &Outcome) -> NexarError {
    let got = match got {
        Outcome::Sent => "Sent",
        Outcome::Received { .. } => "Received",
        Outcome::Collective { .. } => "Collective",
        Outcome::Split { .. } => "Split",
        _ => "another outcome",
    };
    NexarError::Internal(format!("expected outcome {wanted}, got {got}"))
}

// ---- pending operations ---------------------------------------------------------------

/// An operation under way; `.await` it for the result. Dropping it does not cancel the
/// operation (the other ranks take part in it regardless); the result is discarded.
#[must_use = "the operation runs anyway; await the handle to get its result"]
#[derive(Debug)]
pub struct Pending<R> {
    state: Result<oneshot::Receiver<Result<Outcome, NexarError>>, Option<NexarError>>,
    map: fn(Outcome) -> Result<R, NexarError>,
    span: tracing::Span,
}

/// A collective under way; resolves to its output vector.
pub type PendingCollective<T> = Pending<Vec<T>>;

impl<R> Pending<R> {
    fn failed(error: NexarError) -> Self {
        Self {
            state: Err(Some(error)),
            map: |_| Err(NexarError::Internal("polled a failed operation".into())),
            span: tracing::Span::none(),
        }
    }
}

impl<R> Future for Pending<R> {
    type Output = Result<R, NexarError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (a oneshot receiver, a fn pointer, a span).
        let this = self.get_mut();
        let _entered = this.span.enter();
        let rx = match &mut this.state {
            Ok(rx) => rx,
            Err(error) => {
                return Poll::Ready(Err(error.take().unwrap_or(NexarError::DriverStopped)))
            }
        };
        match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(NexarError::DriverStopped)),
            Poll::Ready(Ok(result)) => {
                let result = result.and_then(this.map);
                if let Err(error) = &result {
                    tracing::debug!(%error, "failed");
                }
                Poll::Ready(result)
            }
        }
    }
}
