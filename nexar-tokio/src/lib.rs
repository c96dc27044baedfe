//! nexar on tokio: run a [`nexar_proto::Node`] over one UDP socket and one timer, with a
//! typed async API for collectives and point-to-point messages.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nexar_tokio::NexarError> {
//! use nexar_tokio::{bootstrap_local, ReduceOp};
//!
//! let (_seed, clients) = bootstrap_local(4).await?;
//! let mut tasks = Vec::new();
//! for client in clients {
//!     tasks.push(tokio::spawn(async move {
//!         let mut data = vec![client.rank() as f32; 1024];
//!         client.all_reduce(&mut data, ReduceOp::Sum).await?;
//!         assert_eq!(data[0], 6.0); // 0 + 1 + 2 + 3
//!         Ok::<_, nexar_tokio::NexarError>(())
//!     }));
//! }
//! for t in tasks {
//!     t.await.expect("task")?;
//! }
//! # Ok(()) }
//! ```
//!
//! Across processes: one [`Seed::bind`] prints a [`JoinTicket`]; every rank calls
//! [`Client::join`] with it (or [`join_from_env`] under a launcher; see [`LaunchEnv`] for
//! the variables, their precedence, and what torchrun and Slurm can and cannot provide).
//! The `nexar` binary wraps both and an nccl-tests-style benchmark:
//!
//! ```text
//! nexar seed --listen 10.0.0.1:4000 --world-size 4 [--ticket-file F] [--advertise ADDR]
//! nexar worker --join TICKET bench allreduce --max-bytes 16M      # one per rank
//! nexar local --ranks 4 bench allreduce --min-bytes 8 --max-bytes 64M [--json]
//! ```
//!
//! Handles: a [`Client`] is one rank and dereferences to its world [`Communicator`]; every
//! collective comes as an `async fn` on slices (copies in and out) and as a `*_start` on an
//! owned `Vec` returning a [`Pending`] to await later (no copy, overlap allowed). Errors are
//! one [`NexarError`] wrapping the core's typed errors. Dropping the last handle of a node
//! stops its driver after a short linger ([`Config::linger`]); call
//! [`Client::shutdown`] before the runtime ends so the linger is not cut short.
//!
//! Layout: `api/` is the runtime-agnostic part (handles, requests, the node host) and is
//! shared verbatim with `nexar-smol`, as is `rpc.rs` (RPC handlers and calls);
//! `driver.rs` is the tokio loop; `env.rs` reads launcher variables. Each node runs in its
//! own task, on the runtime that created it: on a multi-thread runtime ranks in one
//! process use all cores; for small messages it is faster to give each core a thread with
//! a current-thread runtime and a block of consecutive ranks, so that no rank's tasks
//! move between cores (what `nexar local` does; see its `local` module).

mod api;
mod driver;
mod env;
mod membership;
pub mod reference;
mod rpc;
mod state_file;
mod udp;

pub use api::{
    blocking, bootstrap_local, bootstrap_local_with, Client, Communicator, Config, EnvError,
    NexarError, Pending, PendingCollective, Seed, LINGER_QUIET, LOOPBACK_INITIAL_RTT,
    LOOPBACK_MAX_UDP_PAYLOAD,
};
pub use env::{join_from_env, LaunchEnv};
pub use membership::{Membership, MembershipEvents};
pub use nexar_proto::codec::{DType, ReduceOp, RpcStatus};
pub use nexar_proto::collective::{CommId, Element};
pub use nexar_proto::{
    CommandError, ConfigError, DownReason, Event, JoinError, JoinTicket, NodeConfig, NodeStats,
    OpError, RecoveryPolicy, TicketError,
};
pub use rpc::RpcResult;
