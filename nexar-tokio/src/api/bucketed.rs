//! Bucketed all-reduce: many small tensors fused into few large all-reduces.

use super::communicator::check_len;
use super::device::{DeviceMemory, HostMemory};
use super::*;
use nexar_proto::collective::bucket::{Bucket, Bucketer, Slot};

/// PyTorch DDP's default bucket size, 25 MiB.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Tensors pushed one by one, fused into buckets of at most a cap, each bucket's
/// all-reduce started the moment it is full, so communication overlaps with the caller
/// producing the remaining tensors (DDP's gradient buckets). Made by
/// [`Communicator::bucketed_all_reduce`].
///
/// Every rank must push tensors of the same dtypes and lengths in the same order: the
/// buckets are a pure function of that sequence and the cap, so they pair up. A rank that
/// pushes something else gets [`OpError::Mismatch`], not a hang. Tensors of several dtypes
/// may be interleaved; each dtype fills its own bucket.
///
/// ```no_run
/// # async fn demo(client: nexar_tokio::Client) -> Result<(), nexar_tokio::NexarError> {
/// use nexar_tokio::{ReduceOp, DEFAULT_BUCKET_BYTES};
/// let mut grads: Vec<Vec<f32>> = vec![vec![1.0; 1000]; 200];
/// let mut b = client.bucketed_all_reduce(ReduceOp::Sum, DEFAULT_BUCKET_BYTES);
/// for g in &grads {
///     b.push(g); // as each gradient is ready; full buckets start at once
/// }
/// let reduced = b.finish().await?;
/// for (i, g) in grads.iter_mut().enumerate() {
///     reduced.copy_to(i, g)?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BucketedAllReduce<'a> {
    comm: &'a Communicator,
    op: ReduceOp,
    bucketer: Bucketer,
    open: BTreeMap<nexar_proto::codec::DType, Buffer>,
    running: Vec<(Bucket, Pending<Buffer>)>,
    /// The first failure of a push, reported again by `finish`.
    failed: Option<NexarError>,
}

/// The reduced tensors of a [`BucketedAllReduce`], by push index.
#[derive(Debug)]
pub struct Reduced {
    buckets: Vec<Buffer>,
    slots: Vec<Slot>,
}

impl Communicator {
    /// Start fusing tensors into all-reduces of at most `cap_bytes` each (a tensor larger
    /// than the cap is reduced alone). See [`BucketedAllReduce`].
    pub fn bucketed_all_reduce(&self, op: ReduceOp, cap_bytes: usize) -> BucketedAllReduce<'_> {
        BucketedAllReduce {
            comm: self,
            op,
            bucketer: Bucketer::new(cap_bytes),
            open: BTreeMap::new(),
            running: Vec::new(),
            failed: None,
        }
    }

    /// Reduce every tensor in place, fused into buckets of at most `cap_bytes`.
    ///
    /// ```no_run
    /// # async fn demo(client: nexar_tokio::Client) -> Result<(), nexar_tokio::NexarError> {
    /// let mut grads = vec![vec![1.0f32; 300], vec![2.0; 5000], vec![3.0; 7]];
    /// client.all_reduce_bucketed(&mut grads, nexar_tokio::ReduceOp::Avg, 1 << 20).await?;
    /// # Ok(()) }
    /// ```
    pub async fn all_reduce_bucketed<T: Element, V: AsMut<[T]>>(
        &self,
        tensors: &mut [V],
        op: ReduceOp,
        cap_bytes: usize,
    ) -> Result<(), NexarError> {
        let mut b = self.bucketed_all_reduce(op, cap_bytes);
        for t in tensors.iter_mut() {
            b.push::<T>(t.as_mut());
        }
        let reduced = b.finish().await?;
        for (i, t) in tensors.iter_mut().enumerate() {
            reduced.copy_to(i, t.as_mut())?;
        }
        Ok(())
    }
}

