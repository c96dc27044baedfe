//! Commands: what the application asks a node to do, and starting each one.
//!
//! A module of its own because the command vocabulary (`Command`) and the code that
//! admits and starts a command on the current membership are one concept, apart from
//! the node's construction, getters and run-loop outputs (`mod.rs`). Commands held
//! behind a checkpoint are started here too, later (`checkpoint.rs`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Node;
use crate::codec::{CollectiveKind, ReduceOp, RpcStatus};
use crate::collective::{Buffer, CommId};
use crate::error::CommandError;
use crate::event::{Event, OpId, Outcome};
use crate::rpc::RpcRequestId;

/// What a node is asked to do. Each accepted command returns an [`OpId`]; its result
/// arrives later as [`Event::Completed`] with that id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Send `data` to rank `to` of `comm` under `tag`. Completes with `Outcome::Sent`
    /// once QUIC has taken the bytes. Messages on different communicators never match
    /// each other, whatever their tags.
    Send {
        /// The communicator (`CommId::WORLD` for world ranks).
        comm: CommId,
        /// Destination rank within `comm` (may be our own).
        to: u32,
        /// Matching tag.
        tag: u64,
        /// The payload.
        data: Bytes,
    },
    /// Receive the next message from rank `from` of `comm` under `tag` (in the order
    /// sent on `comm`).
    Recv {
        /// The communicator (`CommId::WORLD` for world ranks).
        comm: CommId,
        /// Source rank within `comm` (may be our own).
        from: u32,
        /// Matching tag.
        tag: u64,
    },
    /// Run a collective on a communicator; completes with `Outcome::Collective`.
    ///
    /// `count` means, per kind: the buffer's elements (allreduce, reduce, broadcast, scan,
    /// exclusive scan); each rank's block (allgather, reduce-scatter, gather, scatter,
    /// all-to-all); 0 (barrier). `input` holds what this rank contributes: `count`
    /// elements, or `size × count` for reduce-scatter and all-to-all and for the scatter
    /// root, nothing for broadcast and scatter non-roots and barrier. Where the output is
    /// larger (all-gather, gather at the root, broadcast and scatter away from the root),
    /// `input` may instead be the output-sized buffer with this rank's contribution
    /// already in its place (MPI_IN_PLACE): it is received into, and the output is
    /// neither allocated nor zero-filled ([`Layout::in_place`](crate::collective::plan::Layout::in_place)).
    /// Every rank must issue the same
    /// collectives in the same order on a communicator (as in MPI and NCCL); if they do
    /// not, every rank gets `OpError::Mismatch` rather than a hang.
    Collective {
        /// The communicator (`CommId::WORLD` for all ranks).
        comm: CommId,
        /// Which collective.
        kind: CollectiveKind,
        /// The reduction (`ReduceOp::None` for kinds that do not reduce).
        op: ReduceOp,
        /// The root rank within the communicator (ignored where there is none).
        root: u32,
        /// Elements per rank, as above.
        count: usize,
        /// This rank's input.
        input: Buffer,
        /// Fail with `OpError::Timeout` if not finished within this; `None`: the node's
        /// `collective_timeout`. Per call, because one step of a job (a barrier before a
        /// checkpoint, a probe of the cluster's health) may deserve a shorter wait than
        /// the bulk of its collectives.
        timeout: Option<Duration>,
    },
    /// MPI_Comm_split over `comm`: ranks passing the same `color` form a new
    /// communicator, ordered by (`key`, parent rank); `None` joins none.
    Split {
        /// The parent communicator.
        comm: CommId,
        /// The group to join, if any.
        color: Option<u32>,
        /// Ordering within the group.
        key: i64,
    },
    /// Start (or join) a recovery round now: under the manual policy, after
    /// `Event::PeerDown`. Completes with `Outcome::Checkpoint` on the new epoch; with no
    /// rank found down in this epoch (the round for that failure already moved us on),
    /// at once, on the current one.
    Recover,
    /// Every rank calls this at the same point: pending joins and leaves take effect in
    /// one agreed epoch change. It waits for this rank's collectives in flight to finish
    /// (so a resize never cuts one), and commands issued after it wait for the new world.
    /// Completes with `Outcome::Checkpoint` once the new mesh is up.
    Checkpoint,
    /// Leave the cluster at the next checkpoint (this counts as our call to it), without
    /// tripping anyone's failure detection. Completes with `Outcome::Checkpoint { rank:
    /// None, .. }`; the node does nothing more.
    Leave,
    /// Call the function registered under `fn_id` on rank `to` (may be our own) with
    /// `payload`. Completes with `Outcome::Rpc` carrying the answer, or fails with
    /// `OpError::RpcFailed` (the target answered another status: unknown function,
    /// handler error, overloaded), `OpError::PeerLost` (the target is gone) or
    /// `OpError::RpcTimeout` (no answer within `timeout`, or `NodeConfig::rpc_timeout`
    /// if `None`).
    Rpc {
        /// The target rank.
        to: u32,
        /// The function to call there.
        fn_id: u32,
        /// The arguments (at most `Node::max_rpc_payload` bytes).
        payload: Bytes,
        /// How long to wait for the answer (`OpError::RpcTimeout` past it); `None`: the
        /// node's `NodeConfig::rpc_timeout`.
        timeout: Option<Duration>,
    },
    /// Answer the request of an `Event::RpcRequest`. `status` other than `Ok` fails the
    /// caller's call with `OpError::RpcFailed` carrying `payload`. Completes with
    /// `Outcome::Sent` once QUIC has taken the answer; a refused answer (too large,
    /// backpressure) leaves the request pending, to be answered again.
    RpcRespond {
        /// The `request` of the event.
        request: RpcRequestId,
        /// The outcome to report.
        status: RpcStatus,
        /// The result, or the error detail (at most `Node::max_rpc_payload` bytes).
        payload: Bytes,
    },
}

