//! Unauthenticated attackers against the real `nexar seed` process over loopback UDP:
//! connections that finish TLS and stream partial frames, and a flood of first Initials.
//! In both, an honest `nexar worker` still joins and runs, and the seed's peak memory
//! (VmHWM) stays bounded.

#[allow(dead_code)]
#[path = "../../tests/src/hostile_net.rs"]
mod hostile_net;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nexar_proto::codec::{Hello, Limits};
use nexar_proto::JoinTicket;

const NEXAR: &str = env!("CARGO_BIN_EXE_nexar");

/// The seed's peak memory may not pass this (the target).
const MAX_SEED_HWM_KIB: u64 = 256 << 10;

fn start_seed() -> (Child, String) {
    let mut seed = Command::new(NEXAR)
        .args(["seed", "--listen", "127.0.0.1:0", "--world-size", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the seed");
    let mut line = String::new();
    BufReader::new(seed.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read the ticket");
    (seed, line.trim().to_string())
}

fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    err
}

/// Start an honest worker running a tiny bench; return how long it took to finish
/// (join, run, exit), failing if it fails or takes past `limit`.
fn honest_worker(ticket: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut worker = Command::new(NEXAR)
        .args(["worker", "--join", ticket])
        .args(["bench", "allreduce", "--max-bytes", "8", "--iters", "1"])
        .args(["--warmup", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a worker");
    loop {
        if let Some(status) = worker.try_wait().expect("try_wait") {
            let out = worker.wait_with_output().expect("output");
            assert!(
                status.success(),
                "worker failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let err = stop(worker);
            panic!("worker not done after {limit:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn half_frames_from_many_connections_leave_the_seed_small_and_open() {
    let (seed, ticket_text) = start_seed();
    let pid = seed.id();
    let ticket: JoinTicket = ticket_text.parse().expect("ticket");
    let claim = Hello::max_payload_len(&Limits::default());
    let attack = std::thread::spawn(move || {
        let mut attack = hostile_net::HalfFrames::new(ticket.addr, ticket.pin, 64, claim);
        attack.run_until(Instant::now() + Duration::from_secs(4));
        attack.stats()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let took = honest_worker(&ticket_text, Duration::from_secs(15));
    let stats = attack.join().expect("attack thread");
    let (hwm, _) = hostile_net::memory_kib(pid).expect("seed memory");
    let log = stop(seed);
    assert!(stats.handshakes >= 32, "{stats:?}\n{log}");
    assert!(stats.bytes_written > 0, "{stats:?}");
    assert!(hwm < MAX_SEED_HWM_KIB, "seed VmHWM {hwm} KiB, {stats:?}");
    assert!(took < Duration::from_secs(10), "worker took {took:?}");
}

#[test]
fn a_handshake_flood_does_not_lock_out_a_worker() {
    let (seed, ticket_text) = start_seed();
    let pid = seed.id();
    let ticket: JoinTicket = ticket_text.parse().expect("ticket");
    let flood = std::thread::spawn(move || {
        hostile_net::flood_initials(ticket.addr, ticket.pin, 1000, Duration::from_secs(4))
    });
    std::thread::sleep(Duration::from_millis(1000));
    let took = honest_worker(&ticket_text, Duration::from_secs(15));
    let sent = flood.join().expect("flood thread");
    let (hwm, _) = hostile_net::memory_kib(pid).expect("seed memory");
    let log = stop(seed);
    assert!(sent >= 2000, "only {sent} Initials sent\n{log}");
    assert!(hwm < MAX_SEED_HWM_KIB, "seed VmHWM {hwm} KiB");
    assert!(
        took < Duration::from_secs(5),
        "worker took {took:?} under the flood"
    );
}
