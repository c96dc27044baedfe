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
//! Split communicators take sends, receives and RPC calls by their own ranks (never
//! confused with the world's, whatever the tags) and map them to world ranks
//! ([`Communicator::world_rank`], [`Communicator::comm_rank`], [`Communicator::members`]);
//! one lives until the next epoch change, after which its calls fail with
//! [`NexarError::EpochChanged`]. The [`blocking`] client has every call without async,
//! each client with a runtime of its own, callable from many threads at once:
//!
//! ```
//! use nexar_tokio::{blocking, NexarError, ReduceOp};
//!
//! fn main() -> Result<(), NexarError> {
//!     let (seed, clients) = blocking::bootstrap_local(4)?;
//!     for client in &clients {
//!         let me = client.rank();
//!         client.register_rpc(7, move |_from, args| Ok([&args[..], &[me as u8]].concat().into()))?;
//!     }
//!     std::thread::scope(|s| {
//!         let threads: Vec<_> = clients
//!             .iter()
//!             .map(|client| s.spawn(move || -> Result<(), NexarError> {
//!                 let mut data = vec![client.rank() as f32; 8];
//!                 client.all_reduce(&mut data, ReduceOp::Sum)?;
//!                 assert_eq!(data[0], 6.0); // 0 + 1 + 2 + 3
//!                 // Pairs {0, 1} and {2, 3}, each addressed by its ranks in the pair.
//!                 let pair = client.split(Some(client.rank() / 2), 0)?.expect("a colour");
//!                 let partner = 1 - pair.rank();
//!                 let partner_world = pair.world_rank(partner).expect("a member");
//!                 pair.send(partner, 5, b"pair")?;
//!                 client.send(partner_world, 5, b"world")?; // same tag, same peer
//!                 assert_eq!(&pair.recv(partner, 5)?[..], b"pair");
//!                 assert_eq!(&client.recv(partner_world, 5)?[..], b"world");
//!                 let answer = pair.rpc(partner, 7, bytes::Bytes::from_static(b"hi"))?;
//!                 assert_eq!(&answer[..], &[b'h', b'i', partner_world as u8]);
//!                 Ok(())
//!             }))
//!             .collect();
//!         threads.into_iter().try_for_each(|t| t.join().expect("no panic"))
//!     })?;
//!     for client in clients {
//!         client.shutdown()?;
//!     }
//!     seed.shutdown()
//! }
//! ```
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
pub mod tuning;
mod udp;

pub use api::{
    blocking, bootstrap_local, bootstrap_local_with, BucketedAllReduce, Client, Communicator,
    Config, DeviceError, DeviceMemory, EnvError, HostMemory, NexarError, Pending,
    PendingCollective, Reduced, Seed, DEFAULT_BUCKET_BYTES, LINGER_QUIET, LOOPBACK_INITIAL_RTT,
    LOOPBACK_MAX_UDP_PAYLOAD,
};
/// Compressors for [`Communicator::all_reduce_compressed`]: top-k, random-k, none, and the
/// [`Compressor`](compress::Compressor) trait for your own.
pub mod compress {
    pub use nexar_proto::compress::{
        CompressError, Compressor, ErrorFeedback, Magnitude, NoCompression, RandomK, Selection,
        TopK,
    };
}
pub use env::{join_from_env, LaunchEnv};
pub use membership::{Membership, MembershipEvents};
pub use nexar_proto::codec::{DType, ReduceOp, RpcStatus};
pub use nexar_proto::collective::{CommId, Element};
pub use nexar_proto::{
    CommandError, ConfigError, DownReason, Event, JoinError, JoinTicket, NodeConfig, NodeStats,
    OpError, RecoveryPolicy, TicketError,
};
pub use rpc::RpcResult;
