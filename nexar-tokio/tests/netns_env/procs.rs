//! The netns test's node processes and their logs: each node runs in its namespace under
//! `timeout`, in a process group of its own, with its output in a log directory; both are
//! guards that kill what still runs and remove the logs (unless kept) on drop.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::relay::Relay;
use crate::{fmt_stats, report, CHILD_LIMIT_SECS, POLL, TICKET_LIMIT};

/// Log files in a temp directory: removed on success, kept (and named) on failure.
#[derive(Debug)]
pub struct LogDir {
    pub path: PathBuf,
}

impl LogDir {
    pub fn create(tag: &str) -> Self {
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
pub struct Proc {
    name: &'static str,
    child: Child,
    status: Option<ExitStatus>,
    pub stdout: PathBuf,
    stderr: PathBuf,
}

/// Every node process; the ones still running are killed (their whole process group:
/// `timeout` and `nexar`) on drop.
#[derive(Debug, Default)]
pub struct Procs {
    pub list: Vec<Proc>,
}

impl Procs {
    /// Run `bin args` in namespace `ns` under `timeout`, in a process group of its own.
    pub fn spawn(
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
    pub fn wait(
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
    pub fn summary(&self) -> String {
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
pub fn wait_for_ticket(path: &Path, procs: &mut Procs, relay: &Relay) -> String {
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
