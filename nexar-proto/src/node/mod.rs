//! `Node`: one seed or worker as a pure state machine over quinn-proto.
//!
//! The node composes the layers: the transport (QUIC connections and framed streams),
//! membership (the seed's joiners or the worker's join and mesh) and tagged
//! point-to-point. It does no I/O; see the crate docs for the run-loop contract.

mod abort;
mod checkpoint;
mod command;
mod dispatch;
mod epoch;
mod motion;
mod p2p;
mod restart;
mod rpc;
#[cfg(feature = "sim")]
mod sim_host;
mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::Hello;
use crate::collective::exec::{ExecConfig, Executor};
use crate::collective::CommId;
use crate::config::{NodeConfig, SeedConfig};
use crate::crypto::{ClusterCa, DetRng, BOOTSTRAP_SERVER_NAME};
use crate::error::{CommandError, ConfigError};
use crate::event::{Event, OpId};
use crate::membership::coordinator::Coordinator;
use crate::membership::seed::SeedState;
use crate::membership::worker::WorkerState;
use crate::p2p::P2p;
use crate::rpc::Rpc;
use crate::ticket::JoinTicket;
use crate::transport::{SendError, Transport, TransportLimits};
use crate::Transmit;

pub use command::Command;

/// Seed or worker, with the role's state machine.
#[derive(Debug)]
enum Role {
    Seed {
        state: Box<SeedState>,
        ticket: JoinTicket,
    },
    Worker(Box<WorkerState>),
}

/// Counters for tests, benchmarks and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Bytes reserved by stream decoders across all connections.
    pub buffered_bytes: usize,
    /// Open QUIC connections (including those closing).
    pub connections: usize,
    /// Seed: joiners not yet welcomed or rejected (handshaking, or queued for the next
    /// checkpoint).
    pub pending_joiners: usize,
    /// Worker: bytes of tagged messages received that no receive has claimed yet, each
    /// counted as its payload plus a fixed overhead.
    pub unmatched_bytes: usize,
    /// Messages dropped because they belonged to an earlier epoch (or, at the seed, came
    /// from an evicted member).
    pub stale_dropped: u64,
    /// Worker: traffic held for the next epoch, as payload bytes plus a fixed overhead
    /// per message (bounded by `max_early_bytes`).
    pub future_held_bytes: usize,
    /// Worker: messages from a later epoch dropped, being further ahead than the next
    /// epoch or over the bound on what is held.
    pub future_dropped: u64,
    /// Worker: collective chunks held for operations not started here yet, as payload
    /// bytes plus a fixed overhead per chunk (this epoch).
    pub early_held_bytes: usize,
    /// Worker: collective abort chunks ignored in this epoch (no fingerprint, naming an
    /// operation too old to judge, or contradicting what their sender told us).
    pub aborts_ignored: u64,
    /// RPC calls of ours awaiting an answer.
    pub rpc_calls: usize,
    /// RPC requests handed to the application and not answered yet.
    pub rpc_requests: usize,
    /// RPC responses ignored: for no call of ours, from the wrong rank, or too late.
    pub rpc_ignored_responses: u64,
    /// RPC requests refused `Overloaded` (their caller was at `max_rpc_inbound`).
    pub rpc_overloaded: u64,
    /// Accepted connections that have not proven themselves yet (seed: no valid join
    /// proof; mesh acceptor: TLS handshake not complete).
    pub unproven_connections: usize,
    /// Unproven connections closed to make room for newer ones (`max_joiners`,
    /// `max_unproven_per_ip`).
    pub evicted_unproven: u64,
    /// New connections answered with a stateless QUIC Retry (address validation).
    pub retries_sent: u64,
    /// Accepted connections closed because their handshake missed `handshake_timeout`.
    pub handshake_timeouts: u64,
    /// New connections refused outright (not accepting, or no room could be made).
    pub refused_connections: u64,
    /// The most transport events one input call handled: a node that turns one input
    /// into unbounded internal work shows here (the simulator's swarm checks it).
    pub max_process_steps: u64,
}

