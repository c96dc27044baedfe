//! The rank API the bench needs, for either driver: `nexar_tokio::Client` and
//! `nexar_smol::Client` are distinct types compiled from one source file (`api/`), with
//! the same methods; [`Rank`] names the ones the bench calls so that one bench runs on both.

use std::future::Future;

use bytes::Bytes;
use nexar_tokio::{CommandError, Element, ReduceOp};

/// One rank of either driver. Every method forwards to the `Client` method of the same
/// name (`barrier` and `recv` to the `*_start` forms), so the bench's calls read as before.
pub trait Rank: Sync {
    /// The crate's `NexarError`.
    type Error: std::error::Error + From<CommandError> + Send + Sync + 'static;
    /// The crate's `Pending`.
    type Pending<R>: Future<Output = Result<R, Self::Error>>;
    fn rank(&self) -> u32;
    fn world_size(&self) -> u32;
    fn barrier(&self) -> Self::Pending<()>;
    fn send_start(&self, to: u32, tag: u64, data: Bytes) -> Self::Pending<()>;
    fn recv(&self, from: u32, tag: u64) -> Self::Pending<Bytes>;
    fn all_reduce_start<T: Element>(&self, d: Vec<T>, op: ReduceOp) -> Self::Pending<Vec<T>>;
    fn broadcast_start<T: Element>(&self, d: Vec<T>, root: u32) -> Self::Pending<Vec<T>>;
    fn reduce_start<T: Element>(&self, d: Vec<T>, op: ReduceOp, root: u32)
        -> Self::Pending<Vec<T>>;
    fn all_gather_in_place_start<T: Element>(&self, d: Vec<T>) -> Self::Pending<Vec<T>>;
    fn reduce_scatter_start<T: Element>(&self, d: Vec<T>, op: ReduceOp) -> Self::Pending<Vec<T>>;
    fn gather_start<T: Element>(&self, d: Vec<T>, root: u32) -> Self::Pending<Vec<T>>;
    fn scatter_start<T: Element>(&self, d: Vec<T>, n: usize, root: u32) -> Self::Pending<Vec<T>>;
    fn all_to_all_start<T: Element>(&self, d: Vec<T>) -> Self::Pending<Vec<T>>;
    fn scan_start<T: Element>(&self, d: Vec<T>, op: ReduceOp) -> Self::Pending<Vec<T>>;
}

/// Implements [`Rank`] for `$krate::Client`. The collectives go through `world()` (the
/// `Communicator`), whose inherent methods the trait's cannot shadow.
macro_rules! impl_rank {
    ($krate:ident) => {
        impl Rank for $krate::Client {
            type Error = $krate::NexarError;
            type Pending<R> = $krate::Pending<R>;
            fn rank(&self) -> u32 {
                self.world().rank()
            }
            fn world_size(&self) -> u32 {
                self.world().size()
            }
            fn barrier(&self) -> Self::Pending<()> {
                self.world().barrier_start()
            }
            fn send_start(&self, to: u32, tag: u64, data: Bytes) -> Self::Pending<()> {
                self.world().send_start(to, tag, data)
            }
            fn recv(&self, from: u32, tag: u64) -> Self::Pending<Bytes> {
                self.world().recv_start(from, tag)
            }
            fn all_reduce_start<T: Element>(
                &self,
                d: Vec<T>,
                op: ReduceOp,
            ) -> Self::Pending<Vec<T>> {
                self.world().all_reduce_start(d, op)
            }
            fn broadcast_start<T: Element>(&self, d: Vec<T>, root: u32) -> Self::Pending<Vec<T>> {
                self.world().broadcast_start(d, root)
            }
            fn reduce_start<T: Element>(
                &self,
                d: Vec<T>,
                op: ReduceOp,
                root: u32,
            ) -> Self::Pending<Vec<T>> {
                self.world().reduce_start(d, op, root)
            }
            fn all_gather_in_place_start<T: Element>(&self, d: Vec<T>) -> Self::Pending<Vec<T>> {
                self.world().all_gather_in_place_start(d)
            }
            fn reduce_scatter_start<T: Element>(
                &self,
                d: Vec<T>,
                op: ReduceOp,
            ) -> Self::Pending<Vec<T>> {
                self.world().reduce_scatter_start(d, op)
            }
            fn gather_start<T: Element>(&self, d: Vec<T>, root: u32) -> Self::Pending<Vec<T>> {
                self.world().gather_start(d, root)
            }
            fn scatter_start<T: Element>(
                &self,
                d: Vec<T>,
                n: usize,
                root: u32,
            ) -> Self::Pending<Vec<T>> {
                self.world().scatter_start(d, n, root)
            }
            fn all_to_all_start<T: Element>(&self, d: Vec<T>) -> Self::Pending<Vec<T>> {
                self.world().all_to_all_start(d)
            }
            fn scan_start<T: Element>(&self, d: Vec<T>, op: ReduceOp) -> Self::Pending<Vec<T>> {
                self.world().scan_start(d, op)
            }
        }
    };
}

impl_rank!(nexar_tokio);
#[cfg(feature = "smol-driver")]
impl_rank!(nexar_smol);
