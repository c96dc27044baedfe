//! nexar on smol: run a [`nexar_proto::Node`] over one UDP socket and one timer, with a
//! typed async API for collectives and point-to-point messages. The API is
//! `nexar-tokio`'s, item for item (the same source file); only the driver loop differs.
//!
//! ```
//! use nexar_smol::{bootstrap_local, NexarError, ReduceOp};
//!
//! fn main() -> Result<(), NexarError> {
//!     smol::block_on(async {
//!         let (seed, clients) = bootstrap_local(4).await?;
//!         let tasks: Vec<_> = clients
//!             .into_iter()
//!             .map(|client| {
//!                 smol::spawn(async move {
//!                     let mut data = vec![client.rank() as f32; 1024];
//!                     client.all_reduce(&mut data, ReduceOp::Sum).await?;
//!                     assert_eq!(data[0], 6.0); // 0 + 1 + 2 + 3
//!                     client.shutdown().await;
//!                     Ok::<_, NexarError>(())
//!                 })
//!             })
//!             .collect();
//!         for task in tasks {
//!             task.await?;
//!         }
//!         seed.shutdown().await;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! Where the nodes run: every node's driver is one task on smol's global executor
//! ([`smol::spawn`]), so nexar can be called from any thread and any executor (inside
//! [`smol::block_on`], a `smol::Executor`, even another runtime); no runtime context is
//! needed. The global executor runs on `SMOL_THREADS` threads (one unless that variable is
//! set when the executor first starts): with several nodes in one process, set it to the
//! number of cores so that they use all of them, or, faster for small messages, run a
//! block of nodes per core, each block in [`block_on_local`] on a thread of its own.
//!
//! Across processes: one [`Seed::bind`] prints a [`JoinTicket`]; every rank calls
//! [`Client::join`] with it (or [`join_from_env`] under a launcher; see [`LaunchEnv`]).
//! The `nexar` CLI of `nexar-tokio` runs on this driver with `nexar local --driver smol`.
//!
//! Handles: a [`Client`] is one rank and dereferences to its world [`Communicator`]; every
//! collective comes as an `async fn` on slices and as a `*_start` on an owned `Vec`
//! returning a [`Pending`]. Dropping the last handle of a node stops its driver after a
//! short linger ([`Config::linger`]); call [`Client::shutdown`] before the process exits so
//! the linger is not cut short.
//!
//! Split communicators take sends, receives and RPC calls by their own ranks (never
//! confused with the world's, whatever the tags) and map them to world ranks
//! ([`Communicator::world_rank`], [`Communicator::comm_rank`], [`Communicator::members`]);
//! one lives until the next epoch change, after which its calls fail with
//! [`NexarError::EpochChanged`]. The [`blocking`] client has every call without async,
//! each client with a runtime of its own, callable from many threads at once:
//!
//! ```
//! use nexar_smol::{blocking, NexarError, ReduceOp};
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
//! Layout: `api/` (handles, requests, the node host), `rpc.rs` (RPC handlers and calls),
//! `env.rs` (launcher variables) and `reference.rs` (the reproducible all-reduce) are
//! `nexar-tokio`'s files, compiled here unchanged through `#[path]`; `driver.rs` is the
//! smol loop.

#[path = "../../nexar-tokio/src/api/mod.rs"]
mod api;
mod driver;
#[path = "../../nexar-tokio/src/env.rs"]
mod env;
#[path = "../../nexar-tokio/src/membership.rs"]
mod membership;
#[path = "../../nexar-tokio/src/reference.rs"]
pub mod reference;
#[path = "../../nexar-tokio/src/rpc.rs"]
mod rpc;
#[path = "../../nexar-tokio/src/state_file.rs"]
mod state_file;
#[path = "../../nexar-tokio/src/tuning.rs"]
pub mod tuning;
#[path = "../../nexar-tokio/src/udp.rs"]
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
pub use driver::{block_on_local, spawn_here};
pub use env::{join_from_env, LaunchEnv};
pub use membership::{Membership, MembershipEvents};
pub use nexar_proto::codec::{DType, ReduceOp, RpcStatus};
pub use nexar_proto::collective::{CommId, Element};
pub use nexar_proto::{
    CommandError, ConfigError, DownReason, Event, JoinError, JoinTicket, NodeConfig, NodeStats,
    OpError, RecoveryPolicy, TicketError,
};
pub use rpc::RpcResult;
