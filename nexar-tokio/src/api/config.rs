//! How to start a seed or a worker, from code.

use super::*;

// ---- configuration -----------------------------------------------------------------

/// How to start a seed or a worker.
///
/// `node` carries every knob of the core (timeouts, limits, collective thresholds). The
/// driver overwrites the three fields that come from the process rather than from the
/// user: `rng_seed` (the OS CSPRNG, or [`Config::rng_seed`]), `unix_time` (the wall clock)
/// and `listen_addr` (the bound socket, or [`Config::advertise`]).
#[derive(Clone)]
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
    /// Seed: the largest world a checkpoint may grow to (joiners past it are refused);
    /// `None` keeps the formed size.
    pub max_world_size: Option<u32>,
    /// Seed: joiners held for the next checkpoint at most.
    pub max_pending_joins: usize,
    /// Seed: where its state lives (see [`Seed::bind`]). It holds key material: the
    /// file is written mode 0600.
    pub state_file: Option<std::path::PathBuf>,
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

/// By hand, so that a fixed `rng_seed` (the node's keys derive from it) never reaches a
/// log; the destructuring makes a new field a compile error here until it is listed.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Config {
            node,
            bind,
            advertise,
            rng_seed,
            linger,
            max_world_size,
            max_pending_joins,
            state_file,
        } = self;
        f.debug_struct("Config")
            .field("node", node)
            .field("bind", bind)
            .field("advertise", advertise)
            .field("rng_seed", &rng_seed.map(|_| "<redacted>"))
            .field("linger", linger)
            .field("max_world_size", max_world_size)
            .field("max_pending_joins", max_pending_joins)
            .field("state_file", state_file)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node: NodeConfig::new([0; 32], 0, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            bind: None,
            advertise: None,
            rng_seed: None,
            linger: Duration::from_secs(2),
            max_world_size: None,
            max_pending_joins: 64,
            state_file: None,
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

    /// What every node does when a peer dies (must be the same on the seed and every
    /// worker): see [`RecoveryPolicy`](nexar_proto::RecoveryPolicy).
    pub fn with_recovery(mut self, policy: nexar_proto::RecoveryPolicy) -> Self {
        self.node.recovery = policy;
        self
    }

    /// Heartbeat every `interval`; a peer silent for `timeout` is down. The seed waits
    /// as long for a recovery round's votes.
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.node.heartbeat_interval = interval;
        self.node.heartbeat_timeout = timeout;
        self.node.recovery_timeout = timeout;
        self
    }

    /// The deadline of an RPC that names none ([`Client::rpc`]): past it the call fails
    /// with `OpError::RpcTimeout`. `None` waits for ever. [`Client::rpc_with_timeout`]
    /// overrides it per call.
    pub fn with_rpc_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.node.rpc_timeout = timeout;
        self
    }

    /// Seed: how long a joiner has to finish its handshake and say Hello. (A worker
    /// gives up on a seed that never answers at `formation_timeout`.)
    pub fn with_join_timeout(mut self, timeout: Duration) -> Self {
        self.node.join_timeout = timeout;
        self
    }

    /// Seed: a checkpoint never leaves a world smaller than this; one that would waits
    /// for joiners (see `NodeConfig::min_world_size`). At most the max world size.
    pub fn with_min_world_size(mut self, min: u32) -> Self {
        self.node.min_world_size = min;
        self
    }

    /// Seed: let checkpoints admit joiners up to this world size.
    pub fn with_max_world_size(mut self, max: u32) -> Self {
        self.max_world_size = Some(max);
        self
    }

    /// The longest tagged message sent or accepted (`NodeConfig::max_message_len`; the
    /// same on every node, since a receiver cuts off a peer announcing more).
    pub fn with_max_message(mut self, len: usize) -> Self {
        self.node.max_message_len = len;
        self
    }

    /// The linger after the last handle is dropped (see [`Config::linger`]).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Seed: persist its state in `path` and restart from it (see [`Seed::bind`]).
    pub fn with_state_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Transport settings for a cluster whose members all run on this host and talk over
    /// loopback (what [`bootstrap_local`] uses; call it for `Seed::bind`/`Client::join` on
    /// 127.0.0.1 too). Loopback carries 64 KiB datagrams and never fragments, so QUIC
    /// starts at [`LOOPBACK_MAX_UDP_PAYLOAD`] instead of probing up from 1200 bytes (each
    /// datagram is a syscall: about 5x the throughput of Ethernet-sized packets, and a
    /// 16-rank cluster forms in tens of milliseconds instead of seconds of MTU probes),
    /// and assumes a [`LOOPBACK_INITIAL_RTT`] round trip until it measures one. Its
    /// congestion window starts at ten such datagrams, as TCP's does on loopback (RFC
    /// 9002's formula allows two of this size; see `NodeConfig::initial_window`). On any
    /// other network these would send datagrams the path may drop: do not use it there.
    pub fn with_loopback_transport(mut self) -> Self {
        self.node.max_udp_payload = self.node.max_udp_payload.max(LOOPBACK_MAX_UDP_PAYLOAD);
        self.node.initial_mtu = self.node.max_udp_payload;
        self.node.initial_window = Some(10 * u64::from(self.node.initial_mtu));
        self.node.initial_rtt = self.node.initial_rtt.min(LOOPBACK_INITIAL_RTT);
        self
    }

    /// The local address to bind (see [`Config::bind`]).
    pub fn with_bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    pub(super) fn node_config(&self, local: SocketAddr) -> Result<NodeConfig, NexarError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_transport_starts_with_ten_full_datagrams_in_flight() {
        let c = Config::default().with_loopback_transport();
        assert_eq!(c.node.initial_mtu, LOOPBACK_MAX_UDP_PAYLOAD);
        assert_eq!(
            c.node.initial_window,
            Some(10 * u64::from(LOOPBACK_MAX_UDP_PAYLOAD))
        );
        assert_eq!(Config::default().node.initial_window, None);
    }
}
