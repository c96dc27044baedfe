//! One scenario suite, three backends: the simulator, the tokio driver and the smol
//! driver (both over real UDP on loopback).
//!
//! A [`Backend`] is a formed cluster driven synchronously, one call per round: every live
//! rank takes part in each call, concurrently. The scenarios ([`formation`],
//! [`every_collective`], [`send_recv`], [`silent_rank`]) are written once against it;
//! `tests/tests/scenarios.rs` runs each on each backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::collective::CommId;
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Command, OpError, OpId, Outcome};

use crate::collectives::{buffer, run_case, wait_all, Case};
use crate::support::{check_formed, lan, FORMATION_LIMIT};

/// World size of every scenario.
pub const RANKS: u32 = 4;

/// Short failure-detection timeouts, for the silent-rank scenario.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A peer silent this long is gone.
    pub idle: Duration,
    /// Every collective fails with `OpError::Timeout` past this.
    pub collective: Duration,
}

/// Why one rank's part of a round failed.
#[derive(Debug)]
pub enum Failure {
    /// The typed error of a started operation (a lost peer, a timeout, ...).
    Op(OpError),
    /// Anything else (refused command, wrong output shape, ...).
    Other(String),
}

/// One rank's part of a point-to-point round: send `data` to `to` on `tag`, then receive
/// from `from` on the same tag.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Destination rank.
    pub to: u32,
    /// Source rank of the message to receive.
    pub from: u32,
    /// Tag of both messages.
    pub tag: u64,
    /// Payload sent.
    pub data: Vec<u8>,
}

/// A formed cluster of [`RANKS`] ranks, driven one synchronous round at a time.
pub trait Backend: Sized {
    /// Name, for messages.
    const NAME: &'static str;
    /// Form a cluster of `n` ranks (default timeouts unless `timeouts` is given).
    fn form(n: u32, timeouts: Option<Timeouts>) -> Result<Self, String>;
    /// (rank, world size) of each live rank, in rank order.
    fn ranks(&self) -> Vec<(u32, u32)>;
    /// Run `case` (i32 data) on every live rank; each rank's output (as
    /// [`Case::expected_output`] shapes it), in rank order, and the time the round took.
    fn collective(&mut self, case: &Case) -> (Vec<Result<Vec<i64>, Failure>>, Duration);
    /// Run one point-to-point round (`plan[r]` for rank r); what each rank received.
    fn exchange(&mut self, plan: &[Exchange]) -> Vec<Result<Vec<u8>, Failure>>;
    /// Make `rank` stop answering at once, like a crash.
    fn silence(&mut self, rank: u32);
}

// ---------------------------------------------------------------------------------------
// The scenarios.

/// Four ranks form: ranks 0..3, world size 4.
pub fn formation<B: Backend>() {
    let started = Instant::now();
    let b = B::form(RANKS, None).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    let want: Vec<(u32, u32)> = (0..RANKS).map(|r| (r, RANKS)).collect();
    assert_eq!(b.ranks(), want, "{}: ranks", B::NAME);
    eprintln!(
        "{}: formation of {RANKS} ranks: {:?}",
        B::NAME,
        started.elapsed()
    );
}

/// The cases of [`every_collective`]: every kind (`ReduceOp::None` where no reduction
/// applies), reductions with several ops, non-zero roots, a count below the world size (uneven blocks) and a larger one.
pub fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for count in [3usize, 1000] {
        let case = |kind, op, root| Case {
            kind,
            dtype: DType::I32,
            op,
            root,
            count,
        };
        cases.extend([
            case(CollectiveKind::AllReduce, ReduceOp::Sum, 0),
            case(CollectiveKind::AllReduce, ReduceOp::Max, 0),
            case(CollectiveKind::AllReduce, ReduceOp::Prod, 0),
            case(CollectiveKind::Broadcast, ReduceOp::None, 2),
            case(CollectiveKind::Reduce, ReduceOp::Sum, 1),
            case(CollectiveKind::Reduce, ReduceOp::Min, 3),
            case(CollectiveKind::AllGather, ReduceOp::None, 0),
            case(CollectiveKind::ReduceScatter, ReduceOp::Sum, 0),
            case(CollectiveKind::Gather, ReduceOp::None, 3),
            case(CollectiveKind::Scatter, ReduceOp::None, 1),
            case(CollectiveKind::AllToAll, ReduceOp::None, 0),
            case(CollectiveKind::Scan, ReduceOp::Sum, 0),
            case(CollectiveKind::ExclusiveScan, ReduceOp::Sum, 0),
            case(CollectiveKind::ExclusiveScan, ReduceOp::Max, 0),
            Case {
                count: 0,
                ..case(CollectiveKind::Barrier, ReduceOp::None, 0)
            },
        ]);
    }
    cases
}

