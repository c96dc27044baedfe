//! Routing transport events to the role's state machine, and its actions back down.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use super::{Node, Role};
use crate::codec::{Message, Welcome};
use crate::collective::exec::{ExecOutput, Executor};
use crate::crypto::{rank_from_cert, rank_server_name, BOOTSTRAP_SERVER_NAME};
use crate::error::JoinError;
use crate::event::{Event, OpId};
use crate::membership::{proof, Action};
use crate::transport::{ConnId, StreamClass, TransportEvent};

/// Application close code for a peer that broke the protocol after joining.
const CLOSE_PROTOCOL: u64 = 0x3;

/// Per peer, the most encoded collective bytes waiting beyond QUIC's send buffer.
pub(super) const SEND_AHEAD: usize = 512 << 10;

impl Node {
    /// Drain everything the transport has to say, feeding the role, until quiet.
    pub(super) fn process(&mut self, now: Instant) {
        let mut steps = 0u64;
        loop {
            while let Some(event) = self.take_replay().or_else(|| self.transport.poll_event()) {
                steps += 1;
                let Some(event) = self.intercept(now, event) else {
                    continue;
                };
                let connected = matches!(event, TransportEvent::Connected { .. });
                let actions = match &self.role {
                    Role::Seed { .. } => self.route_seed(now, event),
                    Role::Worker(_) => self.route_worker(now, event),
                };
                self.apply(now, actions);
                if connected {
                    self.watch_links(now);
                    self.mesh_changed(now);
                }
            }
            // Collective chunks waiting for room: QUIC may have taken what was queued.
            self.pump_collective_sends();
            self.pump_p2p_sends();
            if self.transport.has_events() {
                continue;
            }
            // Point-to-point streams pause after each delivery; now that those messages
            // are matched or buffered (and over-limit sources stopped), read on.
            if !self.transport.resume_paced() {
                break;
            }
        }
        self.max_process_steps = self.max_process_steps.max(steps);
        self.drive_checkpoint();
    }

    /// Test hook (feature `sim`): put `msg` as it is on this worker's stream to `rank`
    /// (the stream its kind travels on), whatever its epoch or contents, so a test can
    /// play a hostile member. `false` if there is no such peer or the send is refused.
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn send_raw(&mut self, rank: u32, msg: &Message) -> bool {
        let class = match msg {
            Message::Tagged(_) | Message::TaggedStart(_) | Message::TaggedPart(_) => {
                StreamClass::P2p
            }
            Message::Chunk(_) => StreamClass::Collective,
            Message::RpcRequest(_) | Message::RpcResponse(_) => StreamClass::Rpc,
            _ => StreamClass::Control,
        };
        let Ok(conn) = self.conn_of(rank) else {
            return false;
        };
        self.transport.send(conn, class, msg.to_frame()).is_ok()
    }

    /// Encode the collective chunks that fit: per peer, until [`SEND_AHEAD`] bytes wait
    /// beyond what QUIC has taken. A step's chunks are copied out of the working buffer
    /// as the connection drains rather than all at once, so a 64 MiB operation never
    /// holds a second copy of its steps, and the bytes QUIC packetises are still in cache.
    fn pump_collective_sends(&mut self) {
        let Some(mut exec) = self.exec.take() else {
            return;
        };
        if exec.has_deferred() {
            let mut budget: BTreeMap<u32, usize> = BTreeMap::new();
            let mut out = Vec::new();
            exec.pump_sends(
                &mut |rank, bytes| {
                    let left = budget.entry(rank).or_insert_with(|| {
                        self.conn_of(rank)
                            .ok()
                            .and_then(|c| self.transport.queued(c, StreamClass::Collective))
                            // No connection: the send fails the operation, as an eager one would.
                            .map_or(usize::MAX, |q| SEND_AHEAD.saturating_sub(q))
                    });
                    if *left == 0 {
                        return false;
                    }
                    *left = left.saturating_sub(bytes);
                    true
                },
                &mut out,
            );
            self.exec = Some(exec);
            self.apply_exec(out);
        } else {
            self.exec = Some(exec);
        }
    }

    fn route_seed(&mut self, now: Instant, event: TransportEvent) -> Vec<Action> {
        let Role::Seed { state, .. } = &mut self.role else {
            return Vec::new();
        };
        match event {
            TransportEvent::Incoming { conn, remote } => {
                state.on_incoming(now, conn, remote);
                Vec::new()
            }
            TransportEvent::Connected { .. } => Vec::new(),
            // The seed carries no data, so anything on any stream is membership traffic;
            // the state machine refuses what does not belong.
            TransportEvent::Message { conn, msg, .. } => {
                let exporter = self
                    .transport
                    .export_keying_material(conn, proof::EXPORTER_LABEL);
                let actions = state.on_message(now, conn, msg, exporter);
                if state.take_proven() == Some(conn) {
                    self.transport.mark_proven(conn);
                }
                actions
            }
            TransportEvent::Malformed { conn, error } => state.on_malformed(conn, &error),
            TransportEvent::Lost { conn, reason } => {
                let redialling = matches!(
                    reason,
                    crate::transport::LostReason::ClosedByPeer { code, .. }
                        if code == crate::membership::CLOSE_REDIAL
                );
                state.on_lost(now, conn, redialling)
            }
        }
    }

