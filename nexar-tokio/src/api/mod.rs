//! The runtime-agnostic user API: typed handles that talk to a driver task over a channel.
//!
//! This module is shared by the drivers: `nexar-tokio` compiles it as `mod api`, and
//! `nexar-smol` includes the very same files with
//! `#[path = "../../nexar-tokio/src/api/mod.rs"] mod api;` (the submodules, one per
//! concept, come along). It therefore names no runtime type: it depends only on `nexar-proto`, `futures-channel`, `bytes`, `thiserror` and
//! `tracing` (and `getrandom` for the OS random source), and asks the including crate for these
//! items in `crate::driver`:
//!
//! - `pub(crate) fn spawn(socket: std::net::UdpSocket, host: NodeHost, inbox: Inbox)
//!   -> Result<(), NexarError>`: run `host` on `socket` in one task of the runtime, as the
//!   loop in [`NodeHost`]'s docs describes, until [`NodeHost::should_exit`]
//!   (with the socket-buffer, datagram and burst sizes defined here, shared by both).
//! - for the blocking client ([`blocking`]): `pub(crate) struct BlockingRuntime` with
//!   `fn new() -> Result<Self, NexarError>` (a runtime that keeps running the nodes created
//!   in it between calls) and `fn block_on<F: Future>(&self, F) -> Result<F::Output,
//!   NexarError>` (park this thread until `F` is done, with nodes created inside spawned
//!   on that runtime; `Err(NexarError::BlockingInAsync)` where blocking is not allowed),
//!   and `pub(crate) async fn unblock<T>(f: impl FnOnce() -> T) -> Option<T>` (run a
//!   blocking closure off the executor; `None` if it could not finish).
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

pub mod blocking;
mod bucketed;
mod client;
mod communicator;
mod compressed;
mod config;
mod device;
mod error;
mod host;
mod log_limit;
mod net;
mod p2p;
mod pending;
mod seed;

pub use bucketed::{BucketedAllReduce, Reduced, DEFAULT_BUCKET_BYTES};
pub(crate) use client::Joining;
pub use client::{bootstrap_local, bootstrap_local_with, Client};
pub(crate) use communicator::unexpected;
pub use communicator::Communicator;
pub use config::{Config, LINGER_QUIET, LOOPBACK_INITIAL_RTT, LOOPBACK_MAX_UDP_PAYLOAD};
pub use device::{DeviceError, DeviceMemory, HostMemory};
pub use error::{EnvError, NexarError};
use host::Outbox;
pub(crate) use host::{Inbox, NodeHost, Outgoing, Request};
use net::{bind, default_bind};
pub(crate) use net::{os_random, MAX_DATAGRAM, RECV_BURST, SOCKET_BUFFER};
pub use pending::{Pending, PendingCollective};
pub(crate) use seed::send;
pub use seed::Seed;
use seed::{shutdown, stats};

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_channel::{mpsc, oneshot};

use crate::membership::{MembershipEvents, WorldView};
use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::{Buffer, CommId, Element};
use nexar_proto::{
    Command, CommandError, ConfigError, Event, JoinError, JoinTicket, Node, NodeConfig, NodeStats,
    OpError, OpId, Outcome, SeedConfig, TicketError,
};
