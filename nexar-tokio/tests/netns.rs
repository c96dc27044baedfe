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

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::relay::{Faults, Relay, RelayStats};

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

// ---- preconditions and the subnet lock -------------------------------------------------

fn preconditions() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("network namespaces need Linux".into());
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .ok_or("no Uid line in /proc/self/status")?;
    if euid != "0" {
        return Err(format!("not root (euid {euid})"));
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("the kernel has no network namespaces".into());
    }
    for (tool, arg) in [("ip", "-V"), ("timeout", "--version"), ("kill", "-l")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("`{tool}` is not available"));
        }
    }
    Ok(())
}

/// Serializes runs on the shared subnet: a directory holding the owner's PID.
#[derive(Debug)]
struct SubnetLock {
    path: PathBuf,
}

impl SubnetLock {
    fn acquire() -> Result<Self, String> {
        let path = std::env::temp_dir().join("nexar-netns-198.18.0.0-24.lock");
        let deadline = Instant::now() + LOCK_LIMIT;
        let attempts = LOCK_LIMIT.as_millis() / POLL.as_millis() + 1;
        for _ in 0..attempts {
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let lock = SubnetLock { path };
                    std::fs::write(lock.path.join("pid"), std::process::id().to_string())
                        .map_err(|e| format!("writing the lock's pid: {e}"))?;
                    return Ok(lock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(path.join("pid"))
                        .ok()
                        .and_then(|p| p.trim().parse::<u32>().ok());
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    let stale = match owner {
                        Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
                        // The owner died between creating the directory and writing its pid.
                        None => age > Duration::from_secs(10),
                    };
                    if stale {
                        let _ = std::fs::remove_dir_all(&path);
                        continue;
                    }
                    if Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(format!("creating the lock {}: {e}", path.display())),
            }
        }
        Err(format!(
            "198.18.0.0/24 stayed locked by another run for {LOCK_LIMIT:?} ({}; remove it if stale)",
            path.display()
        ))
    }
}

impl Drop for SubnetLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The PID in one of our object names (`nxt<pid>...`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let digits: String = name
        .strip_prefix("nxt")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Namespaces and links named `nxt<pid>...` by runs that died without cleaning up. We hold
/// the lock, so any such object of another PID is stale.
fn remove_stale_objects() {
    let me = std::process::id();
    let list = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in list(&["-o", "link", "show"]).lines() {
        // "7: nxt123h0@if2: <BROADCAST,...": the name is the second field, before '@'.
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if owner_pid(name).is_some_and(|pid| pid != me) {
            report(&format!("netns: removing stale link {name}"));
            let _ = run_ip(&["link", "del", name]);
        }
    }
    for line in list(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner_pid(name).is_some_and(|pid| pid != me) {
            report(&format!("netns: removing stale namespace {name}"));
            let _ = run_ip(&["netns", "del", name]);
        }
    }
}

// ---- the network -----------------------------------------------------------------------

#[derive(Debug)]
enum SetupError {
    /// The system cannot do it: skip.
    Unavailable(String),
    /// It should have worked: fail.
    Failed(String),
}

fn run_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn node_ip(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, FIRST_HOST + k as u8))
}

/// The bridge, the namespaces and their veths; all deleted on drop.
#[derive(Debug)]
struct Net {
    bridge: String,
    bridge_created: bool,
    namespaces: Vec<String>,
    veths: Vec<String>,
}

