//! An in-memory executor that runs every rank's plan at once, for tests.
//!
//! It follows the plan semantics of [`super::plan`] literally, with no network: sends
//! are snapshots of the buffer at the start of their step, messages sit in one pool and
//! are delivered in a seeded random order, recvs that arrive early wait until their step
//! and are applied in plan order. It is strict where the real executor must be: a
//! message with no matching recv, a length mismatch, a duplicate, a message left over or
//! a rank that can never finish is an error naming the ranks and the step.
//!
//! Elements are a small local model ([`Model`]) rather than the real typed buffer, so
//! that plans can be tested exactly (wrapping integers), for operand order (a
//! non-commutative monoid) and for bit-identity (floats with signed zeros and NaN).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::plan::{Layout, Plan};
use crate::codec::ReduceOp;

/// An element type for the mailbox: how two combine and what to compare bitwise.
pub(crate) trait Model: Copy + Debug {
    /// `op(a, b)`.
    fn combine(op: ReduceOp, a: Self, b: Self) -> Self;
    /// `x` with `op(identity, x) == x`.
    fn identity(op: ReduceOp) -> Self;
    /// The exact bits, for "same result" checks that must not treat NaN or -0 loosely.
    fn bits(self) -> [u64; 2];
}

impl Model for u64 {
    fn combine(op: ReduceOp, a: u64, b: u64) -> u64 {
        match op {
            ReduceOp::Prod => a.wrapping_mul(b),
            ReduceOp::Min => a.min(b),
            ReduceOp::Max => a.max(b),
            _ => a.wrapping_add(b),
        }
    }
    fn identity(op: ReduceOp) -> u64 {
        match op {
            ReduceOp::Prod => 1,
            ReduceOp::Min => u64::MAX,
            _ => 0,
        }
    }
    fn bits(self) -> [u64; 2] {
        [self, 0]
    }
}

/// Same operand handling as the real float kernels: `min(a, b)` keeps `a` unless `b` is
/// strictly smaller, so `min(+0, -0) != min(-0, +0)` bitwise and NaN on the left sticks.
impl Model for f64 {
    fn combine(op: ReduceOp, a: f64, b: f64) -> f64 {
        match op {
            ReduceOp::Prod => a * b,
            ReduceOp::Min => {
                if b < a {
                    b
                } else {
                    a
                }
            }
            ReduceOp::Max => {
                if b > a {
                    b
                } else {
                    a
                }
            }
            _ => a + b,
        }
    }
    fn identity(op: ReduceOp) -> f64 {
        match op {
            ReduceOp::Prod => 1.0,
            ReduceOp::Min => f64::INFINITY,
            ReduceOp::Max => f64::NEG_INFINITY,
            _ => 0.0,
        }
    }
    fn bits(self) -> [u64; 2] {
        [self.to_bits(), 0]
    }
}

/// The affine map `x -> a*x + b` (wrapping), combined as "first, then second": an
/// associative but not commutative op, so a result equals the rank-order fold only if
/// the plan keeps every operand in rank order. The op code is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Affine(pub(crate) u64, pub(crate) u64);

impl Model for Affine {
    fn combine(_: ReduceOp, f: Affine, g: Affine) -> Affine {
        Affine(
            g.0.wrapping_mul(f.0),
            g.0.wrapping_mul(f.1).wrapping_add(g.1),
        )
    }
    fn identity(_: ReduceOp) -> Affine {
        Affine(1, 0)
    }
    fn bits(self) -> [u64; 2] {
        [self.0, self.1]
    }
}

