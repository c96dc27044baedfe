//! The knobs of a simulation: the seed, the default link and host-side limits.

use std::time::Duration;

/// How a link loses datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LossModel {
    /// Each datagram is lost independently with this probability (0.0..=1.0).
    Bernoulli(f64),
    /// Bursty loss: a two-state Markov chain (Gilbert-Elliott).
    ///
    /// Real paths lose packets in bursts (a full router queue drops a run of packets),
    /// which stresses recovery much more than the same average rate spread evenly. Before
    /// each datagram the chain moves (good to bad with `p_good_to_bad`, bad to good with
    /// `p_bad_to_good`), then the datagram is lost with the current state's probability.
    /// The long-run loss rate is `(p_bg * loss_good + p_gb * loss_bad) / (p_gb + p_bg)`
    /// and the mean burst length in the bad state is `1 / p_bad_to_good` datagrams.
    GilbertElliott {
        /// Per-datagram probability of moving from the good to the bad state.
        p_good_to_bad: f64,
        /// Per-datagram probability of moving from the bad back to the good state.
        p_bad_to_good: f64,
        /// Loss probability while in the good state (often 0).
        loss_good: f64,
        /// Loss probability while in the bad state (often 1).
        loss_bad: f64,
    },
}

impl LossModel {
    /// No loss at all.
    pub const NONE: LossModel = LossModel::Bernoulli(0.0);
}

impl Default for LossModel {
    fn default() -> Self {
        LossModel::NONE
    }
}

/// The behaviour of one directed link (sender to receiver).
///
/// Every datagram is judged on its own, in this order: MTU, loss, bandwidth queue; if it
/// survives, it arrives after `latency + uniform(0..jitter)` (plus serialisation and
/// queueing when `bandwidth_bps` is set) and, with probability `duplicate`, a second copy
/// with its own jitter arrives too. Reordering is not a separate knob: it follows from
/// jitter larger than the gap between datagrams, as on a real path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..jitter` per datagram (zero: none).
    pub jitter: Duration,
    /// How datagrams are lost.
    pub loss: LossModel,
    /// Probability that a delivered datagram is delivered twice (0.0..=1.0).
    pub duplicate: f64,
    /// Largest UDP payload the path carries, in bytes. Larger datagrams are dropped, as on
    /// a real path with the don't-fragment bit set, so path-MTU discovery is exercised.
    /// The default, 1472, is an Ethernet MTU of 1500 minus IPv4 and UDP headers.
    pub mtu: usize,
    /// Link rate in bits per second, `None` for infinitely fast. When set, each datagram
    /// occupies the link for `len * 8 / rate` and waits behind earlier ones (FIFO).
    pub bandwidth_bps: Option<u64>,
    /// With `bandwidth_bps`, the most bytes that may wait in the link's queue; a datagram
    /// that would exceed it is tail-dropped, like a router buffer. `None`: unbounded.
    pub queue_bytes: Option<usize>,
}

impl LinkConfig {
    /// A perfect link with the given one-way latency (no jitter, loss or duplication).
    pub fn with_latency(latency: Duration) -> Self {
        LinkConfig {
            latency,
            ..LinkConfig::default()
        }
    }
}

impl Default for LinkConfig {
    /// A perfect 1 ms link with an Ethernet MTU: what a test wants unless it says otherwise.
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: LossModel::NONE,
            duplicate: 0.0,
            mtu: 1472,
            bandwidth_bps: None,
            queue_bytes: None,
        }
    }
}

/// Configuration of a whole simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The only source of randomness in the network model. A run is a pure function of
    /// this seed, the hosts and the scripted faults, which is what makes a failure
    /// replayable from its printed seed.
    pub seed: u64,
    /// The link used between any two hosts unless overridden with
    /// [`Sim::set_link`](super::Sim::set_link).
    pub default_link: LinkConfig,
    /// Receive buffer of a paused host, in bytes of payload. Datagrams that arrive while a
    /// host is paused wait here (as in a real socket's receive buffer) and are delivered
    /// when it resumes; those that do not fit are dropped.
    pub socket_buffer: usize,
    /// How many trace entries to keep in memory for debugging (0: none). The trace hash
    /// covers every event regardless of this setting.
    pub trace_log: usize,
    /// Guard against a host that never lets time advance (for example one whose
    /// `poll_timeout` keeps returning a past instant, or whose `poll_transmit` never
    /// returns `None`): the simulator panics after this many events at one instant, or
    /// this many transmits from one drain, instead of hanging the test.
    pub livelock_limit: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            default_link: LinkConfig::default(),
            socket_buffer: 212_992,
            trace_log: 0,
            livelock_limit: 1_000_000,
        }
    }
}

impl SimConfig {
    /// The default configuration with the given seed.
    pub fn with_seed(seed: u64) -> Self {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }
}