impl Net {
    fn create(tag: &str) -> Result<Self, SetupError> {
        use SetupError::{Failed, Unavailable};
        let mut net = Net {
            bridge: format!("{tag}br"),
            bridge_created: false,
            namespaces: Vec::new(),
            veths: Vec::new(),
        };
        let in_use = Command::new("ip")
            .args(["-o", "addr", "show", "to", "198.18.0.0/24"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !in_use.is_empty() {
            return Err(Unavailable(format!(
                "198.18.0.0/24 is already in use here: {in_use}"
            )));
        }
        let bridge = net.bridge.clone();
        run_ip(&["link", "add", "name", &bridge, "type", "bridge"])
            .map_err(|e| Unavailable(format!("cannot create a bridge: {e}")))?;
        net.bridge_created = true;
        run_ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", &bridge]).map_err(Failed)?;
        run_ip(&["link", "set", &bridge, "up"]).map_err(Failed)?;
        for (k, name) in NODES.iter().enumerate() {
            let ns = format!("{tag}-{name}");
            run_ip(&["netns", "add", &ns])
                .map_err(|e| Unavailable(format!("cannot create a namespace: {e}")))?;
            net.namespaces.push(ns.clone());
            let veth = format!("{tag}h{k}");
            run_ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])
            .map_err(|e| Unavailable(format!("cannot create a veth pair: {e}")))?;
            net.veths.push(veth.clone());
            run_ip(&["link", "set", &veth, "master", &bridge]).map_err(Failed)?;
            // Isolated ports reach the bridge (the relay) but not each other: every
            // datagram between nodes has to go through the relay.
            run_ip(&[
                "link",
                "set",
                "dev",
                &veth,
                "type",
                "bridge_slave",
                "isolated",
                "on",
            ])
            .map_err(|e| Unavailable(format!("no bridge port isolation: {e}")))?;
            run_ip(&["link", "set", &veth, "up"]).map_err(Failed)?;
            let addr = format!("{}/24", node_ip(k));
            for args in [
                vec!["-n", &ns, "addr", "add", &addr, "dev", "eth0"],
                vec!["-n", &ns, "link", "set", "eth0", "up"],
                vec!["-n", &ns, "link", "set", "lo", "up"],
            ] {
                run_ip(&args).map_err(Failed)?;
            }
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for veth in &self.veths {
            let _ = run_ip(&["link", "del", veth]);
        }
        for ns in &self.namespaces {
            if let Err(e) = run_ip(&["netns", "del", ns]) {
                report(&format!("netns: teardown: {e}"));
            }
        }
        if self.bridge_created {
            if let Err(e) = run_ip(&["link", "del", &self.bridge]) {
                report(&format!("netns: teardown: {e}"));
            }
        }
    }
}

/// Bind the relay, node `k`'s front on `198.18.0.1:(base + k)`; node `k` then uses the
/// same port in its namespace, which a worker advertising `0.0.0.0:port` relies on.
fn start_relay(seed: u64) -> (Relay, Vec<u16>) {
    let mut last_error = None;
    for attempt in 0..PORT_ATTEMPTS {
        let base = FIRST_PORT_BASE + 100 * attempt;
        let ports: Vec<u16> = (0..NODES.len()).map(|k| base + k as u16).collect();
        let real: Vec<SocketAddr> = ports
            .iter()
            .enumerate()
            .map(|(k, p)| SocketAddr::new(node_ip(k), *p))
            .collect();
        match Relay::start(
            IpAddr::V4(BRIDGE_IP),
            &real,
            &ports,
            FAULTS,
            seed,
            RELAY_LIFETIME,
        ) {
            Ok(relay) => return (relay, ports),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => panic!("starting the relay: {e}"),
        }
    }
    panic!("starting the relay: no free ports ({last_error:?})");
}

// ---- node processes --------------------------------------------------------------------

/// Log files in a temp directory: removed on success, kept (and named) on failure.
#[derive(Debug)]
struct LogDir {
    path: PathBuf,
}

impl LogDir {
    fn create(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("nexar-netns-{tag}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating the log directory");
        LogDir { path }
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let keep = std::env::var("NEXAR_NETNS_KEEP_LOGS").is_ok_and(|v| v == "1");
        if std::thread::panicking() || keep {
            report(&format!("netns: logs kept in {}", self.path.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// Every node process; the ones still running are killed (their whole process group:
/// `timeout` and `nexar`) on drop.
#[derive(Debug, Default)]
struct Procs {
    list: Vec<Proc>,
}

impl Procs {
    /// Run `bin args` in namespace `ns` under `timeout`, in a process group of its own.
    fn spawn(
        &mut self,
        ns: &str,
        name: &'static str,
        bin: &str,
        args: &[String],
        logs: &Path,
        ticket: Option<&Path>,
    ) {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            "timeout",
            "-s",
            "KILL",
            CHILD_LIMIT_SECS,
            bin,
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("creating a log file"))
        .stderr(std::fs::File::create(&stderr).expect("creating a log file"))
        .process_group(0);
        // Only what this test says: no launcher variables from the environment.
        for var in [
            "NEXAR_JOIN",
            "NEXAR_JOIN_FILE",
            "NEXAR_WORLD_SIZE",
            "NEXAR_RANK",
            "WORLD_SIZE",
            "RANK",
            "SLURM_NTASKS",
            "SLURM_PROCID",
            "MASTER_ADDR",
            "MASTER_PORT",
        ] {
            cmd.env_remove(var);
        }
        if let Some(ticket) = ticket {
            // The ticket is the cluster's secret: a file, not a command-line argument.
            cmd.env("NEXAR_JOIN_FILE", ticket);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.list.push(Proc {
            name,
            child,
            status: None,
            stdout,
            stderr,
        });
    }

    /// Wait until every process in `which` exited, or `deadline`. With `fail_fast`, stop
    /// at the first failure. Returns whether they all exited with success.
    fn wait(
        &mut self,
        which: std::ops::RangeInclusive<usize>,
        deadline: Instant,
        fail_fast: bool,
    ) -> bool {
        let limit = deadline.saturating_duration_since(Instant::now());
        let polls = limit.as_millis() / POLL.as_millis() + 1;
        for _ in 0..polls {
            let mut running = 0;
            for p in &mut self.list[which.clone()] {
                if p.status.is_none() {
                    p.status = p.child.try_wait().ok().flatten();
                }
                match p.status {
                    None => running += 1,
                    Some(s) if !s.success() && fail_fast => return false,
                    Some(_) => {}
                }
            }
            if running == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
        self.list[which]
            .iter()
            .all(|p| p.status.is_some_and(|s| s.success()))
    }

    /// Each process's status and the end of its stderr.
    fn summary(&self) -> String {
        let mut out = String::new();
        for p in &self.list {
            let status = p
                .status
                .map_or_else(|| "still running".to_string(), |s| s.to_string());
            let err = std::fs::read_to_string(&p.stderr).unwrap_or_default();
            let lines: Vec<&str> = err.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
            let _ = write!(out, "\n{}: {status}\n    {tail}", p.name);
        }
        out
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.list {
            if p.status.is_some() || matches!(p.child.try_wait(), Ok(Some(_))) {
                continue;
            }
            let group = format!("-{}", p.child.id());
            let killed = Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !killed {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

/// The ticket the seed wrote (it renames the file into place, so it is never partial).
fn wait_for_ticket(path: &Path, procs: &mut Procs, relay: &Relay) -> String {
    let polls = TICKET_LIMIT.as_millis() / 20 + 1;
    for _ in 0..polls {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text.trim().to_string();
            }
        }
        if let Ok(Some(status)) = procs.list[0].child.try_wait() {
            procs.list[0].status = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no ticket from the seed within {TICKET_LIMIT:?}:{}\nrelay: {}",
        procs.summary(),
        fmt_stats(&relay.stats())
    );
}
