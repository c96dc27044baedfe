//! `nexar`: run a seed, one worker, or a whole cluster in one process, and benchmark
//! collectives.
//!
//! ```text
//! nexar seed --listen 10.0.0.1:4000 --world-size 4 --ticket-file /shared/ticket
//! nexar worker --join-file /shared/ticket bench allreduce --max-bytes 16M
//! nexar local --ranks 4 bench allreduce --min-bytes 8 --max-bytes 64M --json
//! nexar local --ranks 4 --driver smol bench allreduce     # on nexar-smol (feature smol-driver)
//! ```
//! Logging: `NEXAR_LOG=debug` (or info, trace, ...) writes tracing output to stderr.
//! Tuning: `seed`, `worker` and `local` start from `Config::from_env()` (every `NEXAR_*` knob; see
//! `nexar_tokio::tuning`), and their flags override it.

mod bench;
mod local;
mod malloc;
mod rank;
mod resilient;
// The same private-file rules as the library's state file, for the ticket file.
#[path = "../../state_file.rs"]
mod state_file;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nexar_tokio::{Client, Config, EnvError, JoinTicket, LaunchEnv, RecoveryPolicy, Seed};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(
    name = "nexar",
    version,
    about = "nexar: a seed, a worker, or a local cluster, and an nccl-tests-style bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the seed: print the join ticket (with --ticket-file, only where it is and the
    /// seed's address and key pin), serve until the cluster forms, then until interrupted
    /// or until every worker has left.
    Seed(SeedArgs),
    /// Join a cluster as one rank and run a job.
    Worker(WorkerArgs),
    /// Run a seed and N ranks in this process, on loopback, and run a job on every rank.
    Local(LocalArgs),
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Address to listen on [default: MASTER_ADDR:MASTER_PORT from the environment].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Number of ranks [default: NEXAR_WORLD_SIZE, WORLD_SIZE or SLURM_NTASKS].
    #[arg(long)]
    world_size: Option<u32>,
    /// Write the ticket to this file instead of stdout (mode 0600, owned by this user;
    /// removed when the seed exits), for workers started with --join-file or
    /// NEXAR_JOIN_FILE. Stdout then shows only the file, the address and the key pin.
    #[arg(long)]
    ticket_file: Option<PathBuf>,
    /// The address workers should dial, if not the listen address (NAT, 0.0.0.0).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Keep the seed's state in this file (mode 0600: it holds key material), rewritten
    /// atomically on every membership change. If it exists, the seed restarts from it:
    /// same ticket, same members, who reconnect by themselves.
    #[arg(long)]
    state_file: Option<PathBuf>,
    #[command(flatten)]
    motion: MotionArgs,
}

/// Failure detection and recovery (give the seed and every worker the same). Unset flags
/// keep what the environment says (`NEXAR_RECOVERY`, `NEXAR_HEARTBEAT_*`), then the
/// defaults.
#[derive(Debug, Clone, Args)]
struct MotionArgs {
    /// What to do when a rank dies: abort (fail everything) or automatic (agree on the
    /// dead, renumber, go on) or manual [default: NEXAR_RECOVERY, else abort].
    #[arg(long, value_enum)]
    recovery: Option<Recovery>,
    /// Heartbeat timeout in milliseconds; heartbeats go out at a fifth of it
    /// [default: NEXAR_HEARTBEAT_TIMEOUT_MS and NEXAR_HEARTBEAT_INTERVAL_MS, else 5000].
    #[arg(long)]
    heartbeat_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Recovery {
    Abort,
    Automatic,
    Manual,
}

impl MotionArgs {
    /// The flags given, over `config` (the environment's tuning).
    fn apply(&self, mut config: Config) -> Config {
        if let Some(recovery) = self.recovery {
            config = config.with_recovery(match recovery {
                Recovery::Abort => RecoveryPolicy::Abort,
                Recovery::Automatic => RecoveryPolicy::Automatic,
                Recovery::Manual => RecoveryPolicy::Manual,
            });
        }
        if let Some(ms) = self.heartbeat_timeout_ms {
            let timeout = Duration::from_millis(ms.max(10));
            config = config.with_heartbeat(timeout / 5, timeout);
        }
        config
    }
}

#[derive(Args)]
struct WorkerArgs {
    /// The seed's join ticket [default: NEXAR_JOIN, or the file NEXAR_JOIN_FILE]. It holds
    /// the cluster's secret: on a shared host every user can read it in the process list
    /// (ps, /proc); use --join-file there.
    #[arg(long, conflicts_with = "join_file")]
    join: Option<String>,
    /// A file holding the seed's join ticket (what `nexar seed --ticket-file` wrote). It is
    /// refused unless owned by this user with no access for group or others.
    #[arg(long)]
    join_file: Option<PathBuf>,
    /// Ask for this rank [default: NEXAR_RANK, RANK or SLURM_PROCID].
    #[arg(long)]
    rank: Option<u32>,
    /// Local address to bind [default: port 0 on loopback or the unspecified address].
    #[arg(long)]
    bind: Option<SocketAddr>,
    #[command(flatten)]
    motion: MotionArgs,
    #[command(subcommand)]
    job: Job,
}

/// By hand: `join` is the ticket text, secret included.
impl std::fmt::Debug for WorkerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let WorkerArgs {
            join,
            join_file,
            rank,
            bind,
            motion,
            job,
        } = self;
        f.debug_struct("WorkerArgs")
            .field("join", &join.as_ref().map(|_| "<redacted>"))
            .field("join_file", join_file)
            .field("rank", rank)
            .field("bind", bind)
            .field("motion", motion)
            .field("job", job)
            .finish()
    }
}

