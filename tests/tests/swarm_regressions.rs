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

/// Manual policy, 11 ranks, the seed cut off from one worker for 300 ms around a
/// checkpoint that removed two leavers. It found two bugs in turn:
/// - a rank got a tagged or chunk frame stamped with the next epoch and `Node::process`
///   held and re-popped it forever: the node froze inside one call (issue 19, item 1;
///   fixed by the "next-epoch hold" commit);
/// - the worker cut off from the seed missed the checkpoint agreement, came back naming
///   its old rank and was queued as a joiner instead of reattached; its checkpoint never
///   completed and its peers' collectives in the new epoch timed out on it (fixed: the
///   seed recognises a member by its rank before the last checkpoint and sends it the
///   agreement again).
#[test]
fn seed_784_next_epoch_frames_and_a_missed_checkpoint_agreement() {
    passes(784);
}

/// A no-op checkpoint agreement (nothing pending, epoch unchanged) was sent again as the
/// answer to the next checkpoint's requests, so two ranks completed a checkpoint that a
/// third, about to leave, had not called yet, and the leaver's `Leave` then completed as
/// a plain checkpoint with a rank. Only a real epoch change is ever resent.
#[test]
fn seed_1079_a_no_op_agreement_is_not_resent_for_the_next_checkpoint() {
    passes(1079);
}

/// Automatic policy, 3 ranks growing to 4 at a checkpoint, the seed restarting 287 ms
/// after it. Both joiners, still meshing, heard nothing on their connection to the old
/// seed for over `heartbeat_timeout`. Failure detection is off while a mesh forms (the
/// join deadline owns the links then), yet the liveness detector still gave that link's
/// silence as its next deadline: a deadline already past, which `handle_timeout` did not
/// move, so the simulator's guard fired (200,000 events at one instant). The silence
/// deadline now counts only while silence is detected.
#[test]
fn seed_20891_no_past_silence_deadline_while_a_joiner_meshes() {
    passes(20891);
}

/// Automatic policy, 3 ranks, the seed paused 2.1 s (over `heartbeat_timeout`) while the
/// ranks asked for a checkpoint. The ranks closed their silent seed connections and
/// dialled again; the seed woke to those closes and stateless resets before any timer,
/// judged every member dead on its own lost connections and committed an epoch with no
/// members, and the ranks' checkpoint waited forever. A seed that finds it was not run
/// for longer than `heartbeat_timeout` now gives members a grace period to reconnect, as
/// after a restart.
#[test]
fn seed_328_a_seed_that_slept_does_not_evict_everyone() {
    passes(328);
}

/// Manual policy, a round at the seed with every member voted and two accusations still
/// being checked when its deadline came. The deadline had nothing left to do but stayed
/// the seed's next timeout, in the past: the driver called the seed at the same instant
/// forever (the simulator's events-per-instant guard caught it).
#[test]
fn seed_30149_a_spent_round_deadline_is_no_timeout() {
    passes(30149);
}

/// The same spent deadline under another schedule (a one-way partition and a crash).
#[test]
fn seed_30272_a_spent_round_deadline_is_no_timeout() {
    passes(30272);
}
