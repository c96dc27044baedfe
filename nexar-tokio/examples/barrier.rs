//! A barrier: ranks that arrive at different times all leave together.
//!
//! `cargo run --release -p nexar-tokio --example barrier`

use std::time::{Duration, Instant};

use nexar_tokio::{bootstrap_local, NexarError};

#[tokio::main]
async fn main() -> Result<(), NexarError> {
    let (_seed, clients) = bootstrap_local(4).await?;
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                // Rank r arrives r × 100 ms late; nobody leaves before the last arrives.
                tokio::time::sleep(Duration::from_millis(100 * u64::from(client.rank()))).await;
                client.barrier().await?;
                let left = start.elapsed();
                println!("rank {} left the barrier at {left:.0?}", client.rank());
                assert!(left >= Duration::from_millis(300));
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