#[derive(Debug, Args)]
struct LocalArgs {
    /// Number of ranks.
    #[arg(long, default_value_t = 4)]
    ranks: u32,
    /// Which driver runs the nodes (smol needs the feature smol-driver).
    #[arg(long, value_enum, default_value_t = Driver::Tokio)]
    driver: Driver,
    /// Threads the ranks run on, each with its own single-threaded executor and a block of
    /// consecutive ranks [default: one per core, at most one per rank].
    #[arg(long)]
    threads: Option<usize>,
    #[command(subcommand)]
    job: Job,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Driver {
    Tokio,
    Smol,
}

#[derive(Debug, Subcommand)]
enum Job {
    /// Sweep one collective over sizes and print an nccl-tests-style table (rank 0).
    Bench(bench::BenchArgs),
    /// Allreduce in a loop straight through failures (worker only; use with
    /// `--recovery automatic`); one JSON line per iteration.
    Resilient(resilient::ResilientArgs),
}

fn main() -> ExitCode {
    malloc::tune();
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Local(args) => local(args),
        Cmd::Seed(args) => on_tokio(seed(args)),
        Cmd::Worker(args) => on_tokio(worker(args)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nexar: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A seed or a worker: one node, on a current-thread runtime. A node's work is one driver
/// task, so more threads only add hand-offs between them: on a multi-thread runtime the
/// driver and the job took turns across cores. Worker processes on loopback
/// (BENCHMARKS.md, session 10): 2 ranks, 8 B allreduce 58-81 -> 10-11 µs, 1 MiB 1.81-1.90 ->
/// 1.28-1.37 ms, 64 MiB 146-150 -> 125-128 ms; 4 ranks on 2 cores, 8 B 283-305 -> 109-123 µs.
fn on_tokio(job: impl std::future::Future<Output = Result<bool, Error>>) -> Result<bool, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(job)
}

fn init_logging() {
    let Ok(level) = std::env::var("NEXAR_LOG") else {
        return;
    };
    match level.parse::<tracing::Level>() {
        Ok(level) => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .init(),
        Err(_) => {
            eprintln!("nexar: ignoring NEXAR_LOG={level:?} (use error, warn, info, debug or trace)")
        }
    }
}

async fn seed(args: SeedArgs) -> Result<bool, Error> {
    let env = LaunchEnv::from_env()?;
    // A restart binds the address its ticket names, unless told otherwise.
    let saved = match &args.state_file {
        Some(path) => match state_file::read(path) {
            Ok(Some(bytes)) => Some(nexar_proto::codec::SeedSnapshot::decode(
                &bytes,
                &nexar_proto::codec::Limits::DEFAULT,
            )?),
            Ok(None) => None,
            Err(e) => return Err(format!("refusing {}: {e}", path.display()).into()),
        },
        None => None,
    };
    let listen = args
        .listen
        .or(env.master_addr)
        .or(saved.as_ref().map(|s| s.addr))
        .ok_or("give --listen ADDR (or set MASTER_ADDR and MASTER_PORT)")?;
    if let Some(saved) = &saved {
        eprintln!(
            "nexar seed: restarting from {} (epoch {}, {} members)",
            args.state_file
                .as_deref()
                .unwrap_or(Path::new(""))
                .display(),
            saved.epoch,
            saved.members.len()
        );
    }
    let world_size = args
        .world_size
        .or(env.world_size.map(|(n, _)| n))
        .or(saved.as_ref().map(|s| s.world_size))
        .ok_or("give --world-size N (or set NEXAR_WORLD_SIZE, WORLD_SIZE or SLURM_NTASKS)")?;
    let config = args.motion.apply(Config {
        advertise: args.advertise,
        state_file: args.state_file.clone(),
        ..Config::from_env()?
    });
    let seed = Seed::bind(listen, world_size, config).await?;
    let ticket = seed.ticket().to_string();
    {
        let mut out = std::io::stdout().lock();
        match &args.ticket_file {
            // The file first: whoever reads stdout may count on the file being there.
            Some(path) => {
                write_ticket(path, &ticket)?;
                writeln!(out, "{}", ticket_notice(path, seed.ticket()))?;
            }
            None => writeln!(out, "{ticket}")?,
        }
        out.flush()?;
    }
    if seed.ticket().addr.ip().is_unspecified() {
        eprintln!("nexar seed: the ticket names {}: only local workers can dial it; pass --advertise HOST:PORT", seed.ticket().addr);
    }
    eprintln!(
        "nexar seed: listening on {}, waiting for {world_size} ranks",
        seed.local_addr()
    );
    let served = serve(&seed).await;
    if let Some(path) = &args.ticket_file {
        let _ = std::fs::remove_file(path);
    }
    seed.shutdown().await;
    served.map(|()| true)
}

/// Until formed, then until interrupted or until every worker's connection is gone.
async fn serve(seed: &Seed) -> Result<(), Error> {
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    tokio::select! {
        formed = seed.formed() => eprintln!("nexar seed: cluster of {} formed", formed?),
        _ = &mut interrupted => {
            eprintln!("nexar seed: interrupted before the cluster formed");
            return Ok(());
        }
    }
    // A restarted seed starts with no connection: wait for someone to come back first.
    let mut anyone = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let connections = seed.stats().await?.connections;
                anyone |= connections > 0;
                if anyone && connections == 0 {
                    eprintln!("nexar seed: every worker has left");
                    return Ok(());
                }
            }
            _ = &mut interrupted => {
                eprintln!("nexar seed: interrupted");
                return Ok(());
            }
        }
    }
}

