//! `nexar ... bench OP`: an nccl-tests-style sweep of one collective, run by every rank.
//!
//! Method (the same as `shared/peers/coll_bench.c`, so the numbers compare):
//! - sizes double from `--min-bytes` to `--max-bytes`; `size` is the largest buffer a
//!   rank holds, as in nccl-tests (the whole output for allgather and gather, the whole
//!   input for reducescatter, scatter's root and alltoall), rounded to whole blocks;
//! - per size: `warmup` untimed runs, then `iters` timed runs, where
//!   `iters = clamp(budget / size, 10, 200)` as coll_bench.c's (1000 timed and 50 untimed
//!   barriers), and the warmup is cut by the budget too, so a 64 MiB row does not take
//!   minutes;
//! - each timed run: prepare the input (untimed), barrier, then time the operation alone
//!   on every rank; the run's time is the **max over ranks** (one all-reduce(max) after
//!   the loop, so it does not disturb the timed runs), the row's time the **median** over
//!   runs;
//! - algbw = size / time; busbw = algbw × the nccl-tests factor: allreduce 2(n-1)/n;
//!   reducescatter, allgather, alltoall, gather, scatter (n-1)/n; broadcast, reduce, scan,
//!   sendrecv 1; barrier moves no data (0);
//! - sendrecv: each rank sends `size` bytes to rank+1 and receives from rank-1 (a ring),
//!   as messages of at most 4 MiB;
//! - check: inputs are small integers depending on rank and index, exact in every dtype
//!   and under any reduction order (|sum| ≤ 4n), so every output element of the last run
//!   is compared for equality with a sequential reference; any mismatch on any rank fails
//!   the row (and the process exits non-zero).

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use half::{bf16, f16};
use nexar_tokio::{CommandError, Element, ReduceOp};

use crate::rank::Rank;

/// What to benchmark.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The collective.
    #[arg(value_enum)]
    pub op: Op,
    /// Smallest size (bytes; K, M, G suffixes are powers of 1024).
    #[arg(long, default_value = "8", value_parser = parse_size)]
    pub min_bytes: usize,
    /// Largest size.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub max_bytes: usize,
    /// Element type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// Reduction of the reducing collectives.
    #[arg(long, value_enum, default_value_t = Redop::Sum)]
    pub redop: Redop,
    /// Root of the rooted collectives.
    #[arg(long, default_value_t = 0)]
    pub root: u32,
    /// Timed runs per size, at most (see --budget-bytes). Default: 200, or 1000 for the
    /// barrier, as `coll_bench.c`.
    #[arg(long)]
    pub iters: Option<usize>,
    /// Timed runs per size, at least, whatever the budget.
    #[arg(long, default_value_t = 10)]
    pub min_iters: usize,
    /// Untimed runs per size before the timed ones, at most. Default: 5, or 50 for the
    /// barrier, as `coll_bench.c`.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Bytes per size that bound the timed runs:
    /// iters = clamp(budget / size, --min-iters, --iters).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub budget_bytes: usize,
    /// One JSON object per row instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The barrier has no size to spread a budget over; `coll_bench.c` times 1000 of them
    /// after 50 untimed, and 200 runs at most (5 untimed) of the other collectives.
    fn iters(&self) -> usize {
        self.iters
            .unwrap_or(if self.op == Op::Barrier { 1000 } else { 200 })
    }

    fn warmup(&self) -> usize {
        self.warmup
            .unwrap_or(if self.op == Op::Barrier { 50 } else { 5 })
    }
}

/// The collectives the bench knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)]
pub enum Op {
    Allreduce,
    Broadcast,
    Reduce,
    Allgather,
    Reducescatter,
    Gather,
    Scatter,
    Alltoall,
    Scan,
    Barrier,
    Sendrecv,
}

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)]
pub enum Dtype {
    F32,
    F64,
    F16,
    Bf16,
    I8,
    U8,
    I32,
    U32,
    I64,
    U64,
}

/// Reductions whose result is exact on the bench's inputs (not avg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)]
pub enum Redop {
    Sum,
    Prod,
    Min,
    Max,
}

impl Redop {
    fn op(self) -> ReduceOp {
        match self {
            Redop::Sum => ReduceOp::Sum,
            Redop::Prod => ReduceOp::Prod,
            Redop::Min => ReduceOp::Min,
            Redop::Max => ReduceOp::Max,
        }
    }
}

/// `8`, `64K`, `64KiB`, `16M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: usize = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("bad size unit in {s:?} (use K, M or G)")),
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

