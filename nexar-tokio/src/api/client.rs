//! One rank: joining, the client handle, and whole local clusters.

use super::*;

// ---- the client (one rank) -----------------------------------------------------------

/// One rank of a formed cluster. Dereferences to the world [`Communicator`], so every
/// collective, send, receive and RPC call is a method on the client (on `CommId::WORLD`,
/// addressed by world rank). Dropping the last handle of the node stops it (after the linger).
#[derive(Debug)]
pub struct Client {
    world: Communicator,
    view: Arc<WorldView>,
    events: Arc<Mutex<Option<MembershipEvents>>>,
}

/// A worker whose driver runs, waiting for the cluster to form.
#[derive(Debug)]
pub(crate) struct Joining {
    tx: Outbox,
    view: Arc<WorldView>,
    events: Arc<Mutex<Option<MembershipEvents>>>,
    ready: oneshot::Receiver<Result<(u32, u32), NexarError>>,
    max_message: usize,
}

impl Joining {
    /// Bind, build the worker node and start its driver; the join proceeds in the
    /// background, so several can be started before any is awaited.
    pub(crate) fn start(ticket: &JoinTicket, config: &Config) -> Result<Self, NexarError> {
        let (socket, local) = bind(config.bind.unwrap_or_else(|| default_bind(ticket.addr)))?;
        let node_config = config.node_config(local)?;
        let now = Instant::now();
        let node = Node::worker(node_config, ticket, now)?;
        let span =
            tracing::info_span!("nexar", role = "worker", rank = tracing::field::Empty, %local);
        let (tx, inbox, answers) = crate::rpc::channel();
        let mut host = NodeHost::new(node, span, config.linger, now, answers);
        let (ready_tx, ready) = oneshot::channel();
        host.ready = Some(ready_tx);
        let view = WorldView::new(0, 0, 0);
        host.view = Some(view.clone());
        let (membership_tx, events) = crate::membership::channel();
        host.membership_tx = Some(membership_tx);
        crate::driver::spawn(socket, host, inbox)?;
        let max_message = config.node.max_message_len;
        Ok(Self {
            tx,
            view,
            events,
            ready,
            max_message,
        })
    }

    /// Wait for `Ready`.
    pub(crate) async fn finish(self) -> Result<Client, NexarError> {
        let (rank, size) = self.ready.await.map_err(|_| NexarError::DriverStopped)??;
        Ok(Client {
            world: Communicator {
                tx: self.tx,
                id: CommId::WORLD,
                rank,
                size,
                world_rank: rank,
                view: Some(self.view.clone()),
                members: Vec::new(),
                epoch: 0,
                max_message: self.max_message,
                timeout: None,
            },
            view: self.view,
            events: self.events,
        })
    }
}

impl Client {
    /// Join the cluster the ticket names and wait until this rank is connected to every
    /// other (or the join fails: rejected, untrusted seed, `formation_timeout`).
    pub async fn join(ticket: &JoinTicket, config: Config) -> Result<Client, NexarError> {
        Joining::start(ticket, &config)?.finish().await
    }

    /// This node's rank in the world (in the current epoch).
    pub fn rank(&self) -> u32 {
        self.view.rank()
    }

    /// The number of ranks in the world (in the current epoch).
    pub fn world_size(&self) -> u32 {
        self.view.size()
    }

    pub(crate) fn view(&self) -> &WorldView {
        &self.view
    }

    pub(crate) fn events_slot(&self) -> &Mutex<Option<MembershipEvents>> {
        &self.events
    }

    /// Run a command and give back its raw outcome.
    pub(crate) async fn command_outcome(&self, command: Command) -> Result<Outcome, NexarError> {
        let span = tracing::debug_span!("membership", rank = self.rank());
        self.world.submit(command, span, Ok).await
    }

    /// The world communicator.
    pub fn world(&self) -> &Communicator {
        &self.world
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<NodeStats, NexarError> {
        stats(&self.world.tx).await
    }

    /// Drop this handle and wait until the node's driver has stopped: after every other
    /// handle of the node (communicators from `split`) is dropped too, and the linger is
    /// over. Call it before the runtime shuts down so that peers still get the last data.
    pub async fn shutdown(self) {
        shutdown(self.world.tx).await
    }
}

impl Deref for Client {
    type Target = Communicator;

    fn deref(&self) -> &Communicator {
        &self.world
    }
}

/// Start a seed on loopback and `n` workers in this process, and wait until the cluster
/// has formed. Returns the seed (keep it or drop it: the workers no longer need it) and
/// the clients ordered by rank.
pub async fn bootstrap_local(n: u32) -> Result<(Seed, Vec<Client>), NexarError> {
    bootstrap_local_with(n, Config::default()).await
}

/// [`bootstrap_local`] with a configuration for the seed and every worker.
pub async fn bootstrap_local_with(
    n: u32,
    config: Config,
) -> Result<(Seed, Vec<Client>), NexarError> {
    let config = config.with_loopback_transport();
    let seed = Seed::bind(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        n,
        config.clone(),
    )
    .await?;
    // Every join must be under way before any is awaited: none completes alone.
    let joining = (0..n)
        .map(|_| Joining::start(seed.ticket(), &config))
        .collect::<Result<Vec<_>, _>>()?;
    let mut clients = Vec::with_capacity(n as usize);
    for j in joining {
        clients.push(j.finish().await?);
    }
    clients.sort_by_key(Client::rank);
    Ok((seed, clients))
}
