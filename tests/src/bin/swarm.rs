//! The swarm runner: run generated seeds on the simulator and check every invariant.
//!
//! `cargo run --release -p nexar-tests --bin swarm -- --seeds N --from S` runs seeds
//! S..S+N on `--jobs` threads (default: the machine's cores) and exits 0 iff every seed
//! passed. `--from random` draws the start seed (and prints it); `--minutes M` stops
//! issuing new seeds after M minutes. Each seed runs under a wall-clock watchdog: a node
//! that never returns from one call (an endless loop inside the core) freezes its thread,
//! and the runner then reports the seed as hung and exits non-zero. A failing seed is
//! replayed once to check that it is deterministic (same trace hash, same verdict).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexar_tests::swarm::{run_seed, short_hash, Progress, Report};

struct Args {
    seeds: u64,
    from: u64,
    minutes: Option<f64>,
    jobs: usize,
    hang: Duration,
    replay_every: u64,
    keep_going: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 1000,
        from: 0,
        minutes: None,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        hang: Duration::from_secs(20),
        replay_every: 0,
        keep_going: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => a.seeds = value()?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--from" => {
                let v = value()?;
                a.from = if v == "random" {
                    random_seed()
                } else {
                    v.parse().map_err(|e| format!("--from: {e}"))?
                };
            }
            "--minutes" => {
                a.minutes = Some(value()?.parse().map_err(|e| format!("--minutes: {e}"))?)
            }
            "--jobs" => a.jobs = value()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--hang-secs" => {
                a.hang =
                    Duration::from_secs(value()?.parse().map_err(|e| format!("--hang-secs: {e}"))?)
            }
            "--replay-every" => {
                a.replay_every = value()?
                    .parse()
                    .map_err(|e| format!("--replay-every: {e}"))?
            }
            "--keep-going" => a.keep_going = true,
            "--speed" => {
                let secs: u64 = value()?.parse().map_err(|e| format!("--speed: {e}"))?;
                match nexar_tests::swarm::speed::probe(1, 8, secs) {
                    Ok(s) => {
                        println!(
                            "sim speed: 8 ranks, 5% loss, {} collectives: {:.1} s simulated in \
                             {:.2} s wall = {:.1} simulated s per wall s",
                            s.collectives,
                            s.simulated.as_secs_f64(),
                            s.wall.as_secs_f64(),
                            s.ratio()
                        );
                        std::process::exit(0);
                    }
                    Err(e) => {
                        println!("sim speed probe failed: {e}");
                        std::process::exit(1);
                    }
                }
            }
            "-h" | "--help" => {
                println!(
                    "swarm [--seeds N] [--from S|random] [--minutes M] [--jobs J] \
                     [--hang-secs H] [--replay-every K] [--keep-going] | --speed VIRTUAL_SECS"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    a.jobs = a.jobs.max(1);
    Ok(a)
}

/// A start seed nobody chose: the clock and the process id, mixed.
fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = t ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) >> 16
}

fn replay_command(seed: u64) -> String {
    format!("cargo run --release -p nexar-tests --bin swarm -- --seeds 1 --from {seed} --jobs 1")
}

fn print_failure(r: &Report) {
    println!("\n=== FAILED seed {}", r.seed);
    println!(
        "violation: {}",
        r.outcome.violation.as_deref().unwrap_or("?")
    );
    println!("scenario: {:?}", r.scenario);
    println!(
        "virtual time {:?}, {} operations, trace {}",
        r.outcome.virtual_time,
        r.outcome.ops,
        short_hash(&r.outcome.trace_hash)
    );
    println!("last events:");
    for e in &r.outcome.recent {
        println!("  {e}");
    }
    let again = run_seed(r.seed, &Progress::default());
    let same = again.outcome.trace_hash == r.outcome.trace_hash
        && again.outcome.violation == r.outcome.violation;
    println!(
        "replayed: {}",
        if same {
            "same trace hash and verdict (deterministic)".to_string()
        } else {
            format!(
                "DIFFERS: trace {} verdict {:?}",
                short_hash(&again.outcome.trace_hash),
                again.outcome.violation
            )
        }
    );
    println!("replay: {}", replay_command(r.seed));
}

/// What one job thread is doing: its seed's progress and when it started (ms since the
/// runner began; 0 when idle).
#[derive(Default)]
struct Job {
    progress: Progress,
    started_ms: AtomicU64,
}

