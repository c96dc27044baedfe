//! All-reduce on 4 ranks in one process over loopback UDP: each rank contributes its rank
//! number, everyone gets the sum.
//!
//! `cargo run --release -p nexar-tokio --example allreduce [ranks] [elements]`

use nexar_tokio::{bootstrap_local, NexarError, ReduceOp};

#[tokio::main]
async fn main() -> Result<(), NexarError> {
    let mut args = std::env::args().skip(1);
    let ranks: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let elements: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 20);
    let (_seed, clients) = bootstrap_local(ranks).await?;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                let mut data = vec![client.rank() as f32; elements];
                let started = std::time::Instant::now();
                client.all_reduce(&mut data, ReduceOp::Sum).await?;
                let want = (0..client.world_size()).sum::<u32>() as f32;
                assert!(data.iter().all(|x| *x == want));
                println!(
                    "rank {}: sum of {elements} f32 = {} in {:.2?}",
                    client.rank(),
                    data[0],
                    started.elapsed()
                );
                client.shutdown().await;
                Ok::<_, NexarError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("rank task")?;
    }
    Ok(())
}
