//! The invariants judged over the whole run rather than per operation: liveness, node
//! limits, progress after the faults. Separate so the rules of a verdict read in one place.

use std::time::Duration;

use nexar_proto::sim::HostId;
use nexar_proto::{Node, NodeConfig};

use super::driver::{Run, MAX_PROCESS_STEPS, MAX_SEGMENTS};

impl Run<'_> {
    pub(super) fn report_stuck(&mut self, at: Duration) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.issued)
            .map(|((h, op), p)| {
                format!("{h} {op:?} {} issued at {:?}", p.expect.label(), p.issued)
            });
        self.violate(format!(
            "liveness: by {at:?}, {} operations pending (oldest: {oldest:?}), {} segments; (host, segment, cursor, blocking) {:?}",
            self.pending.len(),
            self.segments,
            self.hosts
                .iter()
                .filter(|(_, h)| h.rank.is_some() && !h.gone)
                .map(|(id, h)| (id.0, h.seg, h.cursor, h.blocking))
                .collect::<Vec<_>>()
        ));
    }

    /// Every ready node's (rank, world size, epoch), for messages.
    pub(super) fn world_view(&self) -> String {
        let v: Vec<_> = self
            .hosts
            .iter()
            .filter(|(id, h)| !h.gone && !self.c.sim.is_crashed(**id))
            .filter_map(|(id, _)| {
                let n = self.c.node(*id)?;
                Some((id.0, n.is_ready(), n.rank(), n.world_size(), n.epoch()))
            })
            .collect();
        format!("(host, ready, rank, size, epoch): {v:?}")
    }

    /// Whether the live nodes could still run a segment (nobody aborted).
    /// Per node: spinning, memory held against the configured limits.
    pub(super) fn check_nodes(&mut self) {
        let ids: Vec<HostId> = self.c.sim.host_ids().collect();
        for id in ids {
            if self.c.sim.is_crashed(id) {
                continue;
            }
            let Some(node) = self.c.node(id) else {
                continue;
            };
            let s = node.stats();
            let peers = node.world_size().unwrap_or(1).max(1) as usize;
            let max_message = node.max_message();
            let limit = NodeConfig::new([0; 32], 0, self.c.sim.addr(id)).max_unmatched_bytes;
            if s.max_process_steps > MAX_PROCESS_STEPS {
                self.violate(format!(
                    "{id} spun: {} transport events in one input (limit {MAX_PROCESS_STEPS})",
                    s.max_process_steps
                ));
            }
            if s.unmatched_bytes > (limit + max_message) * peers {
                self.violate(format!(
                    "{id} holds {} B of unmatched messages, over {peers} x {limit} B",
                    s.unmatched_bytes
                ));
            }
            if s.rpc_requests > 64 * peers {
                self.violate(format!("{id} holds {} RPC requests", s.rpc_requests));
            }
        }
    }

    pub(super) fn final_checks(&mut self) {
        if !self.harm && self.steps_started < self.sc.steps && self.segments >= MAX_SEGMENTS {
            self.violate(format!(
                "no fault, yet only {} of {} steps ran in {} segments",
                self.steps_started, self.sc.steps, self.segments
            ));
        }
        let members = self.hosts.iter().any(|(id, h)| {
            !h.gone && !self.c.sim.is_crashed(*id) && self.c.node(*id).is_some_and(Node::is_ready)
        });
        if self.harm && !self.progressed && self.can_progress() && members {
            self.violate(format!(
                "no segment ran after the faults ended ({:?}) in {} segments; {}",
                self.last_fault_end,
                self.segments,
                self.world_view()
            ));
        }
    }
}