/// One measured row, as printed.
#[derive(Debug, Clone)]
struct Row {
    bytes: usize,
    count: usize,
    time_us: f64,
    algbw: f64,
    busbw: f64,
    check: String,
}

/// Run the sweep on this rank. Rank 0 prints; returns whether every check passed.
pub async fn run<C: Rank>(client: &C, args: &BenchArgs, driver: &str) -> Result<bool, C::Error> {
    match args.dtype {
        Dtype::F32 => sweep::<f32, C>(client, args, driver).await,
        Dtype::F64 => sweep::<f64, C>(client, args, driver).await,
        Dtype::F16 => sweep::<f16, C>(client, args, driver).await,
        Dtype::Bf16 => sweep::<bf16, C>(client, args, driver).await,
        Dtype::I8 => sweep::<i8, C>(client, args, driver).await,
        Dtype::U8 => sweep::<u8, C>(client, args, driver).await,
        Dtype::I32 => sweep::<i32, C>(client, args, driver).await,
        Dtype::U32 => sweep::<u32, C>(client, args, driver).await,
        Dtype::I64 => sweep::<i64, C>(client, args, driver).await,
        Dtype::U64 => sweep::<u64, C>(client, args, driver).await,
    }
}

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

/// (elements per call, the row's size in bytes, the row's count column) for a size.
fn shape(op: Op, size: usize, n: usize, elem: usize) -> (usize, usize, usize) {
    match op {
        Op::Barrier => (0, 0, 0),
        Op::Allgather | Op::Gather | Op::Reducescatter | Op::Scatter | Op::Alltoall => {
            let block = (size / (n * elem)).max(1);
            (block, block * n * elem, block * n)
        }
        _ => {
            let count = (size / elem).max(1);
            (count, count * elem, count)
        }
    }
}

fn bus_factor(op: Op, n: usize) -> f64 {
    let n = n as f64;
    match op {
        Op::Allreduce => 2.0 * (n - 1.0) / n,
        Op::Reducescatter | Op::Allgather | Op::Alltoall | Op::Gather | Op::Scatter => {
            (n - 1.0) / n
        }
        Op::Broadcast | Op::Reduce | Op::Scan | Op::Sendrecv => 1.0,
        Op::Barrier => 0.0,
    }
}

async fn sweep<T: BenchElem, C: Rank>(
    c: &C,
    a: &BenchArgs,
    driver: &str,
) -> Result<bool, C::Error> {
    let n = c.world_size() as usize;
    let elem = T::SIZE;
    let lead = c.rank() == 0;
    if a.root >= n as u32 {
        return Err(CommandError::UnknownRank {
            rank: a.root,
            world_size: n as u32,
        }
        .into());
    }
    if lead && !a.json {
        header(a, n, driver);
    }
    let mut sizes = Vec::new();
    let mut s = a.min_bytes.max(1);
    while s <= a.max_bytes.max(a.min_bytes) {
        let shaped = shape(a.op, s, n, elem);
        if sizes
            .last()
            .is_none_or(|last: &(usize, usize, usize)| last.1 != shaped.1)
        {
            sizes.push(shaped);
        }
        if a.op == Op::Barrier {
            break;
        }
        s = s.saturating_mul(2);
    }
    let mut all_ok = true;
    c.barrier().await?;
    for (count, bytes, count_col) in sizes {
        let per = bytes.max(1);
        let iters = (a.budget_bytes / per)
            .max(a.min_iters)
            .min(a.iters().max(1));
        let warmup = (a.budget_bytes / 4 / per).max(1).min(a.warmup());
        if lead && bytes >= 1 << 20 {
            eprintln!(
                "# {:?} {} B: {warmup} warmup + {iters} timed runs ...",
                a.op, bytes
            );
        }
        let mut times = Vec::with_capacity(iters + 1);
        let mut bad = Ok(());
        // Small inputs are built once and copied per run (building them takes longer
        // than copying); large ones are built afresh each run, so that no pristine copy
        // of a 64 MiB buffer sits in memory beside the one the collective works on. Either
        // way they are written into the vector the previous run returned, as MPI's bench
        // reuses its buffers: a fresh vector would be faulted in during the timed run.
        let base = (count * T::SIZE <= KEEP_INPUTS_BYTES)
            .then(|| Inputs::<T>::new(a, c.rank(), c.world_size(), count, Vec::new()));
        let mut spare = Vec::new();
        for run in 0..warmup + iters {
            let last = run + 1 == warmup + iters;
            let (dt, result, out) = once(c, a, count, base.as_ref(), spare, last).await?;
            spare = out;
            if base.is_none() {
                // A rank that finished first would otherwise build its next inputs (tens of
                // milliseconds of page faults and arithmetic at 64 MiB) on the cores the
                // others are still finishing this run on, and the run's time (the slowest
                // rank's) would count it. MPI's bench has no work between runs to hide.
                c.barrier().await?;
            }
            if run >= warmup {
                times.push(dt.as_secs_f64() * 1e6);
            }
            if last {
                bad = result;
            }
        }
        // One reduction after the loop: per-run max over ranks, and whether any rank failed.
        times.push(if bad.is_ok() { 0.0 } else { 1.0 });
        let mut times = c.all_reduce_start(times, ReduceOp::Max).await?;
        let failed_somewhere = times.pop().unwrap_or(1.0) != 0.0;
        let time_us = median(&mut times);
        let check = match (&bad, failed_somewhere) {
            (Err(e), _) => e.clone(),
            (Ok(()), true) => "mismatch on another rank (see its stderr)".to_string(),
            (Ok(()), false) => "ok".to_string(),
        };
        if let Err(e) = &bad {
            eprintln!("rank {}: {:?} {} B: {e}", c.rank(), a.op, bytes);
        }
        all_ok &= check == "ok";
        let algbw = if time_us > 0.0 {
            bytes as f64 / time_us / 1e3
        } else {
            0.0
        };
        let row = Row {
            bytes,
            count: count_col,
            time_us,
            algbw,
            busbw: algbw * bus_factor(a.op, n),
            check,
        };
        if lead {
            print_row(a, n, driver, &row);
        }
    }
    Ok(all_ok)
}

