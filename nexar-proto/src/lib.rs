//! nexar-proto: the sans-IO core of nexar.
//!
//! Everything nexar does that is not moving bytes between a socket and memory lives here:
//! the wire codec, the seed's join handshake and rank assignment, the worker's peer mesh,
//! tagged point-to-point matching, the TLS and QUIC configuration, and (behind the `sim`
//! feature) a deterministic simulator that runs many real nodes in one thread. The crate
//! reads no clock, opens no socket, spawns no thread and draws no global randomness:
//! time arrives as `now: Instant` on every call, randomness from the 32-byte seed in
//! [`NodeConfig`], so the same inputs give the same outputs, bit for bit.
//!
//! # The run-loop contract
//!
//! A [`Node`] has four kinds of methods:
//! - getters: [`Node::rank`], [`Node::world_size`], [`Node::epoch`], [`Node::ticket`],
//!   [`Node::stats`];
//! - inputs: [`Node::handle_datagram`] for each UDP datagram received and
//!   [`Node::handle_timeout`] when the timer fires;
//! - commands: [`Node::command`], which returns an [`OpId`] whose result arrives later as
//!   [`Event::Completed`];
//! - outputs: [`Node::poll_transmit`], [`Node::poll_event`], [`Node::poll_timeout`]
//!   ([`Node::poll_transmit_batch`] instead of `poll_transmit` for a driver whose socket
//!   can send GSO batches).
//!
//! After every input or command the driver must drain `poll_transmit` (sending each
//! datagram) and `poll_event` until both return `None`, then read `poll_timeout` and wait
//! for exactly one of: a datagram, the timer, or a command from the application. On a
//! timer it passes the clock reading, not the deadline. Time never goes backwards inside
//! the node (an earlier `now` is clamped to the latest seen), and a spurious or early
//! `handle_timeout` is harmless. Everything is `&mut self`: the node lives in one task
//! and nothing is shared, so there are no locks, channels or callbacks inside.
//!
//! ```no_run
//! # use std::time::Instant;
//! # fn recv_datagram() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send(_: std::net::SocketAddr, _: &[u8]) {}
//! # fn run(mut node: nexar_proto::Node) {
//! let mut buf = Vec::new();
//! loop {
//!     let now = Instant::now();
//!     while let Some(t) = node.poll_transmit(now, &mut buf) {
//!         send(t.destination, &buf[..t.size]);
//!     }
//!     while let Some(event) = node.poll_event() {
//!         println!("{event:?}");
//!     }
//!     let _deadline = node.poll_timeout();
//!     // ... wait for a datagram, the deadline, or a command ...
//!     match recv_datagram() {
//!         Some((from, bytes)) => node.handle_datagram(Instant::now(), from, None, bytes[..].into()),
//!         None => node.handle_timeout(Instant::now()),
//!     }
//! }
//! # }
//! ```

pub mod codec;
pub mod collective;
pub mod compress;
mod config;
pub mod crypto;
mod error;
mod event;
#[doc(hidden)]
pub mod fuzz_checks;
mod membership;
mod node;
mod p2p;
mod retain;
mod rpc;
#[cfg(feature = "sim")]
pub mod sim;
mod ticket;
mod transmit;
mod transport;

pub use config::{NodeConfig, RecoveryPolicy, SeedConfig};
pub use error::{CommandError, ConfigError, JoinError, OpError};
pub use event::{DownReason, Event, OpId, Outcome};
pub use node::{Command, Node, NodeStats};
pub use rpc::RpcRequestId;
pub use ticket::{JoinTicket, TicketError};
pub use transmit::Transmit;

/// The version a worker states in Hello; the seed refuses any other.
pub const PROTOCOL_VERSION: u16 = codec::VERSION as u16;
