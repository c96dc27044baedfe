//! Scripted faults: what can go wrong with the network and the hosts, as values, so a test
//! can apply them now or schedule them at a virtual time.

use std::fmt;
use std::time::Duration;

use super::config::LinkConfig;
use super::host::HostId;

/// A change to the simulated world, applied with [`Sim::apply`](super::Sim::apply) or
/// scheduled with [`Sim::schedule`](super::Sim::schedule).
///
/// Each variant also has a direct method on [`Sim`](super::Sim) (`partition`, `crash`, ...).
/// Faults scheduled for the same instant apply in the order they were scheduled, and
/// before any datagram or timer due at that instant.
#[non_exhaustive]
pub enum Fault<H> {
    /// Drop everything sent between the two hosts, in both directions, from now on.
    /// Datagrams already in flight still arrive: the cut is at the sender's side.
    Partition(HostId, HostId),
    /// Drop everything sent from `from` to `to`; the other direction still works.
    PartitionOneway {
        /// Sending side of the cut.
        from: HostId,
        /// Receiving side of the cut.
        to: HostId,
    },
    /// Undo a partition between the two hosts, in both directions.
    Heal(HostId, HostId),
    /// Undo a one-way partition from `from` to `to`.
    HealOneway {
        /// Sending side of the cut.
        from: HostId,
        /// Receiving side of the cut.
        to: HostId,
    },
    /// Undo every partition.
    HealAll,
    /// Stop the host for good: it gets no more input and datagrams to it are dropped
    /// (those it sent before crashing are already on the wire and still arrive).
    Crash(HostId),
    /// Put a new incarnation (built by the caller, e.g. same identity, fresh state) at the
    /// host's id and address. Works on a running, paused or crashed host; whatever the
    /// old incarnation had buffered is lost.
    Restart(HostId, H),
    /// Freeze the host for a while, as a stopped process or a long GC pause: no input, no
    /// timers; arriving datagrams wait in its socket buffer until it resumes.
    Pause(HostId, Duration),
    /// End a pause early (no effect on a host that is not paused).
    Resume(HostId),
    /// Replace the configuration of the directed link `from -> to` (its random streams
    /// and queue carry on).
    SetLink {
        /// Sending side.
        from: HostId,
        /// Receiving side.
        to: HostId,
        /// The new behaviour.
        config: LinkConfig,
    },
}

impl<H> Fault<H> {
    /// The fault without its payload: what the trace records.
    pub fn kind(&self) -> FaultKind {
        match *self {
            Fault::Partition(a, b) => FaultKind::Partition(a, b),
            Fault::PartitionOneway { from, to } => FaultKind::PartitionOneway { from, to },
            Fault::Heal(a, b) => FaultKind::Heal(a, b),
            Fault::HealOneway { from, to } => FaultKind::HealOneway { from, to },
            Fault::HealAll => FaultKind::HealAll,
            Fault::Crash(id) => FaultKind::Crash(id),
            Fault::Restart(id, _) => FaultKind::Restart(id),
            Fault::Pause(id, d) => FaultKind::Pause(id, d),
            Fault::Resume(id) => FaultKind::Resume(id),
            Fault::SetLink { from, to, .. } => FaultKind::SetLink { from, to },
        }
    }
}

// Manual impl: the host type need not be `Debug` for the fault to be printable.
impl<H> fmt::Debug for Fault<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::SetLink { from, to, config } => f
                .debug_struct("SetLink")
                .field("from", from)
                .field("to", to)
                .field("config", config)
                .finish(),
            other => fmt::Debug::fmt(&other.kind(), f),
        }
    }
}

/// A [`Fault`] without its payload (the new host of a restart, the config of a link
/// change): small, `Copy`, and what the trace records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // Each variant mirrors the `Fault` variant of the same name.
#[non_exhaustive]
pub enum FaultKind {
    Partition(HostId, HostId),
    PartitionOneway { from: HostId, to: HostId },
    Heal(HostId, HostId),
    HealOneway { from: HostId, to: HostId },
    HealAll,
    Crash(HostId),
    Restart(HostId),
    Pause(HostId, Duration),
    Resume(HostId),
    SetLink { from: HostId, to: HostId },
}

impl FaultKind {
    /// A stable encoding for the trace hash: a tag, then the fields in order.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let ids = |out: &mut Vec<u8>, tag: u8, ids: &[HostId]| {
            out.push(tag);
            for id in ids {
                out.extend_from_slice(&(id.0 as u64).to_le_bytes());
            }
        };
        match *self {
            FaultKind::Partition(a, b) => ids(out, 0, &[a, b]),
            FaultKind::PartitionOneway { from, to } => ids(out, 1, &[from, to]),
            FaultKind::Heal(a, b) => ids(out, 2, &[a, b]),
            FaultKind::HealOneway { from, to } => ids(out, 3, &[from, to]),
            FaultKind::HealAll => ids(out, 4, &[]),
            FaultKind::Crash(id) => ids(out, 5, &[id]),
            FaultKind::Restart(id) => ids(out, 6, &[id]),
            FaultKind::Pause(id, d) => {
                ids(out, 7, &[id]);
                out.extend_from_slice(&d.as_nanos().to_le_bytes());
            }
            FaultKind::Resume(id) => ids(out, 8, &[id]),
            FaultKind::SetLink { from, to } => ids(out, 9, &[from, to]),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Partition(a, b) => write!(f, "partition {a} <-> {b}"),
            FaultKind::PartitionOneway { from, to } => write!(f, "partition {from} -> {to}"),
            FaultKind::Heal(a, b) => write!(f, "heal {a} <-> {b}"),
            FaultKind::HealOneway { from, to } => write!(f, "heal {from} -> {to}"),
            FaultKind::HealAll => write!(f, "heal all"),
            FaultKind::Crash(id) => write!(f, "crash {id}"),
            FaultKind::Restart(id) => write!(f, "restart {id}"),
            FaultKind::Pause(id, d) => write!(f, "pause {id} for {d:?}"),
            FaultKind::Resume(id) => write!(f, "resume {id}"),
            FaultKind::SetLink { from, to } => write!(f, "set link {from} -> {to}"),
        }
    }
}
