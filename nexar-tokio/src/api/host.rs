//! The host: a `Node` plus the bookkeeping every driver needs (which request waits for
//! which event, parked sends, the linger).

use super::*;

// ---- the host: the node plus the bookkeeping every driver needs ----------------------

/// One transmit from [`NodeHost::poll_transmit`]: `bytes` holds one datagram, or several
/// of `segment` bytes each (the last may be shorter) for one GSO send.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) to: SocketAddr,
    pub(crate) segment: usize,
    pub(crate) ecn: Option<u8>,
    pub(crate) bytes: &'a [u8],
}

/// A reply slot for one command.
type Reply = oneshot::Sender<Result<Outcome, NexarError>>;

/// What a handle asks of its node's driver task.
#[derive(Debug)]
pub(crate) enum Request {
    /// Start a command; the outcome goes to `reply` when `Event::Completed` names it.
    /// With `epoch`, a collective or point-to-point command starts only if the node is
    /// still in that epoch (see `NexarError::EpochChanged`).
    Command {
        command: Command,
        reply: Reply,
        epoch: Option<u64>,
    },
    /// The node's counters.
    Stats { reply: oneshot::Sender<NodeStats> },
    /// Seed: the world size once the cluster has formed.
    Formed { reply: oneshot::Sender<u32> },
    /// Never answered: the sender is dropped with the host, which tells the waiter that
    /// the driver has stopped.
    Stopped { watcher: oneshot::Sender<()> },
    /// RPC: (un)register a handler, or a handler's answer (see `rpc.rs`).
    Rpc(crate::rpc::RpcMessage),
}

/// The receiving end of a node's requests; the driver polls it with `recv()` (tokio) or
/// as a `Stream` (smol).
pub(crate) use crate::rpc::Inbox;
pub(super) type Outbox = mpsc::UnboundedSender<Request>;

/// A [`Node`] with the waiting requests it will answer: what a driver task owns.
///
/// A driver runs it like this (the run-loop contract of `nexar-proto`, plus the inbox):
/// ```text
/// loop {
///     now = clock();
///     loop { send every host.poll_transmit(now); if !host.drain_events(now) { break } }
///     if host.should_exit(now) { break }
///     wait for one of: a datagram -> handle_datagram, a request -> handle_request
///                      (inbox closed -> close_inbox), host.poll_timeout() -> handle_timeout
/// }
/// ```
#[derive(Debug)]
pub(crate) struct NodeHost {
    pub(crate) node: Node,
    /// RPC handlers and the channel their answers come back on.
    pub(crate) rpc: crate::rpc::RpcHost,
    /// Replies for started operations, by the id the node gave them.
    pending: BTreeMap<OpId, Reply>,
    /// Sends the node refused with `Backpressure`, retried in order after each input.
    /// Later sends queue behind them so that per-destination order is kept.
    parked: VecDeque<(Command, Reply)>,
    /// Worker: who waits for `Ready` (`Client::join`).
    pub(super) ready: Option<oneshot::Sender<Result<(u32, u32), NexarError>>>,
    /// Seed: the world size once formed, and who waits for it.
    pub(super) formed: Option<u32>,
    formed_waiters: Vec<oneshot::Sender<u32>>,
    /// Dropped with the host (see `Request::Stopped`).
    stop_watchers: Vec<oneshot::Sender<()>>,
    /// Worker: the world as it is now, shared with the client's handles.
    pub(super) view: Option<Arc<WorldView>>,
    /// Worker: where membership events go (see `Client::membership_events`).
    pub(super) membership_tx: Option<mpsc::UnboundedSender<Event>>,
    span: tracing::Span,
    out: Vec<u8>,
    /// Datagrams per transmit (GSO); see [`NodeHost::set_max_datagrams`].
    max_datagrams: usize,
    linger: Duration,
    /// Since when every handle is gone, if they are.
    closing: Option<Instant>,
    last_io: Instant,
    /// Seed: where to write its state on every change.
    pub(super) state_file: Option<std::path::PathBuf>,
    /// Seed: one warning per rejected joiner, within a budget (anyone can cause them).
    rejections: super::log_limit::LogLimit,
}

