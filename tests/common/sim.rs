//! The simulator as a [`Backend`]. Apart from the drivers because it shares nothing with
//! them: it steps a `ClusterSim` in virtual time, command by command, where the drivers
//! run per-rank tasks over real sockets.

use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::CollectiveKind;
use nexar_proto::collective::CommId;
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Command, OpError, OpId, Outcome};

use super::{Backend, Exchange, Failure, Timeouts};
use crate::collectives::{buffer, run_case, wait_all, Case};
use crate::support::{check_formed, lan, FORMATION_LIMIT};

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
                    timeout: None,
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
                comm: CommId::WORLD,
                to: x.to,
                tag: x.tag,
                data: Bytes::from(x.data.clone()),
            };
            let recv = Command::Recv {
                comm: CommId::WORLD,
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
