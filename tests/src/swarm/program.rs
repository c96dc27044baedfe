//! The workload: what every rank does, one segment at a time, as applications issue it.
//!
//! A segment is a list of steps on a fixed world (every rank runs the same list, in the
//! same order, each at its own pace); it ends with a checkpoint (joins and leaves), or
//! is cut short when a failure changes the world. Each step says, per rank, which
//! commands to issue and what each must produce, from a sequential reference that shares
//! nothing with the code under test.

use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};

use super::gen::{stream, STEPS};
use crate::collectives::Case;
use crate::support::{tagged_payload, TestRng};

/// RPC functions every worker registers, and one it does not.
pub const FN_ECHO: u32 = 1;
/// Answers `HandlerError`.
pub const FN_FAIL: u32 = 2;
/// Answers (like echo) only after a delay.
pub const FN_STALL: u32 = 3;
/// Never registered: the node answers `UnknownFunction`.
pub const FN_UNKNOWN: u32 = 4;

/// A tagged message of a point-to-point step.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Sender rank.
    pub from: u32,
    /// Receiver rank.
    pub to: u32,
    /// Tag.
    pub tag: u64,
    /// Payload length (at least 16: the payload names itself).
    pub len: usize,
    /// Its index among the step's messages with the same (from, to, tag).
    pub index: u32,
}

impl Msg {
    /// The payload, as the receiver must get it.
    pub fn payload(&self) -> Bytes {
        tagged_payload(self.from, self.to, self.tag, self.index, self.len)
    }
}

/// An RPC call of an RPC step.
#[derive(Debug, Clone)]
pub struct Call {
    /// Caller rank.
    pub from: u32,
    /// Target rank.
    pub to: u32,
    /// Function.
    pub fn_id: u32,
    /// Arguments.
    pub payload: Bytes,
    /// The caller's deadline.
    pub timeout: Option<Duration>,
    /// For `FN_STALL`: how long the handler takes.
    pub stall: Duration,
}

/// The answer of the echo and stall handlers to `payload`: tied to the call.
pub fn echo(payload: &[u8]) -> Bytes {
    let mut v = vec![0xEC];
    v.extend(payload.iter().rev());
    v.into()
}

/// The error detail of the failing handler.
pub fn fail_detail(payload: &[u8]) -> Bytes {
    let mut v = b"fail:".to_vec();
    v.extend_from_slice(payload);
    v.into()
}

/// One step of a segment.
#[derive(Debug, Clone)]
pub enum Step {
    /// A collective on the world (`comm: None`) or on a group of an earlier split of this
    /// segment (`Some((split step, colour))`). `wait: false`: ranks go on without
    /// waiting for it (a non-blocking collective).
    Coll {
        /// Which communicator.
        comm: Option<(usize, u32)>,
        /// What to run (root and counts relative to the communicator).
        case: Case,
        /// Whether ranks wait for it before their next step.
        wait: bool,
    },
    /// Tagged sends and receives.
    P2p {
        /// The messages, in each sender's send order.
        msgs: Vec<Msg>,
    },
    /// RPC calls.
    Rpc {
        /// The calls.
        calls: Vec<Call>,
    },
    /// `Split` of the world: colour and key per rank.
    Split {
        /// Colour of each rank.
        colors: Vec<Option<u32>>,
        /// Key of each rank.
        keys: Vec<i64>,
    },
    /// Every rank checkpoints (the leavers leave), admitting `joiners` new workers.
    Checkpoint {
        /// Workers started before the segment, to be admitted here.
        joiners: u32,
        /// Ranks that leave.
        leavers: Vec<u32>,
    },
}

/// The members of colour `color` of split `colors`/`keys`, in their new rank order.
pub fn group(colors: &[Option<u32>], keys: &[i64], color: u32) -> Vec<u32> {
    let mut m: Vec<(i64, u32)> = (0..colors.len() as u32)
        .filter(|r| colors[*r as usize] == Some(color))
        .map(|r| (keys[r as usize], r))
        .collect();
    m.sort();
    m.into_iter().map(|(_, r)| r).collect()
}

/// A segment: its steps, drawn for a world of `n` ranks.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Which segment of the run (0, 1, ...).
    pub index: u64,
    /// World size.
    pub n: u32,
    /// The steps.
    pub steps: Vec<Step>,
    /// The membership epoch it runs in, once a rank entered it after a checkpoint.
    pub epoch: Option<u64>,
}

