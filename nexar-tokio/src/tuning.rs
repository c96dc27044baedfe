//! Tuning a job from the environment: the knobs a launcher script sets per job, without
//! recompiling.
//!
//! [`Config::from_env`] (defaults, then the environment) and [`Config::apply_env`] (the
//! environment over a config built in code) read every `NEXAR_*` variable below; both
//! are [`Config::apply_env_vars`], a pure function of (name, value) pairs. Values are
//! plain decimal integers in the unit the name ends with (`_MS`: milliseconds, `_BYTES`:
//! bytes), or one of the words listed. A set variable that does not parse, or lies
//! outside its bounds (inclusive), is an [`EnvError`] naming it and the value, never
//! skipped. The same values must be given to the seed and to every worker (the
//! collective thresholds and the recovery policy must agree cluster-wide).
//!
//! | variable | unit | default | bounds | sets |
//! |---|---|---|---|---|
//! | `NEXAR_JOIN_TIMEOUT_MS` | ms | 10000 | 1..=86400000 | seed: a joiner's handshake and Hello |
//! | `NEXAR_FORMATION_TIMEOUT_MS` | ms | 60000 | 1..=86400000 | worker: welcomed and meshed within this (a seed that never answers: `JoinError::SeedUnreachable`) |
//! | `NEXAR_IDLE_TIMEOUT_MS` | ms | 30000 | 1..=86400000 | QUIC idle timeout (keep-alive at most a third) |
//! | `NEXAR_HANDSHAKE_TIMEOUT_MS` | ms | 3000 | 1..=86400000 | an accepted connection's handshake |
//! | `NEXAR_COLLECTIVE_TIMEOUT_MS` | ms | 60000 | 1..=86400000 | every collective (`OpError::Timeout`) |
//! | `NEXAR_RPC_TIMEOUT_MS` | ms | 60000 | 0..=86400000 | an RPC without its own deadline; 0: none |
//! | `NEXAR_HEARTBEAT_INTERVAL_MS` | ms | 1000 | 1..=3600000 | heartbeat period on every link |
//! | `NEXAR_HEARTBEAT_TIMEOUT_MS` | ms | 5000 | 2..=86400000 | a silent link marks its peer down |
//! | `NEXAR_RECOVERY_TIMEOUT_MS` | ms | 5000 | 1..=86400000 | a recovery round's wait for votes |
//! | `NEXAR_LINGER_MS` | ms | 2000 | 0..=86400000 | answering the network after the last handle |
//! | `NEXAR_RECOVERY` | word | abort | abort, automatic, manual | what a peer's death does |
//! | `NEXAR_MAX_WORLD_SIZE` | ranks | formed size | 1..=65536 | seed: largest world a checkpoint admits |
//! | `NEXAR_MIN_WORLD_SIZE` | ranks | 0 | 0..=65536 | seed: smallest world a checkpoint leaves |
//! | `NEXAR_MAX_PENDING_JOINS` | joiners | 64 | 0..=65536 | seed: joiners queued for a checkpoint |
//! | `NEXAR_MAX_RPC_INBOUND` | requests | 64 | 1..=65536 | unanswered RPCs per caller |
//! | `NEXAR_MAX_UNMATCHED_BYTES` | bytes | 67108864 | 1..=1099511627776 | unreceived tagged messages per peer |
//! | `NEXAR_MAX_QUEUED_BYTES` | bytes | 67108864 | 1..=1099511627776 | send queue per peer and stream |
//! | `NEXAR_MAX_EARLY_BYTES` | bytes | 268435456 | 1..=1099511627776 | chunks of collectives not started here |
//! | `NEXAR_MAX_UDP_PAYLOAD` | bytes | 1452 | 1200..=65527 | largest datagram (MTU discovery ceiling) |
//! | `NEXAR_SEND_WINDOW_BYTES` | bytes | 4194304 | 1..=1099511627776 | unacknowledged bytes per connection |
//! | `NEXAR_SMALL_ALLREDUCE_BYTES` | bytes | 49152 | 0..=1099511627776 | allreduce: recursive doubling up to this |
//! | `NEXAR_LARGE_ALLREDUCE_BYTES` | bytes | 4194304 | 0..=1099511627776 | allreduce: the ring from this |
//! | `NEXAR_LARGE_BROADCAST_BYTES` | bytes | 524288 | 0..=1099511627776 | broadcast: scatter + allgather from this |
//! | `NEXAR_PIPELINED_BROADCAST_BYTES` | bytes | 524288 | 0..=1099511627776 | broadcast: the pipelined chain from this |
//! | `NEXAR_LARGE_REDUCE_BYTES` | bytes | 524288 | 0..=1099511627776 | reduce: reduce-scatter + gather from this |
//! | `NEXAR_SMALL_ALLGATHER_BYTES` | bytes | 65536 | 0..=1099511627776 | allgather: Bruck up to this total |
//! | `NEXAR_LARGE_MIN_WORLD` | ranks | 4 | 1..=65536 | smallest world for the two-phase broadcast and reduce |
//! | `NEXAR_SEGMENT_BYTES` | bytes | 262144 | 1..=8388608 | pipelining segment of a collective step |
//!
//! One relation is checked across variables: the heartbeat interval must be below the
//! heartbeat timeout ([`EnvError::Conflict`]).
//!
//! **Unknown names are refused.** Any other `NEXAR_*` variable is an
//! [`EnvError::Unknown`] (naming the closest knob), except the ones nexar reads elsewhere:
//! the launcher's (`NEXAR_JOIN`, `NEXAR_JOIN_FILE`, `NEXAR_WORLD_SIZE`, `NEXAR_RANK`, see
//! [`LaunchEnv`](crate::LaunchEnv)), the CLI's `NEXAR_LOG`, and those of nexar's test
//! suites. A knob misspelt in a launcher script would otherwise be ignored without a
//! word, and the job would run, slower or less patient than planned, with no sign why.
//!
//! ```
//! # use nexar_tokio::{Config, EnvError};
//! let config = Config::default().apply_env_vars([
//!     ("NEXAR_COLLECTIVE_TIMEOUT_MS", "5000"),
//!     ("NEXAR_RECOVERY", "automatic"),
//!     ("PATH", "/usr/bin"), // not ours: ignored
//! ])?;
//! assert_eq!(config.node.collective_timeout, std::time::Duration::from_secs(5));
//! let err = Config::default()
//!     .apply_env_vars([("NEXAR_COLLECTIVE_TIMEOUT_MS", "5s")])
//!     .unwrap_err();
//! assert!(matches!(err, EnvError::Invalid { var: "NEXAR_COLLECTIVE_TIMEOUT_MS", .. }));
//! # Ok::<(), EnvError>(())
//! ```

