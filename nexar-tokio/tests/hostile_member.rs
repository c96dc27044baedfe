//! A hostile member against the real `nexar seed` and `nexar worker` processes on
//! loopback. The member joins with the ticket (so it holds a member certificate and
//! sits in the mesh) and is an ordinary core `Node` on a UDP socket of its own, driven
//! here on a thread; it also writes raw frames through the core's `send_raw` test hook.
//!
//! The honest workers run `bench barrier`; the hostile member attacks first, then stays
//! away from the first barrier for `IDLE_SECS` (so the honest ranks sit idle, heartbeating,
//! while the attack lands), then takes part in the bench to its end. The test requires
//! every honest worker to finish the bench with every row `ok`, and prints each honest
//! worker's CPU time and peak RSS while the hostile member runs (join, attack, idle
//! window, bench), to compare the modes.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::process::{Child, Command as Process, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use nexar_proto::codec::{
    Algorithm, Chunk, ChunkHeader, CollectiveKind, DType, Fingerprint, Message, RecoveryVote,
    ReduceOp, Tagged,
};
use nexar_proto::collective::{Buffer, CommId};
use nexar_proto::{Command, Event, JoinTicket, Node, NodeConfig, OpId, RecoveryPolicy};

const NEXAR: &str = env!("CARGO_BIN_EXE_nexar");
const WORLD: u32 = 4;
/// How long the honest ranks wait for the hostile one at the first barrier, in seconds
/// (`NEXAR_HOSTILE_IDLE_SECS` sets it, for measuring over a longer window).
const IDLE_SECS: u64 = 4;

fn idle() -> Duration {
    let secs = std::env::var("NEXAR_HOSTILE_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(IDLE_SECS);
    Duration::from_secs(secs)
}
/// `bench barrier --iters ITERS --warmup WARMUP`: the collectives it runs are fixed by
/// these (see the bench's `sweep`): one barrier, two per run, then an f64 max-allreduce
/// of ITERS + 1 values, and the worker's closing barrier.
const ITERS: usize = 20;
const WARMUP: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    None,
    /// One empty tagged frame and one empty chunk stamped with the next epoch, to each
    /// honest rank.
    NextEpoch,
    /// One-byte tagged messages on new tags, nobody receiving them, to each honest rank
    /// for the whole idle window (as fast as flow control lets them through).
    TinyFlood,
    /// Abort chunks to each honest rank for operations it must not fail on their word:
    /// one far beyond the bench, one with no fingerprint, one on a communicator nobody
    /// has, and the largest sequence number.
    Aborts,
}

struct Hostile {
    node: Node,
    socket: UdpSocket,
    recv: Vec<u8>,
    send: Vec<u8>,
    events: Vec<Event>,
}

impl Hostile {
    fn join(ticket: &JoinTicket) -> Hostile {
        Self::join_with(ticket, RecoveryPolicy::Abort)
    }

