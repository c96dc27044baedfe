//! The `nexar` CLI across network namespaces, through a lossy relay.
//!
//! A seed and 4 workers run as separate `nexar` processes in 5 network namespaces, each
//! joined by a veth pair to a bridge in the root namespace (198.18.0.1/24, the
//! benchmarking range; nodes at .10 to .14). The bridge ports are *isolated*: namespaces
//! cannot reach each other directly, only the root namespace, where this test runs a
//! seeded userspace UDP relay (`common/relay.rs`) on 198.18.0.1 that adds loss, delay,
//! reordering and duplication. Every node is reached through its relay front address:
//! - the seed advertises its front (`seed --advertise`), so the ticket names the relay;
//! - a worker binds `0.0.0.0:P` inside its namespace and advertises that (IP unspecified),
//!   so the seed fills in the IP it saw the worker come from, which is the relay's, and
//!   peers dial 198.18.0.1:P, which is the worker's front on the relay.
//!
//! The workers run `bench allreduce` from 8 B to 1 MiB; the test passes when every worker
//! exits 0, rank 0's JSON rows cover every size with `"check": "ok"`, and the relay's
//! counters show that faults were injected and that worker-to-worker traffic went through
//! it.
//!
//! Needs root, `ip` (iproute2) with netns, veth, bridges with port isolation, and
//! `timeout`. Where any of that is missing the test prints `skipping netns test: <reason>`
//! and passes, unless `NEXAR_NETNS_REQUIRED=1`, which turns the skip into a failure.
//! `NEXAR_NETNS_SEED` changes the relay's fault seed; `NEXAR_LOG` is passed to the nodes;
//! `NEXAR_NETNS_KEEP_LOGS=1` keeps the nodes' logs after a success too.
//!
//! Everything created (namespaces, veths, bridge, processes, relay, temp files) is torn
//! down by guards, on failure and panic too. Runs are serialized by a lock directory,
//! since they share the subnet; objects left by a killed run (names carry its PID) are
//! removed by the next run, and every node process is wrapped in `timeout`, so none
//! outlives a killed test for long.

mod common;
mod netns_env;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::relay::{Faults, RelayStats};
use netns_env::host::{preconditions, remove_stale_objects, SubnetLock};
use netns_env::net::{node_ip, start_relay, Net, SetupError};
use netns_env::procs::{wait_for_ticket, LogDir, Procs};

/// The bridge's address, where the relay listens.
const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Node `k` (0 = seed, 1.. = workers) is at 198.18.0.(FIRST_HOST + k).
const FIRST_HOST: u8 = 10;
const WORKERS: usize = 4;
/// Node names, used in namespace names and logs.
const NODES: [&str; WORKERS + 1] = ["seed", "w0", "w1", "w2", "w3"];
/// Ports tried for the nodes: `base + k`, bases `FIRST_PORT_BASE + 100 * attempt`.
const FIRST_PORT_BASE: u16 = 47_000;
const PORT_ATTEMPTS: u16 = 10;
/// The sweep, and how hard the relay is on it.
const MIN_BYTES: usize = 8;
const MAX_BYTES: usize = 1 << 20;
const DEFAULT_SEED: u64 = 0x6e65_7861_725f_6e73;
const FAULTS: Faults = Faults {
    loss: 0.01,
    duplicate: 0.005,
    min_delay: Duration::from_millis(1),
    max_delay: Duration::from_millis(5),
};
/// Hard limits: from the seed's launch to the last worker's exit, the seed's ticket, the
/// seed's exit after the workers (it is killed after that), waiting for the subnet lock,
/// any node process (as `timeout`'s argument, so it holds even if this test is killed),
/// and the relay's threads.
const RUN_LIMIT: Duration = Duration::from_secs(90);
const TICKET_LIMIT: Duration = Duration::from_secs(20);
const SEED_EXIT_LIMIT: Duration = Duration::from_secs(2);
const LOCK_LIMIT: Duration = Duration::from_secs(150);
const CHILD_LIMIT_SECS: &str = "150";
const RELAY_LIFETIME: Duration = Duration::from_secs(200);
const POLL: Duration = Duration::from_millis(50);

