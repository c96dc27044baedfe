//! `nexar local`: a seed and N ranks in this process, on loopback, with the ranks in
//! blocks of consecutive ranks, one block per thread and one thread per core.
//!
//! Each thread runs its own single-threaded executor (a current-thread tokio runtime, or
//! [`nexar_smol::block_on_local`]) with the drivers and the jobs of its block, so a rank's
//! driver and the tasks it wakes never leave their core; ranks on different cores meet
//! only through their sockets, as separate processes would. The seed runs on the main
//! thread, which otherwise only waits.
//!
//! Why not every rank on one multi-thread runtime (what this command did until session
//! 10): there, tasks move between worker threads and wake each other across cores, and
//! every such hand-off moves cache lines. This machine's two virtual CPUs exchange a
//! cache line in 80-130 ns, and in the host's slow stretches in 400-430 ns; the 4-rank
//! 8 B all-reduce took 57 µs, and 86 µs in those stretches. In blocks it takes 35 µs,
//! and 38 in a slow stretch (BENCHMARKS.md, session 10, with the commands).
//!
//! Why blocks and not rank `r` on thread `r % threads`: the small collectives pair rank
//! `r` with `r ^ 1` first, then `r ^ 2`. In blocks the first exchange stays on one core
//! and only the second crosses; dealt round-robin the first crosses, and the 8 B
//! all-reduce took 62-66 µs instead of 35-38.

use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use crate::{run_job, Error, Job};

/// What a block's thread tells the main thread.
enum Report {
    /// Every rank of the block has joined (so the cluster has formed).
    Formed(Instant),
    /// The block's jobs ended: whether every check passed, or the first error.
    Done(Result<bool, Error>),
}

/// The ranks of each thread: `threads` blocks of consecutive ranks (the first ones one
/// longer when `ranks` does not divide evenly), and no empty block.
pub(crate) fn blocks(ranks: u32, threads: usize) -> Vec<Vec<u32>> {
    let ranks = ranks as usize;
    let threads = threads.clamp(1, ranks.max(1));
    let (each, longer) = (ranks / threads, ranks % threads);
    let mut next = 0;
    (0..threads)
        .map(|t| {
            let len = each + usize::from(t < longer);
            let block = (next..next + len).map(|r| r as u32).collect();
            next += len;
            block
        })
        .filter(|b: &Vec<u32>| !b.is_empty())
        .collect()
}

