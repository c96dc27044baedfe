//! The tokio and smol drivers as [`Backend`]s. Together because their APIs are the same
//! and one macro writes the backend for each; apart from the simulator because they need
//! an executor ([`Exec`]) to run their per-rank tasks from synchronous test code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexar_proto::codec::CollectiveKind;

use super::{Backend, Exchange, Failure, Timeouts};
use crate::collectives::Case;

/// A boxed future a driver backend runs on its executor.
pub type Task<R> = Pin<Box<dyn Future<Output = R> + Send + 'static>>;

/// How a driver backend runs its per-rank tasks from synchronous code.
pub trait Exec: Sized {
    /// A fresh executor.
    fn new() -> Self;
    /// Spawn every task, block until all finish; their results in order.
    fn run_all<R: Send + 'static>(&self, tasks: Vec<Task<R>>) -> Vec<R>;
}

/// A multi-thread tokio runtime with 2 workers.
#[derive(Debug)]
pub struct TokioExec(tokio::runtime::Runtime);

impl Exec for TokioExec {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self(runtime)
    }

    fn run_all<R: Send + 'static>(&self, tasks: Vec<Task<R>>) -> Vec<R> {
        self.0.block_on(async {
            let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(h.await.expect("rank task panicked"));
            }
            out
        })
    }
}

/// smol's global executor, under `smol::block_on`.
#[derive(Debug)]
pub struct SmolExec;

impl Exec for SmolExec {
    fn new() -> Self {
        Self
    }

    fn run_all<R: Send + 'static>(&self, tasks: Vec<Task<R>>) -> Vec<R> {
        smol::block_on(async {
            let handles: Vec<_> = tasks.into_iter().map(smol::spawn).collect();
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(h.await);
            }
            out
        })
    }
}

