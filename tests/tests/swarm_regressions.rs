//! Seeds the swarm found failing, kept as tests. Each runs under a watchdog: the bugs
//! the swarm finds include a node that never returns from one call, which would hang the
//! test instead of failing it. Replay one with
//! `cargo run --release -p nexar-tests --bin swarm -- --seeds 1 --from SEED`.

use std::sync::mpsc;
use std::time::Duration;

use nexar_tests::swarm::{run_seed, Progress};

/// Wall time one seed may take here (they take well under a second in release).
const WATCHDOG: Duration = Duration::from_secs(120);

fn passes(seed: u64) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let report = run_seed(seed, &Progress::default());
        let _ = tx.send((report.outcome.violation, report.outcome.recent));
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok((None, _)) => {}
        Ok((Some(violation), recent)) => {
            panic!(
                "swarm seed {seed}: {violation}\nlast events:\n{}",
                recent.join("\n")
            )
        }
        Err(_) => panic!("swarm seed {seed} hung: no result within {WATCHDOG:?}"),
    }
}

/// Manual policy, 11 ranks, the seed cut off from a worker for 300 ms: a rank got a
/// tagged or chunk frame stamped with the next epoch and `Node::process` held and
/// re-popped it forever (issue 19, item 1).
#[test]
fn next_epoch_frame_does_not_freeze_a_node_784() {
    passes(784);
}