impl Node {
    /// Start an operation. Errors mean nothing was started.
    ///
    /// After `Command::Checkpoint` commands are accepted and held; they start on the new
    /// world, in order, once it is agreed. During a recovery they are refused
    /// (`CommandError::Recovering`).
    pub fn command(&mut self, now: Instant, command: Command) -> Result<OpId, CommandError> {
        let now = self.clock(now);
        let membership = matches!(
            command,
            Command::Recover | Command::Checkpoint | Command::Leave
        );
        // Recover, checkpoint and leave are taken during a recovery too: they wait for it.
        let runnable = match self.admit() {
            Err(CommandError::Recovering) if membership => false,
            other => other?,
        };
        self.membership_for(&command)?;
        let op = self.op();
        let result = if matches!(command, Command::Recover) {
            self.recover(now, op)
        } else if matches!(command, Command::Checkpoint | Command::Leave) {
            self.checkpoint(op, matches!(command, Command::Leave))
        } else if runnable || matches!(command, Command::RpcRespond { .. }) {
            // An answer is not work on the next world: held behind our checkpoint it
            // would keep a caller that has not reached the checkpoint yet from ever
            // getting there.
            self.start(now, op, command)
        } else {
            self.hold(op, command);
            Ok(())
        };
        self.process(now);
        result.map(|()| op)
    }

    /// The membership `command` runs on. Work needs a ready node (its mesh complete); an
    /// answer and a recovery only need a rank: a joiner still meshing can be asked already
    /// (by a peer whose link to it is up), and it is told of a death (by the seed's call)
    /// while it waits for a link to the dead rank that will never come up.
    fn membership_for(&self, command: &Command) -> Result<(u32, u32, u64), CommandError> {
        match command {
            Command::RpcRespond { .. } | Command::Recover => {
                self.membership_now().ok_or(CommandError::NotReady)
            }
            _ => self.ready_membership(),
        }
    }