/// Checks one plan against the rules the executor relies on: ranges inside the buffer,
/// peers inside the world, one send and one recv per (step, peer), recvs of a step not
/// overlapping (so arrival order cannot matter), locals not overlapping themselves, and
/// a layout that fits the same buffer.
pub(crate) fn check_shape(plan: &Plan, layout: &Layout, world: u32) -> Result<(), String> {
    let len = plan.buffer_len;
    let fits = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= len;
    if layout.buffer_len != len {
        return Err(format!(
            "layout {} vs plan {len} elements",
            layout.buffer_len
        ));
    }
    for r in [&layout.input, &layout.output, &layout.fill_identity] {
        if !fits(r) {
            return Err(format!("layout range {r:?} outside {len}"));
        }
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let mut sent = BTreeSet::new();
        for t in &step.sends {
            if t.peer >= world || !fits(&t.range) || !sent.insert(t.peer) {
                return Err(format!("step {i}: bad or duplicate send {t:?}"));
            }
        }
        let mut heard = BTreeSet::new();
        for r in &step.recvs {
            if r.peer >= world || !fits(&r.range) || !heard.insert(r.peer) {
                return Err(format!("step {i}: bad or duplicate recv {r:?}"));
            }
        }
        let mut ranges: Vec<_> = step.recvs.iter().map(|r| r.range.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        if ranges
            .windows(2)
            .any(|w| w[0].end > w[1].start && !w[1].is_empty())
        {
            return Err(format!("step {i}: overlapping recvs {ranges:?}"));
        }
        for l in &step.locals {
            let dst = l.dst..l.dst + l.src.len();
            let apart = dst.end <= l.src.start || l.src.end <= dst.start;
            if !fits(&l.src) || !fits(&dst) || !apart {
                return Err(format!("step {i}: bad local {l:?}"));
            }
        }
    }
    Ok(())
}

/// A message in flight.
struct Message<E> {
    from: u32,
    to: u32,
    step: usize,
    data: Vec<E>,
}

/// One rank's state.
struct Rank<E> {
    buf: Vec<E>,
    step: usize,
    /// Whether the current step's sends have gone out.
    sent: bool,
    /// Arrived and not yet applied, by (step, sender).
    arrived: BTreeMap<(usize, u32), Vec<E>>,
}

/// Runs all ranks' plans to completion; returns each rank's output range and the number
/// of messages delivered. `inputs[r]` must have `layouts[r].input.len()` elements; the
/// rest of each buffer starts as `poison`, so a plan that reads what it never wrote gives
/// a wrong answer.
pub(crate) fn run<E: Model>(
    plans: &[Plan],
    layouts: &[Layout],
    inputs: &[Vec<E>],
    op: ReduceOp,
    poison: E,
    seed: u64,
) -> Result<(Vec<Vec<E>>, usize), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ranks: Vec<Rank<E>> = Vec::with_capacity(plans.len());
    for ((plan, layout), input) in plans.iter().zip(layouts).zip(inputs) {
        let mut buf = vec![poison; plan.buffer_len];
        if input.len() != layout.input.len() {
            return Err(format!("input of {} for {:?}", input.len(), layout.input));
        }
        buf[layout.input.clone()].copy_from_slice(input);
        buf[layout.fill_identity.clone()].fill(E::identity(op));
        let arrived = BTreeMap::new();
        ranks.push(Rank {
            buf,
            step: 0,
            sent: false,
            arrived,
        });
    }
    let mut pool: Vec<Message<E>> = Vec::new();
    let mut delivered = 0;
    for r in 0..ranks.len() {
        advance(r, &plans[r], &mut ranks[r], &mut pool, op)?;
    }
    while !pool.is_empty() {
        let msg = pool.swap_remove((rng.next_u64() % pool.len() as u64) as usize);
        let (to, step) = (msg.to as usize, msg.step);
        let rank = &mut ranks[to];
        let expected = plans[to]
            .steps
            .get(step)
            .and_then(|s| s.recvs.iter().find(|r| r.peer == msg.from));
        let Some(recv) = expected else {
            return Err(format!("{} -> {to} step {step}: no such recv", msg.from));
        };
        if step < rank.step || recv.range.len() != msg.data.len() {
            return Err(format!(
                "{} -> {to} step {step}: late or wrong length",
                msg.from
            ));
        }
        if rank.arrived.insert((step, msg.from), msg.data).is_some() {
            return Err(format!("{} -> {to} step {step}: duplicate", msg.from));
        }
        delivered += 1;
        advance(to, &plans[to], rank, &mut pool, op)?;
    }
    let stuck: Vec<_> = (0..ranks.len())
        .filter(|&r| ranks[r].step < plans[r].steps.len() || !ranks[r].arrived.is_empty())
        .map(|r| (r, ranks[r].step))
        .collect();
    if !stuck.is_empty() {
        return Err(format!("deadlock: (rank, step) {stuck:?} never finish"));
    }
    let outputs = ranks
        .iter()
        .zip(layouts)
        .map(|(rank, layout)| rank.buf[layout.output.clone()].to_vec())
        .collect();
    Ok((outputs, delivered))
}

