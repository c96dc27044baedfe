//! The blocking client: every call of the async API as a plain blocking call, for code
//! that is not async and for bindings to other languages.
//!
//! Each [`Client`] (and [`Seed`]) owns a small runtime of its driver on a thread of its
//! own (tokio: a multi-thread runtime with one worker; smol: an executor on one thread),
//! where its node's driver and its RPC handlers run; a blocking call submits its request
//! like the async one and parks the calling thread until the answer comes. So the node
//! keeps serving its peers (heartbeats, acknowledgements, RPC) between calls, and any
//! number of OS threads may call one client at once: collectives on different
//! communicators, a send on one thread and the matching receive on another. The errors
//! are the async API's, unchanged.
//!
//! The crate docs have an example: threads, each with a client, running a collective,
//! messages on a split communicator and an RPC call.
//!
//! Inside async code: a blocking call made on a thread that runs a tokio runtime (a task,
//! `block_on`, `spawn_blocking` too) returns [`NexarError::BlockingInAsync`] at once
//! instead of blocking, since tokio forbids blocking there; so does one made inside
//! `nexar_smol::block_on_local`, whose thread runs other nodes. Elsewhere (another smol
//! executor) the call blocks that thread, stalling its other tasks but never this
//! client's node, which runs on its own thread. The RPC handlers a blocking client
//! registers run on threads meant for blocking, and may make blocking calls.
//!
//! Layout: this file holds the runtime glue, the seed and the client; `communicator.rs`
//! the calls on a communicator. Which runtime and how to block on a future is the
//! driver's (`crate::driver::BlockingRuntime`); nothing else here is driver-specific.

mod communicator;

pub use communicator::Communicator;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use nexar_proto::{JoinTicket, NodeStats};

use crate::driver::BlockingRuntime;
use crate::membership::Membership;
use crate::rpc::RpcResult;

use super::{Config, NexarError};

