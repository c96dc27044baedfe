//! Bucketed all-reduce, compressed all-reduce and the device hook through both drivers
//! over real UDP on loopback, on 1 to 8 ranks, against sequential references.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use half::{bf16, f16};
use nexar_proto::codec::{DType, ReduceOp};
use nexar_proto::collective::{Buffer, Element};
use nexar_tests::common::{Exec, SmolExec, Task, TokioExec};
use nexar_tests::training::{input, reference, typed, Scheme};

/// Tensor `t` of rank `r`: uneven lengths (0 included), every dtype, interleaved.
fn tensor_len(t: usize) -> usize {
    [0, 1, 7, 300, 33, 1024, 5, 2049][t % 8] + t
}

fn dtype_of(t: usize) -> DType {
    DType::ALL[t % DType::ALL.len()]
}

fn tensor_vals(r: u32, t: usize) -> Vec<i64> {
    (0..tensor_len(t)).map(|i| input(r, t as u64, i)).collect()
}

/// A fake GPU: tensors live in its own arena, addressed by handles; it counts every copy
/// and fails (recording a violation) on any misuse of the contract.
#[derive(Debug, Default)]
struct FakeDevice {
    id: usize,
    mem: Vec<Vec<f32>>,
    to_host: usize,
    from_host: usize,
    violations: Vec<String>,
    fail_to_host: bool,
    busy: bool,
}

#[derive(Debug)]
struct Handle {
    device: usize,
    slot: usize,
}

static NEXT_DEVICE: AtomicUsize = AtomicUsize::new(1);

impl FakeDevice {
    fn new() -> Self {
        Self {
            id: NEXT_DEVICE.fetch_add(1, Ordering::Relaxed),
            ..Self::default()
        }
    }

    fn alloc(&mut self, data: Vec<f32>) -> Handle {
        self.mem.push(data);
        Handle {
            device: self.id,
            slot: self.mem.len() - 1,
        }
    }

    fn check(&mut self, t: &Handle, host_len: usize) -> Result<(), String> {
        let problem = if self.busy {
            Some("re-entered while a copy was under way".to_string())
        } else if t.device != self.id || t.slot >= self.mem.len() {
            Some(format!("foreign handle {t:?}"))
        } else if host_len != self.mem[t.slot].len() {
            Some(format!(
                "host slice of {host_len} for a tensor of {}",
                self.mem[t.slot].len()
            ))
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.violations.push(p.clone());
                Err(p)
            }
            None => Ok(()),
        }
    }
}

macro_rules! fake_device_impl {
    ($krate:ident) => {
        impl $krate::DeviceMemory<f32> for FakeDevice {
            type Tensor = Handle;
            fn len(&self, t: &Handle) -> usize {
                self.mem.get(t.slot).map_or(0, Vec::len)
            }
            fn copy_to_host(
                &mut self,
                t: &Handle,
                host: &mut [f32],
            ) -> Result<(), $krate::DeviceError> {
                self.check(t, host.len()).map_err($krate::DeviceError)?;
                if self.fail_to_host {
                    return Err($krate::DeviceError("injected failure".into()));
                }
                self.busy = true;
                host.copy_from_slice(&self.mem[t.slot]);
                self.to_host += 1;
                self.busy = false;
                Ok(())
            }
            fn copy_from_host(
                &mut self,
                host: &[f32],
                t: &mut Handle,
            ) -> Result<(), $krate::DeviceError> {
                self.check(t, host.len()).map_err($krate::DeviceError)?;
                self.mem[t.slot].copy_from_slice(host);
                self.from_host += 1;
                Ok(())
            }
        }
    };
}
// Each driver crate compiles the API files on its own, so each has its own trait.
fake_device_impl!(nexar_tokio);
fake_device_impl!(nexar_smol);