#[test]
fn allreduce_sweep_across_namespaces_through_a_lossy_relay() {
    let started = Instant::now();
    if let Err(reason) = preconditions() {
        return skip(&reason);
    }
    let _lock = SubnetLock::acquire().unwrap_or_else(|e| panic!("{e}"));
    remove_stale_objects();
    let tag = format!("nxt{}", std::process::id());
    let net = match Net::create(&tag) {
        Ok(net) => net,
        Err(SetupError::Unavailable(reason)) => return skip(&reason),
        Err(SetupError::Failed(e)) => panic!("setting up the namespaces: {e}"),
    };
    let logs = LogDir::create(&tag);
    let seed = std::env::var("NEXAR_NETNS_SEED")
        .ok()
        .map(|s| parse_u64(&s).expect("NEXAR_NETNS_SEED: a decimal or 0x-hex u64"))
        .unwrap_or(DEFAULT_SEED);
    let (relay, ports) = start_relay(seed);
    report(&format!(
        "netns: namespaces {tag}-*, bridge {}, relay seed {seed:#x}, faults {FAULTS:?}, ports {ports:?}",
        net.bridge
    ));

    let mut procs = Procs::default();
    let launched = Instant::now();
    let bin = env!("CARGO_BIN_EXE_nexar");
    let ticket_path = logs.path.join("ticket");
    let seed_listen = SocketAddr::new(node_ip(0), ports[0]);
    let seed_args = [
        "seed".to_string(),
        format!("--listen={seed_listen}"),
        format!("--advertise={}", relay.front(0)),
        format!("--world-size={WORKERS}"),
        format!("--ticket-file={}", ticket_path.display()),
    ];
    procs.spawn(
        &net.namespaces[0],
        NODES[0],
        bin,
        &seed_args,
        &logs.path,
        None,
    );
    let ticket = wait_for_ticket(&ticket_path, &mut procs, &relay);
    assert!(
        ticket.ends_with(&format!("@{}", relay.front(0))),
        "the ticket should name the seed's relay front {}",
        relay.front(0)
    );
    for w in 0..WORKERS {
        let args = [
            "worker".to_string(),
            format!("--rank={w}"),
            format!("--bind=0.0.0.0:{}", ports[w + 1]),
            "bench".into(),
            "allreduce".into(),
            format!("--min-bytes={MIN_BYTES}"),
            format!("--max-bytes={MAX_BYTES}"),
            // One warmup and three timed runs per size: the checks, not the timings, matter.
            "--iters=3".into(),
            "--warmup=1".into(),
            "--json".into(),
        ];
        procs.spawn(
            &net.namespaces[w + 1],
            NODES[w + 1],
            bin,
            &args,
            &logs.path,
            Some(&ticket_path),
        );
    }

    let workers_done = procs.wait(1..=WORKERS, launched + RUN_LIMIT, true);
    let sweep_time = launched.elapsed();
    let seed_done = procs.wait(0..=0, Instant::now() + SEED_EXIT_LIMIT, false);
    let matrix = relay.forwarded_matrix();
    let stats = relay.stop();
    let context = || {
        format!(
            "{}\nrelay: {}\n{}",
            procs.summary(),
            fmt_stats(&stats),
            fmt_matrix(&matrix)
        )
    };
    assert!(
        workers_done,
        "the workers did not all finish successfully within {RUN_LIMIT:?}:\n{}",
        context()
    );

    let out = std::fs::read_to_string(&procs.list[1].stdout).expect("rank 0's stdout");
    let rows: Vec<(usize, String, String)> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            assert_eq!(json_field(l, "op"), Some("allreduce"), "row {l}");
            let ranks = WORKERS.to_string();
            assert_eq!(json_field(l, "ranks"), Some(ranks.as_str()), "row {l}");
            let bytes = json_field(l, "bytes")
                .and_then(|b| b.parse().ok())
                .unwrap_or_else(|| panic!("no bytes in row {l}"));
            let check = json_field(l, "check").unwrap_or("<missing>").to_string();
            let time_us = json_field(l, "time_us").unwrap_or("?").to_string();
            (bytes, check, time_us)
        })
        .collect();
    let sizes: Vec<usize> = rows.iter().map(|r| r.0).collect();
    let expected: Vec<usize> = std::iter::successors(Some(MIN_BYTES), |s| Some(s * 2))
        .take_while(|s| *s <= MAX_BYTES)
        .collect();
    assert_eq!(
        sizes,
        expected,
        "rank 0's rows should cover the sweep:\n{out}\n{}",
        context()
    );
    let failed: Vec<_> = rows.iter().filter(|r| r.1 != "ok").collect();
    assert!(
        failed.is_empty(),
        "failed checks {failed:?}:\n{}",
        context()
    );

    // The faults were really injected, and on the paths that matter.
    assert!(stats.dropped > 0, "no datagram dropped: {}", context());
    assert!(stats.delayed > 0, "no datagram delayed: {}", context());
    assert!(stats.reordered > 0, "no datagram reordered: {}", context());
    assert!(
        stats.duplicated > 0,
        "no datagram duplicated: {}",
        context()
    );
    assert_eq!(
        stats.stray,
        0,
        "datagrams from unknown sources: {}",
        context()
    );
    for k in 1..=WORKERS {
        assert!(
            matrix[k][0] > 0 && matrix[0][k] > 0,
            "{} and the seed exchanged nothing through the relay: {}",
            NODES[k],
            context()
        );
        let from_workers: u64 = (1..=WORKERS)
            .filter(|s| *s != k)
            .map(|s| matrix[s][k])
            .sum();
        assert!(
            from_workers > 0,
            "{} got nothing from other workers through the relay: {}",
            NODES[k],
            context()
        );
    }

    let mut table = String::new();
    for (bytes, check, time_us) in &rows {
        let _ = write!(table, "\n  {bytes:>8} B  {time_us:>12} us  {check}");
    }
    report(&format!(
        "netns: allreduce sweep ok: seed start to last worker exit {sweep_time:.1?}, whole test \
         {:.1?}; seed {}; rank 0's {} rows:{table}\nrelay: {}\n{}",
        started.elapsed(),
        if seed_done {
            "exited"
        } else {
            "still serving 2 s after the workers left (killed at teardown)"
        },
        rows.len(),
        fmt_stats(&stats),
        fmt_matrix(&matrix)
    ));
}

