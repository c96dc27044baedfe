//! Running collectives on a simulated cluster, and the sequential reference they must match.
//!
//! Inputs are small integers (also for floating types), so every reduction order gives the
//! exact same value and the reference can be computed in any order: the test then checks
//! correctness *and* that every rank got identical bits.

use std::time::Duration;

use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::collective::{Buffer, CommId, Element};
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Command, Event, OpError, OpId, Outcome};

/// One rank's input value at element `i`: small, distinct per rank, exact in every dtype
/// (|v| ≤ 8, so sums over 64 ranks stay within bf16's exact integers... for 16 ranks of
/// ints ≤ 8 the total ≤ 128, exact even in bf16).
pub fn value(rank: u32, i: usize) -> i64 {
    ((rank as i64 * 7 + i as i64 * 3) % 9) - 4
}

/// Values for prod: ±1 only, so products never overflow or round.
pub fn unit(rank: u32, i: usize) -> i64 {
    if (rank as usize + i).is_multiple_of(3) {
        -1
    } else {
        1
    }
}

/// A buffer of dtype holding `vals` (all exactly representable).
pub fn buffer(dtype: DType, vals: &[i64]) -> Buffer {
    fn mk<T: Element>(vals: &[i64], f: impl Fn(i64) -> T) -> Buffer {
        Buffer::from_vec(vals.iter().map(|v| f(*v)).collect::<Vec<T>>())
    }
    match dtype {
        DType::F32 => mk(vals, |v| v as f32),
        DType::F64 => mk(vals, |v| v as f64),
        DType::F16 => mk(vals, |v| half::f16::from_f32(v as f32)),
        DType::BF16 => mk(vals, |v| half::bf16::from_f32(v as f32)),
        DType::I8 => mk(vals, |v| v as i8),
        DType::U8 => mk(vals, |v| v as u8),
        DType::I32 => mk(vals, |v| v as i32),
        DType::U32 => mk(vals, |v| v as u32),
        DType::I64 => mk(vals, |v| v),
        _ => mk(vals, |v| v as u64),
    }
}

/// The reduction of two integers as the dtype computes it (unsigned types wrap).
fn combine(dtype: DType, op: ReduceOp, a: i64, b: i64) -> i64 {
    let r = match op {
        ReduceOp::Prod => a.wrapping_mul(b),
        ReduceOp::Min => unsigned_aware(dtype, a, b, true),
        ReduceOp::Max => unsigned_aware(dtype, a, b, false),
        _ => a.wrapping_add(b),
    };
    wrap(dtype, r)
}

fn unsigned_aware(dtype: DType, a: i64, b: i64, min: bool) -> i64 {
    let (ka, kb) = if matches!(dtype, DType::U8 | DType::U32 | DType::U64) {
        (wrap_u(dtype, a), wrap_u(dtype, b))
    } else {
        (a as i128, b as i128)
    };
    if (ka <= kb) == min {
        a
    } else {
        b
    }
}

fn wrap_u(dtype: DType, v: i64) -> i128 {
    match dtype {
        DType::U8 => (v as u8) as i128,
        DType::U32 => (v as u32) as i128,
        _ => (v as u64) as i128,
    }
}

fn wrap(dtype: DType, v: i64) -> i64 {
    match dtype {
        DType::I8 => v as i8 as i64,
        DType::U8 => v as u8 as i64,
        DType::I32 => v as i32 as i64,
        DType::U32 => v as u32 as i64,
        _ => v,
    }
}

/// What each rank must pass and get back for one collective, from the reference.
#[derive(Debug, Clone)]
pub struct Case {
    /// The collective.
    pub kind: CollectiveKind,
    /// Element type.
    pub dtype: DType,
    /// Reduction (None where it does not apply).
    pub op: ReduceOp,
    /// Root rank.
    pub root: u32,
    /// Count (per kind, as `Command::Collective` documents).
    pub count: usize,
}

impl Case {
    /// Input of `rank` in a world of `n`.
    pub fn input(&self, rank: u32, n: u32) -> Vec<i64> {
        let v = |r: u32, i: usize| {
            if self.op == ReduceOp::Prod {
                unit(r, i)
            } else {
                value(r, i)
            }
        };
        let len = match self.kind {
            CollectiveKind::ReduceScatter | CollectiveKind::AllToAll => n as usize * self.count,
            CollectiveKind::Scatter if rank == self.root => n as usize * self.count,
            CollectiveKind::Scatter | CollectiveKind::Barrier => 0,
            // Only the root has something to broadcast.
            CollectiveKind::Broadcast if rank != self.root => 0,
            _ => self.count,
        };
        (0..len).map(|i| v(rank, i)).collect()
    }