    fn route_worker(&mut self, now: Instant, event: TransportEvent) -> Vec<Action> {
        let Role::Worker(w) = &mut self.role else {
            return Vec::new();
        };
        match event {
            TransportEvent::Incoming { .. } => Vec::new(),
            TransportEvent::Connected { conn } if Some(conn) == w.seed_conn() => {
                let exporter = self
                    .transport
                    .export_keying_material(conn, proof::EXPORTER_LABEL);
                w.on_seed_connected(exporter)
            }
            TransportEvent::Connected { conn } => {
                let cert_member = w.membership().and_then(|m| {
                    let certs = self.transport.peer_certificates(conn)?;
                    rank_from_cert(certs.first()?.as_ref(), m.cluster_id)
                });
                w.on_mesh_connected(conn, cert_member)
            }
            TransportEvent::Message { conn, msg, .. } if Some(conn) == w.seed_conn() => {
                if let Message::Welcome(welcome) = &msg {
                    self.tls.stage_welcome(welcome);
                }
                let tls = &self.tls;
                w.on_seed_message(now, msg, |welcome: &Welcome| tls.check_welcome(welcome))
            }
            TransportEvent::Message { conn, class, msg } => {
                let Some(from) = w.rank_of(conn) else {
                    return Vec::new();
                };
                let epoch = w.membership().map_or(0, |m| m.epoch);
                match (class, msg) {
                    (StreamClass::P2p, Message::Tagged(t)) if t.epoch == epoch => {
                        self.deliver_tagged(now, (from, t.comm, t.tag), t.seq, t.payload);
                        Vec::new()
                    }
                    (StreamClass::P2p, Message::TaggedStart(t)) if t.epoch == epoch => {
                        let key = (from, t.comm, t.tag);
                        let arrival = self.p2p.on_start(key, t.seq, t.total);
                        self.on_p2p_arrival(now, from, arrival);
                        Vec::new()
                    }
                    // `intercept` let it through: its message is arriving here.
                    (StreamClass::P2p, Message::TaggedPart(t)) => {
                        let key = (from, t.comm, t.tag);
                        let arrival = self.p2p.on_part(key, t.seq, t.offset, t.payload);
                        self.on_p2p_arrival(now, from, arrival);
                        Vec::new()
                    }
                    (StreamClass::Collective, Message::Chunk(chunk)) => {
                        let mut out = Vec::new();
                        if let Some(exec) = &mut self.exec {
                            exec.on_chunk(from, chunk, &mut out);
                        }
                        self.apply_exec(out);
                        Vec::new()
                    }
                    (StreamClass::Rpc, Message::RpcRequest(request)) => {
                        self.on_rpc_request(from, request);
                        Vec::new()
                    }
                    (StreamClass::Rpc, Message::RpcResponse(response)) => {
                        self.on_rpc_response(from, response);
                        Vec::new()
                    }
                    // Messages from an earlier epoch are stale by definition: drop them.
                    (StreamClass::P2p, Message::Tagged(_)) => Vec::new(),
                    // Collectives and liveness traffic are handled by their own layers.
                    _ => Vec::new(),
                }
            }
            TransportEvent::Malformed { conn, .. } => {
                vec![Action::Close {
                    conn,
                    code: CLOSE_PROTOCOL,
                    reason: Bytes::from_static(b"malformed frame"),
                }]
            }
            TransportEvent::Lost { conn, reason } => {
                let (lost_rank, actions) = w.on_lost(now, conn, &reason);
                let left = matches!(
                    reason,
                    crate::transport::LostReason::ClosedByPeer { code, .. }
                        if code == crate::membership::CLOSE_LEFT
                );
                let aborted = match &reason {
                    crate::transport::LostReason::ClosedByPeer { code, reason }
                        if *code == crate::membership::CLOSE_ABORTED =>
                    {
                        <[u8; 4]>::try_from(reason.as_ref())
                            .ok()
                            .map(u32::from_le_bytes)
                    }
                    _ => None,
                };
                match (lost_rank, aborted) {
                    // It left at a checkpoint whose agreement is on its way to us.
                    (Some(_), _) if left => {}
                    (Some(rank), Some(culprit)) => self.relayed_abort(now, rank, culprit),
                    (Some(rank), None) => {
                        self.peer_down(now, rank, crate::event::DownReason::ConnectionLost)
                    }
                    (None, _) => {}
                }
                actions
            }
        }
    }