/// Every collective kind on four ranks matches the sequential reference on every rank.
pub fn every_collective<B: Backend>() {
    let mut b = B::form(RANKS, None).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    let started = Instant::now();
    let mut errors = Vec::new();
    for case in all_cases() {
        let (results, _) = b.collective(&case);
        assert_eq!(results.len(), RANKS as usize, "{}: {case:?}", B::NAME);
        for (rank, result) in results.into_iter().enumerate() {
            let want = case.expected_output(rank as u32, RANKS);
            match result {
                Ok(got) if got == want => {}
                other => errors.push(format!(
                    "{case:?} rank {rank}: got {other:?}, want {want:?}"
                )),
            }
        }
    }
    assert!(errors.is_empty(), "{}: {errors:#?}", B::NAME);
    eprintln!("{}: every collective: {:?}", B::NAME, started.elapsed());
}

/// Each rank sends to its right neighbour on a tag and receives from its left one; the
/// payload names the sender. A second round on another tag follows the first.
pub fn send_recv<B: Backend>() {
    let mut b = B::form(RANKS, None).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    for tag in [7u64, 8] {
        let payload = |r: u32| format!("from rank {r} on tag {tag}").into_bytes();
        let plan: Vec<Exchange> = (0..RANKS)
            .map(|r| Exchange {
                to: (r + 1) % RANKS,
                from: (r + RANKS - 1) % RANKS,
                tag,
                data: payload(r),
            })
            .collect();
        let got = b.exchange(&plan);
        assert_eq!(got.len(), RANKS as usize, "{}", B::NAME);
        for (r, result) in got.into_iter().enumerate() {
            let left = (r as u32 + RANKS - 1) % RANKS;
            match result {
                Ok(data) => assert_eq!(data, payload(left), "{}: rank {r}", B::NAME),
                Err(e) => panic!("{}: rank {r}: {e:?}", B::NAME),
            }
        }
    }
}

/// A rank stops answering mid-run: the survivors' next all-reduce fails with a typed
/// error (`PeerLost` or `Timeout`) within the configured timeout plus a margin.
pub fn silent_rank<B: Backend>() {
    let timeouts = Timeouts {
        idle: Duration::from_secs(2),
        collective: Duration::from_secs(3),
    };
    let mut b =
        B::form(RANKS, Some(timeouts)).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    let sum = |count| Case {
        kind: CollectiveKind::AllReduce,
        dtype: DType::I32,
        op: ReduceOp::Sum,
        root: 0,
        count,
    };
    // One round together first, so the failure is mid-run, not at the start.
    let first = sum(16);
    let (results, _) = b.collective(&first);
    for (rank, result) in results.into_iter().enumerate() {
        match result {
            Ok(got) => assert_eq!(got, first.expected_output(rank as u32, RANKS)),
            Err(e) => panic!("{}: first round, rank {rank}: {e:?}", B::NAME),
        }
    }
    b.silence(RANKS - 1);
    let (results, elapsed) = b.collective(&sum(1 << 16));
    assert_eq!(results.len(), RANKS as usize - 1, "{}: survivors", B::NAME);
    for (rank, result) in results.into_iter().enumerate() {
        match result {
            Err(Failure::Op(OpError::PeerLost { .. } | OpError::Timeout { .. })) => {}
            other => panic!(
                "{}: rank {rank}: expected PeerLost or Timeout, got {other:?}",
                B::NAME
            ),
        }
    }
    let limit = timeouts.collective + Duration::from_secs(3);
    assert!(elapsed < limit, "{}: took {elapsed:?}", B::NAME);
    eprintln!(
        "{}: survivors failed with a typed error after {elapsed:?}",
        B::NAME
    );
}

// ---------------------------------------------------------------------------------------
// The simulator.

/// The simulated cluster (virtual time, clean LAN links).
#[derive(Debug)]
pub struct Sim {
    c: ClusterSim,
    /// Hosts in rank order; `None` once silenced.
    by_rank: Vec<Option<HostId>>,
}

/// How long any simulated round may take (virtual time).
const SIM_LIMIT: Duration = Duration::from_secs(60);

impl Sim {
    fn live(&self) -> Vec<HostId> {
        self.by_rank.iter().flatten().copied().collect()
    }
}

