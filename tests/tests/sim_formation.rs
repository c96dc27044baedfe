//! Formation in the simulator: ranks, peer tables, loss, determinism.

use std::time::Duration;

use nexar_proto::sim::{ClusterSim, LinkConfig};
use nexar_proto::Event;

fn lan() -> LinkConfig {
    LinkConfig::with_latency(Duration::from_micros(200))
}

#[test]
fn forms_with_four_workers() {
    let mut c = ClusterSim::with_workers(1, 4, lan());
    let workers = c.workers.clone();
    assert!(
        c.run_until_ready(&workers, Duration::from_secs(10)),
        "not ready: {:?}",
        c.sim.elapsed()
    );
    let mut ranks: Vec<u32> = workers.iter().map(|w| c.ready(*w).unwrap().0).collect();
    ranks.sort();
    assert_eq!(ranks, vec![0, 1, 2, 3]);
    assert!(c
        .events(c.seed)
        .iter()
        .any(|e| matches!(e, Event::ClusterFormed { world_size: 4, .. })));
}
