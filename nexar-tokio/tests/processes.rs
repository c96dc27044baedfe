//! Separate processes on loopback: the `nexar` CLI (a seed and 4 workers running the
//! bench, `nexar local` for every collective) and the `seed_and_workers` example.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NEXAR: &str = env!("CARGO_BIN_EXE_nexar");

/// Wait for `child` for at most `limit`; kill it (and fail) past that.
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
                "process still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start a seed process and read its ticket (the first line of its stdout).
fn start_seed(program: &str, args: &[&str]) -> (Child, String) {
    let mut seed = Command::new(program)
        .args(args)
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

/// (bytes, check) of every JSON row in `stdout`.
fn rows(stdout: &str) -> Vec<(u64, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let field = |key: &str| {
                let start = l.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
                let rest = &l[start..];
                let end = rest.find([',', '}']).expect("field end");
                rest[..end].trim_matches('"').to_string()
            };
            for key in [
                "op",
                "ranks",
                "count",
                "dtype",
                "time_us",
                "algbw_gbps",
                "busbw_gbps",
            ] {
                assert!(l.contains(&format!("\"{key}\":")), "{key} missing in {l}");
            }
            (field("bytes").parse().expect("bytes"), field("check"))
        })
        .collect()
}

#[test]
fn seed_and_four_worker_processes_run_the_bench() {
    let dir = std::env::temp_dir().join(format!("nexar-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ticket_file = dir.join("ticket");
    let ticket_arg = ticket_file.to_str().unwrap();
    let (seed, notice) = start_seed(
        NEXAR,
        &[
            "seed",
            "--listen",
            "127.0.0.1:0",
            "--world-size",
            "4",
            "--ticket-file",
            ticket_arg,
        ],
    );
    let ticket = std::fs::read_to_string(&ticket_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(ticket.starts_with("nexar1-"), "{ticket}");
    // With a ticket file, stdout names the file and the pin, never the secret.
    let secret = ticket["nexar1-".len()..].split('-').next().unwrap();
    assert!(notice.contains(ticket_arg), "{notice}");
    assert!(!notice.contains(secret), "the secret leaked: {notice}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ticket_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let bench = [
        "bench",
        "allreduce",
        "--max-bytes",
        "64K",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--json",
    ];
    // Two join with the ticket file, two with the ticket on the command line.
    let workers: Vec<Child> = (0..4)
        .map(|i| {
            let join = if i % 2 == 0 {
                ["--join-file", ticket_arg]
            } else {
                ["--join", ticket.as_str()]
            };
            Command::new(NEXAR)
                .arg("worker")
                .args(join)
                .args(bench)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect();
    let outputs: Vec<Output> = workers
        .into_iter()
        .map(|w| wait(w, Duration::from_secs(40)))
        .collect();
    let seed_log = stop(seed);
    let mut printed = 0;
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "worker failed: {stderr}\nseed: {seed_log}"
        );
        let rows = rows(&stdout);
        if !rows.is_empty() {
            printed += 1;
            let sizes: Vec<u64> = rows.iter().map(|r| r.0).collect();
            assert_eq!(sizes, (3..=16).map(|k| 1u64 << k).collect::<Vec<_>>());
            assert!(rows.iter().all(|r| r.1 == "ok"), "{stdout}");
            assert!(stdout.contains("\"ranks\":4"), "{stdout}");
        }
    }
    assert_eq!(printed, 1, "exactly rank 0 prints the rows");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn local_bench_checks_every_collective() {
    for op in [
        "allreduce",
        "broadcast",
        "reduce",
        "allgather",
        "reducescatter",
        "gather",
        "scatter",
        "alltoall",
        "scan",
        "barrier",
        "sendrecv",
    ] {
        let out = Command::new(NEXAR)
            .args([
                "local",
                "--ranks",
                "3",
                "bench",
                op,
                "--max-bytes",
                "4K",
                "--iters",
                "2",
            ])
            .args(["--warmup", "1", "--root", "1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nexar local");
        let out = wait(out, Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = rows(&stdout);
        assert!(!rows.is_empty(), "{op}: no rows");
        assert!(rows.iter().all(|r| r.1 == "ok"), "{op}: {stdout}");
    }
    // Other element types and reductions, and the table form.
    let out = Command::new(NEXAR)
        .args([
            "local",
            "--ranks",
            "4",
            "bench",
            "allreduce",
            "--dtype",
            "bf16",
            "--redop",
            "max",
        ])
        .args(["--max-bytes", "1K", "--iters", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("busbw") && stdout.contains(" ok"),
        "{stdout}"
    );
}

/// `--driver smol` runs the same bench on nexar-smol: every collective checks out, and the
/// rows name the driver.
#[cfg(feature = "smol-driver")]
#[test]
fn local_bench_on_the_smol_driver() {
    for op in [
        "allreduce",
        "broadcast",
        "reduce",
        "allgather",
        "reducescatter",
        "gather",
        "scatter",
        "alltoall",
        "scan",
        "barrier",
        "sendrecv",
    ] {
        let out = Command::new(NEXAR)
            .args(["local", "--ranks", "3", "--driver", "smol", "bench", op])
            .args(["--max-bytes", "4K", "--iters", "2", "--warmup", "1"])
            .args(["--root", "1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nexar local --driver smol");
        let out = wait(out, Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = rows(&stdout);
        assert!(!rows.is_empty(), "{op}: no rows");
        assert!(rows.iter().all(|r| r.1 == "ok"), "{op}: {stdout}");
        assert!(stdout.contains("\"driver\":\"smol\""), "{op}: {stdout}");
    }
}

#[cfg(not(feature = "smol-driver"))]
#[test]
fn smol_driver_is_refused_with_a_clear_error() {
    let out = Command::new(NEXAR)
        .args([
            "local",
            "--ranks",
            "2",
            "--driver",
            "smol",
            "bench",
            "allreduce",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the smol driver is not built into this binary"),
        "{stderr}"
    );
}

/// The example binary next to this test's (cargo builds examples with the tests), built
/// on demand when only this test target was built.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "nexar-tokio", "--example", name]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "building example {name}");
    }
    path
}

#[test]
fn seed_and_workers_example_as_processes() {
    let program = example("seed_and_workers");
    let program = program.to_str().unwrap();
    let (seed, ticket) = start_seed(program, &["seed", "127.0.0.1:0", "3"]);
    let workers: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(program)
                .args(["worker", &ticket])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let out = wait(w, Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("sum of ranks = 3"), "{stdout}");
    }
    // The seed ends by itself once the workers' connections time out (2 s idle).
    let out = wait(seed, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rpc_example_asserts_its_answers() {
    let out = wait(
        Command::new(example("rpc"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "every rank stored and read back every rank's value",
        "unknown, as expected",
        "the handler's error came back",
        "RpcTimeout",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in {stdout}");
    }
}

/// The CLI tunes itself from `NEXAR_*`: a bad value stops it naming the variable, and a
/// short `NEXAR_FORMATION_TIMEOUT_MS` makes a worker whose seed is silent fail naming the
/// seed's address (an hour otherwise here, so an exit at all is the variable's doing).
#[test]
fn cli_worker_tunes_from_the_environment() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ticket = format!("nexar1-{}-{}@{silent}", "ab".repeat(32), "cd".repeat(32));
    let worker = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(NEXAR);
        cmd.args(["worker", "--join", &ticket, "bench", "allreduce"])
            .env("NEXAR_FORMATION_TIMEOUT_MS", "3600000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = wait(cmd.spawn().unwrap(), Duration::from_secs(60));
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = worker(&[("NEXAR_COLLECTIVE_TIMEOUT_MS", "5s")]);
    assert!(
        err.contains("NEXAR_COLLECTIVE_TIMEOUT_MS") && err.contains("5s"),
        "{err}"
    );
    let err = worker(&[("NEXAR_HEARTBEAT_TIMEOUT_MS", "1")]);
    assert!(err.contains("out of range"), "{err}");
    let err = worker(&[("NEXAR_FORMATION_TIMEOUT_MS", "300")]);
    assert!(
        err.contains("no answer from the seed") && err.contains(&silent.to_string()),
        "{err}"
    );
}

/// `n` worker processes running the resilient allreduce loop.
fn resilient_workers(
    ticket: &str,
    motion: &[&str],
    n: usize,
    iters: &str,
    count: &str,
) -> Vec<Child> {
    (0..n)
        .map(|_| {
            Command::new(NEXAR)
                .args(["worker", "--join", ticket])
                .args(motion)
                .args(["resilient", "--iters", iters, "--count", count])
                .args(["--pause-ms", "40"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect()
}

/// Read `child`'s stdout on a thread: one message per line as it comes, and the whole
/// output when the thread is joined.
fn watch(
    child: &mut Child,
) -> (
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<String>,
) {
    let watched = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(watched).lines() {
            let line = line.expect("line");
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(());
        }
        all
    });
    (rx, reader)
}

/// (iter, epoch, rank, world, check) of every line of the resilient job.
fn resilient_rows(stdout: &str) -> Vec<(u64, u64, u64, u64, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let field = |key: &str| {
                let start = l.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
                let rest = &l[start..];
                let end = rest.find([',', '}']).expect("field end");
                rest[..end].trim_matches('"').to_string()
            };
            let num = |key: &str| field(key).parse::<u64>().expect(key);
            (
                num("iter"),
                num("epoch"),
                num("rank"),
                num("world"),
                field("check"),
            )
        })
        .collect()
}

/// Kill one of four worker processes in the middle of their allreduce loop: under the
/// automatic policy the three survivors agree on the new world and go on, every
/// allreduce after that correct on 3 ranks.
#[test]
fn killing_a_worker_process_the_survivors_recover_and_go_on() {
    let motion = ["--recovery", "automatic", "--heartbeat-timeout-ms", "1000"];
    let mut seed_args = vec!["seed", "--listen", "127.0.0.1:0", "--world-size", "4"];
    seed_args.extend(motion);
    let (seed, ticket) = start_seed(NEXAR, &seed_args);
    let mut workers = resilient_workers(&ticket, &motion, 4, "60", "16384");
    // Watch one worker's progress; kill another once they are well into the loop.
    let (rx, reader) = watch(&mut workers[0]);
    for _ in 0..10 {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the loop is running");
    }
    let victim = workers.remove(3);
    let _ = stop(victim);
    let mut outputs = vec![];
    for (i, w) in workers.into_iter().enumerate() {
        let out = wait(w, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "survivor {i} failed: {stderr}");
        outputs.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    outputs[0] = reader.join().expect("reader");
    let _ = stop(seed);
    for (i, out) in outputs.iter().enumerate() {
        let rows = resilient_rows(out);
        // An iteration cut short may be skipped by the survivors' agreement afterwards.
        assert!(rows.len() >= 55, "survivor {i}: {out}");
        let last = rows.last().expect("rows");
        assert_eq!(last.0, 59, "survivor {i} stopped early: {out}");
        assert_eq!((last.3, last.4.as_str()), (3, "ok"), "survivor {i}: {out}");
        assert!(last.1 >= 2, "survivor {i} never changed epoch: {out}");
        for row in &rows {
            assert!(
                row.4 == "ok" || row.4.starts_with("error"),
                "survivor {i}: {row:?}"
            );
            if row.4 == "ok" {
                assert!(row.3 == 4 || row.3 == 3, "{row:?}");
            }
        }
        assert!(
            rows.iter().filter(|r| r.4 == "ok" && r.3 == 3).count() >= 30,
            "survivor {i} did too little on the smaller world: {out}"
        );
    }
    // The survivors' new ranks are 0, 1, 2: dense, in their old order.
    let mut ranks: Vec<u64> = outputs
        .iter()
        .map(|o| resilient_rows(o).last().expect("rows").2)
        .collect();
    ranks.sort_unstable();
    assert_eq!(ranks, vec![0, 1, 2]);
}

/// The seed process is killed while three workers run their allreduce loop, and started
/// again from its state file: the workers carried on without it, reconnect, and a worker
/// killed afterwards is recovered through the restarted seed.
#[test]
fn the_seed_process_restarts_from_its_state_file() {
    let dir = std::env::temp_dir().join(format!("nexar-seed-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let state = dir.join("seed.state");
    let state_arg = state.to_str().expect("UTF-8 path");
    let motion = ["--recovery", "automatic", "--heartbeat-timeout-ms", "1000"];
    let mut seed_args = vec!["seed", "--listen", "127.0.0.1:0", "--world-size", "3"];
    seed_args.extend(["--state-file", state_arg]);
    seed_args.extend(motion);
    let (seed, ticket) = start_seed(NEXAR, &seed_args);
    let mut workers = resilient_workers(&ticket, &motion, 3, "120", "4096");
    let (rx, reader) = watch(&mut workers[0]);
    let lines = |n: usize| {
        for _ in 0..n {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the loop is running");
        }
    };
    lines(10);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state)
            .expect("state file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let incarnation = || {
        let bytes = std::fs::read(&state).expect("state file");
        nexar_proto::codec::SeedSnapshot::decode(&bytes, &nexar_proto::codec::Limits::DEFAULT)
            .expect("a snapshot")
            .incarnation
    };
    let first_life = incarnation();
    let _ = stop(seed);
    // Without the seed, the loop goes on.
    lines(15);
    let mut restart = vec!["seed", "--state-file", state_arg];
    restart.extend(motion);
    let (seed, again) = start_seed(NEXAR, &restart);
    assert_eq!(again, ticket, "the restarted seed has another ticket");
    // The ticket is printed once the seed is bound, and the new life is on disk by then.
    assert_eq!(
        incarnation(),
        first_life + 1,
        "the new incarnation was not saved first"
    );
    // Time to reconnect (heartbeat timeout, redial backoff), then a failure to recover.
    lines(40);
    let victim = workers.remove(2);
    let _ = stop(victim);
    let mut outputs = vec![];
    for (i, w) in workers.into_iter().enumerate() {
        let out = wait(w, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "survivor {i} failed: {stderr}");
        outputs.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    outputs[0] = reader.join().expect("reader");
    let seed_err = stop(seed);
    let _ = std::fs::remove_dir_all(&dir);
    for (i, out) in outputs.iter().enumerate() {
        let rows = resilient_rows(out);
        let last = rows.last().expect("rows");
        assert_eq!(last.0, 119, "survivor {i} stopped early: {out}");
        assert_eq!(
            (last.3, last.4.as_str()),
            (2, "ok"),
            "survivor {i}: {out}\n{seed_err}"
        );
        assert!(last.1 >= 2, "survivor {i} never changed epoch: {out}");
    }
}
