//! The device-memory hook: how a GPU (or any other memory nexar cannot read) stages
//! tensors in and out around a collective.
//!
//! nexar's collectives work on host memory it owns for the duration of the operation. A
//! device integration (CUDA, ROCm, Metal, ...) written outside nexar implements
//! [`DeviceMemory`] for its tensor handle type and passes it to the `*_device` methods
//! ([`Communicator::all_reduce_device`], [`Communicator::broadcast_device`],
//! [`BucketedAllReduce::push_device`](super::BucketedAllReduce::push_device),
//! [`Reduced::copy_to_device`](super::Reduced::copy_to_device)). [`HostMemory`] is the
//! implementation for plain slices, and what the slice forms of the collectives amount to.

use super::*;

/// A device integration's failure, with its own description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device: {0}")]
pub struct DeviceError(pub String);

/// Stages tensors of element type `T` between device memory and host memory, so that a
/// CUDA, ROCm or Metal integration can live outside nexar. [`HostMemory`] is the default
/// (plain slices).
///
/// # The contract
///
/// - **Who calls, on which thread.** Every method is called by nexar on the task (hence
///   the thread, under a single-threaded executor) that called the `*_device` method, and
///   only from within that call: never from the driver task, never concurrently, never
///   after the call returns. `copy_to_host` runs before the collective is issued; `copy_from_host`
///   after it completed, and only if it succeeded.
/// - **Who owns what, when.** `copy_to_host` borrows the device tensor shared and writes into a
///   host slice nexar owns, of exactly `len(tensor)` elements; when it returns, the copy
///   must be complete (synchronise the device stream inside it: nexar reads the slice
///   right after, and moves it to the driver). From then until `copy_from_host`, nexar owns the
///   host data and the integration must not assume anything about it; the device tensor
///   stays the integration's and nexar does not touch it. `copy_from_host` borrows the device
///   tensor mutably and a host slice of exactly `len(tensor)` elements holding the result;
///   the slice is valid only during the call, so the copy must have completed (or been
///   given its own copy) when it returns.
/// - **When the data may be read.** The device tensor holds the result once the
///   `*_device` call has returned `Ok`. If it returns an error, the collective failed or
///   staging failed: the device tensor is unchanged if `copy_from_host` was never called.
/// - **Failures.** A method returning [`DeviceError`] fails the nexar call with
///   [`NexarError::Device`]. A `copy_to_host` failure happens before anything is sent, except
///   in a bucketed all-reduce, where the tensor's place is sent as zeros so that every
///   rank's buckets still pair up (see `push_device`).
///
/// Reducing in place on the device (no host copy at all) is not offered: the reduction
/// kernels run inside the core's executor on host buffers.
///
/// ```
/// use nexar_tokio::{DeviceError, DeviceMemory};
/// /// A "device" that keeps tensors in its own arena, addressed by handles.
/// struct Arena { mem: Vec<Vec<f32>> }
/// struct Handle(usize);
/// impl DeviceMemory<f32> for Arena {
///     type Tensor = Handle;
///     fn len(&self, t: &Handle) -> usize { self.mem[t.0].len() }
///     fn copy_to_host(&mut self, t: &Handle, host: &mut [f32]) -> Result<(), DeviceError> {
///         host.copy_from_slice(&self.mem[t.0]); // a real device: memcpy D->H, then sync
///         Ok(())
///     }
///     fn copy_from_host(&mut self, host: &[f32], t: &mut Handle) -> Result<(), DeviceError> {
///         self.mem[t.0].copy_from_slice(host);
///         Ok(())
///     }
/// }
/// # async fn demo(client: nexar_tokio::Client) -> Result<(), nexar_tokio::NexarError> {
/// let mut arena = Arena { mem: vec![vec![1.0; 256]] };
/// let mut grad = Handle(0);
/// client.all_reduce_device(&mut arena, &mut grad, nexar_tokio::ReduceOp::Sum).await?;
/// # Ok(()) }
/// ```
pub trait DeviceMemory<T: Element> {
    /// The integration's handle to a tensor in device memory.
    type Tensor: ?Sized;
    /// Number of elements of `tensor`.
    fn len(&self, tensor: &Self::Tensor) -> usize;
    /// Copy `tensor` into `host` (exactly `len(tensor)` elements), complete on return.
    fn copy_to_host(&mut self, tensor: &Self::Tensor, host: &mut [T]) -> Result<(), DeviceError>;
    /// Copy `host` (exactly `len(tensor)` elements) into `tensor`, complete on return.
    fn copy_from_host(&mut self, host: &[T], tensor: &mut Self::Tensor) -> Result<(), DeviceError>;
}

/// Tensors already in host memory: plain slices. The default device.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostMemory;

impl<T: Element> DeviceMemory<T> for HostMemory {
    type Tensor = [T];
    fn len(&self, tensor: &[T]) -> usize {
        tensor.len()
    }
    fn copy_to_host(&mut self, tensor: &[T], host: &mut [T]) -> Result<(), DeviceError> {
        copy(tensor, host)
    }
    fn copy_from_host(&mut self, host: &[T], tensor: &mut [T]) -> Result<(), DeviceError> {
        copy(host, tensor)
    }
}

fn copy<T: Copy>(src: &[T], dst: &mut [T]) -> Result<(), DeviceError> {
    if src.len() != dst.len() {
        return Err(DeviceError(format!(
            "{} elements staged into {}",
            src.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(src);
    Ok(())
}

impl Communicator {
    /// Stage a device tensor out, all-reduce it, stage the result back in.
    pub async fn all_reduce_device<T: Element, D: DeviceMemory<T>>(
        &self,
        device: &mut D,
        tensor: &mut D::Tensor,
        op: ReduceOp,
    ) -> Result<(), NexarError> {
        let host = stage_out(device, tensor)?;
        let out = self.all_reduce_start(host, op).await?;
        stage_in(device, &out, tensor)
    }

    /// Broadcast `root`'s device tensor into every rank's (same length everywhere).
    pub async fn broadcast_device<T: Element, D: DeviceMemory<T>>(
        &self,
        device: &mut D,
        tensor: &mut D::Tensor,
        root: u32,
    ) -> Result<(), NexarError> {
        let host = if self.rank() == root {
            stage_out(device, tensor)?
        } else {
            vec![T::identity(ReduceOp::Sum); device.len(tensor)]
        };
        let out = self.broadcast_start(host, root).await?;
        stage_in(device, &out, tensor)
    }
}

fn stage_out<T: Element, D: DeviceMemory<T>>(
    device: &mut D,
    tensor: &D::Tensor,
) -> Result<Vec<T>, NexarError> {
    let mut host = vec![T::identity(ReduceOp::Sum); device.len(tensor)];
    device.copy_to_host(tensor, &mut host)?;
    Ok(host)
}

fn stage_in<T: Element, D: DeviceMemory<T>>(
    device: &mut D,
    host: &[T],
    tensor: &mut D::Tensor,
) -> Result<(), NexarError> {
    super::communicator::check_len("device output", host.len(), device.len(tensor))?;
    device.copy_from_host(host, tensor)?;
    Ok(())
}
