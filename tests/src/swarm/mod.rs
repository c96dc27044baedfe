//! The swarm: generated workloads and faults on the simulator, with invariant checkers.
//!
//! One seed names one run: [`gen::Scenario::generate`] draws the cluster, links, timings,
//! recovery policy and faults; [`program`] draws each segment of the workload as the run
//! reaches it; the driver issues it the way applications do (every rank the same
//! collectives in the same order, each at its own pace) and judges every completion
//! against a sequential reference ([`expect`]). See ARCHITECTURE.md, "The swarm".

mod checks;
mod driver;
mod events;
pub mod expect;
mod faults;
pub mod gen;
pub mod program;
pub mod speed;
mod workload;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use driver::{Outcome, MAX_PROCESS_STEPS};
pub use gen::{FaultPlan, Scenario};

/// Where a run is, for a watchdog on another thread: a node that never returns from one
/// call freezes the run's thread, and this is all that thread can still tell.
#[derive(Debug, Default)]
pub struct Progress {
    /// The seed being run.
    pub seed: AtomicU64,
    /// Virtual nanoseconds reached.
    pub virtual_nanos: AtomicU64,
}

impl Progress {
    /// Record the virtual time reached.
    pub fn at(&self, t: Duration) {
        self.virtual_nanos
            .store(t.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The virtual time last recorded.
    pub fn virtual_time(&self) -> Duration {
        Duration::from_nanos(self.virtual_nanos.load(Ordering::Relaxed))
    }
}

/// The result of one seed.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// What was run.
    pub scenario: Scenario,
    /// What happened (a panic inside the run is a violation too).
    pub outcome: Outcome,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.outcome.violation.is_none()
    }
}

/// Run one seed and check it.
pub fn run_seed(seed: u64, progress: &Progress) -> Report {
    progress.seed.store(seed, Ordering::Relaxed);
    progress.at(Duration::ZERO);
    let scenario = Scenario::generate(seed);
    let sc = scenario.clone();
    let outcome = match catch_unwind(AssertUnwindSafe(|| driver::Run::new(sc, progress).run())) {
        Ok(o) => o,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Outcome {
                violation: Some(format!("panicked: {msg}")),
                trace_hash: [0; 16],
                virtual_time: progress.virtual_time(),
                ops: 0,
                recent: Vec::new(),
            }
        }
    };
    Report {
        seed,
        scenario,
        outcome,
    }
}

/// The hex of a trace hash's first 8 bytes, for messages.
pub fn short_hash(h: &[u8; 16]) -> String {
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}
