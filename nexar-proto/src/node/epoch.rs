//! Entering an epoch on a worker, whichever way it came (a recovery's verdict or a
//! checkpoint's agreement): the per-epoch layers rebuilt on the new membership, the mesh
//! settled, and what waited for the change completed or started.

use std::time::Instant;

use super::motion::State;
use super::{Node, Role};
use crate::collective::exec::Executor;
use crate::config::RecoveryPolicy;
use crate::error::OpError;
use crate::event::Outcome;
use crate::p2p::P2p;

impl Node {
    /// A joiner still meshing when the epoch changed may have been waiting only for links
    /// to ranks now gone: it is ready then.
    pub(super) fn settle_mesh(&mut self, now: Instant) {
        let actions = match &mut self.role {
            Role::Worker(w) => w.mesh_settled(),
            Role::Seed { .. } => Vec::new(),
        };
        self.apply(now, actions);
    }

    /// Rebuild the per-epoch layers for the membership the worker now holds; `map` takes
    /// old ranks to new ones (for what we still suspect).
    pub(super) fn enter_epoch(
        &mut self,
        now: Instant,
        map: &std::collections::BTreeMap<u32, u32>,
        reset_p2p: bool,
    ) {
        let Some((me, world, epoch)) = self.membership_now() else {
            return;
        };
        if let Role::Worker(w) = &self.role {
            self.motion.liveness.retain(&w.live_conns());
        }
        self.motion.suspected = self
            .motion
            .suspected
            .iter()
            .filter_map(|r| map.get(r).copied())
            .collect();
        // Unmatched point-to-point messages belonged to the old numbering (split
        // communicators too): once ranks move, nothing of them is meaningful.
        if reset_p2p {
            for op in self.p2p.take_all_posted() {
                self.complete(op, Err(OpError::EpochChanged { epoch }));
            }
            self.p2p = P2p::new(self.p2p.max_len());
            self.rpc_reset(&OpError::EpochChanged { epoch });
        } else {
            // The world's ranks stay, but split communicators end with the epoch: their
            // unclaimed messages and receives go (and their bytes stop holding back
            // their senders' streams).
            for op in self.p2p.drop_split_comms() {
                self.complete(op, Err(OpError::EpochChanged { epoch }));
            }
            for rank in 0..world {
                self.resume_reading(rank);
            }
        }
        if let Role::Worker(w) = &self.role {
            for conn in w.live_conns() {
                self.motion.liveness.track(conn, now);
            }
        }
        let config = self.exec_config.clone();
        self.exec = Some(Executor::new(me, world, epoch, config, now));
        self.motion.state = State::Normal;
    }

    /// After an epoch change: complete `Recover`s, recover again if a suspect is still a
    /// member, else start what was held.
    pub(super) fn finish_change(&mut self, now: Instant) {
        let Some((me, world, epoch)) = self.membership_now() else {
            return;
        };
        for op in std::mem::take(&mut self.motion.recover_ops) {
            self.complete(
                op,
                Ok(Outcome::Checkpoint {
                    epoch,
                    rank: Some(me),
                    world_size: world,
                }),
            );
        }
        if !self.motion.suspected.is_empty() && self.motion.policy != RecoveryPolicy::Manual {
            // A second failure found during the last round, decided after it: go again.
            self.start_recovery(now, None);
            return;
        }
        // A checkpoint request was for the old epoch: it goes again for this one.
        if let Some(cp) = &mut self.motion.checkpoint {
            cp.sent = false;
        }
        self.release_held(now);
    }
}
