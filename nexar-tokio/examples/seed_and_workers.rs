//! A seed and workers as separate processes: what a real deployment looks like.
//!
//! ```text
//! # terminal 1: prints the join ticket, serves until the cluster formed and workers left
//! cargo run --release -p nexar-tokio --example seed_and_workers -- seed 127.0.0.1:4000 2
//! # terminals 2 and 3: paste the ticket
//! cargo run --release -p nexar-tokio --example seed_and_workers -- worker nexar1-...@127.0.0.1:4000
//! ```
//! Each worker joins, all-reduces its rank, prints the sum and leaves. For real machines
//! give the seed a routable address. `tests/processes.rs` runs exactly this.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use nexar_tokio::{Client, Config, JoinTicket, NexarError, ReduceOp, Seed};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["seed", addr, n] => match (addr.parse(), n.parse()) {
            (Ok(addr), Ok(n)) => seed(addr, n).await,
            _ => usage(),
        },
        ["worker", ticket] => match ticket.parse() {
            Ok(ticket) => worker(ticket).await,
            Err(e) => Err(e.into()),
        },
        _ => usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> Result<(), NexarError> {
    eprintln!("usage: seed_and_workers seed ADDR WORLD_SIZE | worker TICKET");
    std::process::exit(2);
}

async fn seed(addr: SocketAddr, world_size: u32) -> Result<(), NexarError> {
    let seed = Seed::bind(addr, world_size, Config::default()).await?;
    // Only the ticket goes to stdout, so a script can read it.
    println!("{}", seed.ticket());
    eprintln!(
        "seed: waiting for {world_size} workers on {}",
        seed.local_addr()
    );
    let formed = seed.formed().await?;
    eprintln!("seed: cluster of {formed} formed");
    // The workers no longer need the seed; wait for them to leave (their connections
    // close by idle timeout), so the example ends by itself.
    while seed.stats().await?.connections > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("seed: every worker left");
    seed.shutdown().await;
    Ok(())
}

async fn worker(ticket: JoinTicket) -> Result<(), NexarError> {
    // A short idle timeout so that the seed sees us gone soon after we exit.
    let config = Config::default().with_idle_timeout(Duration::from_secs(2));
    let client = Client::join(&ticket, config).await?;
    let mut x = [u64::from(client.rank())];
    client.all_reduce(&mut x, ReduceOp::Sum).await?;
    println!(
        "rank {} of {}: sum of ranks = {}",
        client.rank(),
        client.world_size(),
        x[0]
    );
    client.barrier().await?;
    client.shutdown().await;
    Ok(())
}
