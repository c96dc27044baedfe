//! The generator: everything a run does, drawn from its seed alone.
//!
//! A [`Scenario`] fixes the cluster (size, timings, recovery policy, links) and the faults
//! up front; the workload is drawn step by step as the run reaches each step
//! ([`super::program`]), because what a step may be depends on the world at that point
//! (its size after joins, leaves and recoveries). Both draw from streams derived from the
//! seed, so a seed names one run exactly.

use std::time::Duration;

use nexar_proto::sim::{LinkConfig, LossModel};
use nexar_proto::RecoveryPolicy;

use crate::support::TestRng;

/// A random stream for one purpose of one seed (independent of every other stream).
pub fn stream(seed: u64, purpose: u64) -> TestRng {
    let mut r = TestRng::new(seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.next_u64();
    r
}

/// Streams by purpose.
pub(super) const CLUSTER: u64 = 1;
pub(super) const FAULTS: u64 = 2;
pub(super) const STEPS: u64 = 3;
pub(super) const DELAYS: u64 = 4;

/// A fault the run applies at a virtual time after formation. Hosts are named by index:
/// 0 is the seed, 1..=world the first workers.
#[derive(Debug, Clone)]
pub enum FaultPlan {
    /// Both directions between two hosts lose `loss` of datagrams for `len`.
    LossBurst {
        /// One end.
        a: usize,
        /// The other end.
        b: usize,
        /// Loss probability during the burst.
        loss: f64,
        /// How long.
        len: Duration,
    },
    /// Cut `a -> b` (and `b -> a` unless `oneway`) for `len`, then heal.
    Partition {
        /// One end.
        a: usize,
        /// The other end.
        b: usize,
        /// Only `a -> b`.
        oneway: bool,
        /// How long.
        len: Duration,
    },
    /// Freeze a host (the seed too) for `len`.
    Pause {
        /// The host.
        host: usize,
        /// How long.
        len: Duration,
    },
    /// A worker dies for good (a fresh worker may join in its place at a checkpoint).
    Crash {
        /// The host.
        host: usize,
        /// Whether a new worker is started to take its place.
        replace: bool,
    },
    /// The seed dies and comes back from its last snapshot after `down`.
    SeedRestart {
        /// How long it is down.
        down: Duration,
    },
}

impl FaultPlan {
    /// Whether this fault is one a cluster must ride out without failing anything:
    /// short enough that no failure detector can fire.
    pub fn benign(&self, heartbeat_timeout: Duration) -> bool {
        match self {
            FaultPlan::LossBurst { loss, len, .. } => {
                (*loss <= 0.1 && heartbeat_timeout >= Duration::from_millis(1500))
                    || *len < heartbeat_timeout / 8
            }
            FaultPlan::Partition { len, .. } | FaultPlan::Pause { len, .. } => {
                *len < heartbeat_timeout / 8
            }
            FaultPlan::Crash { .. } => false,
            // Workers do not need the seed between epoch changes; their detectors
            // reconnect rather than fail.
            FaultPlan::SeedRestart { .. } => false,
        }
    }
}

/// One run, as far as it is fixed before the run starts.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed everything derives from.
    pub seed: u64,
    /// Ranks at formation.
    pub world: u32,
    /// The most ranks a checkpoint may grow the world to.
    pub max_world: u32,
    /// Recovery policy of every node.
    pub policy: RecoveryPolicy,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence that marks a peer down.
    pub heartbeat_timeout: Duration,
    /// How long the seed waits for votes.
    pub recovery_timeout: Duration,
    /// Every collective's deadline.
    pub collective_timeout: Duration,
    /// The default link.
    pub link: LinkConfig,
    /// Faults, at virtual times after formation.
    pub faults: Vec<(Duration, FaultPlan)>,
    /// Faults timed from the first checkpoint a rank calls (if one does): epoch changes
    /// are where ranks disagree the longest, so that is where faults find the most.
    pub checkpoint_faults: Vec<(Duration, FaultPlan)>,
    /// Workload steps before the run stops issuing (per world segment).
    pub steps: usize,
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn generate(seed: u64) -> Scenario {
        let mut r = stream(seed, CLUSTER);
        let world = match r.below(100) {
            0..=59 => 1 + r.below(4) as u32,
            60..=96 => 5 + r.below(8) as u32,
            97..=98 => 13 + r.below(4) as u32,
            // A 64-rank mesh is ~2000 QUIC handshakes: rare, or it dominates the time.
            _ if r.below(5) == 0 => 17 + r.below(48) as u32,
            _ => 1 + r.below(16) as u32,
        };
        let max_world = world + r.below(3) as u32;
        let policy = match r.below(3) {
            0 => RecoveryPolicy::Abort,
            1 => RecoveryPolicy::Automatic,
            _ => RecoveryPolicy::Manual,
        };
        let heartbeat_interval = Duration::from_millis(50 + 50 * r.below(4));
        let heartbeat_timeout = heartbeat_interval * (3 + r.below(5) as u32);
        let recovery_timeout = Duration::from_millis(300 + 100 * r.below(8));
        let collective_timeout = Duration::from_secs(10 + r.below(20));
        let link = link(&mut r);
        // On a lossy path QUIC's retransmission backoff alone can leave a link silent for
        // a few hundred milliseconds: detection that quick would be a false alarm.
        let heartbeat_timeout = if link.loss == LossModel::NONE {
            heartbeat_timeout
        } else {
            heartbeat_timeout.max(Duration::from_millis(1500))
        };
        let steps = 3 + r.below(if world > 16 { 4 } else { 14 }) as usize;
        let mut f = stream(seed, FAULTS);
        let faults = faults(&mut f, world, heartbeat_timeout, 3000);
        let checkpoint_faults = if f.below(2) == 0 {
            self::faults(&mut f, world, heartbeat_timeout, 300)
        } else {
            Vec::new()
        };
        Scenario {
            seed,
            world,
            max_world,
            policy,
            heartbeat_interval,
            heartbeat_timeout,
            recovery_timeout,
            collective_timeout,
            link,
            faults,
            checkpoint_faults,
            steps,
        }
    }

    /// Whether any fault may make the cluster fail operations.
    pub fn harmful(&self) -> bool {
        self.faults
            .iter()
            .chain(&self.checkpoint_faults)
            .any(|(_, f)| !f.benign(self.heartbeat_timeout))
    }
}