impl Segment {
    /// Draw segment `index` of `seed` for `n` ranks with `len` steps; it may end with a
    /// checkpoint that admits up to `room` joiners.
    pub fn generate(seed: u64, index: u64, n: u32, len: usize, room: u32) -> Segment {
        let mut r = stream(seed, STEPS ^ (index << 8));
        let mut steps = Vec::new();
        let mut splits: Vec<usize> = Vec::new();
        for i in 0..len {
            let step = match r.below(100) {
                0..=49 => {
                    let (comm, m) = match splits.last() {
                        Some(&s) if r.below(3) == 0 => {
                            let Step::Split { colors, keys } = &steps[s] else {
                                unreachable!("splits index split steps")
                            };
                            let c = r.below(3) as u32;
                            let m = group(colors, keys, c).len() as u32;
                            if m == 0 {
                                (None, n)
                            } else {
                                (Some((s, c)), m)
                            }
                        }
                        _ => (None, n),
                    };
                    Step::Coll {
                        comm,
                        case: case(&mut r, m),
                        wait: r.below(4) != 0,
                    }
                }
                50..=64 => Step::P2p {
                    msgs: msgs(&mut r, n, index, i),
                },
                65..=79 => Step::Rpc {
                    calls: calls(&mut r, n, index, i),
                },
                _ => {
                    splits.push(i);
                    Step::Split {
                        colors: (0..n)
                            .map(|_| (r.below(6) != 0).then(|| r.below(3) as u32))
                            .collect(),
                        keys: (0..n).map(|_| r.below(4) as i64 - 1).collect(),
                    }
                }
            };
            steps.push(step);
        }
        if r.below(3) == 0 {
            let joiners = if room > 0 {
                r.below(room as u64 + 1) as u32
            } else {
                0
            };
            let mut leavers: Vec<u32> = (0..n).filter(|_| r.below(6) == 0).collect();
            if leavers.len() as u32 == n {
                leavers.pop();
            }
            steps.push(Step::Checkpoint { joiners, leavers });
        }
        Segment {
            index,
            n,
            steps,
            epoch: None,
        }
    }
}

fn case(r: &mut TestRng, m: u32) -> Case {
    use CollectiveKind::*;
    const KINDS: [CollectiveKind; 11] = [
        AllReduce,
        Broadcast,
        Reduce,
        AllGather,
        ReduceScatter,
        Gather,
        Scatter,
        AllToAll,
        Scan,
        ExclusiveScan,
        Barrier,
    ];
    const DTYPES: [DType; 10] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::U8,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
    ];
    let kind = KINDS[r.below(11) as usize];
    let dtype = DTYPES[r.below(10) as usize];
    let reducing = matches!(
        kind,
        AllReduce | Reduce | ReduceScatter | Scan | ExclusiveScan
    );
    let float = matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16);
    let op = if !reducing {
        ReduceOp::None
    } else {
        // Exclusive scans have no identity the reference can write for float min/max.
        let ops: &[ReduceOp] = if kind == ExclusiveScan && float {
            &[ReduceOp::Sum, ReduceOp::Prod]
        } else {
            &[ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max]
        };
        ops[r.below(ops.len() as u64) as usize]
    };
    // Per-rank blocks shrink with the world so a 64-rank all-to-all stays small.
    let big = if m > 16 { 64 } else { 5000 };
    let count = match r.below(20) {
        0 => 0,
        1..=8 => 1 + r.below(8) as usize,
        9..=15 => 9 + r.below(300) as usize,
        _ => 300 + r.below(big) as usize,
    };
    Case {
        kind,
        dtype,
        op,
        root: r.below(m as u64) as u32,
        count: if kind == Barrier { 0 } else { count },
    }
}

fn msgs(r: &mut TestRng, n: u32, segment: u64, step: usize) -> Vec<Msg> {
    let base = (segment << 40) | ((step as u64) << 8);
    let mut out: Vec<Msg> = Vec::new();
    for _ in 0..1 + r.below(2 * n as u64) {
        let from = r.below(n as u64) as u32;
        let to = r.below(n as u64) as u32;
        let tag = base | r.below(3);
        let len = match r.below(10) {
            0..=5 => 16 + r.below(200) as usize,
            6..=8 => 1000 + r.below(5000) as usize,
            _ => 20_000 + r.below(100_000) as usize,
        };
        let index = out
            .iter()
            .filter(|m| m.from == from && m.to == to && m.tag == tag)
            .count() as u32;
        out.push(Msg {
            from,
            to,
            tag,
            len,
            index,
        });
    }
    out
}

fn calls(r: &mut TestRng, n: u32, segment: u64, step: usize) -> Vec<Call> {
    let mut out = Vec::new();
    for k in 0..1 + r.below(n as u64 + 1) {
        let fn_id = match r.below(10) {
            0..=5 => FN_ECHO,
            6 => FN_FAIL,
            7..=8 => FN_STALL,
            _ => FN_UNKNOWN,
        };
        let mut payload = format!("{segment}/{step}/{k}:").into_bytes();
        payload.resize(payload.len() + r.below(1500) as usize, b'x');
        out.push(Call {
            from: r.below(n as u64) as u32,
            to: r.below(n as u64) as u32,
            fn_id,
            payload: payload.into(),
            timeout: (r.below(2) == 0).then(|| Duration::from_millis(200 + r.below(2000))),
            stall: Duration::from_millis(20 + r.below(2500)),
        });
    }
    out
}
