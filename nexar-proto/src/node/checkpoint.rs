//! Checkpoints and leaves on a worker: the `checkpoint()` / `leave()` request, the
//! commands held behind it, and moving to the epoch the seed agrees.
//!
//! A module of its own, apart from failure detection and recovery (`motion.rs`), because
//! it is the planned half of membership in motion and follows other rules: every rank
//! calls it at the same point of its program, so nothing is failed; the request waits
//! for our collectives in flight, commands issued after it are held and start in order
//! on the new world, and it completes once the joiners' links are up. The state it keeps
//! (`Checkpoint`, the held commands) lives in `Motion`, which recovery also clears.

use std::time::Instant;

use super::motion::State;
use super::{Command, Node, Role};
use crate::codec::Message;
use crate::error::{CommandError, OpError};
use crate::event::{Event, OpId, Outcome};
use crate::transport::StreamClass;

/// A `checkpoint()` or `leave()` on its way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkpoint {
    pub(super) op: OpId,
    leave: bool,
    /// The request is with the seed (sent once our collectives in flight are done).
    pub(super) sent: bool,
    /// The agreement is applied; waiting for the joiners' connections.
    pub(super) meshing: bool,
}

impl Node {
    pub(super) fn hold(&mut self, op: OpId, command: Command) {
        self.motion.held.push_back((op, command));
    }

    /// `Command::Checkpoint` / `Command::Leave`.
    pub(super) fn checkpoint(&mut self, op: OpId, leave: bool) -> Result<(), CommandError> {
        if self.motion.checkpoint.is_some() {
            return Err(CommandError::MembershipBusy);
        }
        self.motion.checkpoint = Some(Checkpoint {
            op,
            leave,
            sent: false,
            meshing: false,
        });
        Ok(())
    }

    /// Send the checkpoint request once nothing of ours is in flight and no recovery is
    /// under way (called after every input).
    pub(super) fn drive_checkpoint(&mut self) {
        let Some(cp) = self.motion.checkpoint else {
            return;
        };
        if cp.sent || !matches!(self.motion.state, State::Normal) {
            return;
        }
        if self.exec.as_ref().is_some_and(|e| e.in_flight() > 0) {
            return;
        }
        let Some((me, _, epoch)) = self.membership_now() else {
            return;
        };
        let Role::Worker(w) = &self.role else {
            return;
        };
        let Some(conn) = w.seed_conn() else {
            return;
        };
        self.motion.checkpoints += 1;
        let msg = if cp.leave {
            Message::Leave(crate::codec::Leave { epoch, rank: me })
        } else {
            Message::CheckpointRequest(crate::codec::CheckpointRequest {
                epoch,
                rank: me,
                checkpoint: self.motion.checkpoints,
            })
        };
        if self
            .transport
            .send(conn, StreamClass::Control, msg.to_frame())
            .is_ok()
        {
            self.motion.checkpoint = Some(Checkpoint { sent: true, ..cp });
        }
    }

    /// A mesh link came up: a checkpoint may be complete.
    pub(super) fn mesh_changed(&mut self, now: Instant) {
        let Some(cp) = self.motion.checkpoint else {
            return;
        };
        let done = matches!(&self.role, Role::Worker(w) if w.all_connected());
        if cp.meshing && done {
            self.finish_checkpoint(now);
        }
    }

    fn finish_checkpoint(&mut self, now: Instant) {
        let Some(cp) = self.motion.checkpoint.take() else {
            return;
        };
        if let Some((me, world, epoch)) = self.membership_now() {
            self.complete(
                cp.op,
                Ok(Outcome::Checkpoint {
                    epoch,
                    rank: Some(me),
                    world_size: world,
                }),
            );
        }
        self.release_held(now);
    }

    /// The seed's checkpoint agreement.
    pub(super) fn on_agreed(&mut self, now: Instant, agreed: crate::codec::CheckpointAgreed) {
        let Some((me, _, epoch)) = self.membership_now() else {
            return;
        };
        if agreed.old_epoch != epoch || !matches!(self.motion.state, State::Normal) {
            self.motion.stale += 1;
            return;
        }
        if agreed.leavers.contains(&me) {
            let op = self.motion.checkpoint.take().map(|c| c.op);
            if let Some(op) = op {
                self.complete(
                    op,
                    Ok(Outcome::Checkpoint {
                        epoch: agreed.new_epoch,
                        rank: None,
                        world_size: agreed.new_world_size,
                    }),
                );
            }
            self.stop(now, crate::membership::CLOSE_LEFT, None);
            return;
        }
        if agreed.new_epoch == epoch {
            // Nothing was pending: the checkpoint is a no-op agreement.
            self.finish_checkpoint(now);
            return;
        }
        let map: std::collections::BTreeMap<u32, u32> = agreed
            .members
            .iter()
            .filter_map(|m| m.old_rank.map(|o| (o, m.new_rank)))
            .collect();
        let joiners: Vec<(u32, u32, std::net::SocketAddr)> = agreed
            .members
            .iter()
            .filter(|m| m.old_rank.is_none())
            .map(|m| (m.new_rank, m.member, m.addr))
            .collect();
        if !map.contains_key(&me) {
            self.motion.stale += 1;
            return;
        }
        match &mut self.role {
            Role::Worker(w) => {
                w.renumber(&map, agreed.new_epoch);
                w.add_joiners(&joiners);
            }
            Role::Seed { .. } => return,
        }
        if !agreed.leavers.is_empty() {
            // Ranks moved: receives posted under the old numbering are withdrawn.
            for op in self.p2p.take_all_posted() {
                self.complete(
                    op,
                    Err(OpError::EpochChanged {
                        epoch: agreed.new_epoch,
                    }),
                );
            }
        }
        self.enter_epoch(now, &map, !agreed.leavers.is_empty());
        let (rank, world) = self.membership_now().map_or((0, 0), |(r, w, _)| (r, w));
        self.events.push_back(Event::EpochChanged {
            epoch: agreed.new_epoch,
            rank,
            world_size: world,
            dead: Vec::new(),
            left: agreed.leavers.clone(),
            joined: joiners.iter().map(|j| j.0).collect(),
        });
        self.settle_mesh(now);
        if let Some(cp) = &mut self.motion.checkpoint {
            cp.meshing = true;
        }
        self.mesh_changed(now);
    }

    /// Start held commands in order, unless a checkpoint is still under way.
    pub(super) fn release_held(&mut self, now: Instant) {
        while matches!(self.motion.state, State::Normal) && self.motion.checkpoint.is_none() {
            let Some((op, command)) = self.motion.held.pop_front() else {
                break;
            };
            if let Err(error) = self.start(now, op, command) {
                self.complete(op, Err(OpError::Refused { error }));
            }
        }
    }
}
