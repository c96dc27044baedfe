//! Communicators and their collectives: typed slices in, typed slices out.

use super::*;

// ---- communicators and their collectives ---------------------------------------------

/// A group of ranks that run collectives together: the world, or one made by
/// [`split`](Communicator::split). Ranks and roots in its methods (collectives, sends,
/// receives, RPC calls) are ranks within it; [`world_rank`](Communicator::world_rank),
/// [`comm_rank`](Communicator::comm_rank) and [`members`](Communicator::members) map
/// between its ranks and world ranks.
///
/// A split communicator lives in the epoch it was made in. An epoch change (a recovery,
/// or a checkpoint that applies joins or leaves) ends it on every member: the node
/// forgets it, its unclaimed messages and posted receives are dropped (receives fail
/// with `OpError::EpochChanged`), and every later call on the handle fails with
/// [`NexarError::EpochChanged`] without starting anything. Split the world again on the
/// new epoch. The world communicator follows the epochs instead (its ranks are the
/// current ones).
///
/// Each collective has two forms. The `async fn` takes slices and copies in and out
/// (safe, and the caller keeps its memory). The `*_start` form takes an owned `Vec`, moves
/// it to the node without a copy, and returns a [`Pending`] to await later, so a rank can
/// overlap several operations or its own computation with communication.
#[derive(Debug)]
pub struct Communicator {
    pub(crate) tx: Outbox,
    pub(super) id: CommId,
    pub(super) rank: u32,
    pub(super) size: u32,
    /// This node's world rank (for spans).
    pub(super) world_rank: u32,
    /// The world's current rank and size (epoch changes renumber it); `None` for split
    /// communicators, which an epoch change ends.
    pub(super) view: Option<Arc<WorldView>>,
    /// Split communicators: the world rank of each rank, in rank order (the world's
    /// ranks are their own, so it is empty there).
    pub(super) members: Vec<u32>,
    /// Split communicators: the epoch they live in (unused for the world).
    pub(super) epoch: u64,
    /// The largest point-to-point payload.
    pub(super) max_message: usize,
    /// The deadline of every collective issued through this handle; `None`: the node's
    /// `collective_timeout` (see [`with_timeout`](Self::with_timeout)).
    pub(super) timeout: Option<Duration>,
}

