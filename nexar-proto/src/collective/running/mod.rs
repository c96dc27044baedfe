//! One collective in flight: its plan, working buffer, and progress through the steps.
//!
//! Chunks are checked against the plan before anything is stored: the sender must have a
//! recv in that step, the offset must be the next one expected from it, the length exact.
//! Within a step, a recv whose range overlaps an earlier unfinished recv waits (its
//! chunks are held) so reductions happen in plan order whatever the arrival order; recvs
//! into disjoint ranges are applied as they arrive, which is what overlaps receiving
//! with reducing for large buffers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use super::buffer::Buffer;
use super::outbox::{overlaps, Deferred, Outbox};
use super::plan::{Layout, Plan};
use super::spec::CollectiveSpec;
use crate::codec::{ChunkHeader, Fingerprint, Pieces, ReduceOp};

/// A chunk with the fields the executor acts on.
#[derive(Debug, Clone)]
pub(crate) struct InChunk {
    pub(crate) from: u32,
    pub(crate) step: u32,
    pub(crate) offset: u64,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) payload: Pieces,
}

/// A chunk to send: destination comm rank, header fields, payload.
#[derive(Debug, Clone)]
pub(crate) struct OutChunk {
    pub(crate) to: u32,
    pub(crate) header: ChunkHeader,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) payload: Pieces,
}

/// Why a chunk broke the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    /// The sender's fingerprint differs from ours.
    Mismatch { peer: u32, theirs: Fingerprint },
    /// Anything else: the detail says what.
    Protocol { peer: u32, detail: String },
}

pub(crate) struct Running {
    pub(crate) spec: CollectiveSpec,
    pub(crate) fp: Fingerprint,
    pub(crate) comm: u64,
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    plan: Arc<Plan>,
    layout: Layout,
    buf: Buffer,
    /// Elements per chunk.
    seg: usize,
    step: usize,
    /// Chunks received so far for each recv of the current step.
    got: Vec<usize>,
    /// Chunks that arrived before they could be applied, per (step, peer), in order.
    held: BTreeMap<(u32, u32), VecDeque<InChunk>>,
    fp_checked: BTreeSet<u32>,
    fp_sent: BTreeSet<u32>,
    /// Our rank in the communicator: sends to ourselves are never deferred.
    me: u32,
    /// Sends of the current step not encoded yet; payloads that may be forwarded.
    outbox: Outbox,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("comm", &self.comm)
            .field("seq", &self.seq)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Chunks needed for a range of `n` elements (a zero-length range still sends one).
fn chunks_for(n: usize, seg: usize) -> usize {
    n.div_ceil(seg).max(1)
}

impl Running {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        spec: CollectiveSpec,
        fp: Fingerprint,
        comm: u64,
        seq: u64,
        epoch: u64,
        plan: Arc<Plan>,
        layout: Layout,
        buf: Buffer,
        seg: usize,
        me: u32,
    ) -> Self {
        Self {
            spec,
            fp,
            comm,
            seq,
            epoch,
            plan,
            layout,
            buf,
            seg: seg.max(1),
            step: 0,
            got: Vec::new(),
            held: BTreeMap::new(),
            fp_checked: BTreeSet::new(),
            fp_sent: BTreeSet::new(),
            me,
            outbox: Outbox::default(),
        }
    }