/// Inputs up to this size are built once per row and copied for each run.
const KEEP_INPUTS_BYTES: usize = 1 << 20;

/// One run's inputs.
struct Inputs<T> {
    data: Vec<T>,
    payload: Bytes,
}

impl<T: BenchElem> Inputs<T> {
    /// The inputs, written into `into` (its allocation is reused when large enough).
    fn new(a: &BenchArgs, r: u32, n: u32, count: usize, into: Vec<T>) -> Self {
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

/// One run: prepare the inputs, barrier, time the operation; then, on the `last` run,
/// check the output.
async fn once<T: BenchElem, C: Rank>(
    c: &C,
    a: &BenchArgs,
    count: usize,
    base: Option<&Inputs<T>>,
    spare: Vec<T>,
    last: bool,
) -> Result<(Duration, Result<(), String>, Vec<T>), C::Error> {
    let (r, n) = (c.rank(), c.world_size());
    let op = a.redop.op();
    let root = a.root;
    // Made before the barrier, so the timing sees the collective only.
    let Inputs {
        data: prepared,
        payload,
    } = match base {
        Some(base) => Inputs {
            data: {
                let mut data = spare;
                data.clear();
                data.extend_from_slice(&base.data);
                data
            },
            payload: base.payload.clone(),
        },
        None => Inputs::new(a, r, n, count, spare),
    };
    c.barrier().await?;
    let started = Instant::now();
    let out: Vec<T> = match a.op {
        Op::Allreduce => c.all_reduce_start(prepared, op).await?,
        Op::Broadcast => c.broadcast_start(prepared, root).await?,
        Op::Reduce => c.reduce_start(prepared, op, root).await?,
        Op::Allgather => c.all_gather_in_place_start(prepared).await?,
        Op::Reducescatter => c.reduce_scatter_start(prepared, op).await?,
        Op::Gather => c.gather_start(prepared, root).await?,
        Op::Scatter => c.scatter_start(prepared, count, root).await?,
        Op::Alltoall => c.all_to_all_start(prepared).await?,
        Op::Scan => c.scan_start(prepared, op).await?,
        Op::Barrier => {
            c.barrier().await?;
            Vec::new()
        }
        Op::Sendrecv => {
            // Messages above one frame go as several (see SENDRECV_PIECE).
            let (to, from) = ((r + 1) % n, (r + n - 1) % n);
            let sends: Vec<_> = pieces(&payload).map(|p| c.send_start(to, 0, p)).collect();
            let mut got = Vec::with_capacity(payload.len());
            for _ in pieces(&payload) {
                got.extend_from_slice(&c.recv(from, 0).await?);
            }
            for s in sends {
                s.await?;
            }
            let elapsed = started.elapsed();
            let check = if !last || got == input_bytes(from, count * T::SIZE) {
                Ok(())
            } else {
                Err(format!("rank {r}: sendrecv payload differs"))
            };
            return Ok((elapsed, check, Vec::new()));
        }
    };
    let elapsed = started.elapsed();
    let check = if last {
        verify::<T>(a.op, op, r, n, root, count, &out)
    } else {
        Ok(())
    };
    Ok((elapsed, check, out))
}

/// sendrecv sends a size above this as several messages of this size: one message must fit
/// one frame of the core (16 MiB by default, `Client::max_message`).
const SENDRECV_PIECE: usize = 4 << 20;

/// The messages of one sendrecv (at least one, possibly empty).
fn pieces(payload: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let n = payload.len().div_ceil(SENDRECV_PIECE).max(1);
    (0..n).map(move |i| {
        let start = (i * SENDRECV_PIECE).min(payload.len());
        let end = ((i + 1) * SENDRECV_PIECE).min(payload.len());
        payload.slice(start..end)
    })
}

/// Bytes for sendrecv: depend on the sender and the index.
fn input_bytes(r: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (r as u8).wrapping_mul(37))
        .collect()
}

fn verify<T: BenchElem>(
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

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
        Dtype::I8 => "i8",
        Dtype::U8 => "u8",
        Dtype::I32 => "i32",
        Dtype::U32 => "u32",
        Dtype::I64 => "i64",
        Dtype::U64 => "u64",
    }
}