fn main() -> ExitCode {
    if let Some(level) = std::env::var_os("NEXAR_SWARM_LOG") {
        let level = level
            .to_string_lossy()
            .parse()
            .unwrap_or(tracing::Level::DEBUG);
        tracing_subscriber::fmt()
            .with_max_level(level)
            .without_time()
            .init();
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("swarm: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "swarm: seeds {}..{} ({} seeds) on {} jobs{}",
        args.from,
        args.from.saturating_add(args.seeds),
        args.seeds,
        args.jobs,
        args.minutes
            .map_or(String::new(), |m| format!(", at most {m} minutes"))
    );
    let start = Instant::now();
    let deadline = args
        .minutes
        .map(|m| start + Duration::from_secs_f64(m * 60.0));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<Report>>> = Arc::default();
    let virtual_total = Arc::new(AtomicU64::new(0));
    let jobs: Vec<Arc<Job>> = (0..args.jobs).map(|_| Arc::default()).collect();
    let mut handles = Vec::new();
    for job in &jobs {
        let (job, next, done, stop, failures, vt) = (
            job.clone(),
            next.clone(),
            done.clone(),
            stop.clone(),
            failures.clone(),
            virtual_total.clone(),
        );
        let (from, count, keep_going, replay_every) =
            (args.from, args.seeds, args.keep_going, args.replay_every);
        handles.push(std::thread::spawn(move || loop {
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return;
            }
            let seed = from.wrapping_add(i);
            job.started_ms
                .store(start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
            let report = run_seed(seed, &job.progress);
            let mut report = report;
            if replay_every > 0 && i % replay_every == 0 && report.passed() {
                let again = run_seed(seed, &job.progress);
                if again.outcome.trace_hash != report.outcome.trace_hash {
                    report.outcome.violation = Some(format!(
                        "determinism: replay gave trace {} after {}",
                        short_hash(&again.outcome.trace_hash),
                        short_hash(&report.outcome.trace_hash)
                    ));
                }
            }
            job.started_ms.store(0, Ordering::Relaxed);
            vt.fetch_add(
                report.outcome.virtual_time.as_millis() as u64,
                Ordering::Relaxed,
            );
            done.fetch_add(1, Ordering::Relaxed);
            if !report.passed() {
                failures.lock().expect("no poisoning").push(report);
                if !keep_going {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut last_print = Instant::now();
    let mut printed_failures = 0;
    let mut watch = vec![((0u64, 0u64, 0u64), 0u64); jobs.len()];
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now_ms = start.elapsed().as_millis() as u64;
        for (job, seen) in jobs.iter().zip(&mut watch) {
            // Hung: the same seed at the same virtual instant for `hang` of wall time. A
            // large run is slow but its clock moves; one call that never returns is not.
            let s = job.started_ms.load(Ordering::Relaxed);
            let mark = (
                s,
                job.progress.seed.load(Ordering::Relaxed),
                job.progress.virtual_nanos.load(Ordering::Relaxed),
            );
            if seen.0 != mark {
                *seen = (mark, now_ms);
            }
            if s > 0 && now_ms.saturating_sub(seen.1) > args.hang.as_millis() as u64 {
                let seed = job.progress.seed.load(Ordering::Relaxed);
                println!(
                    "\n=== HUNG seed {seed}: its virtual clock stood at {:?} for {:?} of wall \
                     time (a node never returned from one call, or the run spins)",
                    job.progress.virtual_time(),
                    args.hang
                );
                println!(
                    "after {} seeds in {:.1} s",
                    done.load(Ordering::Relaxed),
                    start.elapsed().as_secs_f64()
                );
                println!(
                    "scenario: {:?}",
                    nexar_tests::swarm::Scenario::generate(seed)
                );
                println!("replay: {}", replay_command(seed));
                return ExitCode::from(3);
            }
        }
        {
            let f = failures.lock().expect("no poisoning");
            for r in &f[printed_failures..] {
                print_failure(r);
            }
            printed_failures = f.len();
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            let d = done.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            println!(
                "swarm: {d} seeds in {secs:.0} s ({:.1} ms/seed wall, {:.1} s virtual/seed), {} failed",
                secs * 1000.0 / d.max(1) as f64,
                virtual_total.load(Ordering::Relaxed) as f64 / 1000.0 / d.max(1) as f64,
                printed_failures
            );
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let f = failures.lock().expect("no poisoning");
    for r in &f[printed_failures..] {
        print_failure(r);
    }
    let d = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "swarm: {d} seeds from {} in {secs:.1} s ({:.1} ms/seed), {} failed",
        args.from,
        secs * 1000.0 / d.max(1) as f64,
        f.len()
    );
    if f.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!(
            "failing seeds: {:?}",
            f.iter().map(|r| r.seed).collect::<Vec<_>>()
        );
        ExitCode::from(1)
    }
}
