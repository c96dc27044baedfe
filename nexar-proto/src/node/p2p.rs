//! Tagged point-to-point on the node: sending (whole or in parts), arrivals, pausing.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::dispatch::SEND_AHEAD;
use super::{send_error, Node};
use crate::codec::{Message, Tagged, TaggedPart, TaggedStart};
use crate::error::{CommandError, OpError};
use crate::event::{Event, OpId, Outcome};
use crate::p2p::{ArrivalError, Key, Pumped};
use crate::transport::StreamClass;

/// The most bytes of a message one part carries (less if the frame limit is lower):
/// small enough that messages to the same peer interleave finely, large enough that
/// the per-frame work is noise.
const PART_BYTES: usize = 1 << 20;

impl Node {
    /// Send `data` to world rank `key.0` (not ourselves) on communicator `key.1` under
    /// tag `key.2`: one `Tagged` frame if it fits, else a `TaggedStart` now and parts as
    /// the stream drains. Returns whether the send is complete already (the op
    /// completes later otherwise).
    pub(super) fn send_tagged(
        &mut self,
        op: OpId,
        key: Key,
        epoch: u64,
        data: Bytes,
    ) -> Result<bool, CommandError> {
        let (to, comm, tag) = key;
        let conn = self.conn_of(to)?;
        // Take the number only once the frame is queued: a refused send must leave no
        // gap, which the receiver would take for a broken peer.
        let seq = self.p2p.peek_seq(key);
        let whole = data.len() <= self.max_single_frame_message();
        let frame = if whole {
            Message::Tagged(Tagged {
                epoch,
                comm,
                tag,
                seq,
                payload: data.clone(),
            })
        } else {
            Message::TaggedStart(TaggedStart {
                epoch,
                comm,
                tag,
                seq,
                total: data.len() as u64,
            })
        };
        self.transport
            .send(conn, StreamClass::P2p, frame.to_frame())
            .map_err(|e| send_error(to, e))?;
        self.p2p.next_seq(key);
        if !whole {
            self.p2p.outbox.push(op, key, seq, epoch, data);
        }
        Ok(whole)
    }

    /// Encode the parts that fit: per peer, until [`SEND_AHEAD`] bytes wait beyond what
    /// QUIC has taken on its point-to-point stream.
    pub(super) fn pump_p2p_sends(&mut self) {
        if self.p2p.outbox.is_empty() {
            return;
        }
        let part_len =
            PART_BYTES.min((self.max_frame_len as usize).saturating_sub(TaggedPart::OVERHEAD));
        let mut out = Vec::new();
        let mut outbox = std::mem::take(&mut self.p2p.outbox);
        outbox.pump(
            part_len,
            &mut |to| {
                let conn = self.conn_of(to).ok()?;
                let queued = self.transport.queued(conn, StreamClass::P2p)?;
                Some(SEND_AHEAD.saturating_sub(queued))
            },
            &mut out,
        );
        self.p2p.outbox = outbox;
        for pumped in out {
            match pumped {
                Pumped::Part { to, part } => {
                    let Ok(conn) = self.conn_of(to) else { continue };
                    let mut prefix = BytesMut::new();
                    let bulk = Message::TaggedPart(part).encode_prefix(&mut prefix);
                    // A closing connection reports its loss, which fails the send.
                    let _ = self.transport.send(conn, StreamClass::P2p, prefix.freeze());
                    for piece in bulk.parts() {
                        let _ = self.transport.send(conn, StreamClass::P2p, piece.clone());
                    }
                }
                Pumped::Done(op) => self.events.push_back(Event::Completed {
                    op,
                    outcome: Ok(Outcome::Sent),
                }),
                Pumped::Failed { op, to } => self.events.push_back(Event::Completed {
                    op,
                    outcome: Err(OpError::PeerLost { rank: to }),
                }),
            }
        }
    }

    /// A tagged message from world rank `key.0` (possibly ourselves) on communicator
    /// `key.1` under tag `key.2` arrived in order.
    pub(super) fn deliver_tagged(&mut self, now: Instant, key: Key, seq: u64, data: Bytes) {
        let arrival = self.p2p.on_arrival(key, seq, data);
        self.on_p2p_arrival(now, key.0, arrival);
    }

    /// Act on what a tagged message, start or part from `from` did to the matching.
    pub(super) fn on_p2p_arrival(
        &mut self,
        now: Instant,
        from: u32,
        arrival: Result<Option<Event>, ArrivalError>,
    ) {
        match arrival {
            Ok(Some(event)) => self.events.push_back(event),
            Ok(None) => {
                if self.p2p.unmatched_bytes(from) > self.max_unmatched {
                    if let Ok(conn) = self.conn_of(from) {
                        self.transport.set_reading(conn, StreamClass::P2p, false);
                    }
                }
            }
            // A late part of a message given up here (its receive failed): nothing to do.
            Err(ArrivalError::NoSuchMessage { .. }) => self.motion.stale += 1,
            Err(
                ArrivalError::OutOfSequence { .. }
                | ArrivalError::TooLong { .. }
                | ArrivalError::BadPart(_),
            ) => {
                // QUIC delivers a stream once and in order, so a gap, an overlong
                // announcement or a misplaced part means the peer is broken or hostile:
                // cut it off rather than guess (nothing was allocated for it).
                if let Ok(conn) = self.conn_of(from) {
                    self.close_conn(now, conn);
                }
            }
        }
    }

    /// A receive consumed buffered bytes from `from`; read its stream again if we stopped.
    pub(super) fn resume_reading(&mut self, from: u32) {
        if self.p2p.unmatched_bytes(from) <= self.max_unmatched {
            if let Ok(conn) = self.conn_of(from) {
                self.transport.set_reading(conn, StreamClass::P2p, true);
            }
        }
    }
}