fn op_name(op: Op) -> String {
    format!("{op:?}").to_ascii_lowercase()
}

fn reduces(op: Op) -> bool {
    matches!(
        op,
        Op::Allreduce | Op::Reduce | Op::Reducescatter | Op::Scan
    )
}

fn rooted(op: Op) -> bool {
    matches!(op, Op::Broadcast | Op::Reduce | Op::Gather | Op::Scatter)
}

fn header(a: &BenchArgs, n: usize, driver: &str) {
    println!(
        "# nexar bench: {}, {n} ranks in {driver}, dtype {}, up to {} timed runs ({} warmup) per size, budget {} B per size",
        op_name(a.op),
        dtype_name(a.dtype),
        a.iters(),
        a.warmup(),
        a.budget_bytes
    );
    println!("# time: median over runs of the max over ranks (barrier before each run); busbw = algbw x {}", match a.op {
        Op::Allreduce => "2(n-1)/n",
        Op::Reducescatter | Op::Allgather | Op::Alltoall | Op::Gather | Op::Scatter => "(n-1)/n",
        Op::Barrier => "0",
        _ => "1",
    });
    println!("#");
    println!(
        "# {:>10} {:>12} {:>6} {:>6} {:>5} {:>11} {:>8} {:>8}  check",
        "size", "count", "type", "redop", "root", "time", "algbw", "busbw"
    );
    println!(
        "# {:>10} {:>12} {:>6} {:>6} {:>5} {:>11} {:>8} {:>8}",
        "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)"
    );
}

fn print_row(a: &BenchArgs, n: usize, driver: &str, row: &Row) {
    if a.json {
        println!(
            "{{\"op\":\"{}\",\"ranks\":{n},\"driver\":\"{driver}\",\"bytes\":{},\"count\":{},\"dtype\":\"{}\",\"time_us\":{:.3},\"algbw_gbps\":{:.6},\"busbw_gbps\":{:.6},\"check\":{}}}",
            op_name(a.op),
            row.bytes,
            row.count,
            dtype_name(a.dtype),
            row.time_us,
            row.algbw,
            row.busbw,
            json_string(&row.check)
        );
    } else {
        let redop = if reduces(a.op) {
            format!("{:?}", a.redop).to_ascii_lowercase()
        } else {
            "none".into()
        };
        let root = if rooted(a.op) { a.root as i64 } else { -1 };
        println!(
            "  {:>10} {:>12} {:>6} {:>6} {:>5} {:>11.1} {:>8.3} {:>8.3}  {}",
            row.bytes,
            row.count,
            dtype_name(a.dtype),
            redop,
            root,
            row.time_us,
            row.algbw,
            row.busbw,
            row.check
        );
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8"), Ok(8));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn shapes_follow_nccl_tests() {
        assert_eq!(shape(Op::Allreduce, 8, 4, 4), (2, 8, 2));
        assert_eq!(shape(Op::Allgather, 8, 4, 4), (1, 16, 4));
        assert_eq!(
            shape(Op::Allgather, 1 << 20, 4, 4),
            (1 << 16, 1 << 20, 1 << 18)
        );
        assert_eq!(bus_factor(Op::Allreduce, 4), 1.5);
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }

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
