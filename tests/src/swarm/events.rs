//! What the nodes tell the driver: completions judged against the reference, failures,
//! epoch changes and RPC requests answered. Separate because it is the run's input side.

use bytes::Bytes;
use nexar_proto::codec::RpcStatus;
use nexar_proto::collective::CommId;
use nexar_proto::sim::HostId;
use nexar_proto::RpcRequestId;
use nexar_proto::{Command, CommandError, Event, Node, RecoveryPolicy};

use super::driver::{Pending, Run, Wake};
use super::expect::Expect;
use super::program::{echo, fail_detail, Step, FN_ECHO, FN_FAIL, FN_STALL};

impl Run<'_> {
    pub(super) fn drain_events(&mut self) {
        let ids: Vec<HostId> = self.c.sim.host_ids().collect();
        for id in ids {
            while let Some(e) = self.c.poll_event(id) {
                self.on_event(id, e);
            }
        }
    }

    pub(super) fn on_event(&mut self, id: HostId, e: Event) {
        match e {
            Event::Ready { .. } if self.hosts.get(&id).is_some_and(|h| h.joiner) => {
                self.run_ahead(id)
            }
            Event::Completed { op, outcome } => {
                if self.verbose {
                    let text = format!("{id} {op:?} completed {outcome:?}");
                    self.note(text.chars().take(200).collect());
                }
                let Some(p) = self.pending.remove(&(id, op)) else {
                    return; // answers to stalled RPCs, recoveries of past segments
                };
                if p.blocking {
                    if let Some(h) = self.hosts.get_mut(&id) {
                        h.blocking = h.blocking.saturating_sub(1);
                    }
                }
                match p.expect.judge(&outcome) {
                    Ok(true) => {
                        if let (
                            Expect::Split { .. },
                            Ok(nexar_proto::Outcome::Split {
                                comm: Some((cid, _, _)),
                                ..
                            }),
                        ) = (&p.expect, &outcome)
                        {
                            self.remember_comm(id, p.segment, *cid);
                        }
                        match p.expect {
                            Expect::Checkpoint { leave: true } => {
                                self.hosts.get_mut(&id).expect("known").gone = true;
                            }
                            Expect::Checkpoint { leave: false } => self.run_ahead(id),
                            _ => {}
                        }
                    }
                    Ok(false) => {
                        let err = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                        self.note(format!("{id} {} failed: {err}", p.expect.label()));
                        if self.harm {
                            self.broken = true;
                        } else {
                            self.violate(format!(
                                "{id}: {} failed with no fault to explain it: {err}",
                                p.expect.label()
                            ));
                        }
                    }
                    Err(wrong) => self.violate(format!("{id}: wrong result: {wrong}")),
                }
            }
            Event::RpcRequest {
                request,
                fn_id,
                payload,
                ..
            } => self.on_rpc(id, request, fn_id, payload),
            Event::PeerDown { rank, reason } => {
                self.note(format!("{id} peer {rank} down ({reason:?})"));
                self.suffer(id, "PeerDown");
                if self.sc.policy == RecoveryPolicy::Abort {
                    self.aborted = true;
                }
                let manual = self.sc.policy == RecoveryPolicy::Manual;
                let h = self.hosts.get_mut(&id).expect("known");
                if self.sc.policy != RecoveryPolicy::Abort {
                    h.recovering = true;
                }
                if manual && !h.asked && !h.gone {
                    h.asked = true;
                    self.command(id, Command::Recover, Expect::Recover, false);
                }
            }
            Event::EpochChanged { epoch, dead, .. } => {
                self.note(format!("{id} epoch {epoch} dead {dead:?}"));
                if !dead.is_empty() {
                    self.suffer(id, "EpochChanged after a failure");
                }
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.recovering = false;
                    h.asked = false;
                }
            }
            // A joiner that missed its checkpoint waits in the queue until its formation
            // deadline: typed, and nobody else's business.
            Event::JoinFailed { .. } if self.hosts.get(&id).is_some_and(|h| h.joiner) => {
                self.note(format!("{id} out: {e:?}"));
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.gone = true;
                }
            }
            Event::Evicted { .. } | Event::RecoveryFailed { .. } | Event::JoinFailed { .. } => {
                self.note(format!("{id} out: {e:?}"));
                self.suffer(id, "left the cluster");
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.gone = true;
                }
            }
            Event::SeedStateChanged { .. } => {
                if let Some(snap) = self.c.node(id).and_then(Node::seed_snapshot) {
                    self.snapshot = Some(snap);
                }
            }
            _ => {}
        }
    }

    /// Something failed: fine after a harmful fault, a violation otherwise.
    pub(super) fn suffer(&mut self, id: HostId, what: &str) {
        self.broken = true;
        if !self.harm {
            self.violate(format!("{id}: {what} with no fault to explain it"));
        }
    }

    pub(super) fn remember_comm(&mut self, id: HostId, segment: u64, cid: CommId) {
        if self.hosts[&id].seg != Some(segment) {
            return;
        }
        let Some((seg, _)) = self.segs.get(&segment) else {
            return;
        };
        let Some(rank) = self.hosts[&id].rank else {
            return;
        };
        // The split step this rank issued most recently.
        let h = &self.hosts[&id];
        let found = seg.steps[..h.cursor]
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, s)| match s {
                Step::Split { colors, .. } => Some((i, colors[rank as usize])),
                _ => None,
            });
        if let Some((i, Some(color))) = found {
            self.hosts
                .get_mut(&id)
                .expect("known")
                .comms
                .insert((i, color), cid);
        }
    }

    pub(super) fn on_rpc(&mut self, id: HostId, request: RpcRequestId, fn_id: u32, payload: Bytes) {
        if self.verbose {
            self.note(format!(
                "{id} rpc request {request:?} fn {fn_id} {} B",
                payload.len()
            ));
        }
        match fn_id {
            FN_ECHO => self.respond(id, request, RpcStatus::Ok, echo(&payload), false),
            FN_FAIL => {
                let detail = fail_detail(&payload);
                self.respond(id, request, RpcStatus::HandlerError, detail, false)
            }
            FN_STALL => {
                let stall = self.stalls.get(&payload).copied().unwrap_or_default();
                self.answer_seq += 1;
                let key = self.answer_seq;
                self.hosts
                    .get_mut(&id)
                    .expect("known")
                    .stalled
                    .insert(key, (request, payload));
                let at = self.c.sim.elapsed() + stall;
                self.wake(at, Wake::Answer(id, key));
            }
            other => self.violate(format!("{id}: request for unregistered fn {other}")),
        }
    }

    /// Answer a request; `late`: after a stall, when an epoch change may have withdrawn
    /// the request (the caller's call failed with it), which is no fault.
    pub(super) fn respond(
        &mut self,
        id: HostId,
        request: RpcRequestId,
        status: RpcStatus,
        payload: Bytes,
        late: bool,
    ) {
        if self.hosts.get(&id).is_none_or(|h| h.gone) || self.c.sim.is_crashed(id) {
            return;
        }
        let cmd = Command::RpcRespond {
            request,
            status,
            payload,
        };
        match self.c.command(id, cmd) {
            Ok(op) => {
                self.pending.insert(
                    (id, op),
                    Pending {
                        expect: Expect::Sent,
                        blocking: false,
                        issued: self.c.sim.elapsed(),
                        segment: u64::MAX,
                    },
                );
            }
            // The caller went away (lost, or the epoch moved on): nothing to answer.
            Err(CommandError::UnknownRpcRequest { .. }) if self.harm || late => {}
            Err(e) => self.refused(id, "rpc answer", e),
        }
    }
}