/// A nexar node: a seed that forms the cluster, or a worker that is one rank of it.
pub struct Node {
    transport: Transport,
    role: Role,
    tls: tls::Tls,
    max_unmatched: usize,
    /// Largest frame payload peers accept (our decoder's limit; all nodes share it).
    max_frame_len: u32,
    p2p: P2p,
    rpc: Rpc,
    /// The deadline of an RPC that names none (`NodeConfig::rpc_timeout`).
    rpc_timeout: Option<Duration>,
    /// Runs collectives; exists once the worker is ready.
    exec: Option<Executor>,
    exec_config: ExecConfig,
    events: VecDeque<Event>,
    /// Failure detection, recovery and epoch changes (workers).
    motion: motion::Motion,
    next_op: u64,
    /// See [`NodeStats::max_process_steps`].
    max_process_steps: u64,
    /// The latest `now` seen; earlier readings are clamped to it (time never goes back).
    now: Instant,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("role", &self.role)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A seed for `seed.world_size` ranks. Its [`ticket`](Self::ticket) is what workers
    /// need; the seed starts listening at once.
    pub fn seed(config: NodeConfig, seed: SeedConfig, now: Instant) -> Result<Self, ConfigError> {
        if seed.world_size == 0 {
            return Err(ConfigError::EmptyWorld);
        }
        let tls = tls::Tls::new(&config)?;
        let mut rng = DetRng::derive(&config.rng_seed, "cluster");
        let cluster_id: [u8; 16] = rng.array();
        let ca = ClusterCa::new(&mut rng, cluster_id, tls.unix_time());
        let ticket = JoinTicket {
            addr: config.listen_addr,
            secret: seed.secret,
            pin: tls.identity().spki_sha256(),
        };
        let mut transport = Transport::new(tls.endpoint_config()?, transport_limits(&config));
        transport.set_server_config(Some(tls.bootstrap_server_config()?), true);
        let coord = Coordinator::new(
            config.recovery,
            config.heartbeat_interval,
            config.heartbeat_timeout,
            config.recovery_timeout,
        );
        let mut state = SeedState::new(
            seed.world_size,
            seed.secret,
            ca,
            cluster_id,
            config.join_timeout,
            coord,
        );
        state.set_elastic_limits(
            seed.max_world_size,
            seed.max_pending_joins,
            config.min_world_size,
        )?;
        state.set_origin(crate::membership::Origin {
            rng_seed: config.rng_seed,
            unix_time: config.unix_time,
            incarnation: config.incarnation,
            addr: config.listen_addr,
        });
        Ok(Self::assemble(
            config,
            transport,
            Role::Seed {
                state: Box::new(state),
                ticket,
            },
            tls,
            now,
        ))
    }

    /// A worker that joins the cluster the ticket names. Dialling starts at once;
    /// `Event::Ready` (or `Event::JoinFailed`) tells how it went.
    pub fn worker(
        config: NodeConfig,
        ticket: &JoinTicket,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let mut tls = tls::Tls::new(&config)?;
        let csr = tls
            .identity()
            .certificate_request_der("nexar-worker")
            .map_err(|e| ConfigError::Crypto(e.to_string()))?;
        let hello = Hello {
            version: crate::PROTOCOL_VERSION,
            join_proof: [0; 32],
            csr_der: Bytes::from(csr),
            listen_addr: config.listen_addr,
            requested_rank: config.requested_rank,
            incarnation: config.incarnation,
        };
        let deadline = now + config.formation_timeout;
        let mut state = WorkerState::new(ticket.clone(), hello, now, deadline);
        let mut transport = Transport::new(tls.endpoint_config()?, transport_limits(&config));
        let client = tls.bootstrap_client_config(ticket.pin)?;
        match transport.connect(now, client, ticket.addr, BOOTSTRAP_SERVER_NAME) {
            Ok(conn) => state.set_seed_conn(conn),
            Err(e) => return Err(ConfigError::Crypto(format!("cannot dial the seed: {e}"))),
        }
        Ok(Self::assemble(
            config,
            transport,
            Role::Worker(Box::new(state)),
            tls,
            now,
        ))
    }

    fn assemble(
        config: NodeConfig,
        transport: Transport,
        role: Role,
        tls: tls::Tls,
        now: Instant,
    ) -> Self {
        let mut node = Self {
            transport,
            role,
            tls,
            max_unmatched: config.max_unmatched_bytes,
            max_frame_len: config.limits.max_frame_len,
            p2p: P2p::new(config.max_message_len),
            rpc: Rpc::new(config.max_rpc_inbound),
            rpc_timeout: config.rpc_timeout,
            exec: None,
            exec_config: ExecConfig {
                collective: config.collective.clone(),
                timeout: config.collective_timeout,
                max_early_bytes: config.max_early_bytes,
            },
            events: VecDeque::new(),
            motion: motion::Motion::new(&config),
            next_op: 0,
            max_process_steps: 0,
            now,
        };
        node.process(now);
        node
    }

