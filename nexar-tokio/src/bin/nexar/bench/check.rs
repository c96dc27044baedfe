//! The bench's inputs and their check, kept apart from the timing loop that uses them.
//!
//! Inputs are small integers depending on rank and index, exact in every dtype and under
//! any reduction order, so every output element of the last run can be compared for
//! equality with a sequential reference; sendrecv's payload is bytes depending on the
//! sender and the index.

use bytes::Bytes;
use half::{bf16, f16};
use nexar_tokio::{Element, ReduceOp};

use super::{BenchArgs, Op};

/// Element types the bench fills from small integers.
pub trait BenchElem: Element {
    /// `v` (|v| ≤ 4) in this type (wrapping for unsigned types).
    fn small(v: i8) -> Self;
}

macro_rules! bench_elem {
    ($($t:ty => $f:expr),* $(,)?) => {
        $(impl BenchElem for $t {
            fn small(v: i8) -> Self {
                ($f)(v)
            }
        })*
    };
}

bench_elem!(
    f32 => |v: i8| f32::from(v),
    f64 => |v: i8| f64::from(v),
    f16 => |v: i8| f16::from_f32(f32::from(v)),
    bf16 => |v: i8| bf16::from_f32(f32::from(v)),
    i8 => |v: i8| v,
    u8 => |v: i8| v as u8,
    i32 => |v: i8| i32::from(v),
    u32 => |v: i8| v as u32,
    i64 => |v: i8| i64::from(v),
    u64 => |v: i8| v as u64,
);

/// Rank `r`'s input at `i`: in -4..=4, so sums of up to 64 ranks stay exact even in bf16.
fn value<T: BenchElem>(r: u32, i: usize) -> T {
    T::small(((r as usize % 9 * 7 + i % 9 * 3) % 9) as i8 - 4)
}

/// `v` cleared and refilled with `f(0..len)`, in its own allocation when that is large enough.
fn refill<T>(mut v: Vec<T>, len: usize, f: impl Fn(usize) -> T) -> Vec<T> {
    v.clear();
    v.extend((0..len).map(f));
    v
}

fn fold<T: BenchElem>(op: ReduceOp, ranks: impl Iterator<Item = u32>, i: usize) -> T {
    ranks.fold(T::identity(op), |acc, r| T::combine(op, acc, value(r, i)))
}

/// Inputs up to this size are built once per row and copied for each run.
pub(super) const KEEP_INPUTS_BYTES: usize = 1 << 20;

/// One run's inputs.
pub(super) struct Inputs<T> {
    pub(super) data: Vec<T>,
    pub(super) payload: Bytes,
}

impl<T: BenchElem> Inputs<T> {
    /// The inputs, written into `into` (its allocation is reused when large enough).
    pub(super) fn new(a: &BenchArgs, r: u32, n: u32, count: usize, into: Vec<T>) -> Self {
        let nu = n as usize;
        let is_root = r == a.root;
        let zero = T::identity(ReduceOp::Sum);
        let mine = r as usize * count..(r as usize + 1) * count;
        let data = match a.op {
            Op::Allreduce | Op::Reduce | Op::Scan | Op::Gather => {
                refill(into, count, |i| value(r, i))
            }
            // In place: the whole output, this rank's block already in it.
            Op::Allgather => refill(into, count * nu, |i| match mine.contains(&i) {
                true => value(r, i - mine.start),
                false => zero,
            }),
            Op::Broadcast if is_root => refill(into, count, |i| value(r, i)),
            Op::Broadcast | Op::Scatter if !is_root => refill(into, count, |_| zero),
            Op::Reducescatter | Op::Alltoall | Op::Scatter => {
                refill(into, count * nu, |i| value(r, i))
            }
            Op::Broadcast | Op::Barrier | Op::Sendrecv => Vec::new(),
        };
        let payload = match a.op {
            Op::Sendrecv => Bytes::from(input_bytes(r, count * T::SIZE)),
            _ => Bytes::new(),
        };
        Inputs { data, payload }
    }
}

/// Bytes for sendrecv: depend on the sender and the index.
pub(super) fn input_bytes(r: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (r as u8).wrapping_mul(37))
        .collect()
}

pub(super) fn verify<T: BenchElem>(
    kind: Op,
    op: ReduceOp,
    r: u32,
    n: u32,
    root: u32,
    count: usize,
    out: &[T],
) -> Result<(), String> {
    let nu = n as usize;
    let expect_len = match kind {
        Op::Reduce | Op::Gather if r != root => 0,
        Op::Allgather | Op::Gather | Op::Alltoall => count * nu,
        Op::Barrier => 0,
        _ => count,
    };
    if out.len() != expect_len {
        return Err(format!(
            "rank {r}: {} elements out, expected {expect_len}",
            out.len()
        ));
    }
    let want = |i: usize| -> T {
        match kind {
            Op::Allreduce | Op::Reduce => fold(op, 0..n, i),
            Op::Broadcast => value(root, i),
            Op::Allgather | Op::Gather => value((i / count) as u32, i % count),
            Op::Reducescatter => fold(op, 0..n, r as usize * count + i),
            Op::Scatter => value(root, r as usize * count + i),
            Op::Alltoall => value((i / count) as u32, r as usize * count + i % count),
            Op::Scan => fold(op, 0..=r, i),
            Op::Barrier | Op::Sendrecv => T::identity(op),
        }
    };
    match out.iter().enumerate().find(|(i, got)| **got != want(*i)) {
        None => Ok(()),
        Some((i, _)) => Err(format!("rank {r}: wrong value at element {i}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_exact_and_small() {
        for r in 0..20 {
            for i in 0..20 {
                let v: f32 = value(r, i);
                assert!((-4.0..=4.0).contains(&v));
            }
        }
    }
}