fn link(r: &mut TestRng) -> LinkConfig {
    let mut l = LinkConfig {
        latency: Duration::from_micros(50 + r.below(3000)),
        ..LinkConfig::default()
    };
    if r.below(3) == 0 {
        l.jitter = Duration::from_micros(r.below(2000));
    }
    l.loss = match r.below(10) {
        0..=5 => LossModel::NONE,
        6..=8 => LossModel::Bernoulli(r.below(60) as f64 / 1000.0),
        _ => LossModel::GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.3,
            loss_good: 0.0,
            loss_bad: 0.8,
        },
    };
    if r.below(5) == 0 {
        l.duplicate = r.below(30) as f64 / 1000.0;
    }
    if r.below(5) == 0 {
        l.mtu = 1232 + r.below(241) as usize;
    }
    if r.below(6) == 0 {
        l.bandwidth_bps = Some(100_000_000 * (1 + r.below(100)));
        if r.below(2) == 0 {
            l.queue_bytes = Some(64 << 10 << r.below(5));
        }
    }
    l
}

fn faults(r: &mut TestRng, world: u32, hb: Duration, within_ms: u64) -> Vec<(Duration, FaultPlan)> {
    let count = match r.below(10) {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2 + r.below(2),
    };
    let hosts = world as usize + 1;
    let mut out = Vec::new();
    for _ in 0..count {
        let at = Duration::from_millis(r.below(within_ms));
        // Lengths around the heartbeat timeout: well under, just under, just over, far over.
        let len = {
            let f = [5u32, 10, 20, 45, 90, 110, 200][r.below(7) as usize];
            hb * f / 100
        };
        let worker = 1 + r.below(world as u64) as usize;
        // The seed's links carry every epoch change: cut them more often.
        let any = if r.below(2) == 0 {
            0
        } else {
            r.below(hosts as u64) as usize
        };
        let other = (any + 1 + r.below(hosts as u64 - 1) as usize) % hosts;
        let plan = match r.below(10) {
            0..=2 => FaultPlan::LossBurst {
                a: any,
                b: other,
                loss: [0.1, 0.3, 0.6, 1.0][r.below(4) as usize],
                len,
            },
            3..=4 => FaultPlan::Partition {
                a: any,
                b: other,
                oneway: r.below(2) == 0,
                len,
            },
            5..=6 => FaultPlan::Pause {
                host: if r.below(3) == 0 { 0 } else { worker },
                len,
            },
            7 => FaultPlan::Crash {
                host: worker,
                replace: r.below(2) == 0,
            },
            _ => FaultPlan::SeedRestart { down: len },
        };
        out.push((at, plan));
    }
    out.sort_by_key(|(at, _)| *at);
    out
}
