//! What each issued command must produce, judged against the reference.

use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::RpcStatus;
use nexar_proto::{OpError, Outcome};

use super::program::{echo, fail_detail, FN_ECHO, FN_FAIL, FN_STALL, FN_UNKNOWN};
use crate::collectives::{buffer, Case};

/// An operation in flight and what it must end with.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A collective: this rank's reference output.
    Coll {
        /// The case.
        case: Case,
        /// Our rank in the communicator.
        rank: u32,
        /// Its size.
        size: u32,
    },
    /// A send (or an RPC answer) handed to QUIC.
    Sent,
    /// A receive: exactly this message.
    Recv {
        /// Sender.
        from: u32,
        /// Tag.
        tag: u64,
        /// Payload.
        data: Bytes,
    },
    /// An RPC call.
    Rpc {
        /// Function.
        fn_id: u32,
        /// Arguments.
        payload: Bytes,
        /// Caller's deadline.
        timeout: Option<Duration>,
        /// The stall handler's delay.
        stall: Duration,
    },
    /// A split: our (rank, size) in our group, or `None` without a colour.
    Split {
        /// Expected membership.
        want: Option<(u32, u32)>,
    },
    /// A checkpoint (`leave`: we leave).
    Checkpoint {
        /// Whether we leave.
        leave: bool,
    },
    /// A recovery we asked for.
    Recover,
}

impl Expect {
    /// What kind of operation, for messages.
    pub fn label(&self) -> &'static str {
        match self {
            Expect::Coll { .. } => "collective",
            Expect::Sent => "send",
            Expect::Recv { .. } => "recv",
            Expect::Rpc { .. } => "rpc",
            Expect::Split { .. } => "split",
            Expect::Checkpoint { .. } => "checkpoint",
            Expect::Recover => "recover",
        }
    }

    /// Judge an outcome: `Ok(true)` correct, `Ok(false)` a typed failure (to be excused
    /// by a fault or reported), `Err` a wrong result (always a violation).
    pub fn judge(&self, outcome: &Result<Outcome, OpError>) -> Result<bool, String> {
        let out = match outcome {
            Ok(o) => o,
            Err(e) => return self.judge_error(e),
        };
        match (self, out) {
            (Expect::Coll { case, rank, size }, Outcome::Collective { buffer: got }) => {
                let want = buffer(case.dtype, &case.expected_output(*rank, *size));
                let same = got.dtype() == want.dtype()
                    && got.encode_range(0..got.len()) == want.encode_range(0..want.len());
                if same {
                    Ok(true)
                } else {
                    Err(format!(
                        "{case:?} rank {rank}/{size}: got {got:?}, reference {want:?}"
                    ))
                }
            }
            (Expect::Sent, Outcome::Sent) => Ok(true),
            (
                Expect::Recv { from, tag, data },
                Outcome::Received {
                    from: f,
                    tag: t,
                    data: d,
                },
            ) => {
                if f == from && t == tag && d == data {
                    Ok(true)
                } else {
                    Err(format!(
                        "receive from {from} tag {tag:#x}: got {} B from {f} tag {t:#x} \
                         (first bytes {:?}), want {} B (first bytes {:?})",
                        d.len(),
                        &d[..d.len().min(16)],
                        data.len(),
                        &data[..data.len().min(16)]
                    ))
                }
            }
            (
                Expect::Rpc {
                    fn_id,
                    payload,
                    timeout,
                    stall,
                },
                Outcome::Rpc { data },
            ) => {
                let answers = matches!(*fn_id, FN_ECHO | FN_STALL);
                if !answers {
                    return Err(format!("rpc fn {fn_id} answered Ok"));
                }
                if *fn_id == FN_STALL && timeout.is_some_and(|t| *stall > t + SLACK) {
                    return Err(format!(
                        "rpc stalled {stall:?} answered within its timeout {timeout:?}"
                    ));
                }
                if *data == echo(payload) {
                    Ok(true)
                } else {
                    Err(format!(
                        "rpc answer {data:?} does not belong to call {payload:?}"
                    ))
                }
            }
            (Expect::Split { want }, Outcome::Split { comm, .. }) => {
                let got = comm.map(|(_, r, s)| (r, s));
                if got == *want {
                    Ok(true)
                } else {
                    Err(format!("split: got {comm:?}, want (rank, size) {want:?}"))
                }
            }
            (Expect::Checkpoint { leave }, Outcome::Checkpoint { rank, .. }) => {
                if rank.is_none() == *leave {
                    Ok(true)
                } else {
                    Err(format!(
                        "checkpoint (leave: {leave}) completed with rank {rank:?}"
                    ))
                }
            }
            (Expect::Recover, Outcome::Checkpoint { .. }) => Ok(true),
            (e, o) => Err(format!("{} completed with {o:?}", e.label())),
        }
    }

    fn judge_error(&self, e: &OpError) -> Result<bool, String> {
        let Expect::Rpc {
            fn_id,
            payload,
            timeout,
            stall,
        } = self
        else {
            return Ok(false);
        };
        match (e, *fn_id) {
            (OpError::RpcFailed { status, detail, .. }, FN_FAIL) => {
                if *status == RpcStatus::HandlerError && *detail == fail_detail(payload) {
                    Ok(true)
                } else {
                    Err(format!("failing rpc: {e:?}"))
                }
            }
            (OpError::RpcFailed { status, .. }, FN_UNKNOWN) => {
                if *status == RpcStatus::UnknownFunction {
                    Ok(true)
                } else {
                    Err(format!("unknown-function rpc: {e:?}"))
                }
            }
            (OpError::RpcTimeout { .. }, FN_STALL) => match timeout {
                Some(t) if *stall + SLACK >= *t => Ok(true),
                _ => Ok(false),
            },
            // The callee stopped serving (its cluster aborted): a failure that needs a
            // fault to explain it, like a lost peer.
            (
                OpError::RpcFailed {
                    status: RpcStatus::ShuttingDown,
                    ..
                },
                _,
            ) => Ok(false),
            (OpError::RpcFailed { .. }, _) => Err(format!("rpc fn {fn_id}: {e:?}")),
            _ => Ok(false),
        }
    }
}

/// Answers within this much of a deadline may land on either side of it.
const SLACK: Duration = Duration::from_millis(500);