    /// Expected output of `rank` (empty for non-roots of reduce and gather).
    pub fn expected(&self, rank: u32, n: u32) -> Vec<i64> {
        let c = self.count;
        let inputs: Vec<Vec<i64>> = (0..n).map(|r| self.input(r, n)).collect();
        let fold = |ranks: std::ops::Range<u32>, i: usize| {
            ranks
                .map(|r| inputs[r as usize][i])
                .reduce(|a, b| combine(self.dtype, self.op, a, b))
        };
        match self.kind {
            CollectiveKind::AllReduce => (0..c).map(|i| fold(0..n, i).unwrap()).collect(),
            CollectiveKind::Reduce if rank == self.root => {
                (0..c).map(|i| fold(0..n, i).unwrap()).collect()
            }
            // Non-roots of reduce and gather get no output.
            CollectiveKind::Reduce | CollectiveKind::Gather => Vec::new(),
            CollectiveKind::Broadcast => inputs[self.root as usize].clone(),
            CollectiveKind::AllGather => inputs.concat(),
            CollectiveKind::ReduceScatter => (0..c)
                .map(|i| fold(0..n, rank as usize * c + i).unwrap())
                .collect(),
            CollectiveKind::Scatter => {
                inputs[self.root as usize][rank as usize * c..(rank as usize + 1) * c].to_vec()
            }
            CollectiveKind::AllToAll => (0..n)
                .flat_map(|src| {
                    inputs[src as usize][rank as usize * c..(rank as usize + 1) * c].to_vec()
                })
                .collect(),
            CollectiveKind::Scan => (0..c).map(|i| fold(0..rank + 1, i).unwrap()).collect(),
            CollectiveKind::ExclusiveScan => (0..c)
                .map(|i| fold(0..rank, i).unwrap_or(identity(self.dtype, self.op)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The gather root gets everything; handled apart because non-roots get their input.
    pub fn expected_output(&self, rank: u32, n: u32) -> Vec<i64> {
        if self.kind == CollectiveKind::Gather && rank == self.root {
            return (0..n).flat_map(|r| self.input(r, n)).collect();
        }
        self.expected(rank, n)
    }
}

fn identity(dtype: DType, op: ReduceOp) -> i64 {
    match (op, dtype) {
        (ReduceOp::Prod, _) => 1,
        (ReduceOp::Min, DType::I8) => i8::MAX as i64,
        (ReduceOp::Min, DType::U8) => u8::MAX as i64,
        (ReduceOp::Min, DType::I32) => i32::MAX as i64,
        (ReduceOp::Min, DType::U32) => u32::MAX as i64,
        (ReduceOp::Min, DType::I64) => i64::MAX,
        (ReduceOp::Min, DType::U64) => -1,
        (ReduceOp::Max, DType::I8) => i8::MIN as i64,
        (ReduceOp::Max, DType::I32) => i32::MIN as i64,
        (ReduceOp::Max, DType::I64) => i64::MIN,
        (ReduceOp::Max, DType::U8 | DType::U32 | DType::U64) => 0,
        _ => 0,
    }
}

/// Issue `case` on every worker (in rank order) and run until all complete or `limit`
/// passes. Returns each rank's outcome, by rank.
pub fn run_case(
    c: &mut ClusterSim,
    by_rank: &[HostId],
    comm: CommId,
    case: &Case,
    limit: Duration,
) -> Result<Vec<Result<Outcome, OpError>>, String> {
    let n = by_rank.len() as u32;
    let mut ops: Vec<(HostId, OpId)> = Vec::new();
    for (rank, host) in by_rank.iter().enumerate() {
        let input = buffer(case.dtype, &case.input(rank as u32, n));
        let op = c
            .command(
                *host,
                Command::Collective {
                    comm,
                    kind: case.kind,
                    op: case.op,
                    root: case.root,
                    count: case.count,
                    input,
                    timeout: None,
                },
            )
            .map_err(|e| format!("rank {rank}: command refused: {e}"))?;
        ops.push((*host, op));
    }
    wait_all(c, &ops, limit).map_err(|e| format!("{:?}: {e}", case.kind))
}

/// Run until every (host, op) has completed, or `limit` of virtual time passes (an error
/// naming how many are missing). Returns each op's outcome, in the order given, and takes
/// those events out of the hosts' logs.
pub fn wait_all(
    c: &mut ClusterSim,
    ops: &[(HostId, OpId)],
    limit: Duration,
) -> Result<Vec<Result<Outcome, OpError>>, String> {
    let completed = |c: &ClusterSim, (h, op): &(HostId, OpId)| {
        c.events(*h)
            .iter()
            .any(|e| matches!(e, Event::Completed { op: o, .. } if o == op))
    };
    if !c.run_until(limit, |c| ops.iter().all(|o| completed(c, o))) {
        let missing = ops.iter().filter(|o| !completed(c, o)).count();
        return Err(format!(
            "{missing} of {} operations did not complete within {limit:?}",
            ops.len()
        ));
    }
    let mut results = Vec::with_capacity(ops.len());
    for (h, op) in ops {
        results.push(c.take_completion(*h, *op).ok_or("completion vanished")?);
    }
    Ok(results)
}

/// Check every rank's result against the reference: exact values, and so identical bits.
pub fn check_case(case: &Case, results: &[Result<Outcome, OpError>]) -> Result<(), String> {
    let n = results.len() as u32;
    for (rank, r) in results.iter().enumerate() {
        let rank = rank as u32;
        let buf = match r {
            Ok(Outcome::Collective { buffer }) => buffer,
            other => return Err(format!("{case:?}: rank {rank} got {other:?}")),
        };
        let want = buffer(case.dtype, &case.expected_output(rank, n));
        // Compare encoded bytes: equal values *and* identical bits (0.0 vs -0.0 differ).
        let same = buf.dtype() == want.dtype()
            && buf.encode_range(0..buf.len()) == want.encode_range(0..want.len());
        if !same {
            return Err(format!("{case:?}: rank {rank} got {buf:?}, want {want:?}"));
        }
    }
    Ok(())
}