impl NodeHost {
    pub(super) fn new(
        node: Node,
        span: tracing::Span,
        linger: Duration,
        now: Instant,
        answers: Outbox,
    ) -> Self {
        Self {
            node,
            rpc: crate::rpc::RpcHost::new(answers),
            pending: BTreeMap::new(),
            parked: VecDeque::new(),
            ready: None,
            formed: None,
            formed_waiters: Vec::new(),
            stop_watchers: Vec::new(),
            view: None,
            membership_tx: None,
            span,
            out: Vec::with_capacity(64 * 1024),
            max_datagrams: 1,
            linger,
            closing: None,
            last_io: now,
            state_file: None,
            rejections: super::log_limit::LogLimit::new(20, Duration::from_secs(1), now),
        }
    }

    /// The span the driver task runs in (one per node; workers record their rank in it).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A datagram arrived, with the ECN bits of its IP header if the socket reads them.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ecn: Option<u8>,
        data: BytesMut,
    ) {
        self.last_io = now;
        self.node.handle_datagram(now, from, ecn, data);
    }

    /// The timer fired (or any time: an early call is harmless).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
    }

    /// A handle asked for something.
    pub(crate) fn handle_request(&mut self, now: Instant, request: Request) {
        match request {
            Request::Command {
                command,
                reply,
                epoch: Some(expected),
            } if fenced(&command) && self.node.epoch() != expected => {
                let current = self.node.epoch();
                let _ = reply.send(Err(NexarError::EpochChanged { expected, current }));
            }
            Request::Command { command, reply, .. } => {
                if !self.parked.is_empty() && retryable(&command) {
                    self.parked.push_back((command, reply));
                } else {
                    self.start(now, command, reply);
                }
            }
            Request::Stats { reply } => {
                let _ = reply.send(self.node.stats());
            }
            Request::Formed { reply } => match self.formed {
                Some(world) => {
                    let _ = reply.send(world);
                }
                None => self.formed_waiters.push(reply),
            },
            Request::Stopped { watcher } => self.stop_watchers.push(watcher),
            Request::Rpc(message) => self.handle_rpc(now, message),
        }
    }

    /// Every handle is gone: serve on for the linger, then stop.
    pub(crate) fn close_inbox(&mut self, now: Instant) {
        self.closing.get_or_insert(now);
    }

    /// The next transmit and its bytes: one datagram, or a GSO batch of up to
    /// `max_datagrams` (see [`NodeHost::set_max_datagrams`]) cut every `segment` bytes.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Outgoing<'_>> {
        let t = self
            .node
            .poll_transmit_batch(now, self.max_datagrams, &mut self.out)?;
        self.last_io = now;
        Some(Outgoing {
            to: t.destination,
            segment: t.segment_size.unwrap_or(t.size).max(1),
            ecn: t.ecn,
            bytes: &self.out[..t.size],
        })
    }

    /// How many datagrams one transmit may batch: what the socket can send in one GSO
    /// call (1, the default, for a socket without offload).
    pub(crate) fn set_max_datagrams(&mut self, n: usize) {
        self.max_datagrams = n.max(1);
    }

    /// Deliver every pending event to whoever waits for it, and retry parked sends.
    /// Returns whether anything happened (then transmits may be due again).
    pub(crate) fn drain_events(&mut self, now: Instant) -> bool {
        let mut any = self.retry_parked(now);
        while let Some(event) = self.node.poll_event() {
            any = true;
            self.on_event(now, event);
        }
        any
    }

    /// When to call `handle_timeout`: the node's deadline, or the end of the linger.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let node = self.node.poll_timeout();
        let linger = self
            .closing
            .map(|since| (since + self.linger).min((self.last_io + LINGER_QUIET).max(since)));
        node.into_iter().chain(linger).min()
    }

    /// Whether the driver should stop: every handle is gone and the linger is over.
    pub(crate) fn should_exit(&self, now: Instant) -> bool {
        self.closing.is_some_and(|since| {
            now >= since + self.linger || now >= (self.last_io + LINGER_QUIET).max(since)
        })
    }

    fn start(&mut self, now: Instant, command: Command, reply: Reply) {
        // Only sends and RPC can be refused for backpressure and retried, and cloning them
        // clones a `Bytes` handle; a collective's buffer moves into the node uncopied.
        let retry = retryable(&command).then(|| command.clone());
        match self.node.command(now, command) {
            Ok(op) => {
                self.pending.insert(op, reply);
            }
            Err(CommandError::Backpressure { .. }) if retry.is_some() => {
                // Not an error for an async caller: wait until QUIC drains the queue.
                if let Some(command) = retry {
                    self.parked.push_back((command, reply));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn retry_parked(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some((command, reply)) = self.parked.pop_front() {
            // Parked commands are sends or RPC: the clone is a `Bytes` handle.
            match self.node.command(now, command.clone()) {
                Ok(op) => {
                    self.pending.insert(op, reply);
                    any = true;
                }
                Err(CommandError::Backpressure { .. }) => {
                    self.parked.push_front((command, reply));
                    break;
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    any = true;
                }
            }
        }
        any
    }

    fn on_event(&mut self, now: Instant, event: Event) {
        if crate::membership::is_membership(&event) {
            if let Event::EpochChanged {
                epoch,
                rank,
                world_size,
                ..
            } = &event
            {
                self.span.record("rank", rank);
                tracing::info!(epoch, rank, world_size, "epoch changed");
                if let Some(view) = &self.view {
                    view.set(*rank, *world_size, *epoch);
                }
            } else {
                tracing::warn!(?event, "membership");
            }
            if let Some(tx) = &self.membership_tx {
                // Nobody listening is fine: the events are advice.
                let _ = tx.unbounded_send(event);
            }
            return;
        }
        match event {
            Event::Completed { op, outcome } => {
                tracing::trace!(op = op.0, ok = outcome.is_ok(), "completed");
                if let Some(reply) = self.pending.remove(&op) {
                    // The caller may have dropped its future; nothing to do then.
                    let _ = reply.send(outcome.map_err(NexarError::from));
                }
            }
            Event::Ready {
                rank,
                world_size,
                epoch,
            } => {
                self.span.record("rank", rank);
                tracing::info!(rank, world_size, "ready");
                if let Some(view) = &self.view {
                    view.set(rank, world_size, epoch);
                }
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok((rank, world_size)));
                }
            }
            Event::JoinFailed { error } => {
                tracing::warn!(%error, "join failed");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(error.into()));
                }
            }
            Event::ClusterFormed { world_size, epoch } => {
                tracing::info!(world_size, epoch, "cluster formed");
                self.formed = Some(world_size);
                for waiter in self.formed_waiters.drain(..) {
                    let _ = waiter.send(world_size);
                }
            }
            Event::JoinerRejected { remote, reason } => match self.rejections.admit(now) {
                Some(0) => tracing::warn!(%remote, ?reason, "joiner rejected"),
                Some(suppressed) => tracing::warn!(
                    %remote,
                    ?reason,
                    suppressed,
                    "joiner rejected ({suppressed} more rejections not logged before it)"
                ),
                None => {}
            },
            Event::SeedStateChanged { epoch } => {
                let (Some(path), Some(bytes)) = (&self.state_file, self.node.seed_snapshot())
                else {
                    return;
                };
                match crate::state_file::write(path, &bytes) {
                    Ok(()) => tracing::debug!(epoch, "seed state written"),
                    Err(error) => tracing::error!(%error, "cannot write the seed's state file"),
                }
            }
            Event::RpcRequest {
                from,
                request,
                fn_id,
                payload,
            } => self.on_rpc_request(from, request, fn_id, payload),
            other => tracing::debug!(?other, "event"),
        }
    }
}

/// Commands the node may refuse with `Backpressure`, which the host parks and retries.
fn retryable(command: &Command) -> bool {
    matches!(
        command,
        Command::Send { .. } | Command::Rpc { .. } | Command::RpcRespond { .. }
    )
}

/// Commands whose meaning depends on the ranks of an epoch.
fn fenced(command: &Command) -> bool {
    matches!(
        command,
        Command::Collective { .. }
            | Command::Split { .. }
            | Command::Send { .. }
            | Command::Recv { .. }
            | Command::Rpc { .. }
    )
}