impl Communicator {
    /// Another handle to the same communicator (it keeps the node's driver running too).
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            id: self.id,
            rank: self.rank,
            size: self.size,
            world_rank: self.world_rank,
            view: self.view.clone(),
            members: self.members.clone(),
            epoch: self.epoch,
            max_message: self.max_message,
            timeout: self.timeout,
        }
    }

    /// The communicator's id (`CommId::WORLD` for the world).
    pub fn id(&self) -> CommId {
        self.id
    }

    /// Our rank within it (for the world: in the current epoch).
    pub fn rank(&self) -> u32 {
        self.view.as_ref().map_or(self.rank, |v| v.rank())
    }

    /// Its number of ranks.
    pub fn size(&self) -> u32 {
        self.view.as_ref().map_or(self.size, |v| v.size())
    }

    /// A handle to the same communicator whose collectives (barrier included) each fail
    /// with `OpError::Timeout` if not finished within `timeout`, instead of the node's
    /// `collective_timeout`. The timeout is the core's: the operation is ended on this
    /// rank, its chunks stop being waited for, and the error names the ranks whose data
    /// had not arrived, as for the configured timeout. Other ranks keep their own
    /// deadlines. Keep the handle for many calls, or make one per call:
    ///
    /// ```no_run
    /// # async fn demo(client: &nexar_tokio::Client) -> Result<(), nexar_tokio::NexarError> {
    /// use std::time::Duration;
    /// use nexar_tokio::{NexarError, OpError, ReduceOp};
    ///
    /// let quick = client.with_timeout(Duration::from_secs(2));
    /// let mut grads = vec![1.0f32; 1024];
    /// quick.all_reduce(&mut grads, ReduceOp::Sum).await?;
    /// match quick.barrier().await {
    ///     Err(NexarError::Op(OpError::Timeout { waiting_for, .. })) => {
    ///         eprintln!("ranks {waiting_for:?} did not reach the barrier in 2 s");
    ///     }
    ///     other => other?,
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Communicator {
        Communicator {
            timeout: Some(timeout),
            ..self.duplicate()
        }
    }

    pub(crate) fn submit<R>(
        &self,
        command: Command,
        span: tracing::Span,
        map: fn(Outcome) -> Result<R, NexarError>,
    ) -> Pending<R> {
        let (reply, rx) = oneshot::channel();
        span.in_scope(|| tracing::trace!("submit"));
        // The world follows the epochs; a split communicator is fenced to its own.
        let epoch = Some(self.view.as_ref().map_or(self.epoch, |v| v.epoch()));
        send(
            &self.tx,
            Request::Command {
                command,
                reply,
                epoch,
            },
        );
        Pending::started(rx, map, span)
    }

    fn collective<T: Element>(
        &self,
        kind: CollectiveKind,
        op: ReduceOp,
        root: u32,
        count: usize,
        input: Vec<T>,
    ) -> PendingCollective<T> {
        let span = tracing::debug_span!(
            "collective",
            rank = self.world_rank,
            comm = self.id.0,
            ?kind,
            dtype = ?T::DTYPE,
            count
        );
        let command = Command::Collective {
            comm: self.id,
            kind,
            op,
            root,
            count,
            input: Buffer::from_vec(input),
            timeout: self.timeout,
        };
        self.submit(command, span, typed_output::<T>)
    }

    /// Start an all-reduce of an untyped buffer (one bucket of any dtype).
    pub(super) fn all_reduce_buffer_start(&self, input: Buffer, op: ReduceOp) -> Pending<Buffer> {
        let span = tracing::debug_span!(
            "collective",
            rank = self.world_rank,
            comm = self.id.0,
            kind = ?CollectiveKind::AllReduce,
            dtype = ?input.dtype(),
            count = input.len()
        );
        let command = Command::Collective {
            comm: self.id,
            kind: CollectiveKind::AllReduce,
            op,
            root: 0,
            count: input.len(),
            input,
            timeout: self.timeout,
        };
        self.submit(command, span, |o| match o {
            Outcome::Collective { buffer } => Ok(buffer),
            other => Err(unexpected("Collective", &other)),
        })
    }

    fn blocks(&self, what: &'static str, len: usize) -> Result<usize, NexarError> {
        let size = self.size() as usize;
        if len % size == 0 {
            Ok(len / size)
        } else {
            Err(NexarError::Length {
                what,
                expected: len.next_multiple_of(size),
                got: len,
            })
        }
    }

    // -- non-blocking forms (owned buffers) --

    /// Start an all-reduce; resolves to the reduced vector.
    pub fn all_reduce_start<T: Element>(&self, data: Vec<T>, op: ReduceOp) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::AllReduce, op, 0, count, data)
    }

    /// Start a broadcast of `root`'s vector. Every rank passes a vector of the same length;
    /// only the root's contents are used. Resolves to the root's data, received into the
    /// vector each rank passed (no allocation per call away from the root either).
    pub fn broadcast_start<T: Element>(&self, data: Vec<T>, root: u32) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::Broadcast, ReduceOp::None, root, count, data)
    }

    /// Start a reduce to `root`; resolves to the reduction at the root and to an empty
    /// vector elsewhere.
    pub fn reduce_start<T: Element>(
        &self,
        data: Vec<T>,
        op: ReduceOp,
        root: u32,
    ) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::Reduce, op, root, count, data)
    }

    /// Start an all-gather of every rank's `data` (same length everywhere); resolves to
    /// the `size × len` concatenation in rank order.
    pub fn all_gather_start<T: Element>(&self, data: Vec<T>) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::AllGather, ReduceOp::None, 0, count, data)
    }

    /// Start an all-gather in place (MPI_IN_PLACE): `data` holds `size` blocks of equal
    /// length, this rank's contribution already in block `rank`; resolves to the same
    /// vector with every block filled. The fast form for repeated all-gathers: the output
    /// is neither allocated nor zero-filled per call, and the contribution is not copied.
    pub fn all_gather_in_place_start<T: Element>(&self, data: Vec<T>) -> PendingCollective<T> {
        match self.blocks("all_gather_in_place data", data.len()) {
            Ok(count) => self.collective(CollectiveKind::AllGather, ReduceOp::None, 0, count, data),
            Err(e) => Pending::failed(e),
        }
    }

    /// Start a reduce-scatter: `data` holds `size` blocks; resolves to this rank's block
    /// of the reduction.
    pub fn reduce_scatter_start<T: Element>(
        &self,
        data: Vec<T>,
        op: ReduceOp,
    ) -> PendingCollective<T> {
        match self.blocks("reduce_scatter input", data.len()) {
            Ok(count) => self.collective(CollectiveKind::ReduceScatter, op, 0, count, data),
            Err(e) => Pending::failed(e),
        }
    }

    /// Start a gather to `root`; resolves to the `size × len` concatenation at the root
    /// and to an empty vector elsewhere.
    pub fn gather_start<T: Element>(&self, data: Vec<T>, root: u32) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::Gather, ReduceOp::None, root, count, data)
    }

    /// Start a scatter from `root` of blocks of `count` elements: the root passes
    /// `size × count` elements, the others pass anything (it is not sent; a vector of
    /// `count` elements is received into). Resolves to this rank's block.
    pub fn scatter_start<T: Element>(
        &self,
        data: Vec<T>,
        count: usize,
        root: u32,
    ) -> PendingCollective<T> {
        let input = if self.rank() == root || data.len() == count {
            data
        } else {
            Vec::new()
        };
        self.collective(CollectiveKind::Scatter, ReduceOp::None, root, count, input)
    }

    /// Start an all-to-all: `data` holds `size` blocks, block `d` for rank `d`; resolves
    /// to `size` blocks, block `s` from rank `s`.
    pub fn all_to_all_start<T: Element>(&self, data: Vec<T>) -> PendingCollective<T> {
        match self.blocks("all_to_all input", data.len()) {
            Ok(count) => self.collective(CollectiveKind::AllToAll, ReduceOp::None, 0, count, data),
            Err(e) => Pending::failed(e),
        }
    }

    /// Start an inclusive scan: rank r gets `op` over ranks 0..=r.
    pub fn scan_start<T: Element>(&self, data: Vec<T>, op: ReduceOp) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::Scan, op, 0, count, data)
    }

    /// Start an exclusive scan: rank r gets `op` over ranks 0..r (rank 0: the identity).
    pub fn exclusive_scan_start<T: Element>(
        &self,
        data: Vec<T>,
        op: ReduceOp,
    ) -> PendingCollective<T> {
        let count = data.len();
        self.collective(CollectiveKind::ExclusiveScan, op, 0, count, data)
    }

    /// Start a barrier.
    pub fn barrier_start(&self) -> Pending<()> {
        let span = tracing::debug_span!("barrier", rank = self.world_rank, comm = self.id.0);
        let command = Command::Collective {
            comm: self.id,
            kind: CollectiveKind::Barrier,
            op: ReduceOp::None,
            root: 0,
            count: 0,
            input: Buffer::from_vec(Vec::<u8>::new()),
            timeout: self.timeout,
        };
        self.submit(command, span, |o| match o {
            Outcome::Collective { .. } => Ok(()),
            other => Err(unexpected("Collective", &other)),
        })
    }

    // -- slice forms --

    /// Reduce `data` across all ranks in place.
    pub async fn all_reduce<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        let out = self.all_reduce_start(data.to_vec(), op).await?;
        copy_out("all_reduce output", data, &out)
    }

    /// Copy `root`'s `data` to every rank's `data` (same length everywhere).
    pub async fn broadcast<T: Element>(&self, data: &mut [T], root: u32) -> Result<(), NexarError> {
        let input = if self.rank() == root {
            data.to_vec()
        } else {
            Vec::new()
        };
        let count = data.len();
        let out = self
            .collective(
                CollectiveKind::Broadcast,
                ReduceOp::None,
                root,
                count,
                input,
            )
            .await?;
        copy_out("broadcast output", data, &out)
    }

    /// Reduce every rank's `data` into the root's `data` (others' are left unchanged).
    pub async fn reduce<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
        root: u32,
    ) -> Result<(), NexarError> {
        let out = self.reduce_start(data.to_vec(), op, root).await?;
        if self.rank() == root {
            copy_out("reduce output", data, &out)?;
        }
        Ok(())
    }

    /// Concatenate every rank's `send` into every rank's `recv` (`size × send.len()`).
    pub async fn all_gather<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), NexarError> {
        check_len(
            "all_gather recv",
            recv.len(),
            send.len() * self.size() as usize,
        )?;
        let out = self.all_gather_start(send.to_vec()).await?;
        copy_out("all_gather recv", recv, &out)
    }

    /// Reduce every rank's `send` (`size × recv.len()`) and give block r to rank r's `recv`.
    pub async fn reduce_scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        check_len(
            "reduce_scatter send",
            send.len(),
            recv.len() * self.size() as usize,
        )?;
        let out = self.reduce_scatter_start(send.to_vec(), op).await?;
        copy_out("reduce_scatter recv", recv, &out)
    }

    /// Concatenate every rank's `send` into the root's `recv` (`size × send.len()`);
    /// `recv` is only used at the root (others may pass an empty slice).
    pub async fn gather<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: u32,
    ) -> Result<(), NexarError> {
        if self.rank() == root {
            check_len("gather recv", recv.len(), send.len() * self.size() as usize)?;
        }
        let out = self.gather_start(send.to_vec(), root).await?;
        if self.rank() == root {
            copy_out("gather recv", recv, &out)?;
        }
        Ok(())
    }

    /// Split the root's `send` (`size × recv.len()`) into blocks, block r to rank r's
    /// `recv`; `send` is only used at the root.
    pub async fn scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: u32,
    ) -> Result<(), NexarError> {
        let input = if self.rank() == root {
            check_len(
                "scatter send",
                send.len(),
                recv.len() * self.size() as usize,
            )?;
            send.to_vec()
        } else {
            Vec::new()
        };
        let out = self
            .collective(
                CollectiveKind::Scatter,
                ReduceOp::None,
                root,
                recv.len(),
                input,
            )
            .await?;
        copy_out("scatter recv", recv, &out)
    }

    /// Exchange blocks: block d of `send` goes to rank d, block s of `recv` comes from
    /// rank s (`send.len() == recv.len()`, a multiple of the size).
    pub async fn all_to_all<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
    ) -> Result<(), NexarError> {
        check_len("all_to_all recv", recv.len(), send.len())?;
        let out = self.all_to_all_start(send.to_vec()).await?;
        copy_out("all_to_all recv", recv, &out)
    }

    /// Inclusive prefix reduction in place: rank r gets `op` over ranks 0..=r.
    pub async fn scan<T: Element>(&self, data: &mut [T], op: ReduceOp) -> Result<(), NexarError> {
        let out = self.scan_start(data.to_vec(), op).await?;
        copy_out("scan output", data, &out)
    }

    /// Exclusive prefix reduction in place: rank r gets `op` over ranks 0..r, rank 0 the
    /// identity of `op`.
    pub async fn exclusive_scan<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        let out = self.exclusive_scan_start(data.to_vec(), op).await?;
        copy_out("exclusive_scan output", data, &out)
    }

    /// Wait until every rank of the communicator has reached the barrier.
    pub async fn barrier(&self) -> Result<(), NexarError> {
        self.barrier_start().await
    }

    /// MPI_Comm_split: ranks passing the same `color` form a new communicator, ordered by
    /// (`key`, rank here); `None` joins none and gets `None`. Every rank must call it.
    pub async fn split(
        &self,
        color: Option<u32>,
        key: i64,
    ) -> Result<Option<Communicator>, NexarError> {
        let span = tracing::debug_span!(
            "split",
            rank = self.world_rank,
            comm = self.id.0,
            ?color,
            key
        );
        let command = Command::Split {
            comm: self.id,
            color,
            key,
        };
        let (made, members, epoch) = self
            .submit(command, span, |o| match o {
                Outcome::Split {
                    comm,
                    members,
                    epoch,
                } => Ok((comm, members, epoch)),
                other => Err(unexpected("Split", &other)),
            })
            .await?;
        Ok(made.map(|(id, rank, size)| Communicator {
            view: None,
            tx: self.tx.clone(),
            id,
            rank,
            size,
            world_rank: self.world_rank,
            members,
            epoch,
            max_message: self.max_message,
            timeout: self.timeout,
        }))
    }
}

