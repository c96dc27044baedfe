//! The abort policy's end: a rank that stops for good, and how its peers learn it.
//!
//! Under `RecoveryPolicy::Abort` a lost rank ends the run, as MPI's default error handler
//! does. A rank that has not seen the failure itself must not wait without end on one
//! that stopped (a receive with no timeout, an RPC answer), so an aborting rank answers
//! what it holds and closes its links saying why, and its peers abort in turn.

use std::time::Instant;

use super::motion::State;
use super::{Node, Role};
use crate::config::RecoveryPolicy;
use crate::error::OpError;
use crate::event::{DownReason, Event};

impl Node {
    /// A peer told us it aborted because of `culprit` (see `abort`): under the abort
    /// policy we stop too, naming the same rank, so that no rank waits for one that will
    /// never act again. Under the other policies the closed link is a lost peer.
    pub(super) fn relayed_abort(&mut self, now: Instant, by: u32, culprit: u32) {
        let world = self.membership_now().map_or(0, |(_, w, _)| w);
        if self.motion.policy != RecoveryPolicy::Abort || culprit >= world {
            self.peer_down(now, by, DownReason::ConnectionLost);
            return;
        }
        if !matches!(self.motion.state, State::Normal) {
            return;
        }
        self.motion.suspected.insert(culprit);
        self.events.push_back(Event::PeerDown {
            rank: culprit,
            reason: DownReason::Relayed { by },
        });
        self.abort(now, culprit);
    }

    /// Stop for good because `rank` was lost. Every peer link is closed with
    /// `CLOSE_ABORTED` naming `rank`: a peer that has not seen the failure would
    /// otherwise wait on us without end (a receive with no timeout, an answer), and this
    /// way the whole world aborts, as MPI's default error handler does. The seed link
    /// stays: the seed decides nothing under this policy.
    pub(super) fn abort(&mut self, now: Instant, rank: u32) {
        self.motion.state = State::Aborted { rank };
        let mesh: Vec<crate::transport::ConnId> = match &self.role {
            Role::Worker(w) => {
                let seed = w.seed_conn();
                w.live_conns()
                    .into_iter()
                    .filter(|c| Some(*c) != seed)
                    .collect()
            }
            Role::Seed { .. } => Vec::new(),
        };
        // Before `fail_everything` forgets them: the callers are not aborted (they may
        // not have seen the failure) and must hear that nobody will answer.
        self.refuse_pending_rpcs();
        // Nothing runs any more, so nothing held will ever be due.
        self.motion.clear_future();
        self.fail_everything(&OpError::PeerLost { rank });
        if let Some(cp) = self.motion.checkpoint.take() {
            self.complete(cp.op, Err(OpError::PeerLost { rank }));
        }
        for (op, _) in std::mem::take(&mut self.motion.held) {
            self.complete(op, Err(OpError::PeerLost { rank }));
        }
        let reason = bytes::Bytes::copy_from_slice(&rank.to_le_bytes());
        for conn in mesh {
            self.transport
                .close(now, conn, crate::membership::CLOSE_ABORTED, reason.clone());
        }
    }

    /// Whether the node still serves RPC requests: not once its cluster aborted.
    pub(super) fn serving(&self) -> bool {
        !matches!(self.motion.state, State::Aborted { .. })
    }
}
