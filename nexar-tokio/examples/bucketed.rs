//! Bucketed all-reduce against one all-reduce per tensor: 200 f32 gradients of mixed
//! sizes (1 KiB to 4 MiB, log-uniform, the same on every rank) on 4 ranks in one process
//! over loopback UDP, each result checked. Prints the median step time of each way.
//!
//! `cargo run --release -p nexar-tokio --example bucketed [ranks] [reps]`

use std::time::{Duration, Instant};

use nexar_tokio::{bootstrap_local, Client, NexarError, ReduceOp, DEFAULT_BUCKET_BYTES};

/// Tensor sizes in elements: 1 KiB · 4096^u for u spread over [0, 1) by a fixed LCG.
fn sizes() -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..200)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            ((1024.0 * 4096f64.powf(u)) as usize / 4).max(1)
        })
        .collect()
}

async fn step(c: &Client, way: &str, grads: &mut [Vec<f32>]) -> Result<Duration, NexarError> {
    let t = Instant::now();
    match way {
        "bucketed" => {
            c.all_reduce_bucketed(grads, ReduceOp::Sum, DEFAULT_BUCKET_BYTES)
                .await?
        }
        "per-tensor" => {
            // One all-reduce per tensor, all started at once (DDP without buckets).
            let pending: Vec<_> = grads
                .iter_mut()
                .map(|g| c.all_reduce_start(std::mem::take(g), ReduceOp::Sum))
                .collect();
            for (g, p) in grads.iter_mut().zip(pending) {
                *g = p.await?;
            }
        }
        _ => {
            for g in grads.iter_mut() {
                c.all_reduce(g, ReduceOp::Sum).await?;
            }
        }
    }
    Ok(t.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), NexarError> {
    let mut args = std::env::args().skip(1);
    let ranks: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let reps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let sizes = sizes();
    let bytes: usize = sizes.iter().sum::<usize>() * 4;
    println!(
        "{} tensors, {:.1} MiB per step, {ranks} ranks",
        sizes.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let (_seed, clients) = bootstrap_local(ranks).await?;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let sizes = sizes.clone();
            tokio::spawn(async move {
                let n = c.world_size() as f32;
                let mut medians = Vec::new();
                for way in ["bucketed", "per-tensor", "per-tensor-awaited"] {
                    let mut times = Vec::new();
                    for _ in 0..reps + 1 {
                        let mut grads: Vec<Vec<f32>> = sizes
                            .iter()
                            .map(|&s| vec![c.rank() as f32 + 1.0; s])
                            .collect();
                        c.barrier().await?;
                        times.push(step(&c, way, &mut grads).await?);
                        let want = n * (n + 1.0) / 2.0;
                        assert!(grads.iter().all(|g| g.iter().all(|x| *x == want)), "{way}");
                    }
                    times.remove(0); // warm-up
                    times.sort();
                    medians.push((way, times[times.len() / 2]));
                }
                if c.rank() == 0 {
                    let base = medians[0].1.as_secs_f64();
                    for (way, t) in &medians {
                        println!(
                            "{way:>20}: {:8.1} ms per step ({:.2}x the bucketed time)",
                            t.as_secs_f64() * 1e3,
                            t.as_secs_f64() / base
                        );
                    }
                }
                c.shutdown().await;
                Ok::<_, NexarError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("rank task")?;
    }
    Ok(())
}