    fn join_with(ticket: &JoinTicket, recovery: RecoveryPolicy) -> Hostile {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&unix.to_le_bytes());
        seed[8..10].copy_from_slice(&addr.port().to_le_bytes());
        let mut config = NodeConfig::new(seed, unix, addr);
        // The last rank, so that an honest worker is rank 0 and prints the bench's row.
        config.requested_rank = Some(WORLD - 1);
        config.recovery = recovery;
        let node = Node::worker(config, ticket, Instant::now()).expect("worker node");
        Hostile {
            node,
            socket,
            recv: vec![0; 65536],
            send: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Drive the node's I/O until `done` holds or `until` passes; `tick` runs each turn.
    fn run(
        &mut self,
        until: Instant,
        mut tick: impl FnMut(&mut Node),
        done: impl Fn(&[Event]) -> bool,
    ) -> bool {
        loop {
            tick(&mut self.node);
            let now = Instant::now();
            while let Some(t) = self.node.poll_transmit(now, &mut self.send) {
                let seg = t.segment_size.unwrap_or(t.size);
                for piece in self.send[..t.size].chunks(seg) {
                    let _ = self.socket.send_to(piece, t.destination);
                }
            }
            while let Some(e) = self.node.poll_event() {
                self.events.push(e);
            }
            if done(&self.events) {
                return true;
            }
            if now >= until {
                return false;
            }
            let deadline = self.node.poll_timeout().map_or(until, |d| d.min(until));
            let wait = deadline
                .saturating_duration_since(now)
                .clamp(Duration::from_micros(200), Duration::from_millis(5));
            self.socket.set_read_timeout(Some(wait)).expect("timeout");
            match self.socket.recv_from(&mut self.recv) {
                Ok((n, from)) => self.node.handle_datagram(
                    Instant::now(),
                    from,
                    None,
                    BytesMut::from(&self.recv[..n]),
                ),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.node.handle_timeout(Instant::now())
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Issue `command` and drive the node until it completes.
    fn complete(&mut self, command: Command) {
        let op: OpId = self.node.command(Instant::now(), command).expect("command");
        let limit = Instant::now() + Duration::from_secs(60);
        let done = self.run(
            limit,
            |_| {},
            |events| {
                events
                    .iter()
                    .any(|e| matches!(e, Event::Completed { op: o, outcome: Ok(_) } if *o == op))
            },
        );
        assert!(done, "hostile member's own collective did not complete");
    }
}

fn barrier() -> Command {
    Command::Collective {
        comm: CommId::WORLD,
        kind: CollectiveKind::Barrier,
        op: ReduceOp::None,
        root: 0,
        count: 0,
        input: Buffer::from_vec(Vec::<u8>::new()),
        timeout: None,
    }
}

fn tagged(epoch: u64, tag: u64, payload: &'static [u8]) -> Message {
    Message::Tagged(Tagged {
        epoch,
        comm: 0,
        tag,
        seq: 0,
        payload: Bytes::from_static(payload),
    })
}

fn next_epoch_chunk(epoch: u64) -> Message {
    Message::Chunk(Chunk {
        header: ChunkHeader {
            epoch,
            comm: CommId::WORLD.0,
            seq: 0,
            algorithm: Algorithm::Ring,
            step: 0,
            offset: 0,
        },
        fingerprint: None,
        payload: Bytes::new().into(),
    })
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

/// A fingerprint no honest rank has.
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

/// utime + stime of `pid`, in clock ticks, and its VmRSS in KiB.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, rss))
}

fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "worker still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `nexar seed` process for WORLD ranks with `extra` options, its ticket written to a
/// file in a directory of its own (`name` tells runs apart): the seed, that directory,
/// the ticket's text and the ticket.
fn start_seed(name: &str, extra: &[&str]) -> (Child, std::path::PathBuf, String, JoinTicket) {
    let dir = std::env::temp_dir().join(format!(
        "nexar-hostile-member-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ticket_file = dir.join("ticket");
    let seed = Process::new(NEXAR)
        .args(["seed", "--listen", "127.0.0.1:0", "--world-size"])
        .arg(WORLD.to_string())
        .args(extra)
        .arg("--ticket-file")
        .arg(&ticket_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the seed");
    let start = Instant::now();
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&ticket_file) {
            if !t.trim().is_empty() {
                break t.trim().to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no ticket file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let ticket = text.parse().expect("ticket");
    (seed, dir, text, ticket)
}

/// One run: seed, WORLD - 1 honest workers and the hostile member doing `attack`.
fn scenario(attack: Attack) {
    let (mut seed, dir, ticket_text, ticket) = start_seed(&format!("{attack:?}"), &[]);
    let (iters, warmup) = (ITERS.to_string(), WARMUP.to_string());
    let workers: Vec<Child> = (0..WORLD - 1)
        .map(|_| {
            Process::new(NEXAR)
                .args(["worker", "--join", &ticket_text, "bench", "barrier"])
                .args(["--iters", &iters, "--warmup", &warmup, "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect();
    let pids: Vec<u32> = workers.iter().map(Child::id).collect();

    let idle = idle();
    let hostile = std::thread::spawn(move || {
        let mut h = Hostile::join(&ticket);
        let ready = h.run(
            Instant::now() + Duration::from_secs(30),
            |_| {},
            |events| events.iter().any(|e| matches!(e, Event::Ready { .. })),
        );
        assert!(ready, "hostile member never formed: {:?}", h.events);
        let me = h.node.rank().expect("rank");
        let epoch = h.node.epoch();
        let others: Vec<u32> = (0..WORLD).filter(|r| *r != me).collect();
        if attack == Attack::NextEpoch {
            for &to in &others {
                assert!(h.node.send_raw(to, &tagged(epoch + 1, 7, b"")));
                assert!(h.node.send_raw(to, &next_epoch_chunk(epoch + 1)));
            }
        }
        if attack == Attack::Aborts {
            let world = CommId::WORLD.0;
            for &to in &others {
                for m in [
                    abort(epoch, world, 1_000_000, Some(bogus())),
                    abort(epoch, world, u64::MAX, Some(bogus())),
                    abort(epoch, world, 0, None),
                    abort(epoch, 0xbad, 0, Some(bogus())),
                ] {
                    assert!(h.node.send_raw(to, &m));
                }
            }
        }
        let mut tag = 1u64 << 32;
        let mut flooded = 0u64;
        h.run(
            Instant::now() + idle,
            |node| {
                if attack != Attack::TinyFlood {
                    return;
                }
                for &to in &others {
                    for _ in 0..64 {
                        if !node.send_raw(to, &tagged(epoch, tag, b"x")) {
                            break;
                        }
                        tag += 1;
                        flooded += 1;
                    }
                }
            },
            |_| false,
        );
        // Take part in the bench: the collectives `bench barrier` runs, in order.
        for _ in 0..1 + 2 * (ITERS + WARMUP) {
            h.complete(barrier());
        }
        h.complete(Command::Collective {
            comm: CommId::WORLD,
            kind: CollectiveKind::AllReduce,
            op: ReduceOp::Max,
            root: 0,
            count: ITERS + 1,
            input: Buffer::from_vec(vec![0.0f64; ITERS + 1]),
            timeout: None,
        });
        // The CLI's closing barrier ("leave together").
        h.complete(barrier());
        // Stay a member while the others print and leave.
        h.run(Instant::now() + Duration::from_secs(1), |_| {}, |_| false);
        (flooded, h.node.stats())
    });

    // Sample the honest workers while the hostile member runs.
    let mut first: Vec<Option<(u64, u64)>> = vec![None; pids.len()];
    let mut last = first.clone();
    let mut peak = vec![0u64; pids.len()];
    let watch_until = Instant::now() + idle + Duration::from_secs(40);
    while !hostile.is_finished() && Instant::now() < watch_until {
        for (i, pid) in pids.iter().enumerate() {
            if let Some(u) = usage(*pid) {
                first[i].get_or_insert(u);
                last[i] = Some(u);
                peak[i] = peak[i].max(u.1);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (flooded, stats) = hostile.join().expect("the hostile member panicked");
    let outputs: Vec<Output> = workers
        .into_iter()
        .map(|w| wait(w, Duration::from_secs(60)))
        .collect();
    let _ = seed.kill();
    let _ = seed.wait();
    let _ = std::fs::remove_dir_all(&dir);

    for (i, out) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{attack:?}: worker {i} failed: {stderr}"
        );
        for row in stdout.lines().filter(|l| l.starts_with('{')) {
            assert!(row.contains("\"check\":\"ok\""), "{attack:?}: {row}");
        }
        let cpu = match (first[i], last[i]) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0,
        };
        eprintln!(
            "{attack:?}: honest worker {i}: {cpu} CPU ticks (1/100 s) while the hostile \
             member ran, peak RSS {} KiB",
            peak[i]
        );
    }
    let rows: usize = outputs
        .iter()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with('{'))
                .count()
        })
        .sum();
    assert_eq!(rows, 1, "{attack:?}: the bench printed {rows} rows");
    eprintln!("{attack:?}: hostile member sent {flooded} flood messages; its stats {stats:?}");
}

#[test]
fn honest_workers_finish_the_bench_beside_a_hostile_member() {
    for attack in [
        Attack::None,
        Attack::NextEpoch,
        Attack::TinyFlood,
        Attack::Aborts,
    ] {
        scenario(attack);
    }
}

/// Under `--recovery automatic`, the hostile member tells the seed that every other rank
/// is dead. The seed hears the accused itself, so it evicts the accuser instead: the
/// honest workers run `resilient` straight through, end in a world of the three of them
/// with every completed allreduce correct, and the liar is told it is out.
#[test]
fn a_false_recovery_vote_evicts_only_the_liar() {
    let (mut seed, dir, ticket_text, ticket) = start_seed("vote", &["--recovery", "automatic"]);
    const ROUNDS: u32 = 40;
    let workers: Vec<Child> = (0..WORLD - 1)
        .map(|_| {
            Process::new(NEXAR)
                .args(["worker", "--join", &ticket_text, "--recovery", "automatic"])
                .args(["resilient", "--iters", &ROUNDS.to_string()])
                .args(["--count", "1024", "--pause-ms", "20"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect();

    let hostile = std::thread::spawn(move || {
        let mut h = Hostile::join_with(&ticket, RecoveryPolicy::Automatic);
        let ready = h.run(
            Instant::now() + Duration::from_secs(30),
            |_| {},
            |events| events.iter().any(|e| matches!(e, Event::Ready { .. })),
        );
        assert!(ready, "hostile member never formed: {:?}", h.events);
        let me = h.node.rank().expect("rank");
        let vote = Message::RecoveryVote(RecoveryVote {
            epoch: h.node.epoch(),
            voter: me,
            dead: (0..WORLD).filter(|r| *r != me).collect(),
        });
        assert!(h.node.send_to_seed(&vote), "no seed connection to lie on");
        h.run(
            Instant::now() + Duration::from_secs(30),
            |_| {},
            |events| events.iter().any(|e| matches!(e, Event::Evicted { .. })),
        )
    });
    let evicted = hostile.join().expect("the hostile member panicked");
    let outputs: Vec<Output> = workers
        .into_iter()
        .map(|w| wait(w, Duration::from_secs(60)))
        .collect();
    let _ = seed.kill();
    let _ = seed.wait();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(evicted, "the liar was not evicted");
    let mut ranks = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "worker {i} failed: {stderr}");
        let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
        for row in &rows {
            assert!(
                row.contains("\"check\":\"ok\"") || row.contains("\"check\":\"error"),
                "worker {i}: a wrong result: {row}"
            );
        }
        let last = rows
            .last()
            .unwrap_or_else(|| panic!("worker {i} printed nothing"));
        assert!(
            last.contains(&format!("\"iter\":{}", ROUNDS - 1))
                && last.contains("\"world\":3")
                && last.contains("\"check\":\"ok\""),
            "worker {i} did not finish in the world of the honest three: {last}"
        );
        let rank = last
            .split("\"rank\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|r| r.parse::<u32>().ok())
            .expect("rank in the row");
        ranks.push(rank);
    }
    ranks.sort_unstable();
    assert_eq!(ranks, vec![0, 1, 2], "the honest workers are the new world");
}
