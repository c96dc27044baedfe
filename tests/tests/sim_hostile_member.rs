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
use nexar_proto::codec::{
    Algorithm, Chunk, ChunkHeader, CollectiveKind, DType, Fingerprint, Message, ReduceOp, Tagged,
};
use nexar_proto::collective::{Buffer, CommId};
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{Command, NodeConfig, OpError, Outcome, RecoveryPolicy};
use nexar_tests::collectives::wait_all;
use nexar_tests::motion::{allreduce, correct_on, downs, evicted, run_until_epochs, timings};
use nexar_tests::support::{form, lan};

/// The victim's `max_early_bytes` (which also bounds what it holds for the next epoch).
const LIMIT: usize = 64 << 10;

/// The least one held message costs beyond its payload (`motion::HELD_OVERHEAD` is
/// larger: it is sized from the held event).
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
        comm: 0,
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
        .command(
            victim,
            Command::Recv {
                comm: CommId::WORLD,
                from: 3,
                tag: 7,
            },
        )
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

/// An abort chunk (step `u32::MAX`) for (comm, seq) carrying `fingerprint`.
fn abort(epoch: u64, comm: u64, seq: u64, fingerprint: Option<Fingerprint>) -> Message {
    Message::Chunk(Chunk {
        header: ChunkHeader {
            epoch,
            comm,
            seq,
            algorithm: Algorithm::Ring,
            step: u32::MAX,
            offset: 0,
        },
        fingerprint,
        payload: Bytes::new().into(),
    })
}

/// A fingerprint no rank here ever has.
fn bogus() -> Fingerprint {
    Fingerprint {
        kind: CollectiveKind::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: 999_999,
        root: 0,
        algorithm: Algorithm::Ring,
    }
}

/// Forged aborts from a member: for an operation far in the future, for one too old to
/// judge (more than the 16 last), without a fingerprint, on an unknown communicator,
/// sent to every honest rank. None of them fails the collectives that follow (the old
/// code failed the next one on every victim with `Mismatch`), what is held for them is
/// bounded, and the ignored ones are counted.
fn forged_aborts(seed: u64) -> Result<(), String> {
    const BEFORE: u64 = 18;
    let mut c = ClusterSim::with_workers_config(seed, 4, lan(), config);
    let ranks = form(&mut c)?;
    let hostile = ranks[3];
    let epoch = c.ready(ranks[0]).ok_or("not ready")?.2;
    for _ in 0..BEFORE {
        correct_on(&mut c, &ranks, &allreduce(64))?;
    }
    let world = CommId::WORLD.0;
    for to in 0..3 {
        for m in [
            abort(epoch, world, u64::MAX, Some(bogus())),
            abort(epoch, world, BEFORE + 1000, Some(bogus())),
            abort(epoch, world, 0, Some(bogus())),
            abort(epoch, world, BEFORE - 1, None),
            abort(epoch, 0xbad, 0, Some(bogus())),
        ] {
            send(&mut c, hostile, to, &m)?;
        }
    }
    c.run_until(Duration::from_millis(200), |_| false);
    for _ in 0..3 {
        correct_on(&mut c, &ranks, &allreduce(64))?;
    }
    for &h in &ranks[..3] {
        let stats = c.node(h).ok_or("node")?.stats();
        // The too-old one and the one without a fingerprint.
        if stats.aborts_ignored < 2 {
            return Err(format!("{h}: {} aborts ignored", stats.aborts_ignored));
        }
        // Three empty chunks held for operations not started (u64::MAX, +1000, unknown
        // comm), each at a fixed cost well under 1 KiB.
        if stats.early_held_bytes == 0 || stats.early_held_bytes > 3 * 1024 {
            return Err(format!("{h}: {} early bytes", stats.early_held_bytes));
        }
    }
    nobody_down(&c, &ranks)
}

#[test]
fn forged_aborts_fail_no_later_collective() {
    guarded("forged_aborts", 6, forged_aborts);
}

/// An honest mismatch (rank 2 asks for a different count) fails that collective on every
/// rank, and the next one, called alike, completes exactly: the aborts that cross after
/// the failure name an operation that already failed, and poison nothing.
fn mismatch_then_success(seed: u64) -> Result<(), String> {
    let mut c = ClusterSim::with_workers_config(seed, 4, lan(), config);
    let ranks = form(&mut c)?;
    let mut ops = Vec::new();
    for (r, h) in ranks.iter().enumerate() {
        let count = if r == 2 { 64 } else { 32 };
        let cmd = Command::Collective {
            comm: CommId::WORLD,
            kind: CollectiveKind::AllReduce,
            op: ReduceOp::Sum,
            root: 0,
            count,
            input: Buffer::from_vec(vec![1.0f32; count]),
            timeout: None,
        };
        ops.push((*h, c.command(*h, cmd).map_err(|e| e.to_string())?));
    }
    for (r, got) in wait_all(&mut c, &ops, Duration::from_secs(20))?
        .into_iter()
        .enumerate()
    {
        if !matches!(got, Err(OpError::Mismatch { .. })) {
            return Err(format!("rank {r}: {got:?}"));
        }
    }
    c.run_until(Duration::from_millis(100), |_| false);
    correct_on(&mut c, &ranks, &allreduce(32))?;
    correct_on(&mut c, &ranks, &allreduce(32))
}

