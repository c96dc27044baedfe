//! Node configuration: every knob, every limit, and the seed all randomness comes from.

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::Limits;
use crate::collective::select::CollectiveConfig;

/// Configuration shared by seeds and workers.
///
/// The core never reads a clock, the environment or an OS RNG, so everything it would
/// otherwise take from the process arrives here: `rng_seed` (drawn by the driver from the
/// OS CSPRNG in production, fixed in simulation, which is what makes runs replayable) and
/// `unix_time` (the wall clock at start, for certificate validity).
#[derive(Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Source of every random draw: keys, connection IDs, TLS randoms, key exchange.
    pub rng_seed: [u8; 32],
    /// Which life of this node identity this is; a restarted process must use a new one,
    /// so peers never confuse it with its earlier self.
    pub incarnation: u64,
    /// Seconds since the Unix epoch when the node starts; certificates are issued and
    /// checked against this instant.
    pub unix_time: u64,
    /// The address peers should dial to reach this node (what the socket is bound to,
    /// or a public address in front of it). An unspecified IP is replaced by the seed
    /// with the IP it sees the worker's connection come from.
    pub listen_addr: SocketAddr,
    /// Ask the seed for this rank (as Slurm's or torchrun's launcher knows it).
    pub requested_rank: Option<u32>,
    /// Frame-size and field limits for every decoder.
    pub limits: Limits,
    /// Seed: a joiner must finish TLS and send Hello within this, or it is rejected.
    pub join_timeout: Duration,
    /// Worker: give up if not welcomed and connected to every peer within this; if
    /// nothing at all came back from the seed's address by then, with
    /// `JoinError::SeedUnreachable` naming it (and a warning in the log after 2 s).
    pub formation_timeout: Duration,
    /// QUIC idle timeout: a peer silent this long is gone.
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval (must be well under `idle_timeout`).
    pub keep_alive: Duration,
    /// The most accepted connections not yet proven at once, handshaking or established:
    /// at the seed, those that have not passed the join proof; at a worker's mesh
    /// acceptor, those whose TLS handshake (client certificate) has not completed. A new
    /// connection past it (or past `max_unproven_per_ip`) evicts the oldest unproven one,
    /// so memory stays bounded and a flood of slow connections cannot keep a joiner out.
    pub max_joiners: usize,
    // ---- admission of unauthenticated connections (see also `max_joiners`) ----
    /// The most unproven connections from one IP address (same eviction rule).
    pub max_unproven_per_ip: usize,
    /// An accepted connection whose QUIC/TLS handshake has not completed by then is
    /// closed: a half-open slot costs an attacker one Initial, so it must not last the
    /// whole `join_timeout`.
    pub handshake_timeout: Duration,
    /// With this many accepted connections still handshaking, a new one from an address
    /// not yet validated is answered with a stateless QUIC Retry: it holds no slot until
    /// it proves it receives at its source address (spoofed Initials cost nothing). Zero
    /// retries every connection; below it none pays Retry's extra round trip.
    pub retry_above_handshaking: usize,
    /// Per peer, the most bytes of unmatched tagged messages held before we stop reading
    /// from that peer (QUIC flow control then pushes back on the sender).
    pub max_unmatched_bytes: usize,
    /// The longest tagged message sent or accepted, in bytes. Messages longer than one
    /// frame travel in parts; a receiver refuses a longer announcement before allocating
    /// anything, and allocates a message only once a receive claims it.
    pub max_message_len: usize,
    /// Per peer and stream class, the most bytes queued beyond QUIC's own send buffer;
    /// a send past it fails with `CommandError::Backpressure`.
    pub max_queued_bytes: usize,
    /// Largest UDP payload we send or accept, and the ceiling MTU discovery probes up to.
    /// The default fits an Ethernet path; loopback and jumbo-frame networks carry far
    /// larger datagrams, and each datagram is a syscall, so raising it there is the
    /// single largest throughput gain (the drivers raise it for loopback clusters).
    pub max_udp_payload: u16,
    /// Collective algorithm thresholds and pipelining segment size.
    pub collective: CollectiveConfig,
    /// Every collective must finish within this, or fails with `OpError::Timeout`.
    pub collective_timeout: Duration,
    /// Bytes of chunks held for collectives not yet started here; past it we stop
    /// reading the sender (QUIC flow control holds the rest).
    pub max_early_bytes: usize,
    /// How often a member sends a heartbeat on each of its links (mesh and seed).
    pub heartbeat_interval: Duration,
    /// A link silent this long (no heartbeat, no data) marks its peer down. Keep it a few
    /// intervals long: a stall shorter than it is not a failure. `idle_timeout` is the
    /// backstop underneath and should be longer.
    pub heartbeat_timeout: Duration,
    /// What a member does when a peer goes down (must be the same on every node).
    pub recovery: RecoveryPolicy,
    /// Seed: how long a recovery round waits for every survivor's vote before counting
    /// the silent ones as dead too. Worker: how long it waits for the agreed outcome
    /// before giving up with `Event::RecoveryFailed`.
    pub recovery_timeout: Duration,
    /// Per caller, the most RPC requests handed to the application and not answered yet;
    /// more are answered `Overloaded` without reaching it.
    pub max_rpc_inbound: usize,
    /// How long an RPC waits for its answer when the call names no deadline (a
    /// `Command::Rpc` with `timeout: None`); `None`: for ever. A handler that hangs or a
    /// rank that stalls without dying would otherwise hold the caller indefinitely.
    pub rpc_timeout: Option<Duration>,
    /// Seed: the smallest world a checkpoint may leave. A checkpoint whose leaves would
    /// take the world below it (or that finds the world already below it, after a
    /// recovery) is not agreed until enough joiners are queued to make up the difference:
    /// the members' `checkpoint()` calls wait, as an elastic job below its minimum should.
    /// Zero (the default) sets no minimum. Must not exceed the seed's `max_world_size`.
    pub min_world_size: u32,
    /// The round-trip time QUIC assumes before it has measured one. It sets how long a
    /// lost handshake packet waits to be resent (about three times this); RFC 9002's
    /// 333 ms suits the Internet, and the drivers lower it for loopback clusters, where a
    /// dial that races the peer's listener otherwise stalls formation for a second.
    pub initial_rtt: Duration,
    /// UDP payload size used from the first packet, before MTU discovery (at least 1200,
    /// at most `max_udp_payload`). Where the path MTU is known in advance (loopback), start
    /// at it: every MTU probe is a datagram of padding that the receiver parses byte by
    /// byte, which at 64 KiB made probing most of the CPU a loopback cluster spent forming.
    pub initial_mtu: u16,
    /// Bytes the congestion controller lets a connection send before its first
    /// acknowledgement. `None`: RFC 9002 §7.2, which for datagrams above 7 KiB allows two,
    /// sized for the Internet. The drivers' loopback transport raises it to ten datagrams,
    /// TCP's initial window in its segment size (what Linux gives TCP on loopback): with
    /// two 64 KiB datagrams a 128 KiB or 256 KiB collective step waited a round trip for
    /// its third datagram, on every connection not yet warmed up by earlier traffic.
    pub initial_window: Option<u64>,
    /// Ack-eliciting packets a peer may receive from this node before it must acknowledge
    /// them (QUIC's acknowledgement frequency extension); `None`: every second one, as RFC
    /// 9000 has it. Most collective steps send each peer one or two datagrams and the
    /// answer comes back on the same connection carrying the acknowledgement, so the
    /// ACK-only datagrams RFC 9000's rule adds (a sixth of all datagrams in a 4-rank 8 B
    /// allreduce) are pure cost: on loopback each one is a system call that also runs the
    /// receiver's network stack. Seven: an ACK at least every eight datagrams, as with
    /// Linux TCP's coalesced acknowledgements; reordering (a sign of loss) is still
    /// acknowledged at once, and the peer's delayed-ACK timer bounds the wait for a tail.
    pub ack_eliciting_threshold: Option<u32>,
    /// Bytes a connection may have sent or queued and not yet acknowledged. It caps one
    /// connection's rate at this much per round trip (4 MiB: 4 GB/s at 1 ms, 40 GB/s at
    /// a datacenter's 100 µs), and it is what collective chunks wait behind: they are
    /// encoded from the working buffer only as this window drains, so a large operation
    /// holds about this much encoded data per peer instead of a copy of each step. Kept
    /// under the drivers' 4 MiB socket buffers, so that one peer's burst cannot overflow a
    /// receiver that is briefly descheduled: at 8 MiB a 4-rank 16 MiB allreduce on loopback
    /// lost about one datagram per run to a full receive buffer, at 4 MiB none.
    pub send_window: u64,
}

