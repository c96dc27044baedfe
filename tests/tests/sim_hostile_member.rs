//! A hostile member in the simulator: a rank that joined with the ticket (it holds a real
//! member certificate) and then sends what no honest node sends. The honest ranks must
//! keep heartbeating, complete their collectives correctly and evict nobody, and the
//! victim's memory for what it holds must stay within its limits.
//!
//! The hostile rank is an ordinary `Node` that also writes raw frames through the
//! `send_raw` test hook, so it stays a full member (it heartbeats and joins collectives)
//! while it misbehaves.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::{Algorithm, Chunk, ChunkHeader, Message, Tagged};
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{Command, NodeConfig, Outcome, RecoveryPolicy};
use nexar_tests::motion::{allreduce, correct_on, downs, evicted, run_until_epochs, timings};
use nexar_tests::support::{form, lan};

/// The victim's `max_early_bytes` (which also bounds what it holds for the next epoch).
const LIMIT: usize = 64 << 10;

/// What one held message costs beyond its payload (`motion::HELD_OVERHEAD`).
const HELD_OVERHEAD: usize = 128;

/// Wall-clock allowance for a whole seeded sweep. Not a speed target: a node that spins
/// inside one input never returns to the simulator, so without this a regression would
/// hang the suite instead of failing it.
const HANG_GUARD: Duration = Duration::from_secs(300);

/// Run `test` over `seeds` seeds on its own thread; fail if it does not finish within
/// [`HANG_GUARD`].
fn guarded(name: &str, seeds: u64, test: fn(u64) -> Result<(), String>) {
    let (tx, rx) = mpsc::channel();
    let name = name.to_owned();
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(|| run_seeds(seeds, test));
            let _ = tx.send(outcome.is_ok());
        })
        .expect("spawn the test thread");
    match rx.recv_timeout(HANG_GUARD) {
        Ok(true) => {
            handle.join().expect("test thread");
        }
        Ok(false) => {
            // The panic message (with the seed to replay) is already on stderr.
            panic!("{name} failed");
        }
        Err(_) => panic!("{name}: a node never returned from an input (spinning)"),
    }
}

fn config(c: NodeConfig) -> NodeConfig {
    let mut c = timings(RecoveryPolicy::Automatic)(c);
    c.max_early_bytes = LIMIT;
    c
}

/// A tagged message as the hostile rank writes it.
fn tagged(epoch: u64, tag: u64, seq: u64, payload: &'static [u8]) -> Message {
    Message::Tagged(Tagged {
        epoch,
        tag,
        seq,
        payload: Bytes::from_static(payload),
    })
}

/// A collective chunk on a communicator nobody uses.
fn chunk(epoch: u64) -> Message {
    Message::Chunk(Chunk {
        header: ChunkHeader {
            epoch,
            comm: 0xdead,
            seq: 0,
            algorithm: Algorithm::Ring,
            step: 0,
            offset: 0,
        },
        fingerprint: None,
        payload: Bytes::new().into(),
    })
}

fn send(c: &mut ClusterSim, from: HostId, to: u32, msg: &Message) -> Result<(), String> {
    let node = c.node_mut(from).ok_or("hostile host is not a node")?;
    if !node.send_raw(to, msg) {
        return Err(format!("raw send to rank {to} refused"));
    }
    c.sim.kick(from);
    Ok(())
}

/// No honest host saw a peer go down or was evicted.
fn nobody_down(c: &ClusterSim, honest: &[HostId]) -> Result<(), String> {
    for &h in honest {
        if !downs(c, h).is_empty() || evicted(c, h) {
            return Err(format!(
                "{h}: downs {:?}, evicted {}",
                downs(c, h),
                evicted(c, h)
            ));
        }
    }
    Ok(())
}

/// Frames stamped with later epochs: one honest-looking message for the next epoch (a
/// peer that got there first), a flood of empty ones (each counted at a fixed cost, so
/// at most LIMIT / HELD_OVERHEAD are held), and messages for epochs no honest peer can
/// be in yet (epoch + 2, u64::MAX), which are dropped and counted.
///
/// The victim keeps heartbeating (nobody is found down over seconds), collectives still
/// complete exactly, what it holds stays within LIMIT, and after a real epoch change
/// (rank 4 crashes) the held next-epoch message is delivered exactly once.
fn next_epoch_frames(seed: u64) -> Result<(), String> {
    const FLOOD: u64 = 2000;
    let mut c = ClusterSim::with_workers_config(seed, 5, lan(), config);
    let ranks = form(&mut c)?;
    let (victim, hostile, doomed) = (ranks[0], ranks[3], ranks[4]);
    let epoch = c.ready(victim).ok_or("victim not ready")?.2;

    send(&mut c, hostile, 0, &tagged(epoch + 1, 7, 0, b"ahead"))?;
    send(&mut c, hostile, 0, &chunk(epoch + 1))?;
    for seq in 0..FLOOD {
        send(&mut c, hostile, 0, &tagged(epoch + 1, 8, seq, b""))?;
    }
    let far = [
        tagged(epoch + 2, 9, 0, b"too far"),
        tagged(u64::MAX, 10, 0, b""),
        chunk(u64::MAX),
    ];
    for m in &far {
        send(&mut c, hostile, 0, m)?;
    }
    c.run_until(Duration::from_secs(3), |_| false);

    let stats = c.node(victim).ok_or("victim")?.stats();
    if stats.future_held_bytes > LIMIT {
        return Err(format!("held {} > {LIMIT}", stats.future_held_bytes));
    }
    let most_held = (LIMIT / HELD_OVERHEAD) as u64;
    let sent = FLOOD + 2 + far.len() as u64;
    if stats.future_dropped < sent - most_held {
        return Err(format!(
            "dropped {} of {sent}, want at least {}",
            stats.future_dropped,
            sent - most_held
        ));
    }
    if stats.future_held_bytes < HELD_OVERHEAD * 2 {
        return Err(format!(
            "held only {} bytes: the next-epoch messages were not kept",
            stats.future_held_bytes
        ));
    }
    nobody_down(&c, &ranks)?;
    correct_on(&mut c, &ranks, &allreduce(1000))?;

    // A real epoch change: the held next-epoch traffic is now due, once.
    c.sim.crash(doomed);
    let survivors = &ranks[..4];
    if !run_until_epochs(&mut c, survivors, 1, Duration::from_secs(20)) {
        return Err("no epoch change after the crash".into());
    }
    let op = c
        .command(victim, Command::Recv { from: 3, tag: 7 })
        .map_err(|e| e.to_string())?;
    c.run_until(Duration::from_secs(1), |c| {
        c.events(victim)
            .iter()
            .any(|e| matches!(e, nexar_proto::Event::Completed { op: o, .. } if *o == op))
    });
    match c.take_completion(victim, op) {
        Some(Ok(Outcome::Received { from: 3, data, .. })) if data == "ahead" => {}
        other => return Err(format!("held message after the epoch change: {other:?}")),
    }
    let stats = c.node(victim).ok_or("victim")?.stats();
    if stats.future_held_bytes != 0 {
        return Err(format!(
            "{} bytes still held in the epoch they were for",
            stats.future_held_bytes
        ));
    }
    correct_on(&mut c, survivors, &allreduce(1000))?;
    for &h in &survivors[..3] {
        if evicted(&c, h) || downs(&c, h) != [4] {
            return Err(format!("{h}: downs {:?} (only rank 4 died)", downs(&c, h)));
        }
    }
    Ok(())
}

#[test]
fn next_epoch_frames_neither_freeze_nor_grow() {
    guarded("next_epoch_frames", 6, next_epoch_frames);
}