macro_rules! suite {
    ($m:ident, $krate:ident, $exec:ty) => {
        mod $m {
            use super::*;
            use $krate::compress::{ErrorFeedback, Magnitude, NoCompression, RandomK, TopK};
            use $krate::{Client, NexarError};

            fn push_any(b: &mut $krate::BucketedAllReduce<'_>, buf: &Buffer) {
                match buf {
                    Buffer::F32(v) => b.push(v),
                    Buffer::F64(v) => b.push(v),
                    Buffer::F16(v) => b.push(v),
                    Buffer::BF16(v) => b.push(v),
                    Buffer::I8(v) => b.push(v),
                    Buffer::U8(v) => b.push(v),
                    Buffer::I32(v) => b.push(v),
                    Buffer::U32(v) => b.push(v),
                    Buffer::I64(v) => b.push(v),
                    Buffer::U64(v) => b.push(v),
                    other => panic!("untested dtype {:?}", other.dtype()),
                };
            }

            fn get_any(r: &$krate::Reduced, t: usize) -> Result<Buffer, NexarError> {
                fn g<T: Element>(r: &$krate::Reduced, t: usize) -> Result<Buffer, NexarError> {
                    Ok(Buffer::from_vec(r.get::<T>(t)?.to_vec()))
                }
                match dtype_of(t) {
                    DType::F32 => g::<f32>(r, t),
                    DType::F64 => g::<f64>(r, t),
                    DType::F16 => g::<f16>(r, t),
                    DType::BF16 => g::<bf16>(r, t),
                    DType::I8 => g::<i8>(r, t),
                    DType::U8 => g::<u8>(r, t),
                    DType::I32 => g::<i32>(r, t),
                    DType::U32 => g::<u32>(r, t),
                    DType::I64 => g::<i64>(r, t),
                    _ => g::<u64>(r, t),
                }
            }

            /// 40 tensors of every dtype, interleaved, in buckets of `cap` bytes.
            async fn bucketed(c: &Client, cap: usize) -> Result<(), String> {
                let (r, n) = (c.rank(), c.world_size());
                let mut b = c.bucketed_all_reduce(ReduceOp::Sum, cap);
                for t in 0..40 {
                    push_any(
                        &mut b,
                        &nexar_tests::collectives::buffer(dtype_of(t), &tensor_vals(r, t)),
                    );
                }
                let reduced = b.finish().await.map_err(|e| e.to_string())?;
                assert_eq!(reduced.len(), 40);
                for t in 0..40 {
                    let want: Vec<i64> = (0..tensor_len(t))
                        .map(|i| (0..n).map(|q| input(q, t as u64, i)).sum())
                        .collect();
                    let want = nexar_tests::collectives::buffer(dtype_of(t), &want);
                    let got = get_any(&reduced, t).map_err(|e| e.to_string())?;
                    if got != want {
                        return Err(format!("cap {cap} tensor {t}: {got:?} != {want:?}"));
                    }
                }
                // Asking for a tensor as another type, or one never pushed: typed errors.
                assert!(matches!(
                    reduced.get::<u8>(0),
                    Err(NexarError::Tensor { index: 0, .. })
                ));
                assert!(matches!(
                    reduced.get::<f32>(40),
                    Err(NexarError::Tensor { index: 40, .. })
                ));
                // The convenience form, in place, with Avg.
                let mut grads: Vec<Vec<f32>> =
                    (0..5).map(|t| typed::<f32>(&tensor_vals(r, t))).collect();
                c.all_reduce_bucketed(&mut grads, ReduceOp::Max, cap)
                    .await
                    .map_err(|e| e.to_string())?;
                for (t, g) in grads.iter().enumerate() {
                    let want: Vec<f32> = (0..tensor_len(t))
                        .map(|i| (0..n).map(|q| input(q, t as u64, i)).max().unwrap() as f32)
                        .collect();
                    assert_eq!(g, &want, "max, tensor {t}");
                }
                Ok(())
            }

            async fn compressed_one<T: Magnitude>(
                c: &Client,
                scheme: Scheme,
                n: usize,
            ) -> Result<(), String> {
                let (r, world) = (c.rank(), c.world_size());
                let want = reference(scheme, world, n, 3);
                let mut fb = ErrorFeedback::<T>::new();
                for (step, want) in want.iter().enumerate() {
                    let mut data =
                        typed::<T>(&(0..n).map(|i| input(r, step as u64, i)).collect::<Vec<_>>());
                    let res = match scheme {
                        Scheme::Dense => {
                            c.all_reduce_compressed(&mut data, &mut NoCompression, &mut fb)
                                .await
                        }
                        Scheme::TopK(d) => {
                            c.all_reduce_compressed(&mut data, &mut TopK::new(d).unwrap(), &mut fb)
                                .await
                        }
                        Scheme::RandomK(d, s) => {
                            c.all_reduce_compressed(
                                &mut data,
                                &mut RandomK::new(d, s).unwrap(),
                                &mut fb,
                            )
                            .await
                        }
                    };
                    res.map_err(|e| e.to_string())?;
                    if data != typed::<T>(want) {
                        return Err(format!(
                            "{:?} {scheme:?} step {step}: {:?}",
                            T::DTYPE,
                            Buffer::from_vec(data)
                        ));
                    }
                    assert_eq!(fb.step(), step as u64 + 1);
                }
                Ok(())
            }

            async fn compressed(c: &Client) -> Result<(), String> {
                let n = 29 * c.world_size() as usize + 3;
                for scheme in [Scheme::Dense, Scheme::TopK(0.1), Scheme::RandomK(0.2, 5)] {
                    compressed_one::<f32>(c, scheme, n).await?;
                    compressed_one::<f64>(c, scheme, n).await?;
                    compressed_one::<f16>(c, scheme, n).await?;
                    compressed_one::<bf16>(c, scheme, n).await?;
                    compressed_one::<i8>(c, scheme, n).await?;
                    compressed_one::<u8>(c, scheme, n).await?;
                    compressed_one::<i32>(c, scheme, n).await?;
                    compressed_one::<u32>(c, scheme, n).await?;
                    compressed_one::<i64>(c, scheme, n).await?;
                    compressed_one::<u64>(c, scheme, n).await?;
                }
                Ok(())
            }

            /// Device tensors: one copy out and one in per collective, exact results,
            /// and a failed staging that leaves the other ranks' buckets paired.
            async fn device(c: &Client) -> Result<(), String> {
                let (r, n) = (c.rank(), c.world_size());
                let mut dev = FakeDevice::new();
                let mut a = dev.alloc(vec![r as f32 + 1.0; 100]);
                c.all_reduce_device(&mut dev, &mut a, ReduceOp::Sum)
                    .await
                    .map_err(|e| e.to_string())?;
                let total = (1..=n).sum::<u32>() as f32;
                assert_eq!(dev.mem[a.slot], vec![total; 100]);
                assert_eq!((dev.to_host, dev.from_host), (1, 1));
                let mut bc = dev.alloc(vec![r as f32; 10]);
                c.broadcast_device(&mut dev, &mut bc, n - 1)
                    .await
                    .map_err(|e| e.to_string())?;
                assert_eq!(dev.mem[bc.slot], vec![(n - 1) as f32; 10]);
                // Only the root stages out.
                let root_out = usize::from(r == n - 1);
                assert_eq!((dev.to_host, dev.from_host), (1 + root_out, 2));
                // Bucketed from the device, back to the device; rank 0's second tensor
                // fails to stage and goes as zeros.
                let hs: Vec<Handle> = (0..6)
                    .map(|t| dev.alloc(vec![(r + t) as f32; 50 + t as usize]))
                    .collect();
                let mut b = c.bucketed_all_reduce(ReduceOp::Sum, 400);
                let mut failed = None;
                for (t, h) in hs.iter().enumerate() {
                    dev.fail_to_host = r == 0 && t == 1;
                    if let Err(e) = b.push_device(&mut dev, h) {
                        failed = Some(e);
                    }
                }
                dev.fail_to_host = false;
                let result = b.finish().await;
                if r == 0 {
                    assert!(matches!(failed, Some(NexarError::Device(_))), "{failed:?}");
                    assert!(matches!(result, Err(NexarError::Device(_))), "{result:?}");
                    assert_eq!(dev.to_host, 1 + root_out + 5);
                    return check_clean(&dev);
                }
                let reduced = result.map_err(|e| e.to_string())?;
                for (t, mut h) in hs.into_iter().enumerate() {
                    reduced
                        .copy_to_device(t, &mut dev, &mut h)
                        .map_err(|e| e.to_string())?;
                    let zeroed = if t == 1 { t as u32 } else { 0 }; // rank 0 sent zeros
                    let want = (0..n).map(|q| q + t as u32).sum::<u32>() - zeroed;
                    assert_eq!(dev.mem[h.slot], vec![want as f32; 50 + t], "tensor {t}");
                }
                assert_eq!((dev.to_host, dev.from_host), (1 + root_out + 6, 2 + 6));
                // A foreign handle is refused with a typed error, not a panic.
                let mut other = FakeDevice::new();
                let foreign = other.alloc(vec![0.0; 50]);
                let e = reduced.copy_to_device(0, &mut dev, &mut { foreign });
                assert!(
                    matches!(e, Err(NexarError::Device(_)))
                        || matches!(e, Err(NexarError::Length { .. }))
                );
                dev.violations.retain(|v| !v.starts_with("foreign"));
                check_clean(&dev)
            }

            fn check_clean(dev: &FakeDevice) -> Result<(), String> {
                if dev.violations.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{:?}", dev.violations))
                }
            }

            fn run(world: u32, f: fn(Arc<Client>) -> Task<Result<(), String>>) {
                let exec = <$exec as Exec>::new();
                let formed = exec
                    .run_all(vec![
                        Box::pin(async move { $krate::bootstrap_local(world).await })
                            as Task<Result<($krate::Seed, Vec<Client>), NexarError>>,
                    ])
                    .pop()
                    .unwrap();
                let (seed, clients) = formed.unwrap_or_else(|e| panic!("world {world}: {e}"));
                let clients: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();
                let results = exec.run_all(clients.iter().map(|c| f(c.clone())).collect());
                for (rank, r) in results.into_iter().enumerate() {
                    r.unwrap_or_else(|e| panic!("world {world} rank {rank}: {e}"));
                }
                drop(clients);
                drop(seed);
            }

            #[test]
            fn bucketed_every_dtype_1_to_8_ranks() {
                for world in 1..=8 {
                    run(world, |c| {
                        Box::pin(async move {
                            // Tiny buckets (many, tensors split across none), one per tensor
                            // (cap 0), and everything in one.
                            for cap in [64, 0, 1 << 20] {
                                bucketed(&c, cap).await?;
                            }
                            Ok(())
                        })
                    });
                }
            }

            #[test]
            fn compressed_every_dtype_1_to_8_ranks() {
                for world in 1..=8 {
                    run(world, |c| Box::pin(async move { compressed(&c).await }));
                }
            }

            #[test]
            fn device_hook_with_a_fake_device() {
                for world in [1, 3] {
                    run(world, |c| Box::pin(async move { device(&c).await }));
                }
            }
        }
    };
}

suite!(tokio_driver, nexar_tokio, TokioExec);
suite!(smol_driver, nexar_smol, SmolExec);
