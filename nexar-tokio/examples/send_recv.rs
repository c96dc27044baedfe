//! Tagged point-to-point messages around a ring of 4 ranks.
//!
//! `cargo run --release -p nexar-tokio --example send_recv`

use nexar_tokio::{bootstrap_local, NexarError};

#[tokio::main]
async fn main() -> Result<(), NexarError> {
    let (_seed, clients) = bootstrap_local(4).await?;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                let (rank, n) = (client.rank(), client.world_size());
                let (right, left) = ((rank + 1) % n, (rank + n - 1) % n);
                // Post the receive first, then send: neither waits for the other.
                let incoming = client.recv_start(left, 42);
                client
                    .send(right, 42, format!("hello from rank {rank}").as_bytes())
                    .await?;
                let message = incoming.await?;
                println!(
                    "rank {rank} got {:?} from rank {left}",
                    String::from_utf8_lossy(&message)
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