/// One thread per core unless told.
pub(crate) fn threads(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Start one thread per block: `run` is the block's whole life on that thread, and what
/// it returns (or a panic) is its [`Report::Done`].
fn start_blocks<F>(blocks: Vec<Vec<u32>>, tx: &Sender<Report>, run: F) -> Result<usize, Error>
where
    F: Fn(Vec<u32>, Sender<Report>) -> Result<bool, Error> + Send + Sync + 'static,
{
    let run = Arc::new(run);
    let count = blocks.len();
    for block in blocks {
        let (tx, run) = (tx.clone(), run.clone());
        let name = format!("nexar-ranks-{}", block[0]);
        std::thread::Builder::new().name(name).spawn(move || {
            let done = std::panic::catch_unwind(AssertUnwindSafe(|| run(block, tx.clone())))
                .unwrap_or_else(|_| Err("a rank's thread panicked".into()));
            let _ = tx.send(Report::Done(done));
        })?;
    }
    Ok(count)
}

/// Wait for every block: report the formation time once all have joined, return at the
/// first error (the other threads die with the process) or once all are done.
fn wait(rx: Receiver<Report>, ranks: u32, blocks: usize, started: Instant) -> Result<bool, Error> {
    let (mut formed, mut done, mut ok) = (0, 0, true);
    while done < blocks {
        match rx.recv() {
            Ok(Report::Formed(at)) => {
                formed += 1;
                if formed == blocks {
                    crate::report_formation(ranks, at.saturating_duration_since(started));
                }
            }
            Ok(Report::Done(Ok(passed))) => {
                done += 1;
                ok &= passed;
            }
            Ok(Report::Done(Err(e))) => return Err(e),
            Err(_) => return Err("a rank's thread ended without a report".into()),
        }
    }
    Ok(ok)
}

/// The local cluster's seed address: any free port on loopback.
fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// One block's life, for the crate `$krate` (`nexar_tokio` or `nexar_smol`), whose
/// detached tasks `$spawn` starts and whose task handles `$joined` turns into results:
/// join every rank of the block at once (none completes alone), report, run the job on
/// each, shut each down.
macro_rules! block_life {
    ($name:ident, $krate:ident, $spawn:path, $joined:expr, $driver:literal) => {
        async fn $name(
            block: Vec<u32>,
            ticket: $krate::JoinTicket,
            config: $krate::Config,
            job: Arc<Job>,
            tx: Sender<Report>,
        ) -> Result<bool, Error> {
            let joins: Vec<_> = block
                .iter()
                .map(|&rank| {
                    let (ticket, config) = (ticket.clone(), config.clone());
                    let config = config.with_requested_rank(Some(rank));
                    $spawn(async move { $krate::Client::join(&ticket, config).await })
                })
                .collect();
            let mut clients = Vec::with_capacity(joins.len());
            for join in joins {
                clients.push($joined(join).await?);
            }
            let _ = tx.send(Report::Formed(Instant::now()));
            let jobs: Vec<_> = clients
                .into_iter()
                .map(|client| {
                    let job = job.clone();
                    $spawn(async move {
                        let result = run_job(&client, &job, $driver).await;
                        client.shutdown().await;
                        result
                    })
                })
                .collect();
            let mut ok = true;
            for job in jobs {
                ok &= $joined(job).await?;
            }
            Ok(ok)
        }
    };
}

/// A tokio task's output, or its panic as an error.
async fn tokio_joined<T, E: Into<Error>>(
    task: tokio::task::JoinHandle<Result<T, E>>,
) -> Result<T, Error> {
    task.await?.map_err(Into::into)
}

block_life!(
    tokio_block,
    nexar_tokio,
    tokio::spawn,
    tokio_joined,
    "tokio"
);

/// `nexar local` on nexar-tokio: a current-thread runtime per thread.
pub(crate) fn run_tokio(ranks: u32, threads: usize, job: Job) -> Result<bool, Error> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let started = Instant::now();
    let config = nexar_tokio::Config::from_env()?.with_loopback_transport();
    let main = runtime()?;
    let seed = main.block_on(nexar_tokio::Seed::bind(loopback(), ranks, config.clone()))?;
    let ticket = seed.ticket().clone();
    let job = Arc::new(job);
    let (tx, rx) = mpsc::channel();
    let count = start_blocks(blocks(ranks, threads), &tx, move |block, tx| {
        let life = tokio_block(block, ticket.clone(), config.clone(), job.clone(), tx);
        runtime()?.block_on(life)
    })?;
    drop(tx);
    main.block_on(async move {
        let waited = tokio::task::spawn_blocking(move || wait(rx, ranks, count, started)).await;
        let ok = waited??;
        seed.shutdown().await;
        Ok(ok)
    })
}

/// A smol task's output.
#[cfg(feature = "smol-driver")]
async fn smol_joined<T, E: Into<Error>>(task: smol::Task<Result<T, E>>) -> Result<T, Error> {
    task.await.map_err(Into::into)
}

#[cfg(feature = "smol-driver")]
block_life!(
    smol_block,
    nexar_smol,
    nexar_smol::spawn_here,
    smol_joined,
    "smol"
);

/// `nexar local --driver smol` on nexar-smol: [`nexar_smol::block_on_local`] per thread,
/// the jobs spawned beside the drivers with [`nexar_smol::spawn_here`].
#[cfg(feature = "smol-driver")]
pub(crate) fn run_smol(ranks: u32, threads: usize, job: Job) -> Result<bool, Error> {
    let started = Instant::now();
    let config = nexar_smol::Config::from_env()?.with_loopback_transport();
    nexar_smol::block_on_local(async move {
        let seed = nexar_smol::Seed::bind(loopback(), ranks, config.clone()).await?;
        let ticket = seed.ticket().clone();
        let job = Arc::new(job);
        let (tx, rx) = mpsc::channel();
        let count = start_blocks(blocks(ranks, threads), &tx, move |block, tx| {
            let life = smol_block(block, ticket.clone(), config.clone(), job.clone(), tx);
            nexar_smol::block_on_local(life)
        })?;
        drop(tx);
        let ok = smol::unblock(move || wait(rx, ranks, count, started)).await?;
        seed.shutdown().await;
        Ok(ok)
    })
}

#[cfg(test)]
mod tests {
    use super::blocks;

    #[test]
    fn blocks_hold_consecutive_ranks_and_none_is_empty() {
        assert_eq!(blocks(4, 2), [vec![0, 1], vec![2, 3]]);
        assert_eq!(blocks(5, 2), [vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(blocks(3, 4), [vec![0], vec![1], vec![2]]);
        assert_eq!(blocks(1, 2), [vec![0]]);
        assert_eq!(blocks(8, 1), [(0..8).collect::<Vec<u32>>()]);
        assert_eq!(
            blocks(16, 3).iter().map(Vec::len).collect::<Vec<_>>(),
            [6, 5, 5]
        );
        assert_eq!(blocks(4, 0), [vec![0, 1, 2, 3]]);
    }
}