    /// Carry out what a state machine asked for.
    pub(super) fn apply(&mut self, now: Instant, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { conn, msg } => {
                    // A send to a connection that is already going away has no one to
                    // reach; its loss is reported through the connection's own event.
                    let _ = self
                        .transport
                        .send(conn, StreamClass::Control, msg.to_frame());
                }
                Action::Close { conn, code, reason } => {
                    self.transport.close(now, conn, code, reason)
                }
                Action::Event(event) => {
                    let ready = matches!(event, Event::Ready { .. });
                    self.events.push_back(event);
                    if ready {
                        self.on_ready(now);
                    }
                }
                Action::Listen => {
                    // The executor exists from the Welcome on, not from Ready: a peer
                    // that is ready before us may already send its first chunks (with
                    // their fingerprints), which must be held, not dropped.
                    if let Role::Worker(w) = &self.role {
                        if let Some(m) = w.membership() {
                            let config = self.exec_config.clone();
                            self.exec =
                                Some(Executor::new(m.rank, m.world_size, m.epoch, config, now));
                        }
                    }
                    match self.tls.mesh_server_config() {
                        Ok(config) => self.transport.set_server_config(Some(config), false),
                        Err(detail) => self.join_failed(now, JoinError::BadWelcome { detail }),
                    }
                    self.watch_links(now);
                }
                Action::Dial {
                    rank,
                    addr,
                    attempt,
                } => self.dial(now, rank, addr, attempt),
                Action::DialSeed { addr, pin } => self.dial_seed(now, addr, pin),
                Action::SeedReattached => self.seed_reattached(),
            }
        }
    }

    fn dial(&mut self, now: Instant, rank: u32, addr: std::net::SocketAddr, attempt: u32) {
        let Role::Worker(w) = &mut self.role else {
            return;
        };
        let Some((cluster_id, member)) = w
            .membership()
            .and_then(|m| Some((m.cluster_id, *m.ids.get(&rank)?)))
        else {
            return;
        };
        let config = match self.tls.mesh_client_config() {
            Ok(c) => c,
            Err(detail) => return self.join_failed(now, JoinError::BadWelcome { detail }),
        };
        match self
            .transport
            .connect(now, config, addr, &rank_server_name(cluster_id, member))
        {
            Ok(conn) => w.on_dialed(rank, conn, attempt),
            Err(e) => {
                let detail = format!("cannot dial rank {rank} at {addr}: {e}");
                self.join_failed(now, JoinError::BadWelcome { detail });
            }
        }
    }

    fn dial_seed(&mut self, now: Instant, addr: std::net::SocketAddr, pin: [u8; 32]) {
        let dialed = self
            .tls
            .bootstrap_client_config(pin)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                self.transport
                    .connect(now, config, addr, BOOTSTRAP_SERVER_NAME)
                    .map_err(|e| e.to_string())
            });
        match dialed {
            Ok(conn) => {
                if let Role::Worker(w) = &mut self.role {
                    w.set_seed_conn(conn);
                }
            }
            Err(e) => {
                let detail = format!("cannot dial the seed at {addr}: {e}");
                self.join_failed(now, JoinError::SeedLost { detail });
            }
        }
    }

    fn join_failed(&mut self, now: Instant, error: JoinError) {
        if let Role::Worker(w) = &mut self.role {
            let actions = w.fail_with(error);
            self.apply(now, actions);
        }
    }

    pub(super) fn close_conn(&mut self, now: Instant, conn: ConnId) {
        self.transport.close(
            now,
            conn,
            CLOSE_PROTOCOL,
            Bytes::from_static(b"protocol violation"),
        );
    }

    /// Receives and collectives waiting on a rank that is gone fail now, rather than
    /// wait forever.
    pub(super) fn fail_waiting_on(&mut self, rank: u32) {
        for op in self.p2p.take_posted_from(rank) {
            self.events.push_back(failed(op, rank));
        }
        if let Some(exec) = &mut self.exec {
            let mut out = Vec::new();
            exec.on_peer_lost(rank, &mut out);
            self.apply_exec(out);
        }
        self.rpc_peer_lost(rank);
    }

    /// Carry out what the collective executor asked for.
    pub(super) fn apply_exec(&mut self, outputs: Vec<ExecOutput>) {
        for output in outputs {
            match output {
                ExecOutput::Send { to, frame, bulk } => {
                    if let Ok(conn) = self.conn_of(to) {
                        // Unbounded for collectives (see Peer::send); a closing
                        // connection reports its loss, which fails the operation.
                        let _ = self.transport.send(conn, StreamClass::Collective, frame);
                        for piece in bulk.parts() {
                            let _ =
                                self.transport
                                    .send(conn, StreamClass::Collective, piece.clone());
                        }
                    }
                }
                ExecOutput::Completed { op, outcome } => {
                    self.events.push_back(Event::Completed { op, outcome })
                }
                ExecOutput::SetReading { from, on } => {
                    if let Ok(conn) = self.conn_of(from) {
                        self.transport
                            .set_reading(conn, StreamClass::Collective, on);
                    }
                }
            }
        }
    }
}

fn failed(op: OpId, rank: u32) -> Event {
    Event::Completed {
        op,
        outcome: Err(crate::error::OpError::PeerLost { rank }),
    }
}