fn sim_outcome(kind: CollectiveKind, r: Result<Outcome, OpError>) -> Result<Vec<i64>, Failure> {
    match r {
        Ok(Outcome::Collective { buffer }) => {
            if kind == CollectiveKind::Barrier || buffer.is_empty() {
                return Ok(Vec::new());
            }
            let values = buffer
                .into_vec::<i32>()
                .map_err(|b| Failure::Other(format!("not i32: {b:?}")))?;
            Ok(values.into_iter().map(i64::from).collect())
        }
        Ok(other) => Err(Failure::Other(format!("unexpected {other:?}"))),
        Err(e) => Err(Failure::Op(e)),
    }
}

impl Backend for Sim {
    const NAME: &'static str = "sim";

    fn form(n: u32, timeouts: Option<Timeouts>) -> Result<Self, String> {
        let mut c = ClusterSim::new(11, n, lan());
        for _ in 0..n {
            c.add_worker(|mut config| {
                if let Some(t) = timeouts {
                    config.idle_timeout = t.idle;
                    config.keep_alive = t.idle / 4;
                    config.collective_timeout = t.collective;
                }
                config
            });
        }
        let workers = c.workers.clone();
        if !c.run_until_ready(&workers, FORMATION_LIMIT) {
            return Err("no formation".into());
        }
        let by_rank = check_formed(&c, &workers)?;
        Ok(Self {
            c,
            by_rank: by_rank.into_iter().map(Some).collect(),
        })
    }

    fn ranks(&self) -> Vec<(u32, u32)> {
        self.live()
            .iter()
            .filter_map(|h| self.c.ready(*h).map(|(rank, world, _)| (rank, world)))
            .collect()
    }

    fn collective(&mut self, case: &Case) -> (Vec<Result<Vec<i64>, Failure>>, Duration) {
        let live = self.live();
        let started = self.c.sim.now();
        let results = if live.len() == self.by_rank.len() {
            run_case(&mut self.c, &live, CommId::WORLD, case, SIM_LIMIT)
        } else {
            // Some ranks are gone: issue on the survivors only, with their world inputs.
            let n = self.by_rank.len() as u32;
            let mut ops: Vec<(HostId, OpId)> = Vec::new();
            for (rank, host) in self.by_rank.iter().enumerate() {
                let Some(host) = host else { continue };
                let command = Command::Collective {
                    comm: CommId::WORLD,
                    kind: case.kind,
                    op: case.op,
                    root: case.root,
                    count: case.count,
                    input: buffer(case.dtype, &case.input(rank as u32, n)),
                };
                match self.c.command(*host, command) {
                    Ok(op) => ops.push((*host, op)),
                    Err(e) => return (vec![Err(Failure::Other(e.to_string()))], Duration::ZERO),
                }
            }
            wait_all(&mut self.c, &ops, SIM_LIMIT)
        };
        let elapsed = self.c.sim.now() - started;
        match results {
            Ok(results) => (
                results
                    .into_iter()
                    .map(|r| sim_outcome(case.kind, r))
                    .collect(),
                elapsed,
            ),
            Err(e) => (
                live.iter()
                    .map(|_| Err(Failure::Other(e.clone())))
                    .collect(),
                elapsed,
            ),
        }
    }

    fn exchange(&mut self, plan: &[Exchange]) -> Vec<Result<Vec<u8>, Failure>> {
        let mut sends = Vec::new();
        let mut recvs = Vec::new();
        for (rank, x) in plan.iter().enumerate() {
            let Some(host) = self.by_rank[rank] else {
                continue;
            };
            let send = Command::Send {
                to: x.to,
                tag: x.tag,
                data: Bytes::from(x.data.clone()),
            };
            let recv = Command::Recv {
                from: x.from,
                tag: x.tag,
            };
            match (self.c.command(host, send), self.c.command(host, recv)) {
                (Ok(s), Ok(r)) => {
                    sends.push((host, s));
                    recvs.push((host, r));
                }
                (s, r) => return vec![Err(Failure::Other(format!("refused: {s:?} {r:?}")))],
            }
        }
        if let Err(e) = wait_all(&mut self.c, &sends, SIM_LIMIT) {
            return vec![Err(Failure::Other(e))];
        }
        match wait_all(&mut self.c, &recvs, SIM_LIMIT) {
            Ok(results) => results
                .into_iter()
                .map(|r| match r {
                    Ok(Outcome::Received { data, .. }) => Ok(data.to_vec()),
                    Ok(other) => Err(Failure::Other(format!("unexpected {other:?}"))),
                    Err(e) => Err(Failure::Op(e)),
                })
                .collect(),
            Err(e) => vec![Err(Failure::Other(e))],
        }
    }

    fn silence(&mut self, rank: u32) {
        if let Some(host) = self.by_rank[rank as usize].take() {
            self.c.sim.crash(host);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The drivers.

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
