//! Measurement tool: unauthenticated attackers against a running `nexar seed`.
//!
//! ```text
//! hostile_client TICKET half-frames N SECONDS [CLAIM [spread]]
//!                                                       N connections streaming partial Hellos;
//!                                                       `spread`: each from its own 127.1.x.y
//! hostile_client TICKET flood RATE SECONDS              first Initials at RATE per second
//! hostile_client sim-retry                              Retry threshold trade-off, simulated
//! ```
//!
//! `sim-retry` needs no seed: in the deterministic simulator it forms a 4-worker cluster
//! (200 µs links) with and without a 1000/s Initial flood, for Retry always (threshold 0),
//! past 8 handshaking connections (the default) and never, and prints the formation time,
//! the Retries sent and the seed's peak of unproven connections.
//!
//! It prints one line of what it did every second (and a summary); watch the seed's memory
//! with `grep VmHWM /proc/PID/status`. Plain sockets cannot spoof source addresses, so the
//! flood sends each Initial from a new socket (a distinct local port) instead.

use std::time::{Duration, Instant};

use nexar_proto::codec::{Hello, Limits};
use nexar_proto::JoinTicket;
use nexar_tests::hostile_net::{flood_initials, HalfFrames};

fn usage() -> ! {
    eprintln!(
        "usage: hostile_client TICKET half-frames N SECONDS [CLAIM [spread]]\n       hostile_client TICKET flood RATE SECONDS\n       hostile_client sim-retry"
    );
    std::process::exit(2)
}

/// (formation time, Retries sent, peak unproven connections at the seed).
fn simulated_formation(retry_above: usize, flood: bool, seed: u64) -> (Duration, u64, usize) {
    use nexar_proto::sim::{ClusterSim, HostId};
    use nexar_tests::rogue::InitialFlood;
    use nexar_tests::support::{lan, FORMATION_LIMIT};
    let mut c = ClusterSim::new_with(seed, 4, lan(), |mut config| {
        config.retry_above_handshaking = retry_above;
        config
    });
    if flood {
        let (pin, addr, now) = (c.ticket().pin, c.ticket().addr, c.sim.now());
        let until = now + Duration::from_secs(10);
        let (f, _) = InitialFlood::new([0xf9; 32], pin, addr, now, Duration::from_millis(1), until);
        c.add_custom(|_| Box::new(f));
        c.run_until(Duration::from_secs(1), |_| false);
    }
    let start = c.sim.elapsed();
    let honest: Vec<HostId> = (0..4).map(|_| c.add_worker(|config| config)).collect();
    let mut peak = 0;
    let formed = c.run_until(FORMATION_LIMIT, |c| {
        let stats = c.node(c.seed).expect("seed").stats();
        peak = peak.max(stats.unproven_connections);
        honest.iter().all(|h| c.ready(*h).is_some())
    });
    assert!(formed, "not formed");
    let retries = c.node(c.seed).expect("seed").stats().retries_sent;
    (c.sim.elapsed() - start, retries, peak)
}

fn sim_retry() {
    for flood in [false, true] {
        for (name, threshold) in [("always", 0), ("past 8", 8), ("never", usize::MAX)] {
            for seed in 1..=3 {
                let (took, retries, peak) = simulated_formation(threshold, flood, seed);
                println!(
                    "flood {flood:5} retry {name:6} seed {seed}: formed in {took:?}, {retries} Retries, peak {peak} unproven"
                );
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sim-retry") {
        sim_retry();
        return;
    }
    if args.len() < 4 {
        usage();
    }
    let ticket: JoinTicket = args[0].parse().unwrap_or_else(|e| {
        eprintln!("bad ticket: {e}");
        std::process::exit(2)
    });
    let number = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| usage()) };
    let seconds = Duration::from_secs(number(&args[3]));
    match args[1].as_str() {
        "half-frames" => {
            let n = number(&args[2]) as usize;
            let claim = args
                .get(4)
                .map(|s| number(s) as u32)
                .unwrap_or_else(|| Hello::max_payload_len(&Limits::default()));
            let spread = args.get(5).map(String::as_str) == Some("spread");
            let mut attack = HalfFrames::with_sources(ticket.addr, ticket.pin, n, claim, spread);
            let end = Instant::now() + seconds;
            while Instant::now() < end {
                let tick = (Instant::now() + Duration::from_secs(1)).min(end);
                attack.run_until(tick);
                println!("{:?}", attack.stats());
            }
        }
        "flood" => {
            let rate = number(&args[2]) as u32;
            let sent = flood_initials(ticket.addr, ticket.pin, rate, seconds);
            println!(
                "sent {sent} Initials in {seconds:?} ({:.0}/s)",
                sent as f64 / seconds.as_secs_f64()
            );
        }
        _ => usage(),
    }
}