    // ---- getters -------------------------------------------------------------------

    /// This worker's rank once welcomed; `None` for the seed or before the Welcome.
    pub fn rank(&self) -> Option<u32> {
        match &self.role {
            Role::Worker(w) => w.membership().map(|m| m.rank),
            Role::Seed { .. } => None,
        }
    }

    /// The number of ranks, once known.
    pub fn world_size(&self) -> Option<u32> {
        match &self.role {
            Role::Worker(w) => w.membership().map(|m| m.world_size),
            Role::Seed { state, .. } => state.is_formed().then_some(state.world_size()),
        }
    }

    /// The membership epoch (0 before a worker is welcomed).
    pub fn epoch(&self) -> u64 {
        match &self.role {
            Role::Worker(w) => w.membership().map_or(0, |m| m.epoch),
            Role::Seed { state, .. } => state.epoch(),
        }
    }

    /// The seed's join ticket; `None` on a worker.
    pub fn ticket(&self) -> Option<&JoinTicket> {
        match &self.role {
            Role::Seed { ticket, .. } => Some(ticket),
            Role::Worker(_) => None,
        }
    }

    /// Size of a communicator and our rank in it, once ready.
    pub fn comm_info(&self, comm: CommId) -> Option<(u32, u32)> {
        self.exec.as_ref()?.comm_info(comm)
    }

    /// The largest payload a tagged `Send` accepts (`NodeConfig::max_message_len`).
    pub fn max_message(&self) -> usize {
        self.p2p.max_len()
    }

    /// The largest tagged message sent in one frame (the frame limit less the headers);
    /// longer ones travel in parts.
    pub fn max_single_frame_message(&self) -> usize {
        (self.max_frame_len as usize).saturating_sub(TAGGED_OVERHEAD)
    }

    /// True once a worker has emitted `Ready`.
    pub fn is_ready(&self) -> bool {
        matches!(&self.role, Role::Worker(w) if w.is_ready())
    }

    /// A welcomed worker's peer table from the Welcome: (rank, address) in rank order,
    /// including itself. `None` for the seed or before the Welcome.
    pub fn peers(&self) -> Option<Vec<(u32, SocketAddr)>> {
        match &self.role {
            Role::Worker(w) => w
                .membership()
                .map(|m| m.addrs.iter().map(|(r, a)| (*r, *a)).collect()),
            Role::Seed { .. } => None,
        }
    }

    /// Test hook (feature `sim`): the most recent encoded frames this node put on control
    /// streams, and the reason bytes of its application closes (bounded, oldest dropped).
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn sent_control_frames(&self) -> Vec<Bytes> {
        self.transport.sent_control_frames()
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let admission = self.transport.admission();
        NodeStats {
            buffered_bytes: self.transport.buffered_bytes(),
            connections: self.transport.connection_count(),
            pending_joiners: match &self.role {
                Role::Seed { state, .. } => state.pending_joiners(),
                Role::Worker(_) => 0,
            },
            unmatched_bytes: self.p2p.total_unmatched_bytes(),
            stale_dropped: match &self.role {
                Role::Seed { state, .. } => state.coord.stale(),
                Role::Worker(_) => self.motion.stale(),
            },
            future_held_bytes: self.motion.future_bytes(),
            future_dropped: self.motion.future_dropped,
            early_held_bytes: self.exec.as_ref().map_or(0, |e| e.early_bytes()),
            aborts_ignored: self
                .exec
                .as_ref()
                .map_or(0, |e| e.counters().aborts_ignored),
            rpc_calls: self.rpc.calls_in_flight(),
            rpc_requests: self.rpc.requests_pending(),
            rpc_ignored_responses: self.rpc.counters().ignored_responses,
            rpc_overloaded: self.rpc.counters().overloaded,
            unproven_connections: admission.unproven,
            evicted_unproven: admission.evicted,
            retries_sent: admission.retries,
            handshake_timeouts: admission.handshake_timeouts,
            refused_connections: admission.refused,
            max_process_steps: self.max_process_steps,
        }
    }

    // ---- inputs --------------------------------------------------------------------