    /// Run a command under the id `op` on the current membership.
    pub(super) fn start(
        &mut self,
        now: Instant,
        op: OpId,
        command: Command,
    ) -> Result<(), CommandError> {
        let (me, world, epoch) = self.membership_for(&command)?;
        match command {
            Command::Send {
                comm,
                to,
                tag,
                data,
            } => {
                let peer = self.p2p_peer(comm, to, world)?;
                if self.start_send(now, op, (me, epoch), (peer, comm.0, tag), data)? {
                    self.events.push_back(Event::Completed {
                        op,
                        outcome: Ok(Outcome::Sent),
                    });
                }
            }
            Command::Recv { comm, from, tag } => {
                let peer = self.p2p_peer(comm, from, world)?;
                if let Some(event) = self.p2p.post(op, (peer, comm.0, tag), from) {
                    self.events.push_back(event);
                }
                // Claiming a message, whole or still arriving in parts, releases budget.
                self.resume_reading(peer);
            }
            Command::Collective {
                comm,
                kind,
                op: reduce,
                root,
                count,
                input,
                timeout,
            } => {
                let mut out = Vec::new();
                let exec = self.exec.as_mut().ok_or(CommandError::NotReady)?;
                let call = (kind, reduce, root, count);
                exec.start(now, op, comm, call, input, timeout, &mut out)?;
                self.apply_exec(out);
            }
            Command::Split { comm, color, key } => {
                let mut out = Vec::new();
                let exec = self.exec.as_mut().ok_or(CommandError::NotReady)?;
                exec.split(now, op, comm, color, key, &mut out)?;
                self.apply_exec(out);
            }
            Command::Rpc {
                to,
                fn_id,
                payload,
                timeout,
            } => {
                check_rank(to, world)?;
                self.start_rpc(now, op, me, to, fn_id, payload, timeout)?;
            }
            Command::RpcRespond {
                request,
                status,
                payload,
            } => self.rpc_respond(op, me, request, status, payload)?,
            Command::Recover => self.recover(now, op)?,
            Command::Checkpoint => self.checkpoint(op, false)?,
            Command::Leave => self.checkpoint(op, true)?,
        }
        Ok(())
    }
}

impl Node {
    /// Send `data` to world rank `key.0` on communicator `key.1` under tag `key.2`, from
    /// world rank `me` in `epoch`. Returns whether the send is complete already (a
    /// message in parts completes `op` once its last part is out).
    fn start_send(
        &mut self,
        now: Instant,
        op: OpId,
        (me, epoch): (u32, u64),
        key: (u32, u64, u64),
        data: Bytes,
    ) -> Result<bool, CommandError> {
        // A message over the maximum would be refused by the receiver and cut the
        // connection: refuse it here, typed, before anything is queued.
        let limit = self.max_message();
        if data.len() > limit {
            return Err(CommandError::MessageTooLarge {
                len: data.len(),
                limit,
            });
        }
        if key.0 == me {
            let seq = self.p2p.next_seq(key);
            self.deliver_tagged(now, key, seq, data);
            return Ok(true);
        }
        self.send_tagged(op, key, epoch, data)
    }

    /// The world rank of rank `rank` of `comm`, for a point-to-point command.
    fn p2p_peer(&self, comm: CommId, rank: u32, world: u32) -> Result<u32, CommandError> {
        if comm == CommId::WORLD {
            check_rank(rank, world)?;
            return Ok(rank);
        }
        let exec = self.exec.as_ref().ok_or(CommandError::NotReady)?;
        let members = exec
            .comm_members(comm)
            .ok_or(CommandError::UnknownCommunicator { comm })?;
        members
            .get(rank as usize)
            .copied()
            .ok_or(CommandError::NotInCommunicator {
                comm,
                rank,
                size: members.len() as u32,
            })
    }
}

fn check_rank(rank: u32, world_size: u32) -> Result<(), CommandError> {
    if rank < world_size {
        Ok(())
    } else {
        Err(CommandError::UnknownRank { rank, world_size })
    }
}
