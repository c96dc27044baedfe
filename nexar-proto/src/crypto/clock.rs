//! `FixedClock`: the wall-clock reading TLS and QUIC configurations are built with.

use std::time::{Duration, SystemTime};

use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;

/// A wall-clock time fixed when a configuration is built.
///
/// The core never reads a clock (DESIGN.md §3), yet two library components ask for wall
/// time: webpki checks certificate validity against it, and quinn-proto stamps NEW_TOKEN
/// address-validation tokens with it. Both get this fixed reading instead: the driver passes
/// the wall clock at start, the simulator a constant, so a replay sees identical bytes.
///
/// The cost: validity is judged at the configuration's build time, not at each handshake.
/// That is acceptable because nexar certificates come from an ephemeral per-cluster CA and
/// are valid for a year from formation; a node that outlives that would rebuild its
/// configurations (with a fresh reading) when the cluster re-keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedClock(pub(crate) UnixTime);

impl TimeProvider for FixedClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

impl quinn_proto::TimeSource for FixedClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.0.as_secs())
    }
}
