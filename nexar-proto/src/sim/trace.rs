//! The run's fingerprint: a hash over every event, plus an optional bounded log.
//!
//! The hash is XXH3-128, not a cryptographic one: it only has to tell two runs apart, not
//! resist an adversary, and it covers every byte of every datagram, so its speed is the
//! simulator's speed (see BENCHMARKS.md). XXH3's output is fixed by its specification,
//! so a fingerprint is the same on every machine and version.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use xxhash_rust::xxh3::Xxh3;

use super::fault::FaultKind;
use super::host::HostId;
use super::stats::DropReason;

/// One thing that happened in the simulated world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceEvent {
    /// A host handed a datagram to the network (`to` is `None` for an unknown address).
    Send {
        /// Sender.
        from: HostId,
        /// Destination host, if the address belongs to one.
        to: Option<HostId>,
        /// Payload length in bytes.
        len: usize,
    },
    /// A datagram was given to its destination's `handle_datagram`.
    Deliver {
        /// Sender.
        from: HostId,
        /// Receiver.
        to: HostId,
        /// Payload length in bytes.
        len: usize,
    },
    /// A datagram was dropped.
    Drop {
        /// Sender.
        from: HostId,
        /// Destination host, if the address belongs to one.
        to: Option<HostId>,
        /// Payload length in bytes.
        len: usize,
        /// Why.
        reason: DropReason,
    },
    /// A host's `handle_timeout` was called.
    Timeout {
        /// The host.
        host: HostId,
    },
    /// A fault was applied.
    Fault(FaultKind),
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |to: Option<HostId>| to.map_or_else(|| "?".to_string(), |h| h.to_string());
        match *self {
            TraceEvent::Send { from, to, len } => write!(f, "send {from} -> {} {len} B", opt(to)),
            TraceEvent::Deliver { from, to, len } => write!(f, "deliver {from} -> {to} {len} B"),
            TraceEvent::Drop {
                from,
                to,
                len,
                reason,
            } => write!(f, "drop {from} -> {} {len} B ({reason})", opt(to)),
            TraceEvent::Timeout { host } => write!(f, "timeout {host}"),
            TraceEvent::Fault(kind) => write!(f, "fault: {kind}"),
        }
    }
}

/// A [`TraceEvent`] with its virtual time (time since the simulation started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time since the start of the simulation.
    pub at: Duration,
    /// What happened.
    pub event: TraceEvent,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>12.6?} {}", self.at, self.event)
    }
}

/// Records events into the hash and the bounded log.
///
/// Times are hashed as nanoseconds since the simulation's base instant, never as
/// `Instant`s, so the hash is the same whenever and wherever the test runs.
pub(crate) struct Trace {
    hasher: Xxh3,
    log: VecDeque<TraceEntry>,
    log_capacity: usize,
    scratch: Vec<u8>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("log", &self.log.len())
            .field("log_capacity", &self.log_capacity)
            .finish_non_exhaustive()
    }
}

impl Trace {
    pub(crate) fn new(log_capacity: usize) -> Self {
        Trace {
            hasher: Xxh3::new(),
            log: VecDeque::with_capacity(log_capacity.min(4096)),
            log_capacity,
            scratch: Vec::new(),
        }
    }

    /// Record an event; `bytes` is the datagram's payload for deliveries and drops.
    pub(crate) fn record(&mut self, at: Duration, event: TraceEvent, bytes: &[u8]) {
        let s = &mut self.scratch;
        s.clear();
        s.extend_from_slice(
            &u64::try_from(at.as_nanos())
                .unwrap_or(u64::MAX)
                .to_le_bytes(),
        );
        let id = |s: &mut Vec<u8>, h: Option<HostId>| {
            s.extend_from_slice(&h.map_or(u64::MAX, |h| h.0 as u64).to_le_bytes())
        };
        match event {
            TraceEvent::Send { from, to, len } => {
                s.push(0);
                id(s, Some(from));
                id(s, to);
                s.extend_from_slice(&(len as u64).to_le_bytes());
            }
            TraceEvent::Deliver { from, to, len } => {
                s.push(1);
                id(s, Some(from));
                id(s, Some(to));
                s.extend_from_slice(&(len as u64).to_le_bytes());
            }
            TraceEvent::Drop {
                from,
                to,
                len,
                reason,
            } => {
                s.push(2);
                id(s, Some(from));
                id(s, to);
                s.push(reason.tag());
                s.extend_from_slice(&(len as u64).to_le_bytes());
            }
            TraceEvent::Timeout { host } => {
                s.push(3);
                id(s, Some(host));
            }
            TraceEvent::Fault(kind) => {
                s.push(4);
                kind.encode(s);
            }
        }
        // The length first, so that event boundaries are part of what is hashed.
        self.scratch
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(&self.scratch);
        self.hasher.update(bytes);
        if self.log_capacity > 0 {
            if self.log.len() == self.log_capacity {
                self.log.pop_front();
            }
            self.log.push_back(TraceEntry { at, event });
        }
    }

    /// The hash of everything recorded so far.
    pub(crate) fn hash(&self) -> [u8; 16] {
        self.hasher.digest128().to_le_bytes()
    }

    /// The most recent entries, oldest first.
    pub(crate) fn log(&self) -> impl Iterator<Item = &TraceEntry> {
        self.log.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded_and_hash_covers_everything() {
        let mut a = Trace::new(2);
        let mut b = Trace::new(0);
        for i in 0..5u64 {
            let ev = TraceEvent::Timeout {
                host: HostId(i as usize),
            };
            a.record(Duration::from_millis(i), ev, &[]);
            b.record(Duration::from_millis(i), ev, &[]);
        }
        assert_eq!(a.hash(), b.hash(), "the log size must not change the hash");
        let kept: Vec<_> = a.log().map(|e| e.at.as_millis()).collect();
        assert_eq!(kept, [3, 4]);
        assert_eq!(b.log().count(), 0);
    }
}
