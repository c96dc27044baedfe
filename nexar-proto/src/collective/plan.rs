//! A plan: the pure, per-rank list of steps one collective takes.
//!
//! Every rank computes its own plan from the same inputs (kind, dtype, count, root, world
//! size, algorithm), so the plans agree without any message. The executor runs any plan;
//! adding an algorithm means adding a plan, never touching the executor.
//!
//! Semantics, which the executor and the in-memory mailbox tests both follow:
//! - Each rank owns one working buffer of `buffer_len` elements ([`Layout`] says where the
//!   user's input is placed and where the output is read).
//! - Steps run in order. In step `s`, every [`Transfer`] in `sends` is copied out of the
//!   buffer as it is *at the start of the step*; then every [`Recv`] is applied as its data
//!   arrives (copy into the range, or reduce into it); then `locals` run in order.
//! - A send in step `s` from rank A to rank B matches the one recv in step `s` at B whose
//!   peer is A: same length, at most one send per (step, peer) and one recv per
//!   (step, peer). A rank may appear as its own peer (the executor short-cuts it).
//! - Reductions are `buf[range] = op(buf[range], incoming)` element-wise, and happen in
//!   plan order, never arrival order, so results are bit-identical on every run.

use std::ops::Range;

use crate::codec::Algorithm;

/// One rank's steps for one collective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Which algorithm produced it (carried on every chunk and in the fingerprint).
    pub algorithm: Algorithm,
    /// Elements in this rank's working buffer.
    pub buffer_len: usize,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One round of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Ranges to send, read at the start of the step.
    pub sends: Vec<Transfer>,
    /// Ranges to receive, applied as they arrive.
    pub recvs: Vec<Recv>,
    /// Local copies or reductions once every recv of the step is applied.
    pub locals: Vec<Local>,
}

/// Send `range` of the working buffer to `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The destination rank (within the communicator).
    pub peer: u32,
    /// Element range of the working buffer.
    pub range: Range<usize>,
}

/// Receive from `peer` into `range`, copying or reducing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recv {
    /// The source rank (within the communicator).
    pub peer: u32,
    /// Element range of the working buffer the data lands in.
    pub range: Range<usize>,
    /// Reduce into the range (`buf = op(buf, incoming)`) instead of overwriting it.
    pub reduce: bool,
}

/// A copy or reduction inside the working buffer: `dst.. = src` or `op(dst.., src)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Source range.
    pub src: Range<usize>,
    /// Start of the destination range (same length as `src`; ranges do not overlap).
    pub dst: usize,
    /// Reduce instead of copy.
    pub reduce: bool,
}

/// Where the user's data lives in the working buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Elements in the working buffer.
    pub buffer_len: usize,
    /// Where the user's input is copied in (its length is the input's length).
    pub input: Range<usize>,
    /// Where the output is read from (empty on ranks that get no output).
    pub output: Range<usize>,
    /// Filled with the op's identity before the plan runs (exclusive scan's rank 0).
    pub fill_identity: Range<usize>,
}

impl Layout {
    /// Whether an input of `len` elements is the output passed in place (MPI_IN_PLACE):
    /// where the output is larger than the input and holds it at the same offset
    /// (all-gather; gather at the root; broadcast and scatter away from the root), the
    /// caller may pass an output-sized vector with its contribution already at `input`.
    /// It then becomes the working buffer, so the output is neither allocated nor zeroed
    /// per call; what it holds outside `input` is never read.
    pub fn in_place(&self, len: usize) -> bool {
        self.output.start == 0
            && self.input.len() < self.output.len()
            && self.input.end <= self.output.end
            && len == self.output.len()
    }
}
