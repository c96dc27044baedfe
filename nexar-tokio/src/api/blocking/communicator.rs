//! The calls on a communicator, blocking: collectives on slices, split, point-to-point
//! messages and RPC calls, each the async API's call run to completion.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::ReduceOp;
use nexar_proto::collective::{CommId, Element};

use super::Runtime;
use crate::api::NexarError;

/// A communicator (see [`crate::Communicator`]: the world, or one made by
/// [`split`](Communicator::split)) with blocking calls. Ranks and roots are ranks within
/// it. A split communicator ends at the next epoch change; calls on it then fail with
/// [`NexarError::EpochChanged`].
#[derive(Debug)]
pub struct Communicator {
    inner: crate::Communicator,
    runtime: Runtime,
}

impl Communicator {
    pub(super) fn new(inner: crate::Communicator, runtime: Runtime) -> Self {
        Self { inner, runtime }
    }

    pub(super) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn wait<T>(
        &self,
        future: impl Future<Output = Result<T, NexarError>>,
    ) -> Result<T, NexarError> {
        self.runtime.wait(future)
    }

    /// The communicator's id (`CommId::WORLD` for the world).
    pub fn id(&self) -> CommId {
        self.inner.id()
    }

    /// Our rank within it (for the world: in the current epoch).
    pub fn rank(&self) -> u32 {
        self.inner.rank()
    }

    /// Its number of ranks.
    pub fn size(&self) -> u32 {
        self.inner.size()
    }

    /// The world rank of rank `comm_rank` of it (see [`crate::Communicator::world_rank`]).
    pub fn world_rank(&self, comm_rank: u32) -> Option<u32> {
        self.inner.world_rank(comm_rank)
    }

    /// The rank within it of world rank `world_rank`, if a member.
    pub fn comm_rank(&self, world_rank: u32) -> Option<u32> {
        self.inner.comm_rank(world_rank)
    }

    /// The world rank of every rank of it, in its rank order.
    pub fn members(&self) -> Vec<u32> {
        self.inner.members()
    }

    /// The epoch it lives in (see [`crate::Communicator::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// The largest payload of one point-to-point message, in bytes.
    pub fn max_message(&self) -> usize {
        self.inner.max_message()
    }

    /// Reduce `data` across all ranks in place.
    pub fn all_reduce<T: Element>(&self, data: &mut [T], op: ReduceOp) -> Result<(), NexarError> {
        self.wait(self.inner.all_reduce(data, op))
    }

    /// Copy `root`'s `data` to every rank's `data` (same length everywhere).
    pub fn broadcast<T: Element>(&self, data: &mut [T], root: u32) -> Result<(), NexarError> {
        self.wait(self.inner.broadcast(data, root))
    }

    /// Reduce every rank's `data` into the root's `data`.
    pub fn reduce<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
        root: u32,
    ) -> Result<(), NexarError> {
        self.wait(self.inner.reduce(data, op, root))
    }

    /// Concatenate every rank's `send` into every rank's `recv` (`size × send.len()`).
    pub fn all_gather<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<(), NexarError> {
        self.wait(self.inner.all_gather(send, recv))
    }

    /// Reduce every rank's `send` (`size × recv.len()`) and give block r to rank r.
    pub fn reduce_scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        self.wait(self.inner.reduce_scatter(send, recv, op))
    }

    /// Concatenate every rank's `send` into the root's `recv`.
    pub fn gather<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: u32,
    ) -> Result<(), NexarError> {
        self.wait(self.inner.gather(send, recv, root))
    }

    /// Split the root's `send` into blocks, block r to rank r's `recv`.
    pub fn scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: u32,
    ) -> Result<(), NexarError> {
        self.wait(self.inner.scatter(send, recv, root))
    }

    /// Exchange blocks: block d of `send` goes to rank d, block s of `recv` comes from s.
    pub fn all_to_all<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<(), NexarError> {
        self.wait(self.inner.all_to_all(send, recv))
    }

    /// Inclusive prefix reduction in place.
    pub fn scan<T: Element>(&self, data: &mut [T], op: ReduceOp) -> Result<(), NexarError> {
        self.wait(self.inner.scan(data, op))
    }

    /// Exclusive prefix reduction in place (rank 0 gets the identity of `op`).
    pub fn exclusive_scan<T: Element>(
        &self,
        data: &mut [T],
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        self.wait(self.inner.exclusive_scan(data, op))
    }

    /// Wait until every rank of the communicator has reached the barrier.
    pub fn barrier(&self) -> Result<(), NexarError> {
        self.wait(self.inner.barrier())
    }

    /// MPI_Comm_split (see [`crate::Communicator::split`]); every rank must call it.
    pub fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Communicator>, NexarError> {
        let made = self.wait(self.inner.split(color, key))?;
        Ok(made.map(|inner| Communicator::new(inner, self.runtime.clone())))
    }

    /// Send `data` to rank `to` under `tag` (see [`crate::Communicator::send`]).
    pub fn send(&self, to: u32, tag: u64, data: &[u8]) -> Result<(), NexarError> {
        self.wait(self.inner.send(to, tag, data))
    }

    /// [`send`](Self::send) without copying the payload.
    pub fn send_bytes(&self, to: u32, tag: u64, data: Bytes) -> Result<(), NexarError> {
        self.wait(self.inner.send_bytes(to, tag, data))
    }

    /// The next message from rank `from` under `tag`.
    pub fn recv(&self, from: u32, tag: u64) -> Result<Bytes, NexarError> {
        self.wait(self.inner.recv(from, tag))
    }

    /// The next message from rank `from` under `tag`, written into `buf`; returns its
    /// length (see [`crate::Communicator::recv_into`], truncation included).
    pub fn recv_into(&self, from: u32, tag: u64, buf: &mut [u8]) -> Result<usize, NexarError> {
        self.wait(self.inner.recv_into(from, tag, buf))
    }

    /// Call function `fn_id` on rank `to` and wait for its answer (see
    /// [`crate::Communicator::rpc`]).
    pub fn rpc(&self, to: u32, fn_id: u32, args: Bytes) -> Result<Bytes, NexarError> {
        self.wait(self.inner.rpc(to, fn_id, args))
    }

    /// [`rpc`](Self::rpc) with a deadline (`OpError::RpcTimeout` past it).
    pub fn rpc_with_timeout(
        &self,
        to: u32,
        fn_id: u32,
        args: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NexarError> {
        self.wait(self.inner.rpc_with_timeout(to, fn_id, args, timeout))
    }
}
