//! A deterministic network simulator for sans-IO hosts (feature `sim`).
//!
//! [`Sim`] runs any number of [`SimHost`]s (real `Node`s, or your own program built on
//! one) on one virtual clock over a modelled UDP network, and can break that network on
//! purpose: latency, jitter and hence reordering, random or bursty loss, duplication,
//! MTU limits, bandwidth and queueing ([`LinkConfig`]); partitions, crashes, restarts and
//! pauses ([`Fault`]).
//!
//! It is deterministic: everything random comes from [`SimConfig::seed`], events are kept
//! in one agenda ordered by (time, class, sequence number), hosts are visited in id
//! order, and [`Sim::trace_hash`] fingerprints the whole run. A failing test wrapped in
//! [`run_seeds`] prints its seed, and `NEXAR_SIM_SEED=<seed>` replays exactly that run.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use nexar_proto::sim::{doc_addr, run_seeds, Fault, Sim, SimConfig, SimHost};
//! # struct MyNode;
//! # impl SimHost for MyNode {
//! #     fn handle_datagram(&mut self, _: Instant, _: std::net::SocketAddr, _: Option<u8>, _: &[u8]) {}
//! #     fn handle_timeout(&mut self, _: Instant) {}
//! #     fn poll_transmit(&mut self, _: Instant, _: &mut Vec<u8>) -> Option<nexar_proto::Transmit> { None }
//! #     fn poll_timeout(&mut self) -> Option<Instant> { None }
//! # }
//! # fn make_node(_rank: usize) -> MyNode { MyNode }
//!
//! run_seeds(20, |seed| {
//!     let mut sim = Sim::new(SimConfig::with_seed(seed));
//!     let a = sim.add_host(doc_addr(0), make_node(0));
//!     let b = sim.add_host(doc_addr(1), make_node(1));
//!     sim.schedule(Duration::from_secs(1), Fault::Partition(a, b));
//!     sim.schedule(Duration::from_secs(3), Fault::Heal(a, b));
//!     let converged = sim.run_until_cond(Duration::from_secs(30), |sim| {
//!         // Check invariants here (a panic is reported with its seed), then the goal:
//!         sim.elapsed() >= Duration::from_secs(3) // stand-in for "every node joined"
//!     });
//!     if converged { Ok(()) } else { Err(format!("stuck at {:?}", sim.elapsed())) }
//! });
//! ```

mod apply;
mod cluster;
mod config;
mod fault;
mod host;
mod link;
mod queue;
mod rng;
mod run;
mod seeds;
mod stats;
mod trace;
mod world;

#[cfg(test)]
mod tests;

pub use cluster::{ClusterHost, ClusterSim, SIM_UNIX_TIME};
pub use config::{LinkConfig, LossModel, SimConfig};
pub use fault::{Fault, FaultKind};
pub use host::{doc_addr, HostId, SimHost};
pub use seeds::{run_seeds, seeds, SEED_ENV};
pub use stats::{DropReason, SimStats};
pub use trace::{TraceEntry, TraceEvent};
pub use world::Sim;
