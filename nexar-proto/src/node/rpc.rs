//! RPC on the node: registering functions, starting calls, answering requests, and the
//! frames, deadlines and lost peers that complete them. The state is `crate::rpc`'s.
//!
//! Requests and responses travel on their own stream class (`StreamClass::Rpc`), which
//! is never paused, so a call is not held up by tagged data waiting for a receive. A
//! call to our own rank never touches the transport: the request is admitted and the
//! answer completes the call inside the node.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{send_error, Node};
use crate::codec::{Message, RpcRequest, RpcResponse, RpcStatus};
use crate::error::CommandError;
use crate::event::{Event, OpId, Outcome};
use crate::rpc::{Admission, RpcRequestId};
use crate::transport::StreamClass;

/// Bytes of an `RpcRequest` before its payload: id, fn_id, payload length (a response
/// has one byte less: its status byte instead of the four of fn_id).
const RPC_OVERHEAD: usize = 8 + 4 + 4;

impl Node {
    /// Accept RPC requests for `fn_id` from now on: each becomes an
    /// `Event::RpcRequest`. Until then the node itself answers `UnknownFunction`.
    /// Returns false if it was registered already.
    pub fn register_rpc(&mut self, fn_id: u32) -> bool {
        self.rpc.register(fn_id)
    }

    /// Answer requests for `fn_id` with `UnknownFunction` again. Requests already handed
    /// out stay pending until answered. Returns false if it was not registered.
    pub fn unregister_rpc(&mut self, fn_id: u32) -> bool {
        self.rpc.unregister(fn_id)
    }

    /// The largest payload an RPC request or answer may carry (the frame limit less the
    /// message's own fields).
    pub fn max_rpc_payload(&self) -> usize {
        (self.max_frame_len as usize).saturating_sub(RPC_OVERHEAD)
    }

    /// `Command::Rpc`, with `to` already checked against the world.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_rpc(
        &mut self,
        now: Instant,
        op: OpId,
        me: u32,
        to: u32,
        fn_id: u32,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(), CommandError> {
        self.check_rpc_payload(&payload)?;
        let deadline = timeout.or(self.rpc_timeout).map(|t| now + t);
        if to == me {
            let id = self.rpc.next_id();
            self.rpc.insert_call(id, op, me, fn_id, deadline);
            self.on_rpc_request(me, RpcRequest { id, fn_id, payload });
            return Ok(());
        }
        let conn = self.conn_of(to)?;
        let id = self.rpc.next_id();
        let frame = Message::RpcRequest(RpcRequest { id, fn_id, payload }).to_frame();
        self.transport
            .send(conn, StreamClass::Rpc, frame)
            .map_err(|e| send_error(to, e))?;
        self.rpc.insert_call(id, op, to, fn_id, deadline);
        Ok(())
    }

    /// `Command::RpcRespond`.
    pub(super) fn rpc_respond(
        &mut self,
        op: OpId,
        me: u32,
        request: RpcRequestId,
        status: RpcStatus,
        payload: Bytes,
    ) -> Result<(), CommandError> {
        let inbound = self
            .rpc
            .inbound(request)
            .ok_or(CommandError::UnknownRpcRequest { request })?;
        // Refused answers keep the request pending, so the caller can still be answered
        // (with a smaller payload, or once the queue drains).
        self.check_rpc_payload(&payload)?;
        if inbound.from == me {
            self.rpc.take_inbound(request);
            if let Some(event) = self.rpc.on_response(me, inbound.id, status, payload) {
                self.events.push_back(event);
            }
        } else {
            let conn = match self.conn_of(inbound.from) {
                Ok(conn) => conn,
                Err(e) => {
                    // Nobody is left to read the answer.
                    self.rpc.take_inbound(request);
                    return Err(e);
                }
            };
            let frame = Message::RpcResponse(RpcResponse {
                id: inbound.id,
                status,
                payload,
            })
            .to_frame();
            if let Err(e) = self.transport.send(conn, StreamClass::Rpc, frame) {
                let e = send_error(inbound.from, e);
                if !matches!(e, CommandError::Backpressure { .. }) {
                    self.rpc.take_inbound(request);
                }
                return Err(e);
            }
            self.rpc.take_inbound(request);
        }
        self.events.push_back(Event::Completed {
            op,
            outcome: Ok(Outcome::Sent),
        });
        Ok(())
    }

    fn check_rpc_payload(&self, payload: &Bytes) -> Result<(), CommandError> {
        // Over the frame limit, the receiver would refuse the frame and cut the
        // connection: refuse it here, typed, before anything is queued.
        let limit = self.max_rpc_payload();
        if payload.len() > limit {
            return Err(CommandError::MessageTooLarge {
                len: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    /// A request from `from` (possibly ourselves): to the application, or refused here.
    pub(super) fn on_rpc_request(&mut self, from: u32, request: RpcRequest) {
        let RpcRequest { id, fn_id, payload } = request;
        let admission = if self.serving() {
            self.rpc.on_request(from, id, fn_id, payload)
        } else {
            Admission::Refuse(RpcStatus::ShuttingDown)
        };
        match admission {
            Admission::Deliver(event) => self.events.push_back(event),
            Admission::Refuse(status) => self.refuse_rpc(from, id, status),
        }
    }

    /// Answer call `id` from `from` with `status` and no payload, from the core itself.
    fn refuse_rpc(&mut self, from: u32, id: u64, status: RpcStatus) {
        if Some(from) == self.rank() {
            if let Some(event) = self.rpc.on_response(from, id, status, Bytes::new()) {
                self.events.push_back(event);
            }
            return;
        }
        let frame = Message::RpcResponse(RpcResponse {
            id,
            status,
            payload: Bytes::new(),
        })
        .to_frame();
        if let Ok(conn) = self.conn_of(from) {
            // A full queue means the caller is not reading its answers; it has
            // its deadline (or learns of our loss), and we hold nothing for it.
            let _ = self.transport.send(conn, StreamClass::Rpc, frame);
        }
    }

    /// The node stopped serving (its cluster aborted): the requests the application
    /// still holds can no longer be answered by it, so the core answers them, and the
    /// callers get a typed `ShuttingDown` instead of waiting without a deadline.
    pub(super) fn refuse_pending_rpcs(&mut self) {
        for (from, id) in self.rpc.take_all_inbound() {
            self.refuse_rpc(from, id, RpcStatus::ShuttingDown);
        }
    }

    /// A response from `from`: completes its call, or is ignored (counted).
    pub(super) fn on_rpc_response(&mut self, from: u32, response: RpcResponse) {
        let RpcResponse {
            id,
            status,
            payload,
        } = response;
        if let Some(event) = self.rpc.on_response(from, id, status, payload) {
            self.events.push_back(event);
        }
    }

    /// Calls past their deadline fail.
    pub(super) fn rpc_timeouts(&mut self, now: Instant) {
        let mut out = Vec::new();
        self.rpc.handle_timeout(now, &mut out);
        self.events.extend(out);
    }

    /// Calls to a lost rank fail with `PeerLost`; its requests are forgotten.
    /// The membership is changing: calls fail with `err`, requests are forgotten.
    pub(super) fn rpc_reset(&mut self, err: &crate::error::OpError) {
        let mut out = Vec::new();
        self.rpc.reset(err, &mut out);
        self.events.extend(out);
    }

    pub(super) fn rpc_peer_lost(&mut self, rank: u32) {
        let mut out = Vec::new();
        self.rpc.peer_lost(rank, &mut out);
        self.events.extend(out);
    }
}
