//! The simulator's speed probe: an 8-rank cluster on 5%-loss links running collectives
//! back to back, measured in simulated seconds per wall second.

use std::time::{Duration, Instant};

use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::collective::CommId;
use nexar_proto::sim::{ClusterSim, HostId, LinkConfig, LossModel};

use crate::collectives::{check_case, run_case, Case};
use crate::support::{form, TestRng};

/// What one probe measured.
#[derive(Debug, Clone, Copy)]
pub struct Speed {
    /// Virtual time simulated after formation.
    pub simulated: Duration,
    /// Wall time it took.
    pub wall: Duration,
    /// Collectives completed (each checked against the reference).
    pub collectives: u64,
}

impl Speed {
    /// Simulated seconds per wall second.
    pub fn ratio(&self) -> f64 {
        self.simulated.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Run the probe for `virtual_secs` of simulated time after formation.
pub fn probe(seed: u64, ranks: u32, virtual_secs: u64) -> Result<Speed, String> {
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        jitter: Duration::from_micros(200),
        loss: LossModel::Bernoulli(0.05),
        ..LinkConfig::default()
    };
    let mut c = ClusterSim::with_workers(seed, ranks, link);
    let by_rank: Vec<HostId> = form(&mut c)?;
    let start = c.sim.elapsed();
    let wall = Instant::now();
    let mut r = TestRng::new(seed);
    let mut collectives = 0;
    let kinds = [
        CollectiveKind::AllReduce,
        CollectiveKind::Broadcast,
        CollectiveKind::AllGather,
        CollectiveKind::ReduceScatter,
        CollectiveKind::AllToAll,
    ];
    while c.sim.elapsed() - start < Duration::from_secs(virtual_secs) {
        let kind = kinds[r.below(kinds.len() as u64) as usize];
        let reducing = matches!(
            kind,
            CollectiveKind::AllReduce | CollectiveKind::ReduceScatter
        );
        let case = Case {
            kind,
            dtype: DType::F32,
            op: if reducing {
                ReduceOp::Sum
            } else {
                ReduceOp::None
            },
            root: r.below(u64::from(ranks)) as u32,
            count: 1 + r.below(4096) as usize,
        };
        let results = run_case(
            &mut c,
            &by_rank,
            CommId::WORLD,
            &case,
            Duration::from_secs(60),
        )?;
        check_case(&case, &results)?;
        collectives += 1;
    }
    Ok(Speed {
        simulated: c.sim.elapsed() - start,
        wall: wall.elapsed(),
        collectives,
    })
}
