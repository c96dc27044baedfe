//! The seed's handle.

use super::*;

// ---- the seed ----------------------------------------------------------------------

/// A running seed: it forms the cluster and hands out the join ticket. It carries no
/// data; once every rank is welcomed the workers no longer need it. Dropping the handle
/// stops it (after the linger).
#[derive(Debug)]
pub struct Seed {
    tx: Outbox,
    ticket: JoinTicket,
    local_addr: SocketAddr,
}

impl Seed {
    /// Bind `addr` and start a seed for `world_size` ranks. The join secret and the
    /// node's RNG seed come from the OS CSPRNG. Must be called within the runtime.
    ///
    /// With [`Config::state_file`], the seed's state is written there on every change; if
    /// the file already exists, the seed comes back from it instead (same ticket, same
    /// members, the persisted world size and limits), and the workers reconnect to it.
    /// Bind the address the ticket names (or one that reaches it).
    pub async fn bind(
        addr: SocketAddr,
        world_size: u32,
        config: Config,
    ) -> Result<Seed, NexarError> {
        let saved = match &config.state_file {
            Some(path) => crate::state_file::read(path).map_err(|e| match e {
                crate::state_file::ReadError::Io(e) => {
                    NexarError::io("reading the seed's state file", e)
                }
                crate::state_file::ReadError::Insecure(reason) => NexarError::InsecureFile {
                    path: path.clone(),
                    reason,
                },
            })?,
            None => None,
        };
        let (socket, local) = bind(addr)?;
        let node_config = config.node_config(local)?;
        let now = Instant::now();
        let node = match saved {
            Some(saved) => {
                let node = Node::seed_restore(node_config, &saved, now)?;
                // The new incarnation is on disk before the first datagram is read: a seed
                // that crashed again before writing it would come back as the same
                // incarnation, with the same randomness, a second time.
                if let (Some(path), Some(bytes)) = (&config.state_file, node.seed_snapshot()) {
                    crate::state_file::write(path, &bytes)
                        .map_err(|e| NexarError::io("writing the seed's state file", e))?;
                }
                node
            }
            None => {
                let mut seed_config = SeedConfig::new(world_size, os_random()?);
                seed_config.max_world_size = config.max_world_size.unwrap_or(world_size);
                seed_config.max_pending_joins = config.max_pending_joins;
                Node::seed(node_config, seed_config, now)?
            }
        };
        let ticket = node
            .ticket()
            .cloned()
            .ok_or_else(|| NexarError::Internal("a seed without a ticket".into()))?;
        let span = tracing::info_span!("nexar", role = "seed", %local);
        let (tx, inbox, answers) = crate::rpc::channel();
        // A restored seed formed before its crash: `formed()` answers at once.
        let formed = node.world_size();
        let mut host = NodeHost::new(node, span, config.linger, now, answers);
        host.state_file = config.state_file;
        host.formed = formed;
        crate::driver::spawn(socket, host, inbox)?;
        Ok(Seed {
            tx,
            ticket,
            local_addr: local,
        })
    }

    /// What workers need to join (print it, or put it in `NEXAR_JOIN`); a secret.
    pub fn ticket(&self) -> &JoinTicket {
        &self.ticket
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Wait until every rank has been welcomed; gives the world size.
    pub async fn formed(&self) -> Result<u32, NexarError> {
        let (reply, rx) = oneshot::channel();
        send(&self.tx, Request::Formed { reply });
        rx.await.map_err(|_| NexarError::DriverStopped)
    }

    /// The seed's counters (`connections` drops to 0 once every worker has gone).
    pub async fn stats(&self) -> Result<NodeStats, NexarError> {
        stats(&self.tx).await
    }

    /// Drop the handle and wait until the driver has stopped (after its linger).
    pub async fn shutdown(self) {
        shutdown(self.tx).await
    }
}

pub(crate) fn send(tx: &Outbox, request: Request) {
    // A closed channel drops the request and with it the reply sender, so the caller's
    // receiver resolves to `Canceled`, which becomes `DriverStopped`.
    let _ = tx.unbounded_send(request);
}

/// Drop `tx` and wait until the driver task ends, which it does once every handle of
/// the node is gone and the linger is over. Needed before a runtime shuts down, which
/// would otherwise cut the linger short.
pub(super) async fn shutdown(tx: Outbox) {
    let (watcher, stopped) = oneshot::channel();
    send(&tx, Request::Stopped { watcher });
    drop(tx);
    let _ = stopped.await;
}

pub(super) async fn stats(tx: &Outbox) -> Result<NodeStats, NexarError> {
    let (reply, rx) = oneshot::channel();
    send(tx, Request::Stats { reply });
    rx.await.map_err(|_| NexarError::DriverStopped)
}
