//! A nexar cluster in the simulator: one seed and N workers as real `Node`s.
//!
//! [`Sim`] knows nothing of nodes; this wraps it with what every cluster test needs:
//! deterministic per-node seeds and addresses, the join ticket handed from the seed to the
//! workers, and each host's events collected in order so a test can assert on them after
//! (or while) the simulation runs. It is public because users test their own programs on
//! it: issue commands with [`ClusterSim::command`], step the simulation, read events.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{doc_addr, HostId, LinkConfig, Sim, SimConfig};
use crate::{Command, CommandError, Event, JoinTicket, Node, NodeConfig, OpId, SeedConfig};

/// Wall-clock time every simulated node believes it started at (2026-01-01T00:00:00Z);
/// certificates are issued and checked against it.
pub const SIM_UNIX_TIME: u64 = 1_767_225_600;

/// One seed node plus workers, inside a [`Sim`].
#[derive(Debug)]
pub struct ClusterSim {
    /// The underlying simulator: faults, links, stepping, trace hash.
    pub sim: Sim<Node>,
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
        let mut config = SimConfig::with_seed(sim_seed);
        config.default_link = link;
        let mut sim = Sim::new(config);
        let addr = doc_addr(0);
        let secret = node_seed(sim_seed, u64::MAX, "join-secret");
        let node = Node::seed(
            Self::node_config(sim_seed, 0, addr),
            SeedConfig::new(world_size, secret),
            sim.now(),
        )
        .expect("a valid seed config");
        let ticket = node.ticket().expect("seeds have tickets").clone();
        let seed = sim.add_host(addr, node);
        Self {
            sim,
            seed,
            workers: Vec::new(),
            ticket,
            sim_seed,
            events: BTreeMap::new(),
        }
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
        let id = self.sim.add_host(addr, node);
        self.workers.push(id);
        id
    }

    /// Move every host's pending events into the per-host logs.
    pub fn collect_events(&mut self) {
        let ids: Vec<HostId> = self.sim.host_ids().collect();
        for id in ids {
            if self.sim.is_crashed(id) {
                continue;
            }
            while let Some(e) = self.sim.host_mut(id).poll_event() {
                self.events.entry(id).or_default().push(e);
            }
        }
    }

    /// Every event `id` has emitted so far, in order.
    pub fn events(&self, id: HostId) -> &[Event] {
        self.events.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Remove and return `id`'s collected events.
    pub fn take_events(&mut self, id: HostId) -> Vec<Event> {
        self.events.remove(&id).unwrap_or_default()
    }

    /// Issue a command on `id` at the current virtual time.
    pub fn command(&mut self, id: HostId, command: Command) -> Result<OpId, CommandError> {
        let now = self.sim.now();
        self.sim.host_mut(id).command(now, command)
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