/// What happens when a member is found dead (DESIGN §4: every epoch change is one
/// agreed message, decided by the seed, never a local guess).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryPolicy {
    /// Fail every in-flight operation with `OpError::PeerLost` naming the dead rank, and
    /// every later command with `CommandError::Aborted`: the MPI and NCCL default, and
    /// ours, because it never continues on a world the application did not plan for.
    #[default]
    Abort,
    /// Fail the in-flight operations, agree on the dead set through the seed, renumber
    /// the survivors densely in their old order, move to the next epoch and go on.
    /// Commands issued meanwhile are refused (`CommandError::Recovering`) until then.
    Automatic,
    /// Report `Event::PeerDown` and fail only what needed the dead rank; the application
    /// decides, e.g. by issuing `Command::Recover` (which then works as `Automatic`).
    Manual,
}

impl NodeConfig {
    /// A config with the defaults below, listening (advertising) at `listen_addr`.
    pub fn new(rng_seed: [u8; 32], unix_time: u64, listen_addr: SocketAddr) -> Self {
        Self {
            rng_seed,
            incarnation: 0,
            unix_time,
            listen_addr,
            requested_rank: None,
            limits: Limits::default(),
            join_timeout: Duration::from_secs(10),
            formation_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            max_joiners: 256,
            max_unproven_per_ip: 64,
            handshake_timeout: Duration::from_secs(3),
            retry_above_handshaking: 8,
            max_unmatched_bytes: 64 << 20,
            max_message_len: 1 << 30,
            max_queued_bytes: 64 << 20,
            max_udp_payload: 1452,
            send_window: 4 << 20,
            collective: CollectiveConfig::default(),
            collective_timeout: Duration::from_secs(60),
            max_early_bytes: 256 << 20,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            recovery: RecoveryPolicy::Abort,
            recovery_timeout: Duration::from_secs(5),
            max_rpc_inbound: 64,
            rpc_timeout: Some(Duration::from_secs(60)),
            min_world_size: 0,
            initial_rtt: Duration::from_millis(333),
            initial_mtu: 1200,
            initial_window: None,
            ack_eliciting_threshold: Some(7),
        }
    }

