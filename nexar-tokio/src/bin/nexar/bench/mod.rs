//! `nexar ... bench OP`: an nccl-tests-style sweep of one collective, run by every rank.
//!
//! Method (the same as `shared/peers/coll_bench.c`, so the numbers compare):
//! - sizes double from `--min-bytes` to `--max-bytes`; `size` is the largest buffer a
//!   rank holds, as in nccl-tests (the whole output for allgather and gather, the whole
//!   input for reducescatter, scatter's root and alltoall), rounded to whole blocks;
//! - per size: `warmup` untimed runs, then `iters` timed runs, where
//!   `iters = clamp(budget / size, 10, 200)` as coll_bench.c's (1000 timed and 50 untimed
//!   barriers), and the warmup is cut by the budget too, so a 64 MiB row does not take
//!   minutes; the first size's warmup is [`FIRST_WARMUP`] runs unless `--warmup` is given;
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

mod check;
mod output;

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use half::{bf16, f16};
use nexar_tokio::{CommandError, ReduceOp};

use crate::rank::Rank;
use check::{input_bytes, verify, BenchElem, Inputs, KEEP_INPUTS_BYTES};
use output::{header, print_row};

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
    /// barrier, as `coll_bench.c`, and 1000 for the first size.
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

    /// Untimed runs before the size at `index` of the sweep, before the budget cuts them.
    fn warmup(&self, index: usize) -> usize {
        let per_size = if self.op == Op::Barrier { 50 } else { 5 };
        self.warmup
            .unwrap_or(if index == 0 { FIRST_WARMUP } else { per_size })
    }
}

/// Default warmup of a sweep's first size. After formation, whose handshakes leave the
/// threads idle for moments, this VM's vCPUs take tens of milliseconds of load to come
/// back to full speed (runs 5-25 after formation took 88-260 µs at 8 B in 4 sweeps of
/// 16, and more often after a 50 ms sleep), while coll_bench.c's ranks busy-poll and never
/// idle. Five warmups left the first row (8 B) at 63-100 µs in 3 sweeps of 10 while the
/// rows after it took 56-59; with 1000 (about 60 ms at 8 B), at most 59 in 10.
const FIRST_WARMUP: usize = 1000;

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
    for (index, (count, bytes, count_col)) in sizes.into_iter().enumerate() {
        let per = bytes.max(1);
        let iters = (a.budget_bytes / per)
            .max(a.min_iters)
            .min(a.iters().max(1));
        let warmup = (a.budget_bytes / 4 / per).max(1).min(a.warmup(index));
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

    fn args(line: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            bench: BenchArgs,
        }
        <Line as clap::Parser>::parse_from(std::iter::once("bench").chain(line.iter().copied()))
            .bench
    }

    #[test]
    fn the_first_size_warms_up_longer_unless_told() {
        let a = args(&["allreduce"]);
        assert_eq!(
            (a.warmup(0), a.warmup(1), a.warmup(7)),
            (FIRST_WARMUP, 5, 5)
        );
        let b = args(&["barrier"]);
        assert_eq!((b.warmup(0), b.warmup(1)), (FIRST_WARMUP, 50));
        let c = args(&["allreduce", "--warmup", "0"]);
        assert_eq!((c.warmup(0), c.warmup(3)), (0, 0));
    }
}