impl BucketedAllReduce<'_> {
    /// Add a tensor (copied into its bucket); returns its index in the [`Reduced`]
    /// result. If the tensor fills its bucket, that bucket's all-reduce starts now.
    pub fn push<T: Element>(&mut self, tensor: &[T]) -> usize {
        let index = self.bucketer.tensors();
        // Host staging cannot fail, and any other failure is kept for `finish`.
        let _ = self.push_device(&mut HostMemory, tensor);
        index
    }

    /// Add a tensor held by a device: `device` copies it straight into its place in the
    /// bucket (one copy, no intermediate host vector).
    ///
    /// If the device fails, its place in the bucket holds zeros, so this rank's buckets
    /// still pair up with the other ranks' (they pushed the tensor too), and
    /// [`finish`](Self::finish) returns the error once every bucket has completed.
    pub fn push_device<T: Element, D: DeviceMemory<T>>(
        &mut self,
        device: &mut D,
        tensor: &D::Tensor,
    ) -> Result<usize, NexarError> {
        let len = device.len(tensor);
        let (index, closed) = self.bucketer.push(T::DTYPE, len);
        let buffer = self
            .open
            .entry(T::DTYPE)
            .or_insert_with(|| Buffer::from_vec(Vec::<T>::new()));
        let at = buffer.len();
        buffer.resize(at + len);
        let staged = match T::slice_mut(buffer) {
            Some(s) => device
                .copy_to_host(tensor, &mut s[at..])
                .map_err(NexarError::from),
            None => Err(NexarError::Internal("bucket of another dtype".into())),
        };
        for bucket in closed {
            self.start(bucket, index, at);
        }
        match staged {
            Ok(()) => Ok(index),
            Err(e) => {
                let again = match &e {
                    NexarError::Device(d) => NexarError::Device(d.clone()),
                    other => NexarError::Internal(other.to_string()),
                };
                self.failed.get_or_insert(again);
                Err(e)
            }
        }
    }

    /// Close the last buckets, start them, and wait for every bucket's all-reduce.
    pub async fn finish(mut self) -> Result<Reduced, NexarError> {
        for bucket in self.bucketer.finish() {
            self.start(bucket, usize::MAX, 0);
        }
        let mut buckets = Vec::with_capacity(self.running.len());
        let mut first_error = self.failed.take();
        for (bucket, pending) in std::mem::take(&mut self.running) {
            match pending.await {
                Ok(out) if out.len() == bucket.len => buckets.push(out),
                Ok(out) => {
                    first_error.get_or_insert(NexarError::Length {
                        what: "bucket output",
                        expected: bucket.len,
                        got: out.len(),
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let slots = (0..self.bucketer.tensors())
            .map(|i| {
                self.bucketer
                    .slot(i)
                    .ok_or_else(|| NexarError::Internal(format!("tensor {i} in no bucket")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Reduced { buckets, slots })
    }

    /// Start a closed bucket. `pushed` is the tensor just pushed and `at` where it starts
    /// in the open buffer: a bucket closed *before* it (it did not fit) leaves it behind
    /// as the start of the next bucket.
    fn start(&mut self, bucket: Bucket, pushed: usize, at: usize) {
        let Some(open) = self.open.remove(&bucket.dtype) else {
            self.failed
                .get_or_insert(NexarError::Internal("closed bucket with no data".into()));
            return;
        };
        let data = if bucket.tensors.contains(&pushed) || pushed == usize::MAX {
            open
        } else {
            let rest = open.copy_range(at..open.len());
            let mut data = open;
            data.resize(at);
            self.open.insert(bucket.dtype, rest);
            data
        };
        let pending = self.comm.all_reduce_buffer_start(data, self.op);
        self.running.push((bucket, pending));
    }
}

impl Reduced {
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no tensor was pushed.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The reduced tensor `index` (its push index), as type `T`.
    pub fn get<T: Element>(&self, index: usize) -> Result<&[T], NexarError> {
        let slot = self.slots.get(index).ok_or(NexarError::Tensor {
            index,
            detail: "was never pushed",
        })?;
        let bucket = T::slice(&self.buckets[slot.bucket]).ok_or(NexarError::Tensor {
            index,
            detail: "has another dtype",
        })?;
        Ok(&bucket[slot.offset..slot.offset + slot.len])
    }

    /// Copy tensor `index` into `dst` (of its length).
    pub fn copy_to<T: Element>(&self, index: usize, dst: &mut [T]) -> Result<(), NexarError> {
        self.copy_to_device(index, &mut HostMemory, dst)
    }

    /// Copy tensor `index` back into a device tensor through `device`.
    pub fn copy_to_device<T: Element, D: DeviceMemory<T>>(
        &self,
        index: usize,
        device: &mut D,
        tensor: &mut D::Tensor,
    ) -> Result<(), NexarError> {
        let src = self.get::<T>(index)?;
        check_len("bucketed output", device.len(tensor), src.len())?;
        device.copy_from_host(src, tensor)?;
        Ok(())
    }
}