/// Runs `rank` as far as its arrivals allow: sends of a step go out when it starts, and
/// it completes once every recv of the step is there (applied in plan order), then its
/// locals run.
fn advance<E: Model>(
    me: usize,
    plan: &Plan,
    rank: &mut Rank<E>,
    pool: &mut Vec<Message<E>>,
    op: ReduceOp,
) -> Result<(), String> {
    let me = u32::try_from(me).map_err(|e| e.to_string())?;
    while let Some(step) = plan.steps.get(rank.step) {
        if !rank.sent {
            for t in &step.sends {
                let data = rank.buf[t.range.clone()].to_vec();
                let (from, to, step) = (me, t.peer, rank.step);
                pool.push(Message {
                    from,
                    to,
                    step,
                    data,
                });
            }
            rank.sent = true;
        }
        let s = rank.step;
        if !step
            .recvs
            .iter()
            .all(|r| rank.arrived.contains_key(&(s, r.peer)))
        {
            return Ok(());
        }
        for r in &step.recvs {
            let data = rank
                .arrived
                .remove(&(s, r.peer))
                .expect("checked just above");
            for (dst, x) in rank.buf[r.range.clone()].iter_mut().zip(data) {
                *dst = if r.reduce { E::combine(op, *dst, x) } else { x };
            }
        }
        for l in &step.locals {
            let src = rank.buf[l.src.clone()].to_vec();
            for (dst, x) in rank.buf[l.dst..l.dst + src.len()].iter_mut().zip(src) {
                *dst = if l.reduce { E::combine(op, *dst, x) } else { x };
            }
        }
        rank.step += 1;
        rank.sent = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Algorithm;
    use crate::collective::plan::{Recv, Step, Transfer};

    /// Two ranks, one step: rank 0 sends `send` elements, rank 1 expects `expect`.
    fn pair(send: Option<usize>, expect: usize) -> Result<(Vec<Vec<u64>>, usize), String> {
        let plan = |steps| Plan {
            algorithm: Algorithm::Linear,
            buffer_len: 4,
            steps,
        };
        let sends = send.map(|n| Transfer {
            peer: 1,
            range: 0..n,
        });
        let recv = Recv {
            peer: 0,
            range: 0..expect,
            reduce: true,
        };
        let plans = [
            plan(vec![Step {
                sends: sends.into_iter().collect(),
                ..Step::default()
            }]),
            plan(vec![Step {
                recvs: vec![recv],
                ..Step::default()
            }]),
        ];
        let layout = Layout {
            buffer_len: 4,
            input: 0..4,
            output: 0..4,
            fill_identity: 0..0,
        };
        let layouts = [layout.clone(), layout];
        run(
            &plans,
            &layouts,
            &[vec![1, 2, 3, 4], vec![10; 4]],
            ReduceOp::Sum,
            0,
            7,
        )
    }

    #[test]
    fn a_matching_message_is_applied_in_place() {
        let (out, messages) = pair(Some(2), 2).expect("well-formed");
        assert_eq!(out[1], [11, 12, 10, 10]);
        assert_eq!(messages, 1);
    }

    #[test]
    fn the_mailbox_rejects_broken_plans() {
        let missing = pair(None, 2).expect_err("nobody sends");
        assert!(missing.contains("deadlock"), "{missing}");
        let short = pair(Some(1), 2).expect_err("lengths differ");
        assert!(short.contains("wrong length"), "{short}");
    }
}
