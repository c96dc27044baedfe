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

/// Automatic policy, a joiner admitted at a checkpoint, still meshing when a member that
/// had finished the checkpoint called it by RPC. The request reached the application,
/// whose answer was refused (`NotReady`): the caller would have waited for ever. A node
/// with a rank may answer as soon as it has one.
#[test]
fn seed_20445_a_joiner_still_meshing_answers_an_rpc() {
    passes(20445);
}

/// Abort policy, the seed paused 3 s while a rank called `leave()`. The agreement that
/// let it go was sent on the connection the rank had just closed as silent; the rank
/// dialled again naming its old rank and was queued as a new joiner, admitted at the next
/// checkpoint, and the others waited for it to mesh. A member that left at the last
/// checkpoint is now sent that agreement again.
#[test]
fn seed_843_a_leaver_that_missed_its_agreement_is_told_again() {
    passes(843);
}

/// Abort policy, 9 ranks: a rank aborted holding an RPC request the application could no
/// longer answer, and its caller, which had seen no failure, waited for ever. An aborted
/// rank now answers what it holds with `ShuttingDown`.
#[test]
fn seed_20800_an_aborted_rank_refuses_the_calls_it_holds() {
    passes(20800);
}

/// Abort policy, 7 ranks, a partition between two of them: both aborted, and a third
/// rank's receive from one of them, with no timeout, waited for ever. An aborting rank
/// now closes its links saying why, and its peers abort too, naming the same rank.
#[test]
fn seed_22029_an_abort_reaches_every_rank() {
    passes(22029);
}

/// Automatic policy: a joiner admitted while a member was cut off from the seed was
/// still meshing (waiting for that member) when the member was voted dead. The dead
/// rank's link was dropped but the joiner never checked its mesh again, so it never
/// became ready. An epoch change now settles the mesh.
#[test]
fn seed_21334_a_joiner_waiting_only_for_the_dead_becomes_ready() {
    passes(21334);
}

/// Automatic policy, one rank, a one-way partition from the seed to it for 810 ms. The
/// rank stopped hearing the seed, closed that connection and dialled again; the seed took
/// the close for a death, evicted its only member, and queued the returning rank as a new
/// joiner. A member closing its seed link to redial (`CLOSE_REDIAL`) is now away, not
/// dead, until a recovery's time has passed; and a member a recovery did evict is sent
/// that verdict when it dials again.
#[test]
fn seed_40004_a_member_redialling_the_seed_is_not_evicted() {
    passes(40004);
}

/// Manual policy: a joiner admitted at a checkpoint was still meshing, waiting for a link
/// to a rank that had crashed, when the seed called it for its vote; the application's
/// `Recover` was refused (`NotReady`). A rank still meshing may now recover.
#[test]
fn seed_50109_a_joiner_still_meshing_may_recover() {
    passes(50109);
}

/// Bursty loss (Gilbert-Elliott) at formation: a worker's first handshakes with the seed
/// were lost several times in a row, and QUIC's backed-off retransmissions left it hearing
/// nothing for over `join_timeout`, at which it gave up on a seed that was there. A
/// worker now keeps dialling for the whole `formation_timeout` (and warns after 2 s).
#[test]
fn seed_73558_a_slow_first_handshake_is_not_a_silent_seed() {
    passes(73558);
}

/// The same with eight workers.
#[test]
fn seed_76319_a_slow_first_handshake_is_not_a_silent_seed() {
    passes(76319);
}
