//! Point-to-point messages on a communicator, and the map between its ranks and world
//! ranks.
//!
//! Sends and receives name ranks of the communicator they are called on, and the core
//! carries the communicator's id in every message (`Tagged::comm` in `PROTOCOL.md`):
//! matching is per (sender, communicator, tag), so a message sent on a split communicator
//! is never taken by a world receive of the same tag between the same two nodes, nor the
//! other way round. Mapping ranks here and sending on the world instead would not do: the
//! receiver could not tell the two apart without reserving part of the user's tag space.

use super::*;

impl Communicator {
    /// Send `data` to rank `to` of this communicator under `tag`; returns once QUIC has
    /// taken the bytes (waiting while the send queue to `to` is full). One message carries
    /// at most [`max_message`](Self::max_message) bytes (`NodeConfig::max_message_len`,
    /// 1 GiB by default); one longer than a frame travels in parts that interleave with
    /// other traffic, and the receiver holds none of it beyond its unmatched budget until
    /// a receive asks for it. A rank the communicator does not have fails with
    /// `CommandError::NotInCommunicator` (the world's: `CommandError::UnknownRank`).
    ///
    /// Example: the crate docs (split communicators and the blocking client).
    pub async fn send(&self, to: u32, tag: u64, data: &[u8]) -> Result<(), NexarError> {
        self.send_bytes(to, tag, Bytes::copy_from_slice(data)).await
    }

    /// [`send`](Self::send) without copying the payload.
    pub async fn send_bytes(&self, to: u32, tag: u64, data: Bytes) -> Result<(), NexarError> {
        self.send_start(to, tag, data).await
    }

    /// The largest payload of one point-to-point message, in bytes
    /// (`NodeConfig::max_message_len`).
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Start a send and return at once; await the handle later.
    pub fn send_start(&self, to: u32, tag: u64, data: Bytes) -> Pending<()> {
        if data.len() > self.max_message {
            // The receiver would refuse the announcement and drop the connection.
            return Pending::failed(NexarError::MessageTooLarge {
                len: data.len(),
                max: self.max_message,
            });
        }
        let span = tracing::debug_span!(
            "send",
            rank = self.world_rank,
            comm = self.id.0,
            to,
            tag,
            len = data.len()
        );
        let command = Command::Send {
            comm: self.id,
            to,
            tag,
            data,
        };
        self.submit(command, span, |o| match o {
            Outcome::Sent => Ok(()),
            other => Err(unexpected("Sent", &other)),
        })
    }

    /// The next message from rank `from` of this communicator under `tag`, in the order
    /// it was sent on this communicator.
    pub async fn recv(&self, from: u32, tag: u64) -> Result<Bytes, NexarError> {
        self.recv_start(from, tag).await
    }

    /// Post a receive and return at once; await the handle later.
    pub fn recv_start(&self, from: u32, tag: u64) -> Pending<Bytes> {
        let span =
            tracing::debug_span!("recv", rank = self.world_rank, comm = self.id.0, from, tag);
        let command = Command::Recv {
            comm: self.id,
            from,
            tag,
        };
        self.submit(command, span, |o| match o {
            Outcome::Received { data, .. } => Ok(data),
            other => Err(unexpected("Received", &other)),
        })
    }

    /// The next message from rank `from` of this communicator under `tag`, written into
    /// `buf`; returns its length.
    ///
    /// A message longer than `buf` is consumed all the same (as MPI's `MPI_ERR_TRUNCATE`):
    /// `buf` holds its first `buf.len()` bytes and the call fails with
    /// [`NexarError::Truncated`] giving the full length, so the next receive gets the
    /// next message. Copies: the core writes each part of a large message once into
    /// the message's own buffer, allocated when this receive claims it; the driver runs
    /// in a task of its own and cannot borrow `buf`, so that buffer is copied into `buf`
    /// once more here (use [`recv`](Self::recv) to keep the core's buffer instead).
    ///
    /// ```no_run
    /// # async fn f(client: &nexar_tokio::Client) -> Result<(), nexar_tokio::NexarError> {
    /// let mut buf = vec![0u8; 40 << 20];
    /// let len = client.recv_into(0, 7, &mut buf).await?;
    /// println!("{len} bytes from rank 0: {:?}", &buf[..len.min(8)]);
    /// # Ok(()) }
    /// ```
    pub async fn recv_into(
        &self,
        from: u32,
        tag: u64,
        buf: &mut [u8],
    ) -> Result<usize, NexarError> {
        let data = self.recv_start(from, tag).await?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        if data.len() > buf.len() {
            return Err(NexarError::Truncated {
                len: data.len(),
                capacity: buf.len(),
            });
        }
        Ok(n)
    }

    /// The world rank of rank `comm_rank` of this communicator, or `None` if it has no
    /// such rank. For a split communicator these are the world ranks of the epoch it was
    /// made in (see [`epoch`](Self::epoch)).
    ///
    /// Example: the crate docs (split communicators and the blocking client).
    pub fn world_rank(&self, comm_rank: u32) -> Option<u32> {
        if self.view.is_some() {
            return (comm_rank < self.size()).then_some(comm_rank);
        }
        self.members.get(comm_rank as usize).copied()
    }

    /// The rank within this communicator of world rank `world_rank`, or `None` if that
    /// node is not a member. The inverse of [`world_rank`](Self::world_rank); use it to
    /// place the caller of an RPC (handlers get world ranks).
    pub fn comm_rank(&self, world_rank: u32) -> Option<u32> {
        if self.view.is_some() {
            return (world_rank < self.size()).then_some(world_rank);
        }
        self.members
            .iter()
            .position(|&r| r == world_rank)
            .map(|p| p as u32)
    }

    /// The world rank of every rank of this communicator, in its rank order.
    pub fn members(&self) -> Vec<u32> {
        if self.view.is_some() {
            return (0..self.size()).collect();
        }
        self.members.clone()
    }

    /// The epoch this communicator lives in: for a split one, the epoch it was made in
    /// (once the node has moved past it, every call fails with
    /// [`NexarError::EpochChanged`]); for the world, the current one.
    pub fn epoch(&self) -> u64 {
        self.view.as_ref().map_or(self.epoch, |v| v.epoch())
    }

    /// The world rank an RPC to rank `to` of this communicator goes to, or a typed error
    /// if it has no such rank.
    pub(crate) fn rpc_target(&self, to: u32) -> Result<u32, NexarError> {
        if self.view.is_some() {
            // The world: the node checks the rank against the current world size.
            return Ok(to);
        }
        self.world_rank(to)
            .ok_or(NexarError::Command(CommandError::NotInCommunicator {
                comm: self.id,
                rank: to,
                size: self.size,
            }))
    }
}
