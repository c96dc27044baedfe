//! A nexar cluster in the simulator: one seed and N workers as real `Node`s.
//!
//! [`Sim`] knows nothing of nodes; this wraps it with what every cluster test needs:
//! deterministic per-node seeds and addresses, the join ticket handed from the seed to the
//! workers, and each host's events collected in order so a test can assert on them after
//! (or while) the simulation runs. It is public because users test their own programs on
//! it: issue commands with [`ClusterSim::command`], step the simulation, read events.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{doc_addr, HostId, LinkConfig, Sim, SimConfig, SimHost};
use crate::{
    Command, CommandError, Event, JoinTicket, Node, NodeConfig, OpError, OpId, Outcome, SeedConfig,
    Transmit,
};

/// Wall-clock time every simulated node believes it started at (2026-01-01T00:00:00Z);
/// certificates are issued and checked against it.
pub const SIM_UNIX_TIME: u64 = 1_767_225_600;

/// A host in a [`ClusterSim`]: a real node, or any other [`SimHost`] (a rogue client, a
/// relay, the user's own program) sharing the same simulated network.
pub enum ClusterHost {
    /// A nexar seed or worker.
    Node(Box<Node>),
    /// Anything else that speaks UDP.
    Custom(Box<dyn SimHost>),
}

impl std::fmt::Debug for ClusterHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterHost::Node(n) => n.fmt(f),
            ClusterHost::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl SimHost for ClusterHost {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ecn: Option<u8>, data: &[u8]) {
        match self {
            ClusterHost::Node(n) => SimHost::handle_datagram(n.as_mut(), now, from, ecn, data),
            ClusterHost::Custom(h) => h.handle_datagram(now, from, ecn, data),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            ClusterHost::Node(n) => SimHost::handle_timeout(n.as_mut(), now),
            ClusterHost::Custom(h) => h.handle_timeout(now),
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        match self {
            ClusterHost::Node(n) => SimHost::poll_transmit(n.as_mut(), now, buf),
            ClusterHost::Custom(h) => h.poll_transmit(now, buf),
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        match self {
            ClusterHost::Node(n) => SimHost::poll_timeout(n.as_mut()),
            ClusterHost::Custom(h) => h.poll_timeout(),
        }
    }
}

/// One seed node plus workers, inside a [`Sim`].
#[derive(Debug)]
pub struct ClusterSim {
    /// The underlying simulator: faults, links, stepping, trace hash.
    pub sim: Sim<ClusterHost>,
    /// The seed's host.
    pub seed: HostId,
    /// Workers in the order they were added (not rank order).
    pub workers: Vec<HostId>,
    ticket: JoinTicket,
    sim_seed: u64,
    events: BTreeMap<HostId, Vec<Event>>,
}

impl ClusterSim {
    /// A seed for `world_size` ranks on a network whose links default to `link`.
    /// No workers yet: add them with [`add_worker`](Self::add_worker).
    pub fn new(sim_seed: u64, world_size: u32, link: LinkConfig) -> Self {
        Self::new_with(sim_seed, world_size, link, |config| config)
    }

    /// As [`new`](Self::new), with `adjust_seed` changing the seed node's config (say, a
    /// shorter `join_timeout`).
    pub fn new_with(
        sim_seed: u64,
        world_size: u32,
        link: LinkConfig,
        adjust_seed: impl FnOnce(NodeConfig) -> NodeConfig,
    ) -> Self {
        Self::new_elastic(sim_seed, world_size, link, adjust_seed, |s| s)
    }

    /// As [`new_with`](Self::new_with), with `adjust_elastic` changing the seed's
    /// [`SeedConfig`] (its elastic limits, say).
    pub fn new_elastic(
        sim_seed: u64,
        world_size: u32,
        link: LinkConfig,
        adjust_seed: impl FnOnce(NodeConfig) -> NodeConfig,
        adjust_elastic: impl FnOnce(SeedConfig) -> SeedConfig,
    ) -> Self {
        let mut config = SimConfig::with_seed(sim_seed);
        config.default_link = link;
        Self::new_configured(config, world_size, adjust_seed, adjust_elastic)
    }

    /// As [`new_elastic`](Self::new_elastic), with the whole [`SimConfig`] given (its
    /// `seed` seeds the nodes too): a trace log to print on failure, a tighter livelock
    /// guard.
    pub fn new_configured(
        config: SimConfig,
        world_size: u32,
        adjust_seed: impl FnOnce(NodeConfig) -> NodeConfig,
        adjust_elastic: impl FnOnce(SeedConfig) -> SeedConfig,
    ) -> Self {
        let sim_seed = config.seed;
        let mut sim = Sim::new(config);
        let addr = doc_addr(0);
        let secret = node_seed(sim_seed, u64::MAX, "join-secret");
        let node = Node::seed(
            adjust_seed(Self::node_config(sim_seed, 0, addr)),
            adjust_elastic(SeedConfig::new(world_size, secret)),
            sim.now(),
        )
        .expect("a valid seed config");
        let ticket = node.ticket().expect("seeds have tickets").clone();
        let seed = sim.add_host(addr, ClusterHost::Node(Box::new(node)));
        Self {
            sim,
            seed,
            workers: Vec::new(),
            ticket,
            sim_seed,
            events: BTreeMap::new(),
        }
    }

    /// A seed and `world_size` workers, every node's config (the seed's too) changed by
    /// `adjust` (say, the recovery policy and heartbeat timings), not yet run.
    pub fn with_workers_config(
        sim_seed: u64,
        world_size: u32,
        link: LinkConfig,
        adjust: impl Fn(NodeConfig) -> NodeConfig,
    ) -> Self {
        let mut c = Self::new_with(sim_seed, world_size, link, &adjust);
        for _ in 0..world_size {
            c.add_worker(&adjust);
        }
        c
    }

    /// A seed and `world_size` honest workers, not yet run.
    pub fn with_workers(sim_seed: u64, world_size: u32, link: LinkConfig) -> Self {
        let mut c = Self::new(sim_seed, world_size, link);
        for _ in 0..world_size {
            c.add_worker(|config| config);
        }
        c
    }

    /// The default config of the next host: its own seed and a documentation address.
    pub fn node_config(sim_seed: u64, index: usize, addr: SocketAddr) -> NodeConfig {
        NodeConfig::new(
            node_seed(sim_seed, index as u64, "node"),
            SIM_UNIX_TIME,
            addr,
        )
    }

    /// The seed's join ticket.
    pub fn ticket(&self) -> &JoinTicket {
        &self.ticket
    }

    /// Add a worker joining with the real ticket; `adjust` may change its config.
    pub fn add_worker(&mut self, adjust: impl FnOnce(NodeConfig) -> NodeConfig) -> HostId {
        let ticket = self.ticket.clone();
        self.add_worker_with_ticket(&ticket, adjust)
    }

    /// Add a worker joining with any ticket (e.g. a wrong secret or pin).
    pub fn add_worker_with_ticket(
        &mut self,
        ticket: &JoinTicket,
        adjust: impl FnOnce(NodeConfig) -> NodeConfig,
    ) -> HostId {
        let index = self.sim.host_ids().count();
        let addr = doc_addr(index);
        let config = adjust(Self::node_config(self.sim_seed, index, addr));
        let node = Node::worker(config, ticket, self.sim.now()).expect("a valid worker config");
        let id = self.sim.add_host(addr, ClusterHost::Node(Box::new(node)));
        self.workers.push(id);
        id
    }

    /// Move every host's pending events into the per-host logs.
    pub fn collect_events(&mut self) {
        for index in 0..self.sim.hosts.len() {
            let id = HostId(index);
            if let Some(node) = events_source(&mut self.sim, id) {
                while let Some(e) = node.poll_event() {
                    self.events.entry(id).or_default().push(e);
                }
            }
        }
    }

    /// Take the next application event of node `id` (none from a crashed host or a
    /// custom one), as [`Node::poll_event`] would.
    ///
    /// Unlike [`node_mut`](Self::node_mut) this does not make the simulator re-read the
    /// host's transmits and timer: taking an event changes neither, and doing so for every
    /// host after every step was most of what a large simulated cluster cost.
    pub fn poll_event(&mut self, id: HostId) -> Option<Event> {
        events_source(&mut self.sim, id)?.poll_event()
    }

    /// Every event `id` has emitted so far, in order.
    pub fn events(&self, id: HostId) -> &[Event] {
        self.events.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Remove and return `id`'s collected events.
    pub fn take_events(&mut self, id: HostId) -> Vec<Event> {
        self.events.remove(&id).unwrap_or_default()
    }

    /// Remove and return the completion of `op` on `id`, if it has arrived; other events
    /// stay in the log.
    pub fn take_completion(&mut self, id: HostId, op: OpId) -> Option<Result<Outcome, OpError>> {
        let events = self.events.get_mut(&id)?;
        let at = events
            .iter()
            .position(|e| matches!(e, Event::Completed { op: o, .. } if *o == op))?;
        match events.remove(at) {
            Event::Completed { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// Issue a command on node `id` at the current virtual time.
    ///
    /// # Panics
    /// If `id` is a custom host, not a node (a bug in the test).
    pub fn command(&mut self, id: HostId, command: Command) -> Result<OpId, CommandError> {
        let now = self.sim.now();
        self.node_mut(id)
            .expect("commands go to nodes")
            .command(now, command)
    }

    /// The node at `id`, if that host is a node.
    pub fn node(&self, id: HostId) -> Option<&Node> {
        match self.sim.host(id) {
            ClusterHost::Node(n) => Some(n),
            ClusterHost::Custom(_) => None,
        }
    }

    /// The node at `id`, mutably, if that host is a node.
    pub fn node_mut(&mut self, id: HostId) -> Option<&mut Node> {
        match self.sim.host_mut(id) {
            ClusterHost::Node(n) => Some(n),
            ClusterHost::Custom(_) => None,
        }
    }

    /// Add a node built by `make` from the next host's default config (its own seed and
    /// address) and the current time: a second seed (an impostor, say) or a worker built
    /// by hand. It is not counted in [`workers`](Self::workers); its events are collected.
    pub fn add_node(&mut self, make: impl FnOnce(NodeConfig, Instant) -> Node) -> HostId {
        let index = self.sim.host_ids().count();
        let addr = doc_addr(index);
        let node = make(
            Self::node_config(self.sim_seed, index, addr),
            self.sim.now(),
        );
        self.sim.add_host(addr, ClusterHost::Node(Box::new(node)))
    }

    /// Add any other host (a rogue client, say) at the next documentation address.
    pub fn add_custom(&mut self, make: impl FnOnce(SocketAddr) -> Box<dyn SimHost>) -> HostId {
        let addr = doc_addr(self.sim.host_ids().count());
        let host = make(addr);
        self.sim.add_host(addr, ClusterHost::Custom(host))
    }

    /// Run until `done` holds (checked after every step, with events collected first) or
    /// until `limit` of virtual time has passed. Returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&ClusterSim) -> bool,
    ) -> bool {
        let deadline = self.sim.elapsed() + limit;
        loop {
            self.collect_events();
            if done(self) {
                return true;
            }
            if self.sim.elapsed() >= deadline || !self.sim.step() {
                self.collect_events();
                return done(self);
            }
        }
    }

    /// Run until each of `hosts` has emitted `Ready` (true) or `limit` passes (false).
    pub fn run_until_ready(&mut self, hosts: &[HostId], limit: Duration) -> bool {
        let hosts = hosts.to_vec();
        self.run_until(limit, move |c| {
            hosts.iter().all(|h| {
                c.events(*h)
                    .iter()
                    .any(|e| matches!(e, Event::Ready { .. }))
            })
        })
    }

    /// The `Ready` event of `id`, if it has emitted one: (rank, world size, epoch).
    pub fn ready(&self, id: HostId) -> Option<(u32, u32, u64)> {
        self.events(id).iter().find_map(|e| match e {
            Event::Ready {
                rank,
                world_size,
                epoch,
            } => Some((*rank, *world_size, *epoch)),
            _ => None,
        })
    }
}

/// The node at `id` to take events from, without marking the host for a drain.
fn events_source(sim: &mut Sim<ClusterHost>, id: HostId) -> Option<&mut Node> {
    let slot = sim.hosts.get_mut(id.0)?;
    if slot.state == super::world::HostState::Crashed {
        return None;
    }
    match &mut slot.host {
        ClusterHost::Node(n) => Some(n),
        ClusterHost::Custom(_) => None,
    }
}

/// A per-node 32-byte seed from the simulation seed, the node's index and a purpose.
fn node_seed(sim_seed: u64, index: u64, purpose: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"nexar-sim-cluster");
    h.update(sim_seed.to_le_bytes());
    h.update(index.to_le_bytes());
    h.update(purpose.as_bytes());
    h.finalize().into()
}