/// Write the ticket where only this user can read it: it is the cluster's password. The
/// rename at the end means a worker polling for the file never reads half a ticket.
fn write_ticket(path: &Path, ticket: &str) -> Result<(), Error> {
    state_file::write(path, format!("{ticket}\n").as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()).into())
}

/// What the seed prints when the ticket went to a file: nothing secret (the secret is the
/// only part of the ticket that is).
fn ticket_notice(path: &Path, ticket: &JoinTicket) -> String {
    let pin: String = ticket.pin.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "nexar seed: ticket in {} (seed {}, key pin {pin})",
        path.display(),
        ticket.addr
    )
}

async fn worker(args: WorkerArgs) -> Result<bool, Error> {
    let env = LaunchEnv::from_env()?;
    let ticket: JoinTicket = match (&args.join, &args.join_file) {
        (Some(text), _) => text.parse()?,
        (None, Some(path)) => LaunchEnv::ticket_file(path)?,
        (None, None) => env.ticket.clone().ok_or(EnvError::MissingTicket)?,
    };
    let mut config = args.motion.apply(Config::from_env()?);
    config.bind = args.bind;
    if args.rank.is_some() {
        config = config.with_requested_rank(args.rank);
    }
    let client = Client::join(&ticket, env.apply(config)).await?;
    if let Some((expected, var)) = env.world_size {
        if expected != client.world_size() {
            return Err(EnvError::WorldSizeMismatch {
                expected,
                var,
                actual: client.world_size(),
            }
            .into());
        }
    }
    eprintln!(
        "nexar worker: rank {} of {} ready",
        client.rank(),
        client.world_size()
    );
    let ok = match &args.job {
        Job::Resilient(r) => resilient::run(&client, r).await?,
        job => run_job(&client, job, "tokio").await?,
    };
    client.shutdown().await;
    Ok(ok)
}

/// How long formation took (the seed, every join, the full mesh), on stderr so that the
/// bench's `--json` rows stay the only lines on stdout.
fn report_formation(ranks: u32, took: std::time::Duration) {
    eprintln!(
        "# formed {ranks} ranks in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
}

/// `nexar local` on the chosen driver (see the `local` module).
fn local(args: LocalArgs) -> Result<bool, Error> {
    let threads = local::threads(args.threads);
    match args.driver {
        Driver::Tokio => local::run_tokio(args.ranks, threads, args.job),
        #[cfg(feature = "smol-driver")]
        Driver::Smol => local::run_smol(args.ranks, threads, args.job),
        #[cfg(not(feature = "smol-driver"))]
        Driver::Smol => {
            Err("the smol driver is not built into this binary (feature smol-driver)".into())
        }
    }
}

/// Run the job on this rank (of either driver); `Ok(false)` if a check failed.
async fn run_job<C: rank::Rank>(client: &C, job: &Job, driver: &str) -> Result<bool, Error> {
    match job {
        Job::Bench(args) => {
            let ok = bench::run(client, args, driver).await?;
            // Leave together, so no rank stops while another still needs its data.
            client.barrier().await?;
            Ok(ok)
        }
        Job::Resilient(_) => Err(
            "the resilient job runs on workers: nexar worker --recovery automatic ... resilient"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_arguments_hides_the_ticket() {
        let ticket = "nexar1-0123456789abcdeffedcba9876543210-pin@127.0.0.1:7000";
        let cli = Cli::try_parse_from(["nexar", "worker", "--join", ticket, "bench", "allreduce"])
            .expect("parses");
        let text = format!("{cli:?}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("join: Some(\"<redacted>\")"), "{text}");
    }
}
