//! RPC bookkeeping: the calls this node made and awaits answers to, the requests it
//! received and the application has not answered yet, and the function ids registered.
//!
//! Pure state, like `p2p`: the node (`node/rpc.rs`) moves frames and turns what this
//! module returns into events. Request ids on the wire come from one per-node counter,
//! so a response names its call alone; it must also come from the rank the call went to,
//! or it is ignored (counted), as is a response for no call we know: a late answer after
//! a deadline, or a confused peer. Neither is worth a panic or a closed connection.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;

use crate::codec::RpcStatus;
use crate::error::OpError;
use crate::event::{Event, OpId, Outcome};

/// Names one received request that waits for the application's answer
/// (`Command::RpcRespond`). Opaque and unique for the life of the node; it is not the
/// caller's wire id, which only means something together with the caller's rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RpcRequestId(pub(crate) u64);

/// A call we made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    op: OpId,
    to: u32,
    fn_id: u32,
    deadline: Option<Instant>,
}

/// A request we received and handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inbound {
    /// The caller's rank.
    pub(crate) from: u32,
    /// The caller's wire id, echoed in the response.
    pub(crate) id: u64,
}

/// What to do with a request that arrived.
#[derive(Debug, PartialEq)]
pub(crate) enum Admission {
    /// Give it to the application.
    Deliver(Event),
    /// Answer it at once with this status; the application never sees it.
    Refuse(RpcStatus),
}

/// Counters for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RpcCounters {
    /// Responses that matched no call of ours (unknown id, or from another rank).
    pub(crate) ignored_responses: u64,
    /// Requests refused `Overloaded` because their caller already had the most
    /// unanswered requests here.
    pub(crate) overloaded: u64,
}

/// The RPC state of one node.
#[derive(Debug)]
pub(crate) struct Rpc {
    registered: BTreeSet<u32>,
    next_call: u64,
    calls: BTreeMap<u64, Call>,
    /// (deadline, wire id) of calls that have one, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
    next_inbound: u64,
    inbound: BTreeMap<RpcRequestId, Inbound>,
    /// Unanswered requests per caller, each at most `max_inbound`.
    inbound_per_peer: BTreeMap<u32, usize>,
    max_inbound: usize,
    counters: RpcCounters,
}

impl Rpc {
    /// Each caller may have at most `max_inbound` requests unanswered here; more are
    /// refused `Overloaded`, so a caller cannot make us hold unbounded requests.
    pub(crate) fn new(max_inbound: usize) -> Self {
        Self {
            registered: BTreeSet::new(),
            next_call: 0,
            calls: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_inbound: 0,
            inbound: BTreeMap::new(),
            inbound_per_peer: BTreeMap::new(),
            max_inbound,
            counters: RpcCounters::default(),
        }
    }

    /// Accept requests for `fn_id`; false if it already was.
    pub(crate) fn register(&mut self, fn_id: u32) -> bool {
        self.registered.insert(fn_id)
    }

    /// Answer requests for `fn_id` with `UnknownFunction` from now on; false if it was
    /// not registered. Requests already handed out stay pending until answered.
    pub(crate) fn unregister(&mut self, fn_id: u32) -> bool {
        self.registered.remove(&fn_id)
    }