thread_local! {
    /// Set while this thread runs a blocking client's RPC handler: its calls may block
    /// (the handler runs on a thread meant for it, even where that thread belongs to a
    /// runtime).
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread runs a blocking client's RPC handler.
// The tokio driver asks (its handler threads belong to a runtime); smol's never needs to.
#[allow(dead_code)]
pub(crate) fn in_handler() -> bool {
    IN_HANDLER.get()
}

/// The runtime a blocking handle's node runs on, shared by the client and every
/// communicator split from it; it stops when the last of them is gone.
#[derive(Debug, Clone)]
struct Runtime(Arc<BlockingRuntime>);

impl Runtime {
    fn new() -> Result<Self, NexarError> {
        Ok(Self(Arc::new(BlockingRuntime::new()?)))
    }

    /// Run `future` to completion, parking this thread.
    fn wait<T>(
        &self,
        future: impl Future<Output = Result<T, NexarError>>,
    ) -> Result<T, NexarError> {
        self.0.block_on(future)?
    }
}

/// A running seed (see [`crate::Seed`]) with blocking calls.
#[derive(Debug)]
pub struct Seed {
    inner: crate::Seed,
    runtime: Runtime,
}

impl Seed {
    /// Bind `addr` and start a seed for `world_size` ranks (see [`crate::Seed::bind`]).
    pub fn bind(addr: SocketAddr, world_size: u32, config: Config) -> Result<Seed, NexarError> {
        let runtime = Runtime::new()?;
        let inner = runtime.wait(crate::Seed::bind(addr, world_size, config))?;
        Ok(Seed { inner, runtime })
    }

    /// What workers need to join; a secret.
    pub fn ticket(&self) -> &JoinTicket {
        self.inner.ticket()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Wait until every rank has been welcomed; gives the world size.
    pub fn formed(&self) -> Result<u32, NexarError> {
        self.runtime.wait(self.inner.formed())
    }

    /// The seed's counters.
    pub fn stats(&self) -> Result<NodeStats, NexarError> {
        self.runtime.wait(self.inner.stats())
    }

    /// Stop the seed and wait until its driver has stopped (after its linger).
    pub fn shutdown(self) -> Result<(), NexarError> {
        let Seed { inner, runtime } = self;
        runtime.wait(async move {
            inner.shutdown().await;
            Ok(())
        })
    }
}

/// One rank of a formed cluster (see [`crate::Client`]) with blocking calls.
/// Dereferences to its world [`Communicator`]: every collective, send, receive, RPC
/// call and split is a method on it. `Sync`: share it between threads by reference (or
/// in an `Arc`) and call it from all of them at once.
#[derive(Debug)]
pub struct Client {
    inner: crate::Client,
    world: Communicator,
}

impl Client {
    /// Join the cluster the ticket names and wait until this rank is connected to every
    /// other (see [`crate::Client::join`]).
    pub fn join(ticket: &JoinTicket, config: Config) -> Result<Client, NexarError> {
        let runtime = Runtime::new()?;
        let inner = runtime.wait(crate::Client::join(ticket, config))?;
        Ok(Client::wrap(inner, runtime))
    }

    fn wrap(inner: crate::Client, runtime: Runtime) -> Client {
        let world = Communicator::new(inner.world().duplicate(), runtime);
        Client { inner, world }
    }

    /// This node's rank in the world (in the current epoch).
    pub fn rank(&self) -> u32 {
        self.inner.rank()
    }

    /// The number of ranks in the world (in the current epoch).
    pub fn world_size(&self) -> u32 {
        self.inner.world_size()
    }

    /// The membership epoch this rank is in now.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// The world communicator.
    pub fn world(&self) -> &Communicator {
        &self.world
    }

    /// Run `handler` on a thread meant for blocking for every RPC to `fn_id` on this rank
    /// (see [`crate::Client::register_rpc`]): it gets the caller's world rank and the
    /// arguments and returns the answer or `Err(detail)`. Requests run concurrently, each
    /// on a thread of the runtime's blocking pool; a handler that panics fails its call
    /// with `RpcFailed` (status `HandlerError`). The crate docs have an example.
    pub fn register_rpc<F>(&self, fn_id: u32, handler: F) -> Result<(), NexarError>
    where
        F: Fn(u32, Bytes) -> RpcResult + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let run = move |from: u32, args: Bytes| {
            let handler = handler.clone();
            async move {
                let call = move || {
                    IN_HANDLER.set(true);
                    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handler(from, args)
                    }));
                    IN_HANDLER.set(false);
                    caught.unwrap_or_else(|_| Err(Bytes::from_static(b"the handler panicked")))
                };
                crate::driver::unblock(call).await.unwrap_or_else(|| {
                    Err(Bytes::from_static(b"the handler's thread was cancelled"))
                })
            }
        };
        self.wait(self.inner.register_rpc(fn_id, run))
    }

    /// Stop answering `fn_id`; whether it was registered.
    pub fn unregister_rpc(&self, fn_id: u32) -> Result<bool, NexarError> {
        self.wait(self.inner.unregister_rpc(fn_id))
    }

    /// Every rank calls this at the same point: pending joins and leaves take effect
    /// (see [`crate::Client::checkpoint`]). Communicators split before it are ended if the
    /// epoch changes.
    pub fn checkpoint(&self) -> Result<Membership, NexarError> {
        self.wait(self.inner.checkpoint())
    }

    /// Leave at the next checkpoint (see [`crate::Client::leave`]).
    pub fn leave(&self) -> Result<Membership, NexarError> {
        self.wait(self.inner.leave())
    }

    /// Under the manual recovery policy, after a `PeerDown`: move to the next epoch with
    /// the survivors (see [`crate::Client::recover`]).
    pub fn recover(&self) -> Result<Membership, NexarError> {
        self.wait(self.inner.recover())
    }

    /// The node's counters.
    pub fn stats(&self) -> Result<NodeStats, NexarError> {
        self.wait(self.inner.stats())
    }

    /// Drop this handle and wait until the node's driver has stopped: after every
    /// communicator split from it is dropped too, and the linger is over (see
    /// [`crate::Client::shutdown`]). Dropping a client without it stops the node at once
    /// once the last handle is gone, cutting the linger short.
    pub fn shutdown(self) -> Result<(), NexarError> {
        let Client { inner, world } = self;
        let runtime = world.runtime().clone();
        drop(world);
        runtime.wait(async move {
            inner.shutdown().await;
            Ok(())
        })
    }

    fn wait<T>(
        &self,
        future: impl Future<Output = Result<T, NexarError>>,
    ) -> Result<T, NexarError> {
        self.world.runtime().wait(future)
    }
}

impl Deref for Client {
    type Target = Communicator;

    fn deref(&self) -> &Communicator {
        &self.world
    }
}

/// Start a seed on loopback and `n` workers in this process, each with a runtime of its
/// own, and wait until the cluster has formed (see [`crate::bootstrap_local`]). The
/// clients come ordered by rank.
pub fn bootstrap_local(n: u32) -> Result<(Seed, Vec<Client>), NexarError> {
    bootstrap_local_with(n, Config::default())
}

/// [`bootstrap_local`] with a configuration for the seed and every worker.
pub fn bootstrap_local_with(n: u32, config: Config) -> Result<(Seed, Vec<Client>), NexarError> {
    let config = config.with_loopback_transport();
    let seed = Seed::bind(
        SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        n,
        config.clone(),
    )?;
    // Every join must be under way before any is awaited: none completes alone.
    let joining = (0..n)
        .map(|_| {
            let runtime = Runtime::new()?;
            let joining = runtime.wait(async { super::Joining::start(seed.ticket(), &config) })?;
            Ok((joining, runtime))
        })
        .collect::<Result<Vec<_>, NexarError>>()?;
    let mut clients = Vec::with_capacity(n as usize);
    for (joining, runtime) in joining {
        let inner = runtime.wait(joining.finish())?;
        clients.push(Client::wrap(inner, runtime));
    }
    clients.sort_by_key(Client::rank);
    Ok((seed, clients))
}
