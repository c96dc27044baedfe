//! The simulated world: hosts, links, partitions and the clock, and the fault API that
//! changes them. Stepping through time lives in `run.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::{LinkConfig, SimConfig};
use super::fault::Fault;
use super::host::{HostId, SimHost};
use super::link::LinkState;
use super::queue::{EventKey, EventQueue};
use super::stats::{DropReason, SimStats};
use super::trace::{Trace, TraceEntry, TraceEvent};

/// A datagram in flight (or waiting in a paused host's socket buffer).
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) from: HostId,
    pub(crate) to: HostId,
    pub(crate) ecn: Option<u8>,
    pub(crate) data: Vec<u8>,
}

/// An entry of the agenda.
pub(crate) enum Event<H> {
    Deliver(Datagram),
    Timeout(HostId),
    Fault(Fault<H>),
}

/// Whether a host takes input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostState {
    Running,
    /// Frozen until the `Resume` event at this key fires.
    Paused {
        resume: EventKey,
    },
    Crashed,
}

/// One host and the simulator's bookkeeping about it.
pub(crate) struct Slot<H> {
    pub(crate) addr: SocketAddr,
    pub(crate) host: H,
    pub(crate) state: HostState,
    /// The host's pending `Timeout` event, replaced whenever `poll_timeout` changes.
    pub(crate) timer: Option<EventKey>,
    /// Datagrams that arrived while paused, oldest first, and their total payload size.
    pub(crate) inbox: VecDeque<Datagram>,
    pub(crate) inbox_bytes: usize,
}

/// A deterministic simulation of hosts exchanging UDP datagrams over a modelled network.
///
/// The simulator is itself sans-IO: no sockets, no threads, no wall clock after
/// construction. Time is virtual and jumps straight to the next interesting instant (a
/// datagram arriving, a host timer, a scripted fault), so seconds of protocol time run in
/// microseconds, and every run with the same seed, hosts and script is identical bit for
/// bit, which [`trace_hash`](Sim::trace_hash) proves.
///
/// Typical use:
/// 1. [`Sim::new`], then [`add_host`](Sim::add_host) for each host, with addresses from
///    [`doc_addr`](super::doc_addr);
/// 2. configure links ([`set_link`](Sim::set_link)) and script faults
///    ([`schedule`](Sim::schedule)) or apply them between steps;
/// 3. drive with [`step`](Sim::step), [`run_until`](Sim::run_until) or
///    [`run_until_cond`](Sim::run_until_cond), checking invariants between steps and
///    draining application events through [`host_mut`](Sim::host_mut);
/// 4. wrap the test in [`run_seeds`](super::run_seeds) so a failure names its seed.
///
/// All times taken and returned as `Duration` are virtual time since the simulation
/// started; hosts see `Instant`s (`base + elapsed`) as a real driver would give them.
pub struct Sim<H> {
    pub(crate) config: SimConfig,
    pub(crate) base: Instant,
    pub(crate) elapsed: Duration,
    /// Events processed at the current instant (livelock guard).
    pub(crate) events_at_instant: u64,
    pub(crate) hosts: Vec<Slot<H>>,
    pub(crate) by_addr: BTreeMap<SocketAddr, HostId>,
    pub(crate) link_overrides: BTreeMap<(HostId, HostId), LinkConfig>,
    pub(crate) links: BTreeMap<(HostId, HostId), LinkState>,
    /// Directed pairs (from, to) whose datagrams are dropped.
    pub(crate) partitions: BTreeSet<(HostId, HostId)>,
    pub(crate) queue: EventQueue<Event<H>>,
    /// Hosts touched outside the simulator (added, restarted, `host_mut`) whose
    /// transmits and timer must be read before time moves on.
    pub(crate) dirty: BTreeSet<HostId>,
    pub(crate) trace: Trace,
    pub(crate) stats: SimStats,
    /// Reused transmit buffer.
    pub(crate) buf: Vec<u8>,
}