#[test]
fn an_honest_mismatch_poisons_nothing_after_it() {
    guarded("mismatch_then_success", 10, mismatch_then_success);
}

/// Whether the hostile's raw send was taken (its QUIC queue may be full: flow control).
fn try_send(c: &mut ClusterSim, from: HostId, to: u32, msg: &Message) -> bool {
    let taken = c.node_mut(from).is_some_and(|n| n.send_raw(to, msg));
    c.sim.kick(from);
    taken
}

/// A one-byte collective chunk for (WORLD, seq), which never starts.
fn tiny_chunk(epoch: u64, seq: u64) -> Message {
    Message::Chunk(Chunk {
        header: ChunkHeader {
            epoch,
            comm: CommId::WORLD.0,
            seq,
            algorithm: Algorithm::Ring,
            step: 0,
            offset: 0,
        },
        fingerprint: None,
        payload: Bytes::from_static(b"x").into(),
    })
}

/// A flood of tiny messages the victim must keep: one-byte tagged messages on tags
/// nobody receives, and one-byte chunks for operations that never start. What the
/// victim counts stays within its limits (each message at a fixed cost, so the count
/// reflects memory, not payload), only the flooder's own streams are paused, and the
/// honest ranks' collectives (on a communicator without the flooder) stay exact.
fn tiny_flood(seed: u64) -> Result<(), String> {
    const UNMATCHED: usize = 1 << 20;
    const EARLY: usize = 1 << 20;
    let mut c = ClusterSim::with_workers_config(seed, 4, lan(), |c| {
        let mut c = timings(RecoveryPolicy::Automatic)(c);
        c.max_unmatched_bytes = UNMATCHED;
        c.max_early_bytes = EARLY;
        c
    });
    let ranks = form(&mut c)?;
    let (victim, hostile) = (ranks[0], ranks[3]);
    let epoch = c.ready(victim).ok_or("not ready")?.2;
    // The honest ranks' own communicator (the flooder joins none).
    let mut ops = Vec::new();
    for (r, h) in ranks.iter().enumerate() {
        let color = (r < 3).then_some(1);
        let split = Command::Split {
            comm: CommId::WORLD,
            color,
            key: r as i64,
        };
        ops.push((*h, c.command(*h, split).map_err(|e| e.to_string())?));
    }
    let mut honest_comm = None;
    for (r, got) in wait_all(&mut c, &ops, Duration::from_secs(10))?
        .into_iter()
        .enumerate()
    {
        match (r < 3, got) {
            (
                true,
                Ok(Outcome::Split {
                    comm: Some((id, me, 3)),
                    ..
                }),
            ) if me == r as u32 => honest_comm = Some(id),
            (false, Ok(Outcome::Split { comm: None, .. })) => {}
            (_, other) => return Err(format!("split on rank {r}: {other:?}")),
        }
    }
    let honest_comm = honest_comm.ok_or("no communicator")?;
    let honest = &ranks[..3];

    let (mut tagged_sent, mut chunks_sent) = (0u64, 0u64);
    for round in 0..40u64 {
        for i in 0..500u64 {
            let n = round * 500 + i;
            if try_send(&mut c, hostile, 0, &tagged(epoch, 1000 + n, 0, b"x")) {
                tagged_sent += 1;
            }
            if try_send(&mut c, hostile, 0, &tiny_chunk(epoch, 1000 + n)) {
                chunks_sent += 1;
            }
        }
        c.run_until(Duration::from_millis(20), |_| false);
    }
    c.run_until(Duration::from_millis(500), |_| false);

    let stats = c.node(victim).ok_or("victim")?.stats();
    // Reading stops once over the limit (after the delivery that crossed it).
    if stats.unmatched_bytes > UNMATCHED + 1024 {
        return Err(format!("unmatched {} > {UNMATCHED}", stats.unmatched_bytes));
    }
    // The flooder's share of the early window is EARLY / 3 peers.
    if stats.early_held_bytes > EARLY / 3 + 1024 {
        return Err(format!("early {} > {}", stats.early_held_bytes, EARLY / 3));
    }
    // The fixed cost is what bounds them: far more messages arrived than the payload
    // bytes alone would have stopped.
    if stats.unmatched_bytes < UNMATCHED / 2 || tagged_sent < 2 * (UNMATCHED / 256) as u64 {
        return Err(format!(
            "flood too small to test the bound: {} unmatched, {tagged_sent} tagged and \
             {chunks_sent} chunks sent",
            stats.unmatched_bytes
        ));
    }
    nobody_down(&c, &ranks)?;
    for _ in 0..3 {
        let case = allreduce(1000);
        let results = nexar_tests::collectives::run_case(
            &mut c,
            honest,
            honest_comm,
            &case,
            Duration::from_secs(20),
        )?;
        nexar_tests::collectives::check_case(&case, &results)?;
    }
    nobody_down(&c, &ranks)
}

#[test]
fn tiny_retained_messages_are_bounded_by_count() {
    guarded("tiny_flood", 4, tiny_flood);
}