use std::time::Duration;

use nexar_proto::RecoveryPolicy;

use crate::api::{Config, EnvError};

/// How a knob's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Milliseconds.
    Ms,
    /// A count (bytes, ranks, requests).
    Count,
    /// One of [`POLICIES`], by index.
    Policy,
}

/// One tunable variable.
struct Knob {
    var: &'static str,
    unit: Unit,
    min: u64,
    max: u64,
    /// The value the defaults have, as the table above writes it (`None`: no number);
    /// the tests hold the table and the defaults to it.
    #[cfg_attr(not(test), allow(dead_code))]
    default: Option<&'static str>,
    set: fn(&mut Config, u64),
}

const DAY_MS: u64 = 86_400_000;
const TIB: u64 = 1 << 40;
/// `Limits::max_peers`: no world is larger.
const MAX_RANKS: u64 = 65_536;
const POLICIES: [(&str, RecoveryPolicy); 3] = [
    ("abort", RecoveryPolicy::Abort),
    ("automatic", RecoveryPolicy::Automatic),
    ("manual", RecoveryPolicy::Manual),
];

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn size(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn ranks(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

macro_rules! knob {
    ($var:literal, $unit:ident, $min:expr, $max:expr, $default:expr, |$c:ident, $v:ident| $set:expr) => {
        Knob {
            var: $var,
            unit: Unit::$unit,
            min: $min,
            max: $max,
            default: $default,
            set: |$c: &mut Config, $v: u64| $set,
        }
    };
}

/// Every knob, in the order of the table above.
const KNOBS: &[Knob] = &[
    knob!(
        "NEXAR_JOIN_TIMEOUT_MS",
        Ms,
        1,
        DAY_MS,
        Some("10000"),
        |c, v| c.node.join_timeout = ms(v)
    ),
    knob!(
        "NEXAR_FORMATION_TIMEOUT_MS",
        Ms,
        1,
        DAY_MS,
        Some("60000"),
        |c, v| c.node.formation_timeout = ms(v)
    ),
    knob!(
        "NEXAR_IDLE_TIMEOUT_MS",
        Ms,
        1,
        DAY_MS,
        Some("30000"),
        |c, v| {
            c.node.idle_timeout = ms(v);
            c.node.keep_alive = c.node.keep_alive.min(ms(v) / 3);
        }
    ),
    knob!(
        "NEXAR_HANDSHAKE_TIMEOUT_MS",
        Ms,
        1,
        DAY_MS,
        Some("3000"),
        |c, v| c.node.handshake_timeout = ms(v)
    ),
    knob!(
        "NEXAR_COLLECTIVE_TIMEOUT_MS",
        Ms,
        1,
        DAY_MS,
        Some("60000"),
        |c, v| c.node.collective_timeout = ms(v)
    ),
    knob!(
        "NEXAR_RPC_TIMEOUT_MS",
        Ms,
        0,
        DAY_MS,
        Some("60000"),
        |c, v| { c.node.rpc_timeout = (v > 0).then(|| ms(v)) }
    ),
    knob!(
        "NEXAR_HEARTBEAT_INTERVAL_MS",
        Ms,
        1,
        3_600_000,
        Some("1000"),
        |c, v| c.node.heartbeat_interval = ms(v)
    ),
    knob!(
        "NEXAR_HEARTBEAT_TIMEOUT_MS",
        Ms,
        2,
        DAY_MS,
        Some("5000"),
        |c, v| c.node.heartbeat_timeout = ms(v)
    ),
    knob!(
        "NEXAR_RECOVERY_TIMEOUT_MS",
        Ms,
        1,
        DAY_MS,
        Some("5000"),
        |c, v| c.node.recovery_timeout = ms(v)
    ),
    knob!("NEXAR_LINGER_MS", Ms, 0, DAY_MS, Some("2000"), |c, v| c
        .linger =
        ms(v)),
    knob!("NEXAR_RECOVERY", Policy, 0, 2, Some("abort"), |c, v| {
        c.node.recovery = POLICIES[v as usize % POLICIES.len()].1
    }),
    knob!("NEXAR_MAX_WORLD_SIZE", Count, 1, MAX_RANKS, None, |c, v| {
        c.max_world_size = Some(ranks(v))
    }),
    knob!(
        "NEXAR_MIN_WORLD_SIZE",
        Count,
        0,
        MAX_RANKS,
        Some("0"),
        |c, v| c.node.min_world_size = ranks(v)
    ),
    knob!(
        "NEXAR_MAX_PENDING_JOINS",
        Count,
        0,
        MAX_RANKS,
        Some("64"),
        |c, v| c.max_pending_joins = size(v)
    ),
    knob!(
        "NEXAR_MAX_RPC_INBOUND",
        Count,
        1,
        MAX_RANKS,
        Some("64"),
        |c, v| c.node.max_rpc_inbound = size(v)
    ),
    knob!(
        "NEXAR_MAX_UNMATCHED_BYTES",
        Count,
        1,
        TIB,
        Some("67108864"),
        |c, v| c.node.max_unmatched_bytes = size(v)
    ),
    knob!(
        "NEXAR_MAX_QUEUED_BYTES",
        Count,
        1,
        TIB,
        Some("67108864"),
        |c, v| c.node.max_queued_bytes = size(v)
    ),
    knob!(
        "NEXAR_MAX_EARLY_BYTES",
        Count,
        1,
        TIB,
        Some("268435456"),
        |c, v| c.node.max_early_bytes = size(v)
    ),
    knob!(
        "NEXAR_MAX_UDP_PAYLOAD",
        Count,
        1200,
        65527,
        Some("1452"),
        |c, v| {
            c.node.max_udp_payload = v as u16;
            c.node.initial_mtu = c.node.initial_mtu.min(v as u16);
        }
    ),
    knob!(
        "NEXAR_SEND_WINDOW_BYTES",
        Count,
        1,
        TIB,
        Some("4194304"),
        |c, v| c.node.send_window = v
    ),
    knob!(
        "NEXAR_SMALL_ALLREDUCE_BYTES",
        Count,
        0,
        TIB,
        Some("49152"),
        |c, v| c.node.collective.small_allreduce_bytes = size(v)
    ),
    knob!(
        "NEXAR_LARGE_ALLREDUCE_BYTES",
        Count,
        0,
        TIB,
        Some("4194304"),
        |c, v| c.node.collective.large_allreduce_bytes = size(v)
    ),
    knob!(
        "NEXAR_LARGE_BROADCAST_BYTES",
        Count,
        0,
        TIB,
        Some("524288"),
        |c, v| c.node.collective.large_broadcast_bytes = size(v)
    ),
    knob!(
        "NEXAR_PIPELINED_BROADCAST_BYTES",
        Count,
        0,
        TIB,
        Some("524288"),
        |c, v| c.node.collective.pipelined_broadcast_bytes = size(v)
    ),
    knob!(
        "NEXAR_LARGE_REDUCE_BYTES",
        Count,
        0,
        TIB,
        Some("524288"),
        |c, v| c.node.collective.large_reduce_bytes = size(v)
    ),
    knob!(
        "NEXAR_SMALL_ALLGATHER_BYTES",
        Count,
        0,
        TIB,
        Some("65536"),
        |c, v| c.node.collective.small_allgather_bytes = size(v)
    ),
    knob!(
        "NEXAR_LARGE_MIN_WORLD",
        Count,
        1,
        MAX_RANKS,
        Some("4"),
        |c, v| c.node.collective.large_min_world = ranks(v)
    ),
    knob!(
        "NEXAR_SEGMENT_BYTES",
        Count,
        1,
        8 << 20,
        Some("262144"),
        |c, v| c.node.collective.segment_bytes = size(v)
    ),
];

/// The `NEXAR_*` variables nexar reads elsewhere (launcher, CLI, test suites): not
/// knobs, and not refused as unknown.
const OTHER_VARIABLES: &[&str] = &[
    "NEXAR_JOIN",
    "NEXAR_JOIN_FILE",
    "NEXAR_WORLD_SIZE",
    "NEXAR_RANK",
    "NEXAR_LOG",
    "NEXAR_SIM_SEED",
    "NEXAR_SWARM_SEEDS",
    "NEXAR_SWARM_VERBOSE",
    "NEXAR_NETNS_KEEP_LOGS",
    "NEXAR_NETNS_REQUIRED",
    "NEXAR_NETNS_SEED",
    "NEXAR_HOSTILE_IDLE_SECS",
];

impl Config {
    /// The defaults, tuned by the process environment (see the table in the
    /// [`tuning`](crate::tuning) module: every `NEXAR_*` knob, its unit, default and
    /// bounds).
    ///
    /// ```no_run
    /// // NEXAR_COLLECTIVE_TIMEOUT_MS=5000 NEXAR_RECOVERY=automatic ./my_job
    /// let config = nexar_tokio::Config::from_env()?;
    /// # Ok::<(), nexar_tokio::EnvError>(())
    /// ```
    pub fn from_env() -> Result<Config, EnvError> {
        Config::default().apply_env()
    }

    /// This config with every `NEXAR_*` knob set in the process environment applied over
    /// it: call it last, so that the launcher's values win over the program's.
    pub fn apply_env(self) -> Result<Config, EnvError> {
        self.apply_env_vars(std::env::vars_os().map(|(k, v)| {
            // A value that is not UTF-8 cannot be a number: it fails as invalid, by name.
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))
    }

    /// [`apply_env`](Self::apply_env) over the given (name, value) pairs instead of the
    /// process environment. Names not starting with `NEXAR_` are ignored.
    pub fn apply_env_vars<I, K, V>(mut self, vars: I) -> Result<Config, EnvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut set = Vec::new();
        for (name, value) in vars {
            let (name, value) = (name.as_ref(), value.as_ref());
            if !name.starts_with("NEXAR_") || OTHER_VARIABLES.contains(&name) {
                continue;
            }
            let Some(knob) = KNOBS.iter().find(|k| k.var == name) else {
                return Err(EnvError::Unknown {
                    var: name.to_string(),
                    closest: closest(name),
                });
            };
            (knob.set)(&mut self, parse(knob, value)?);
            set.push(knob.var);
        }
        check_heartbeat(&self, &set)?;
        Ok(self)
    }
}

fn parse(knob: &Knob, value: &str) -> Result<u64, EnvError> {
    let invalid = |reason: String| EnvError::Invalid {
        var: knob.var,
        value: value.to_string(),
        reason,
    };
    let text = value.trim();
    if knob.unit == Unit::Policy {
        let words: Vec<&str> = POLICIES.iter().map(|(w, _)| *w).collect();
        return POLICIES
            .iter()
            .position(|(w, _)| w.eq_ignore_ascii_case(text))
            .map(|i| i as u64)
            .ok_or_else(|| invalid(format!("must be one of {}", words.join(", "))));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let unit = if knob.unit == Unit::Ms {
            "milliseconds"
        } else {
            "a count"
        };
        return Err(invalid(format!("must be a whole number ({unit})")));
    }
    // Digits only: the parse fails only past u64, which is out of bounds anyway.
    let n = text.parse::<u64>().unwrap_or(u64::MAX);
    if n < knob.min || n > knob.max {
        return Err(EnvError::OutOfRange {
            var: knob.var,
            value: value.to_string(),
            min: knob.min,
            max: knob.max,
        });
    }
    Ok(n)
}

/// A heartbeat interval at or past the timeout would mark every quiet peer down.
fn check_heartbeat(config: &Config, set: &[&'static str]) -> Result<(), EnvError> {
    const INTERVAL: &str = "NEXAR_HEARTBEAT_INTERVAL_MS";
    const TIMEOUT: &str = "NEXAR_HEARTBEAT_TIMEOUT_MS";
    let touched = set.contains(&INTERVAL) || set.contains(&TIMEOUT);
    let (interval, timeout) = (
        config.node.heartbeat_interval,
        config.node.heartbeat_timeout,
    );
    if touched && interval >= timeout {
        return Err(EnvError::Conflict {
            vars: [INTERVAL, TIMEOUT],
            detail: format!(
                "the heartbeat interval ({} ms) must be below the heartbeat timeout ({} ms)",
                interval.as_millis(),
                timeout.as_millis()
            ),
        });
    }
    Ok(())
}

/// The knob whose name is nearest to `name` (by edit distance), if any is near.
fn closest(name: &str) -> Option<&'static str> {
    KNOBS
        .iter()
        .map(|k| (edit_distance(name, k.var), k.var))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, var)| var)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[path = "tuning_tests.rs"]
mod tests;