pub(super) fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), NexarError> {
    if got == expected {
        Ok(())
    } else {
        Err(NexarError::Length {
            what,
            expected,
            got,
        })
    }
}

fn copy_out<T: Copy>(what: &'static str, dst: &mut [T], src: &[T]) -> Result<(), NexarError> {
    if dst.len() != src.len() {
        return Err(NexarError::Internal(format!(
            "{what}: the node returned {} elements for a buffer of {}",
            src.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(src);
    Ok(())
}

fn typed_output<T: Element>(outcome: Outcome) -> Result<Vec<T>, NexarError> {
    match outcome {
        Outcome::Collective { buffer } => buffer.into_vec::<T>().map_err(|b| {
            NexarError::Internal(format!("collective returned {:?} elements", b.dtype()))
        }),
        other => Err(unexpected("Collective", &other)),
    }
}

pub(crate) fn unexpected(wanted: &str, got: &Outcome) -> NexarError {
    let got = match got {
        Outcome::Sent => "Sent",
        Outcome::Rpc { .. } => "Rpc",
        Outcome::Received { .. } => "Received",
        Outcome::Collective { .. } => "Collective",
        Outcome::Split { .. } => "Split",
        _ => "another outcome",
    };
    NexarError::Internal(format!("expected outcome {wanted}, got {got}"))
}