    /// Builder-style setter for `requested_rank`.
    pub fn with_requested_rank(mut self, rank: Option<u32>) -> Self {
        self.requested_rank = rank;
        self
    }

    /// Builder-style setter for `recovery`.
    pub fn with_recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = policy;
        self
    }

    /// Builder-style setter for `incarnation`.
    pub fn with_incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self
    }
}

/// What only the seed needs.
#[derive(Clone)]
#[non_exhaustive]
pub struct SeedConfig {
    /// Number of workers (ranks) that form the cluster.
    pub world_size: u32,
    /// The join secret, from the OS CSPRNG (the driver draws it; tests fix it).
    pub secret: [u8; 32],
    /// Elastic growth: the largest world a checkpoint may admit joiners up to. Past it
    /// joiners are rejected with `ClusterFull`. Defaults to `world_size` (no growth).
    pub max_world_size: u32,
    /// Elastic growth: joiners held for the next checkpoint at most; past it, `QueueFull`.
    pub max_pending_joins: usize,
}

impl SeedConfig {
    /// A seed for `world_size` ranks with this join secret.
    pub fn new(world_size: u32, secret: [u8; 32]) -> Self {
        Self {
            world_size,
            secret,
            max_world_size: world_size,
            max_pending_joins: 64,
        }
    }
}

/// What `Debug` prints in place of key material.
pub(crate) const REDACTED: Redacted = Redacted;

/// Prints `<redacted>`: the `Debug` stand-in for a secret, a key or a seed.
#[derive(Clone, Copy)]
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// By hand, so that `rng_seed` (every key of the node derives from it) never reaches a
/// log; the destructuring makes a new field a compile error here until it is listed.
impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let NodeConfig {
            rng_seed: _,
            incarnation,
            unix_time,
            listen_addr,
            requested_rank,
            limits,
            join_timeout,
            formation_timeout,
            idle_timeout,
            keep_alive,
            max_joiners,
            max_unproven_per_ip,
            handshake_timeout,
            retry_above_handshaking,
            max_unmatched_bytes,
            max_message_len,
            max_queued_bytes,
            max_udp_payload,
            collective,
            collective_timeout,
            max_early_bytes,
            heartbeat_interval,
            heartbeat_timeout,
            recovery,
            recovery_timeout,
            max_rpc_inbound,
            rpc_timeout,
            min_world_size,
            initial_rtt,
            initial_mtu,
            initial_window,
            ack_eliciting_threshold,
            send_window,
        } = self;
        f.debug_struct("NodeConfig")
            .field("rng_seed", &REDACTED)
            .field("incarnation", incarnation)
            .field("unix_time", unix_time)
            .field("listen_addr", listen_addr)
            .field("requested_rank", requested_rank)
            .field("limits", limits)
            .field("join_timeout", join_timeout)
            .field("formation_timeout", formation_timeout)
            .field("idle_timeout", idle_timeout)
            .field("keep_alive", keep_alive)
            .field("max_joiners", max_joiners)
            .field("max_unproven_per_ip", max_unproven_per_ip)
            .field("handshake_timeout", handshake_timeout)
            .field("retry_above_handshaking", retry_above_handshaking)
            .field("max_unmatched_bytes", max_unmatched_bytes)
            .field("max_message_len", max_message_len)
            .field("max_queued_bytes", max_queued_bytes)
            .field("max_udp_payload", max_udp_payload)
            .field("collective", collective)
            .field("collective_timeout", collective_timeout)
            .field("max_early_bytes", max_early_bytes)
            .field("heartbeat_interval", heartbeat_interval)
            .field("heartbeat_timeout", heartbeat_timeout)
            .field("recovery", recovery)
            .field("recovery_timeout", recovery_timeout)
            .field("max_rpc_inbound", max_rpc_inbound)
            .field("rpc_timeout", rpc_timeout)
            .field("min_world_size", min_world_size)
            .field("initial_rtt", initial_rtt)
            .field("initial_mtu", initial_mtu)
            .field("initial_window", initial_window)
            .field("ack_eliciting_threshold", ack_eliciting_threshold)
            .field("send_window", send_window)
            .finish()
    }
}

impl std::fmt::Debug for SeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedConfig")
            .field("world_size", &self.world_size)
            .field("max_world_size", &self.max_world_size)
            .field("max_pending_joins", &self.max_pending_joins)
            .finish_non_exhaustive()
    }
}