/// The two drivers have the same API: one backend written once, for each crate.
macro_rules! driver_backend {
    ($(#[$meta:meta])* $name:ident, $krate:ident, $exec:ty, $label:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            exec: $exec,
            seed: Option<$krate::Seed>,
            /// Clients in rank order; `None` once silenced.
            clients: Vec<Option<Arc<$krate::Client>>>,
        }

        impl $name {
            fn failure(e: $krate::NexarError) -> Failure {
                match e {
                    $krate::NexarError::Op(e) => Failure::Op(e),
                    other => Failure::Other(other.to_string()),
                }
            }

            /// One rank's part of `case`, through the typed API on i32 slices.
            async fn one_case(
                c: &$krate::Client,
                case: &Case,
            ) -> Result<Vec<i64>, $krate::NexarError> {
                let (r, n) = (c.rank(), c.world_size());
                let (k, all) = (case.count, case.count * n as usize);
                let mut d: Vec<i32> = case.input(r, n).iter().map(|v| *v as i32).collect();
                let root = case.root;
                let out = match case.kind {
                    CollectiveKind::AllReduce => {
                        c.all_reduce(&mut d, case.op).await?;
                        d
                    }
                    CollectiveKind::Broadcast => {
                        d.resize(k, 0);
                        c.broadcast(&mut d, root).await?;
                        d
                    }
                    CollectiveKind::Reduce => {
                        c.reduce(&mut d, case.op, root).await?;
                        if r == root {
                            d
                        } else {
                            Vec::new()
                        }
                    }
                    CollectiveKind::AllGather => {
                        let mut recv = vec![0; all];
                        c.all_gather(&d, &mut recv).await?;
                        recv
                    }
                    CollectiveKind::ReduceScatter => {
                        let mut recv = vec![0; k];
                        c.reduce_scatter(&d, &mut recv, case.op).await?;
                        recv
                    }
                    CollectiveKind::Gather => {
                        let mut recv = vec![0; if r == root { all } else { 0 }];
                        c.gather(&d, &mut recv, root).await?;
                        recv
                    }
                    CollectiveKind::Scatter => {
                        let mut recv = vec![0; k];
                        c.scatter(&d, &mut recv, root).await?;
                        recv
                    }
                    CollectiveKind::AllToAll => {
                        let mut recv = vec![0; all];
                        c.all_to_all(&d, &mut recv).await?;
                        recv
                    }
                    CollectiveKind::Scan => {
                        c.scan(&mut d, case.op).await?;
                        d
                    }
                    CollectiveKind::ExclusiveScan => {
                        c.exclusive_scan(&mut d, case.op).await?;
                        d
                    }
                    CollectiveKind::Barrier => {
                        c.barrier().await?;
                        Vec::new()
                    }
                    other => panic!("no typed method for {other:?}"),
                };
                Ok(out.into_iter().map(i64::from).collect())
            }

            fn live(&self) -> Vec<Arc<$krate::Client>> {
                self.clients.iter().flatten().cloned().collect()
            }
        }

        impl Backend for $name {
            const NAME: &'static str = $label;

            fn form(n: u32, timeouts: Option<Timeouts>) -> Result<Self, String> {
                let mut config = $krate::Config::default();
                if let Some(t) = timeouts {
                    config = config
                        .with_idle_timeout(t.idle)
                        .with_collective_timeout(t.collective)
                        .with_linger(Duration::ZERO);
                }
                let exec = <$exec as Exec>::new();
                let formed = exec
                    .run_all(vec![Box::pin(async move {
                        let (seed, clients) = $krate::bootstrap_local_with(n, config).await?;
                        let world = seed.formed().await?;
                        Ok::<_, $krate::NexarError>((seed, clients, world))
                    }) as Task<Result<($krate::Seed, Vec<$krate::Client>, u32), $krate::NexarError>>])
                    .pop()
                    .expect("one result");
                let (seed, clients, world) = formed.map_err(|e| e.to_string())?;
                if world != n {
                    return Err(format!("seed formed {world} ranks, not {n}"));
                }
                Ok(Self {
                    exec,
                    seed: Some(seed),
                    clients: clients.into_iter().map(|c| Some(Arc::new(c))).collect(),
                })
            }

            fn ranks(&self) -> Vec<(u32, u32)> {
                self.live()
                    .iter()
                    .map(|c| (c.rank(), c.world_size()))
                    .collect()
            }

            fn collective(&mut self, case: &Case) -> (Vec<Result<Vec<i64>, Failure>>, Duration) {
                let tasks: Vec<Task<_>> = self
                    .live()
                    .into_iter()
                    .map(|c| {
                        let case = case.clone();
                        Box::pin(async move {
                            Self::one_case(&c, &case).await.map_err(Self::failure)
                        }) as Task<_>
                    })
                    .collect();
                let started = Instant::now();
                let results = self.exec.run_all(tasks);
                (results, started.elapsed())
            }

            fn exchange(&mut self, plan: &[Exchange]) -> Vec<Result<Vec<u8>, Failure>> {
                let tasks: Vec<Task<_>> = self
                    .clients
                    .iter()
                    .zip(plan)
                    .filter_map(|(c, x)| Some((c.clone()?, x.clone())))
                    .map(|(c, x)| {
                        Box::pin(async move {
                            c.send(x.to, x.tag, &x.data).await.map_err(Self::failure)?;
                            let got = c.recv(x.from, x.tag).await.map_err(Self::failure)?;
                            Ok(got.to_vec())
                        }) as Task<_>
                    })
                    .collect();
                self.exec.run_all(tasks)
            }

            fn silence(&mut self, rank: u32) {
                // The last handle: with linger zero its driver stops at once, like a crash.
                if let Some(c) = self.clients[rank as usize].take() {
                    self.exec.run_all(vec![Box::pin(async move { drop(c) }) as Task<()>]);
                }
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                let clients: Vec<_> = self.clients.drain(..).flatten().collect();
                let seed = self.seed.take();
                let mut tasks: Vec<Task<()>> = clients
                    .into_iter()
                    .map(|c| {
                        Box::pin(async move {
                            if let Ok(c) = Arc::try_unwrap(c) {
                                c.shutdown().await;
                            }
                        }) as Task<()>
                    })
                    .collect();
                if let Some(seed) = seed {
                    tasks.push(Box::pin(async move { seed.shutdown().await }));
                }
                self.exec.run_all(tasks);
            }
        }
    };
}

driver_backend!(
    /// The tokio driver over UDP on loopback, on a 2-worker multi-thread runtime.
    Tokio,
    nexar_tokio,
    TokioExec,
    "tokio"
);

driver_backend!(
    /// The smol driver over UDP on loopback, under `smol::block_on`.
    Smol,
    nexar_smol,
    SmolExec,
    "smol"
);