impl<H: SimHost> Sim<H> {
    /// An empty world at virtual time zero.
    pub fn new(config: SimConfig) -> Self {
        // The one clock reading of the simulator: hosts need real `Instant`s, and `Instant`
        // has no public constructor. Nothing depends on its value: all virtual time is kept
        // and traced as a `Duration` since this base, so runs stay reproducible.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        Sim {
            trace: Trace::new(config.trace_log),
            config,
            base,
            elapsed: Duration::ZERO,
            events_at_instant: 0,
            hosts: Vec::new(),
            by_addr: BTreeMap::new(),
            link_overrides: BTreeMap::new(),
            links: BTreeMap::new(),
            partitions: BTreeSet::new(),
            queue: EventQueue::new(),
            dirty: BTreeSet::new(),
            stats: SimStats::default(),
            buf: Vec::new(),
        }
    }

    /// Add a host at `addr`; ids are handed out 0, 1, 2, ... in call order.
    ///
    /// The host's first transmits and timer are read before time next moves (at the next
    /// step, or now with [`kick`](Sim::kick)), so all hosts can be added before any of
    /// them sends.
    ///
    /// # Panics
    /// If another host already has `addr`.
    pub fn add_host(&mut self, addr: SocketAddr, host: H) -> HostId {
        let id = HostId(self.hosts.len());
        let previous = self.by_addr.insert(addr, id);
        assert!(previous.is_none(), "two simulated hosts at {addr}");
        self.hosts.push(Slot {
            addr,
            host,
            state: HostState::Running,
            timer: None,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
        });
        self.dirty.insert(id);
        id
    }

    /// The host with this id (for a crashed host: its state when it crashed).
    ///
    /// # Panics
    /// If `id` was not returned by [`add_host`](Sim::add_host) on this simulator.
    pub fn host(&self, id: HostId) -> &H {
        &self.slot(id).host
    }

    /// Mutable access to a host, to issue commands or drain its events.
    ///
    /// The simulator then re-reads the host's transmits and timer before time next moves
    /// (or at once with [`kick`](Sim::kick)), so a command's first datagrams are sent at the
    /// current virtual time, as a real driver would.
    ///
    /// # Panics
    /// If `id` was not returned by [`add_host`](Sim::add_host) on this simulator.
    pub fn host_mut(&mut self, id: HostId) -> &mut H {
        self.dirty.insert(id);
        &mut self.slot_mut(id).host
    }

    /// All host ids, in order.
    pub fn host_ids(&self) -> impl Iterator<Item = HostId> + '_ {
        (0..self.hosts.len()).map(HostId)
    }

    /// The address of a host.
    pub fn addr(&self, id: HostId) -> SocketAddr {
        self.slot(id).addr
    }

    /// The host at an address, if any.
    pub fn host_at(&self, addr: SocketAddr) -> Option<HostId> {
        self.by_addr.get(&addr).copied()
    }

    /// Whether the host is crashed (and not restarted since).
    pub fn is_crashed(&self, id: HostId) -> bool {
        self.slot(id).state == HostState::Crashed
    }

    /// Whether the host is paused.
    pub fn is_paused(&self, id: HostId) -> bool {
        matches!(self.slot(id).state, HostState::Paused { .. })
    }

    /// The current virtual time as the `Instant` hosts see.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// Virtual time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The `Instant` that virtual time zero maps to (useful to build hosts that need one).
    pub fn base(&self) -> Instant {
        self.base
    }

    /// The configuration this simulation was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Counters of what the network did so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// XXH3-128 over every event so far (virtual time, hosts, kind, lengths and payloads).
    ///
    /// Two runs with the same seed, hosts and script must give the same hash; if they do
    /// not, something nondeterministic leaked into a host or the simulator.
    pub fn trace_hash(&self) -> [u8; 16] {
        self.trace.hash()
    }

    /// The last [`SimConfig::trace_log`] events, oldest first, for debugging a failure.
    pub fn trace_log(&self) -> impl Iterator<Item = &TraceEntry> {
        self.trace.log()
    }

    /// Override the directed link `from -> to` (its random streams and queue carry on).
    pub fn set_link(&mut self, from: HostId, to: HostId, config: LinkConfig) {
        self.link_overrides.insert((from, to), config);
    }

    /// Override both directions between `a` and `b` with the same configuration.
    pub fn set_link_both(&mut self, a: HostId, b: HostId, config: LinkConfig) {
        self.set_link(a, b, config);
        self.set_link(b, a, config);
    }

    /// The configuration in force on the directed link `from -> to`.
    pub fn link(&self, from: HostId, to: HostId) -> LinkConfig {
        self.link_overrides
            .get(&(from, to))
            .copied()
            .unwrap_or(self.config.default_link)
    }

    /// Record and count a dropped datagram.
    pub(crate) fn drop_datagram(
        &mut self,
        from: HostId,
        to: Option<HostId>,
        reason: DropReason,
        data: &[u8],
    ) {
        self.stats.count_drop(reason);
        let event = TraceEvent::Drop {
            from,
            to,
            len: data.len(),
            reason,
        };
        self.trace.record(self.elapsed, event, data);
    }

    pub(crate) fn slot(&self, id: HostId) -> &Slot<H> {
        match self.hosts.get(id.0) {
            Some(slot) => slot,
            None => panic!("no simulated host {id} (only {} added)", self.hosts.len()),
        }
    }

    pub(crate) fn slot_mut(&mut self, id: HostId) -> &mut Slot<H> {
        let n = self.hosts.len();
        match self.hosts.get_mut(id.0) {
            Some(slot) => slot,
            None => panic!("no simulated host {id} (only {n} added)"),
        }
    }

    pub(crate) fn check_ids(&self, ids: &[HostId]) {
        for &id in ids {
            let _ = self.slot(id);
        }
    }
}

// Manual impl: hosts need not be `Debug`; the summary is what helps when a test fails.
impl<H> fmt::Debug for Sim<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.config.seed)
            .field("elapsed", &self.elapsed)
            .field("hosts", &self.hosts.len())
            .field("pending_events", &self.queue.len())
            .field("partitions", &self.partitions)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