    /// The wire id for the next call. Taken before the frame is queued; a call whose
    /// frame is then refused leaves a gap, which means nothing to anyone.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_call += 1;
        self.next_call
    }

    /// Remember a call whose request is on its way.
    pub(crate) fn insert_call(
        &mut self,
        id: u64,
        op: OpId,
        to: u32,
        fn_id: u32,
        deadline: Option<Instant>,
    ) {
        if let Some(at) = deadline {
            self.deadlines.insert((at, id));
        }
        self.calls.insert(
            id,
            Call {
                op,
                to,
                fn_id,
                deadline,
            },
        );
    }

    /// A request arrived from `from` (possibly ourselves).
    pub(crate) fn on_request(
        &mut self,
        from: u32,
        id: u64,
        fn_id: u32,
        payload: Bytes,
    ) -> Admission {
        if !self.registered.contains(&fn_id) {
            return Admission::Refuse(RpcStatus::UnknownFunction);
        }
        let held = self.inbound_per_peer.entry(from).or_default();
        if *held >= self.max_inbound {
            self.counters.overloaded += 1;
            return Admission::Refuse(RpcStatus::Overloaded);
        }
        *held += 1;
        self.next_inbound += 1;
        let request = RpcRequestId(self.next_inbound);
        self.inbound.insert(request, Inbound { from, id });
        // The application keeps it until it answers: detached from the receive buffer.
        Admission::Deliver(Event::RpcRequest {
            from,
            request,
            fn_id,
            payload: crate::retain::bytes(payload),
        })
    }

    /// The request the application is answering, if it is still pending.
    pub(crate) fn inbound(&self, request: RpcRequestId) -> Option<Inbound> {
        self.inbound.get(&request).copied()
    }

    /// The request is answered (or its caller is gone): forget it.
    pub(crate) fn take_inbound(&mut self, request: RpcRequestId) -> Option<Inbound> {
        let inbound = self.inbound.remove(&request)?;
        self.release(inbound.from);
        Some(inbound)
    }

    fn release(&mut self, from: u32) {
        if let Some(held) = self.inbound_per_peer.get_mut(&from) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.inbound_per_peer.remove(&from);
            }
        }
    }

    /// A response arrived from `from`: the completion of the call it answers, or `None`
    /// (counted) if it answers no call of ours from that rank.
    pub(crate) fn on_response(
        &mut self,
        from: u32,
        id: u64,
        status: RpcStatus,
        payload: Bytes,
    ) -> Option<Event> {
        match self.calls.get(&id) {
            Some(call) if call.to == from => {}
            _ => {
                self.counters.ignored_responses += 1;
                return None;
            }
        }
        let call = self.remove_call(id)?;
        let outcome = match status {
            RpcStatus::Ok => Ok(Outcome::Rpc { data: payload }),
            status => Err(OpError::RpcFailed {
                rank: from,
                fn_id: call.fn_id,
                status,
                detail: payload,
            }),
        };
        Some(Event::Completed {
            op: call.op,
            outcome,
        })
    }

    fn remove_call(&mut self, id: u64) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        if let Some(at) = call.deadline {
            self.deadlines.remove(&(at, id));
        }
        Some(call)
    }

    /// Fail every call whose deadline has passed with `RpcTimeout`. A response that
    /// arrives later is ignored.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Event>) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(call) = self.calls.remove(&id) {
                out.push(Event::Completed {
                    op: call.op,
                    outcome: Err(OpError::RpcTimeout {
                        rank: call.to,
                        fn_id: call.fn_id,
                    }),
                });
            }
        }
    }

    /// The earliest call deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// `rank` is gone: its calls fail with `PeerLost`, and its unanswered requests are
    /// forgotten (nobody is left to read the answers).
    pub(crate) fn peer_lost(&mut self, rank: u32, out: &mut Vec<Event>) {
        let ids: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.to == rank)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(call) = self.remove_call(id) {
                out.push(Event::Completed {
                    op: call.op,
                    outcome: Err(OpError::PeerLost { rank }),
                });
            }
        }
        self.inbound.retain(|_, i| i.from != rank);
        self.inbound_per_peer.remove(&rank);
    }

    /// Every inbound request, as (caller, call id), forgotten here (the node answers them
    /// itself).
    pub(crate) fn take_all_inbound(&mut self) -> Vec<(u32, u64)> {
        self.inbound_per_peer.clear();
        std::mem::take(&mut self.inbound)
            .into_values()
            .map(|i| (i.from, i.id))
            .collect()
    }

    /// Every call fails with `err` and every inbound request is forgotten (the membership
    /// is changing: the ranks they were matched by are about to be renumbered).
    pub(crate) fn reset(&mut self, err: &OpError, out: &mut Vec<Event>) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(call) = self.remove_call(id) {
                out.push(Event::Completed {
                    op: call.op,
                    outcome: Err(err.clone()),
                });
            }
        }
        self.inbound.clear();
        self.inbound_per_peer.clear();
    }

    /// Calls awaiting a response.
    pub(crate) fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Requests handed to the application and not answered yet.
    pub(crate) fn requests_pending(&self) -> usize {
        self.inbound.len()
    }

    pub(crate) fn counters(&self) -> RpcCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Some instant: `Instant` has no constructor, and only offsets from it matter here.
    #[allow(clippy::disallowed_methods)]
    fn base() -> Instant {
        Instant::now()
    }

    fn delivered(admission: Admission) -> RpcRequestId {
        match admission {
            Admission::Deliver(Event::RpcRequest { request, .. }) => request,
            other => panic!("expected delivery, got {other:?}"),
        }
    }

    fn completion(event: Option<Event>) -> (OpId, Result<Outcome, OpError>) {
        match event {
            Some(Event::Completed { op, outcome }) => (op, outcome),
            other => panic!("expected a completion, got {other:?}"),
        }
    }

    #[test]
    fn unregistered_functions_are_refused_and_registered_ones_delivered() {
        let mut rpc = Rpc::new(4);
        assert_eq!(
            rpc.on_request(1, 7, 42, Bytes::new()),
            Admission::Refuse(RpcStatus::UnknownFunction)
        );
        assert!(rpc.register(42));
        assert!(!rpc.register(42));
        let payload = Bytes::from_static(b"args");
        match rpc.on_request(1, 7, 42, payload.clone()) {
            Admission::Deliver(Event::RpcRequest {
                from,
                fn_id,
                payload: got,
                ..
            }) => {
                assert_eq!((from, fn_id, got), (1, 42, payload));
            }
            other => panic!("{other:?}"),
        }
        assert!(rpc.unregister(42));
        assert!(!rpc.unregister(42));
        assert_eq!(
            rpc.on_request(1, 8, 42, Bytes::new()),
            Admission::Refuse(RpcStatus::UnknownFunction)
        );
        assert_eq!(rpc.requests_pending(), 1, "the delivered one stays pending");
    }

    #[test]
    fn responses_match_by_id_and_rank_and_unknown_ones_are_counted() {
        let mut rpc = Rpc::new(4);
        let a = rpc.next_id();
        let b = rpc.next_id();
        assert_ne!(a, b);
        rpc.insert_call(a, OpId(10), 1, 5, None);
        rpc.insert_call(b, OpId(11), 2, 6, None);
        // From the wrong rank, and for an id we never used: ignored, counted.
        assert_eq!(rpc.on_response(2, a, RpcStatus::Ok, Bytes::new()), None);
        assert_eq!(rpc.on_response(1, 999, RpcStatus::Ok, Bytes::new()), None);
        assert_eq!(rpc.counters().ignored_responses, 2);
        assert_eq!(rpc.calls_in_flight(), 2);
        // Answered out of order, each to its own call.
        let (op, outcome) =
            completion(rpc.on_response(2, b, RpcStatus::HandlerError, Bytes::from_static(b"bad")));
        assert_eq!(op, OpId(11));
        assert_eq!(
            outcome,
            Err(OpError::RpcFailed {
                rank: 2,
                fn_id: 6,
                status: RpcStatus::HandlerError,
                detail: Bytes::from_static(b"bad"),
            })
        );
        let (op, outcome) =
            completion(rpc.on_response(1, a, RpcStatus::Ok, Bytes::from_static(b"r")));
        assert_eq!(op, OpId(10));
        assert_eq!(
            outcome,
            Ok(Outcome::Rpc {
                data: Bytes::from_static(b"r")
            })
        );
        // A duplicate answer finds nothing.
        assert_eq!(rpc.on_response(1, a, RpcStatus::Ok, Bytes::new()), None);
        assert_eq!(rpc.calls_in_flight(), 0);
    }

    #[test]
    fn deadlines_fire_in_order_and_late_responses_are_ignored() {
        let t0 = base();
        let mut rpc = Rpc::new(4);
        let (a, b, c) = (rpc.next_id(), rpc.next_id(), rpc.next_id());
        rpc.insert_call(a, OpId(1), 1, 9, Some(t0 + Duration::from_secs(2)));
        rpc.insert_call(b, OpId(2), 1, 9, Some(t0 + Duration::from_secs(1)));
        rpc.insert_call(c, OpId(3), 1, 9, None);
        assert_eq!(rpc.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        let mut out = Vec::new();
        rpc.handle_timeout(t0 + Duration::from_millis(999), &mut out);
        assert!(out.is_empty(), "early: {out:?}");
        rpc.handle_timeout(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(
            out,
            vec![Event::Completed {
                op: OpId(2),
                outcome: Err(OpError::RpcTimeout { rank: 1, fn_id: 9 })
            }]
        );
        assert_eq!(rpc.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(rpc.on_response(1, b, RpcStatus::Ok, Bytes::new()), None);
        // Answered in time: its deadline goes away with it.
        assert!(rpc.on_response(1, a, RpcStatus::Ok, Bytes::new()).is_some());
        assert_eq!(rpc.poll_timeout(), None);
        assert_eq!(rpc.calls_in_flight(), 1);
    }

    #[test]
    fn each_caller_is_bounded_and_answering_frees_a_slot() {
        let mut rpc = Rpc::new(2);
        rpc.register(1);
        let first = delivered(rpc.on_request(5, 1, 1, Bytes::new()));
        delivered(rpc.on_request(5, 2, 1, Bytes::new()));
        assert_eq!(
            rpc.on_request(5, 3, 1, Bytes::new()),
            Admission::Refuse(RpcStatus::Overloaded)
        );
        // Another caller has its own budget.
        delivered(rpc.on_request(6, 1, 1, Bytes::new()));
        assert_eq!(rpc.counters().overloaded, 1);
        assert_eq!(rpc.inbound(first), Some(Inbound { from: 5, id: 1 }));
        assert_eq!(rpc.take_inbound(first), Some(Inbound { from: 5, id: 1 }));
        assert_eq!(rpc.take_inbound(first), None, "answered once");
        delivered(rpc.on_request(5, 4, 1, Bytes::new()));
    }

    #[test]
    fn a_lost_peer_fails_its_calls_and_drops_its_requests() {
        let mut rpc = Rpc::new(2);
        rpc.register(1);
        let (a, b) = (rpc.next_id(), rpc.next_id());
        rpc.insert_call(a, OpId(1), 3, 1, Some(base()));
        rpc.insert_call(b, OpId(2), 4, 1, None);
        let from_lost = delivered(rpc.on_request(3, 9, 1, Bytes::new()));
        let from_other = delivered(rpc.on_request(4, 9, 1, Bytes::new()));
        let mut out = Vec::new();
        rpc.peer_lost(3, &mut out);
        assert_eq!(
            out,
            vec![Event::Completed {
                op: OpId(1),
                outcome: Err(OpError::PeerLost { rank: 3 })
            }]
        );
        assert_eq!(rpc.poll_timeout(), None, "its deadline is gone too");
        assert_eq!(rpc.inbound(from_lost), None);
        assert!(rpc.inbound(from_other).is_some());
        assert_eq!(rpc.calls_in_flight(), 1);
        // Its budget starts afresh should it come back.
        delivered(rpc.on_request(3, 10, 1, Bytes::new()));
        delivered(rpc.on_request(3, 11, 1, Bytes::new()));
    }
}
