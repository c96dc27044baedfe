//! The flight recorder: the last few operations of a node, attached to errors.
//!
//! When a collective mismatches or times out, the question is always "what was each rank
//! doing?". Every node keeps its last operations in a small ring and attaches a copy to
//! `Mismatch` and `Timeout`, so an error from any rank tells its own recent history.

use std::collections::VecDeque;
use std::time::Duration;

use crate::codec::{Algorithm, CollectiveKind, DType, ReduceOp};

/// Most entries kept.
pub const FLIGHT_RECORD_LEN: usize = 16;

/// How an operation ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlightState {
    /// Still running when the record was taken.
    Running {
        /// The step it was on.
        step: u32,
    },
    /// Finished with a result.
    Done,
    /// Finished with an error.
    Failed,
}

/// One operation as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightEntry {
    /// Communicator id.
    pub comm: u64,
    /// Sequence number on that communicator.
    pub seq: u64,
    /// What was called.
    pub kind: CollectiveKind,
    /// Element type.
    pub dtype: DType,
    /// Reduction operator (`None` where there is none).
    pub op: ReduceOp,
    /// Element count as the caller gave it.
    pub count: u64,
    /// Root rank (0 where there is none).
    pub root: u32,
    /// Algorithm chosen.
    pub algorithm: Algorithm,
    /// Time since the node started when the operation began.
    pub started: Duration,
    /// Where it stands.
    pub state: FlightState,
}

/// A bounded copy of a node's recent operations, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlightRecord(pub Vec<FlightEntry>);

/// The recorder itself.
#[derive(Debug, Default)]
pub(crate) struct FlightRecorder {
    entries: VecDeque<FlightEntry>,
}

impl FlightRecorder {
    pub(crate) fn start(&mut self, entry: FlightEntry) {
        if self.entries.len() == FLIGHT_RECORD_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub(crate) fn update(&mut self, comm: u64, seq: u64, state: FlightState) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.comm == comm && e.seq == seq)
        {
            e.state = state;
        }
    }

    pub(crate) fn snapshot(&self) -> FlightRecord {
        FlightRecord(self.entries.iter().cloned().collect())
    }
}