// ---- reporting -----------------------------------------------------------------------

/// Straight to the process's stderr, past the test harness's capture: a skip must be seen.
fn report(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn skip(reason: &str) {
    if std::env::var("NEXAR_NETNS_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("netns test required (NEXAR_NETNS_REQUIRED=1) but: {reason}");
    }
    report(&format!("skipping netns test: {reason}"));
}

fn fmt_stats(s: &RelayStats) -> String {
    let mean_delay = s.delay_us_total.checked_div(s.delayed).unwrap_or(0);
    format!(
        "received {} forwarded {} dropped {} duplicated {} delayed {} (mean {} us) reordered {} \
         overflow {} stray {} send_errors {}",
        s.received,
        s.forwarded,
        s.dropped,
        s.duplicated,
        s.delayed,
        mean_delay,
        s.reordered,
        s.overflow,
        s.stray,
        s.send_errors
    )
}

fn fmt_matrix(m: &[Vec<u64>]) -> String {
    let mut out = String::from("datagrams delivered (row: from, column: to)\n      ");
    for name in NODES {
        let _ = write!(out, "{name:>8}");
    }
    for (s, row) in m.iter().enumerate() {
        let _ = write!(out, "\n{:>6}", NODES[s]);
        for v in row {
            let _ = write!(out, "{v:>8}");
        }
    }
    out
}

/// The text (or number) of `"key":` in one flat JSON object, without unescaping.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let rest = &line[line.find(&pattern)? + pattern.len()..];
    match rest.strip_prefix('"') {
        Some(text) => text.find('"').map(|end| &text[..end]),
        None => rest.find([',', '}']).map(|end| &rest[..end]),
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}