    /// A UDP datagram arrived from `from` (`ecn`: the two ECN bits of the IP header).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<u8>,
        data: BytesMut,
    ) {
        let now = self.input_clock(now);
        let conn = self.transport.handle_datagram(now, from, ecn, data);
        if let Role::Worker(w) = &mut self.role {
            if conn.is_some() && conn == w.seed_conn() {
                w.seed_heard();
            }
        }
        self.process(now);
    }

    /// The deadline from `poll_timeout` passed; pass the clock reading, not the deadline.
    /// Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.input_clock(now);
        self.transport.handle_timeout(now);
        let actions = match &mut self.role {
            Role::Seed { state, .. } => state.handle_timeout(now),
            Role::Worker(w) => w.handle_timeout(now),
        };
        self.apply(now, actions);
        self.motion_tick(now);
        if let Some(exec) = &mut self.exec {
            let mut out = Vec::new();
            exec.handle_timeout(now, &mut out);
            self.apply_exec(out);
        }
        self.rpc_timeouts(now);
        self.process(now);
    }

    // ---- outputs -------------------------------------------------------------------

    /// The next datagram to send, written into `buf`. Call until `None` after every input.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.poll_transmit_batch(now, 1, buf)
    }

    /// As [`poll_transmit`](Self::poll_transmit), but the transmit may be a GSO batch of
    /// up to `max_datagrams` datagrams to one destination, each `segment_size` bytes but
    /// the last; a driver whose socket cannot offload sends them one by one.
    #[must_use]
    pub fn poll_transmit_batch(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let now = self.clock(now);
        let t = self.transport.poll_transmit(now, max_datagrams, buf);
        // Sending can make quinn report something (drained, CIDs retired); finding nothing
        // to send changed nothing.
        if t.is_some() || self.transport.has_events() {
            self.process(now);
        }
        t
    }

    /// The next event for the application. Call until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` next, if ever.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let role = match &self.role {
            Role::Seed { state, .. } => state.poll_timeout(),
            Role::Worker(w) => w.poll_timeout(),
        };
        let exec = self.exec.as_ref().and_then(Executor::poll_timeout);
        let rpc = self.rpc.poll_timeout();
        [
            self.transport.poll_timeout(),
            role,
            exec,
            self.motion.poll_timeout(self.detecting()),
            rpc,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- internals -----------------------------------------------------------------

    /// The clock for a network input or a timer. A node that is run at all hears a timer
    /// at least every heartbeat interval once formed, so a longer gap since the last
    /// input means this process was stopped (a pause, swapping, a debugger): the seed
    /// then gives its members time to come back before it judges anyone by what it
    /// could not hear. Workers' liveness handles its own sleep (see `Liveness`).
    fn input_clock(&mut self, now: Instant) -> Instant {
        let last = self.now;
        let now = self.clock(now);
        if let Role::Seed { state, .. } = &mut self.role {
            state.coord.woke(last, now);
        }
        now
    }

    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    fn ready_membership(&self) -> Result<(u32, u32, u64), CommandError> {
        match &self.role {
            Role::Worker(w) if w.is_ready() => {
                let m = w.membership().ok_or(CommandError::NotReady)?;
                Ok((m.rank, m.world_size, m.epoch))
            }
            _ => Err(CommandError::NotReady),
        }
    }

    fn conn_of(&self, rank: u32) -> Result<crate::transport::ConnId, CommandError> {
        // A rank found down stays unreachable until an epoch change says otherwise.
        if self.motion.is_down(rank) {
            return Err(CommandError::PeerUnavailable { rank });
        }
        match &self.role {
            Role::Worker(w) => w
                .conn_of(rank)
                .ok_or(CommandError::PeerUnavailable { rank }),
            Role::Seed { .. } => Err(CommandError::NotReady),
        }
    }
}

fn transport_limits(config: &NodeConfig) -> TransportLimits {
    TransportLimits {
        codec: config.limits,
        // An unproven peer has one thing to say, a Hello; nothing larger is read from it.
        pre_proof: crate::codec::Limits {
            max_frame_len: Hello::max_payload_len(&config.limits).min(config.limits.max_frame_len),
            ..config.limits
        },
        max_queued_bytes: config.max_queued_bytes,
        max_unproven: config.max_joiners,
        max_unproven_per_ip: config.max_unproven_per_ip,
        handshake_timeout: config.handshake_timeout,
        retry_above_handshaking: config.retry_above_handshaking,
    }
}

/// Bytes of a `Tagged` message before its payload: epoch, comm, tag, seq, payload length.
const TAGGED_OVERHEAD: usize = 8 + 8 + 8 + 8 + 4;

fn send_error(to: u32, e: SendError) -> CommandError {
    match e {
        SendError::QueueFull { queued, limit } => CommandError::Backpressure { to, queued, limit },
        SendError::UnknownConnection | SendError::Closing => {
            CommandError::PeerUnavailable { rank: to }
        }
    }
}