    /// Whether sends wait for room (see [`Running::take_sends`]).
    pub(crate) fn has_deferred(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Encode deferred sends, in plan order, while `room(to, bytes)` accepts them (see
    /// [`Outbox::take`]).
    pub(crate) fn take_sends(
        &mut self,
        room: &mut dyn FnMut(u32, usize) -> bool,
        out: &mut Vec<OutChunk>,
    ) {
        let elem = self.spec.dtype.size();
        self.outbox.take(&self.buf, elem, room, out);
    }

    /// Encode every deferred send now (its data is about to change).
    fn flush_deferred(&mut self, out: &mut Vec<OutChunk>) {
        self.outbox.flush(&self.buf, self.spec.dtype.size(), out);
    }

    pub(crate) fn step(&self) -> u32 {
        self.step as u32
    }

    /// Every step ran and every send is encoded (a root's sends may wait for room after
    /// its last step; the buffer goes back to the caller only once they have read it).
    pub(crate) fn is_done(&self) -> bool {
        self.step >= self.plan.steps.len() && self.outbox.is_empty()
    }

    /// Peers (comm ranks) whose data the current step still waits for.
    pub(crate) fn waiting_for(&self) -> Vec<u32> {
        let Some(step) = self.plan.steps.get(self.step) else {
            return Vec::new();
        };
        step.recvs
            .iter()
            .enumerate()
            .filter(|(i, r)| self.got[*i] < chunks_for(r.range.len(), self.seg))
            .map(|(_, r)| r.peer)
            .collect()
    }

    /// Enter step 0: its sends go out (to `out`).
    pub(crate) fn begin(&mut self, out: &mut Vec<OutChunk>) {
        self.enter_step(out);
    }

    /// The working buffer's output range, finished (Avg divided), as an owned buffer.
    pub(crate) fn finish(mut self, comm_size: u32) -> Buffer {
        let out = self.layout.output.clone();
        if self.spec.op == ReduceOp::Avg && !out.is_empty() {
            self.buf.divide(out.clone(), comm_size);
        }
        if out.start == 0 && out.end == self.buf.len() {
            return self.buf;
        }
        let mut result = self.buf.zeros_like(out.len());
        result.copy_from(0, &self.buf, out);
        result
    }

    /// Peers whose fingerprint was checked (equal to ours) in this operation.
    pub(crate) fn fp_checked(&self) -> &BTreeSet<u32> {
        &self.fp_checked
    }

    /// Take one chunk for this op. Applies what the plan allows now, holds the rest, and
    /// advances through every step that completes (its sends go to `out`).
    pub(crate) fn on_chunk(
        &mut self,
        chunk: InChunk,
        out: &mut Vec<OutChunk>,
    ) -> Result<(), Violation> {
        let peer = chunk.from;
        if !self.fp_checked.contains(&peer) {
            match chunk.fingerprint {
                Some(fp) if fp == self.fp => {
                    self.fp_checked.insert(peer);
                }
                Some(theirs) => return Err(Violation::Mismatch { peer, theirs }),
                None => return Err(protocol(peer, "first chunk carries no fingerprint")),
            }
        }
        let step = chunk.step as usize;
        let Some(plan_step) = self.plan.steps.get(step) else {
            return Err(protocol(
                peer,
                format!("step {step} beyond the plan's {}", self.plan.steps.len()),
            ));
        };
        let Some(i) = plan_step.recvs.iter().position(|r| r.peer == peer) else {
            return Err(protocol(peer, format!("no receive from it in step {step}")));
        };
        if step < self.step {
            return Err(protocol(peer, format!("chunk for finished step {step}")));
        }
        // Bound what we hold to what the plan allows, before storing anything: no more
        // chunks than the recv has, none longer than a segment. A peer cannot make us
        // buffer beyond the operation's own size.
        let expected = chunks_for(plan_step.recvs[i].range.len(), self.seg);
        let applied = if step == self.step { self.got[i] } else { 0 };
        let held = self.held.get(&(chunk.step, peer)).map_or(0, VecDeque::len);
        if applied + held >= expected {
            return Err(protocol(
                peer,
                format!("more chunks than planned in step {step}"),
            ));
        }
        if chunk.payload.len() > self.seg * self.spec.dtype.size() {
            let len = chunk.payload.len();
            return Err(protocol(
                peer,
                format!("chunk of {len} bytes exceeds a segment"),
            ));
        }
        self.held
            .entry((chunk.step, peer))
            .or_default()
            .push_back(chunk);
        self.drain(out)
    }

    /// Apply every held chunk of the current step that may go now; advance steps.
    fn drain(&mut self, out: &mut Vec<OutChunk>) -> Result<(), Violation> {
        loop {
            let mut progressed = false;
            let step = self.step;
            // A handle, not a copy of the step's recvs: `apply` needs `self` mutably.
            let plan = Arc::clone(&self.plan);
            let Some(plan_step) = plan.steps.get(step) else {
                return Ok(());
            };
            let recvs = &plan_step.recvs;
            for (i, recv) in recvs.iter().enumerate() {
                if !self.may_apply(i, recvs) {
                    continue;
                }
                let key = (step as u32, recv.peer);
                while self.got[i] < chunks_for(recv.range.len(), self.seg) {
                    let Some(chunk) = self.held.get_mut(&key).and_then(VecDeque::pop_front) else {
                        break;
                    };
                    self.apply(i, &recv.range, recv.reduce, chunk, out)?;
                    progressed = true;
                }
                if self.held.get(&key).is_some_and(VecDeque::is_empty) {
                    self.held.remove(&key);
                }
            }
            if self.step_complete() {
                if let Some((_, q)) = self
                    .held
                    .range((step as u32, 0)..=(step as u32, u32::MAX))
                    .next()
                {
                    let peer = q.front().map_or(0, |c| c.from);
                    return Err(protocol(
                        peer,
                        format!("more chunks than planned in step {step}"),
                    ));
                }
                // Sends still waiting for room stay waiting: their ranges hold the data
                // they read at the start of their step until something writes there,
                // and every write flushes them first (`apply`, `run_locals`).
                self.run_locals(out);
                self.step += 1;
                self.enter_step(out);
                continue;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// A recv may take chunks once every earlier, overlapping recv of the step is done.
    fn may_apply(&self, i: usize, recvs: &[super::plan::Recv]) -> bool {
        recvs[..i].iter().enumerate().all(|(j, r)| {
            !overlaps(&r.range, &recvs[i].range)
                || self.got[j] >= chunks_for(r.range.len(), self.seg)
        })
    }

    fn apply(
        &mut self,
        i: usize,
        range: &Range<usize>,
        reduce: bool,
        chunk: InChunk,
        out: &mut Vec<OutChunk>,
    ) -> Result<(), Violation> {
        let done = self.got[i] * self.seg;
        let expect_len = range.len().saturating_sub(done).min(self.seg);
        let elem = self.spec.dtype.size();
        if chunk.offset != done as u64 {
            return Err(protocol(
                chunk.from,
                format!("offset {} where {done} was next", chunk.offset),
            ));
        }
        if chunk.payload.len() != expect_len * elem {
            return Err(protocol(
                chunk.from,
                format!(
                    "{} bytes where {} were planned",
                    chunk.payload.len(),
                    expect_len * elem
                ),
            ));
        }
        let op = match self.spec.op {
            ReduceOp::Avg => ReduceOp::Sum,
            op => op,
        };
        let target = range.start + done..range.start + done + expect_len;
        // A send of this step that reads what this chunk writes (recursive doubling sends
        // and receives the same range) must take its bytes first.
        if self.outbox.reads(&target) {
            self.flush_deferred(out);
        }
        self.buf
            .apply_pieces(range.start + done, &chunk.payload, reduce.then_some(op));
        // Only a later step can send a copied block on; the last step's are let go.
        let last = self.step + 1 >= self.plan.steps.len();
        match reduce || last {
            true => self.outbox.written(&target),
            false => self
                .outbox
                .copied(target.clone(), chunk.step, chunk.payload),
        }
        // A reduced chunk the next step sends on as it is (the ring's partial sums) is
        // encoded now, while it is in cache, rather than read back from memory then.
        if reduce && self.next_step_sends_chunk(&target) {
            let payload = self.buf.encode_range(target.clone());
            self.outbox.copied(target, chunk.step, payload.into());
        }
        self.got[i] += 1;
        Ok(())
    }

    /// Whether the next step sends `range` as one chunk of one of its transfers.
    fn next_step_sends_chunk(&self, range: &Range<usize>) -> bool {
        let Some(next) = self.plan.steps.get(self.step + 1) else {
            return false;
        };
        next.sends.iter().any(|t| {
            t.peer != self.me
                && range.start >= t.range.start
                && (range.start - t.range.start) % self.seg == 0
                && range.end == (range.start + self.seg).min(t.range.end)
        })
    }

    fn step_complete(&self) -> bool {
        let Some(step) = self.plan.steps.get(self.step) else {
            return false;
        };
        step.recvs
            .iter()
            .enumerate()
            .all(|(i, r)| self.got[i] >= chunks_for(r.range.len(), self.seg))
    }

    fn run_locals(&mut self, out: &mut Vec<OutChunk>) {
        let op = match self.spec.op {
            ReduceOp::Avg => ReduceOp::Sum,
            op => op,
        };
        let plan = Arc::clone(&self.plan);
        for local in plan.steps[self.step].locals.iter().cloned() {
            let dst = local.dst..local.dst + local.src.len();
            if self.outbox.reads(&dst) {
                self.flush_deferred(out);
            }
            self.outbox.written(&dst);
            self.buf
                .local(local.src, local.dst, local.reduce.then_some(op));
        }
    }

    /// Start the current step: reset recv progress and send its transfers, segmented.
    fn enter_step(&mut self, out: &mut Vec<OutChunk>) {
        let Some(step) = self.plan.steps.get(self.step) else {
            return;
        };
        self.got = vec![0; step.recvs.len()];
        self.outbox.begin_step(self.step as u32);
        for t in step.sends.clone() {
            let n = chunks_for(t.range.len(), self.seg);
            for c in 0..n {
                let start = t.range.start + c * self.seg;
                let end = (start + self.seg).min(t.range.end);
                let first = self.fp_sent.insert(t.peer);
                let send = Deferred {
                    to: t.peer,
                    header: ChunkHeader {
                        epoch: self.epoch,
                        comm: self.comm,
                        seq: self.seq,
                        algorithm: self.plan.algorithm,
                        step: self.step as u32,
                        offset: (c * self.seg) as u64,
                    },
                    fingerprint: first.then_some(self.fp),
                    range: start..end.max(start),
                };
                if t.peer == self.me {
                    let elem = self.spec.dtype.size();
                    out.push(self.outbox.encode(&self.buf, elem, send));
                } else {
                    self.outbox.push(send);
                }
            }
        }
        // A step with no receives completes at once; drain() advances past it.
    }

    /// Advance through steps that need no receives (called after begin()).
    pub(crate) fn settle(&mut self, out: &mut Vec<OutChunk>) -> Result<(), Violation> {
        self.drain(out)
    }
}

fn protocol(peer: u32, detail: impl Into<String>) -> Violation {
    Violation::Protocol {
        peer,
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests;
