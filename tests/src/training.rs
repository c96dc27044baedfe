//! Compressed all-reduce: the sequential reference, the per-rank inputs, and the
//! collective driven through the simulator (for the tests and the bandwidth-limited
//! measurement).
//!
//! Inputs are small non-negative integers (0..=3), so every sum over 8 ranks and a few
//! steps of residual is exact in every dtype, i8 and bf16 included, and the magnitudes
//! order alike in every dtype: the reference computes in i64.

use std::time::Duration;

use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::{Buffer, CommId, Element};
use nexar_proto::compress::{
    k_for, random_k_indices, sparse, ErrorFeedback, Magnitude, NoCompression, Payload, RandomK,
    TopK,
};
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Command, Outcome};

use crate::collectives::wait_all;

/// Rank `rank`'s input at `step`, element `i`.
pub fn input(rank: u32, step: u64, i: usize) -> i64 {
    ((u64::from(rank) * 5 + step * 3 + i as u64 * 7 + (i as u64 / 5)) % 4) as i64
}

/// Which compressor, with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// Everything, as a plain all-reduce.
    Dense,
    /// Top-k at this density.
    TopK(f64),
    /// Random-k at this density, from this seed.
    RandomK(f64, u64),
}

/// The results every rank must get at each step, computed sequentially in i64 with an
/// independent top-k (a full sort by magnitude, then index) and its own residuals.
pub fn reference(scheme: Scheme, world: u32, n: usize, steps: u64) -> Vec<Vec<i64>> {
    let mut residual = vec![vec![0i64; n]; world as usize];
    let mut out = Vec::new();
    for step in 0..steps {
        let mut total = vec![0i64; n];
        for (r, res) in residual.iter_mut().enumerate() {
            let sum: Vec<i64> = (0..n).map(|i| input(r as u32, step, i) + res[i]).collect();
            let chosen: Vec<usize> = match scheme {
                Scheme::TopK(d) if k_for(d, n) < n => {
                    let mut order: Vec<usize> = (0..n).collect();
                    order.sort_by(|&a, &b| sum[b].abs().cmp(&sum[a].abs()).then(a.cmp(&b)));
                    order.truncate(k_for(d, n));
                    order
                }
                Scheme::RandomK(d, seed) if k_for(d, n) < n => {
                    random_k_indices(seed, step, n, k_for(d, n))
                        .into_iter()
                        .map(|i| i as usize)
                        .collect()
                }
                _ => (0..n).collect(),
            };
            *res = sum.clone();
            for i in chosen {
                total[i] += sum[i];
                res[i] = 0;
            }
        }
        out.push(total);
    }
    out
}

/// A typed vector of `vals` (exact in `T`).
pub fn typed<T: Element>(vals: &[i64]) -> Vec<T> {
    let b = crate::collectives::buffer(T::DTYPE, vals);
    b.into_vec::<T>().unwrap_or_default()
}

fn prepare<T: Magnitude>(
    scheme: Scheme,
    fb: &mut ErrorFeedback<T>,
    input: &[T],
) -> Result<Payload<T>, String> {
    let r = match scheme {
        Scheme::Dense => fb.prepare(&mut NoCompression, input),
        Scheme::TopK(d) => fb.prepare(&mut TopK::new(d).map_err(|e| e.to_string())?, input),
        Scheme::RandomK(d, s) => {
            fb.prepare(&mut RandomK::new(d, s).map_err(|e| e.to_string())?, input)
        }
    };
    r.map_err(|e| e.to_string())
}

/// One compressed all-reduce step on every rank of a formed simulated cluster: each rank
/// prepares its payload, the matching collective runs, each rank finishes the sum and
/// commits its residual. Returns each rank's result, in rank order.
pub fn sim_step<T: Magnitude>(
    c: &mut ClusterSim,
    by_rank: &[HostId],
    scheme: Scheme,
    feedback: &mut [ErrorFeedback<T>],
    inputs: &[Vec<T>],
) -> Result<Vec<Vec<T>>, String> {
    let world = by_rank.len() as u32;
    let mut ops = Vec::new();
    let mut payloads = Vec::new();
    for (rank, host) in by_rank.iter().enumerate() {
        let payload = prepare(scheme, &mut feedback[rank], &inputs[rank])?;
        let (kind, input) = match &payload {
            Payload::Dense(v) => (CollectiveKind::AllReduce, Buffer::from_vec(v.clone())),
            Payload::Shared { values, .. } => {
                (CollectiveKind::AllReduce, Buffer::from_vec(values.clone()))
            }
            Payload::PerRank { indices, values } => (
                CollectiveKind::AllGather,
                Buffer::from_vec(sparse::encode_pairs(indices, values)),
            ),
        };
        let op = if kind == CollectiveKind::AllReduce {
            ReduceOp::Sum
        } else {
            ReduceOp::None
        };
        let command = Command::Collective {
            comm: CommId::WORLD,
            kind,
            op,
            root: 0,
            count: input.len(),
            input,
            timeout: None,
        };
        let id = c.command(*host, command).map_err(|e| e.to_string())?;
        ops.push((*host, id));
        payloads.push(payload);
    }
    let results = wait_all(c, &ops, Duration::from_secs(600))?;
    let mut out = Vec::new();
    for (rank, (result, payload)) in results.into_iter().zip(payloads).enumerate() {
        let buffer = match result {
            Ok(Outcome::Collective { buffer }) => buffer,
            other => return Err(format!("rank {rank}: {other:?}")),
        };
        let n = inputs[rank].len();
        let dense = match payload {
            Payload::Dense(_) => buffer.into_vec::<T>().map_err(|_| "dtype")?,
            Payload::Shared { indices, .. } => {
                let sums = buffer.into_vec::<T>().map_err(|_| "dtype")?;
                sparse::scatter(&indices, &sums, n)
            }
            Payload::PerRank { .. } => {
                let bytes = buffer.into_vec::<u8>().map_err(|_| "dtype")?;
                sparse::sum_pairs::<T>(&bytes, world, n).map_err(|e| e.to_string())?
            }
        };
        feedback[rank].commit();
        out.push(dense);
    }
    Ok(out)
}

/// What one measured run of compressed steps cost on the simulated link.
#[derive(Debug, Clone, Copy)]
pub struct LinkCost {
    /// Virtual time per step.
    pub per_step: Duration,
    /// UDP payload bytes all hosts sent per step.
    pub bytes_per_step: u64,
}

/// Run `steps` f32 steps of `n` elements on a formed cluster and measure them.
pub fn measure(
    c: &mut ClusterSim,
    by_rank: &[HostId],
    scheme: Scheme,
    n: usize,
    steps: u64,
) -> Result<LinkCost, String> {
    let world = by_rank.len() as u32;
    let mut fb: Vec<ErrorFeedback<f32>> = (0..world).map(|_| ErrorFeedback::new()).collect();
    let (t0, b0) = (c.sim.elapsed(), c.sim.stats().sent_bytes);
    for step in 0..steps {
        let inputs: Vec<Vec<f32>> = (0..world)
            .map(|r| {
                (0..n)
                    .map(|i| (input(r, step, i) as f32 - 1.5) * (1.0 + (i % 97) as f32))
                    .collect()
            })
            .collect();
        sim_step(c, by_rank, scheme, &mut fb, &inputs)?;
    }
    Ok(LinkCost {
        per_step: (c.sim.elapsed() - t0) / steps.max(1) as u32,
        bytes_per_step: (c.sim.stats().sent_bytes - b0) / steps.max(1),
    })
}
