//! What the netns test asks of the host, before it creates anything: the preconditions
//! (Linux, root, network namespaces, the tools), the lock that serializes runs on the
//! shared subnet, and the removal of what killed runs left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::net::run_ip;
use crate::{report, LOCK_LIMIT, POLL};

pub fn preconditions() -> Result<(), String> {
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
pub struct SubnetLock {
    path: PathBuf,
}

impl SubnetLock {
    pub fn acquire() -> Result<Self, String> {
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
pub fn remove_stale_objects() {
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
