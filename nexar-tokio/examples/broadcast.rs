//! Broadcast from rank 0 to every rank, first with slices, then with the non-blocking
//! form overlapping two broadcasts.
//!
//! `cargo run --release -p nexar-tokio --example broadcast`

use nexar_tokio::{bootstrap_local, NexarError};

#[tokio::main]
async fn main() -> Result<(), NexarError> {
    let (_seed, clients) = bootstrap_local(4).await?;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                let rank = client.rank();
                // Only the root's contents matter; every rank passes a buffer of that length.
                let mut config = if rank == 0 {
                    [1.5f64, 2.5, 3.5]
                } else {
                    [0.0; 3]
                };
                client.broadcast(&mut config, 0).await?;
                println!("rank {rank}: got {config:?} from rank 0");

                // Two broadcasts in flight at once, from different roots.
                let a = client.broadcast_start(vec![rank as u64; 4], 1);
                let b = client.broadcast_start(vec![rank as u64 * 10; 4], 3);
                let (a, b) = (a.await?, b.await?);
                assert_eq!((a[0], b[0]), (1, 30));
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
