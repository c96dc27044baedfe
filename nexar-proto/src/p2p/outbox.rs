//! Sending tagged messages longer than one frame: their parts leave as the link drains.
//!
//! The `TaggedStart` of a message is queued when it is sent, so the message takes its
//! place in the (destination, comm, tag) order at once; its parts wait here, referring to the
//! caller's bytes (no copy), and are encoded a few at a time, round robin across the
//! messages in flight, only while the stream to their peer has room. So a 1 GiB message
//! never sits whole in a send queue, and messages sent after it (small ones on any tag,
//! large ones interleaved part by part) are not stuck behind it.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::{split, Key};
use crate::codec::TaggedPart;
use crate::event::OpId;

/// A message being sent in parts.
#[derive(Debug)]
struct Outgoing {
    op: OpId,
    to: u32,
    comm: u64,
    tag: u64,
    seq: u64,
    epoch: u64,
    data: Bytes,
    sent: usize,
}

/// What a pump produced, in order.
#[derive(Debug)]
pub(crate) enum Pumped {
    /// Queue this part on the point-to-point stream to `to`.
    Part { to: u32, part: TaggedPart },
    /// The last part of `op`'s message is out: the send is complete.
    Done(OpId),
    /// There is no connection to `to` any more: `op` fails.
    Failed { op: OpId, to: u32 },
}

/// Messages whose parts are still to be sent, in round-robin order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Outgoing>,
}

impl Outbox {
    /// Queue the parts of a message to (to, comm, tag) whose start has been sent.
    pub(crate) fn push(&mut self, op: OpId, key: Key, seq: u64, epoch: u64, data: Bytes) {
        let (to, comm, tag) = key;
        self.queue.push_back(Outgoing {
            op,
            to,
            comm,
            tag,
            seq,
            epoch,
            data,
            sent: 0,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hand out parts of at most `part_len` bytes, one message at a time round robin,
    /// while `room(to)` (asked once per peer: the bytes that may still be queued to it,
    /// `None` without a connection) is not used up.
    pub(crate) fn pump(
        &mut self,
        part_len: usize,
        room: &mut dyn FnMut(u32) -> Option<usize>,
        out: &mut Vec<Pumped>,
    ) {
        let part_len = part_len.max(1);
        let mut budget: BTreeMap<u32, Option<usize>> = BTreeMap::new();
        // Messages looked at in a row without sending anything: once every one has been,
        // all their peers are out of room.
        let mut idle = 0;
        while idle < self.queue.len() {
            let Some(mut m) = self.queue.pop_front() else {
                break;
            };
            let left = budget.entry(m.to).or_insert_with(|| room(m.to));
            match left {
                None => {
                    out.push(Pumped::Failed { op: m.op, to: m.to });
                    idle = 0;
                }
                Some(0) => {
                    self.queue.push_back(m);
                    idle += 1;
                }
                Some(left) => {
                    let n = part_len.min(m.data.len() - m.sent);
                    *left = left.saturating_sub(n);
                    out.push(Pumped::Part {
                        to: m.to,
                        part: TaggedPart {
                            epoch: m.epoch,
                            comm: m.comm,
                            tag: m.tag,
                            seq: m.seq,
                            offset: m.sent as u64,
                            payload: m.data.slice(m.sent..m.sent + n),
                        },
                    });
                    m.sent += n;
                    idle = 0;
                    if m.sent == m.data.len() {
                        out.push(Pumped::Done(m.op));
                    } else {
                        self.queue.push_back(m);
                    }
                }
            }
        }
    }

    /// The sends to `to`, removed (the peer is gone).
    pub(crate) fn take_to(&mut self, to: u32) -> Vec<OpId> {
        self.take_where(|m| m.to == to)
    }

    /// The sends on split communicators, removed (an epoch change ended them).
    pub(crate) fn take_split(&mut self) -> Vec<OpId> {
        self.take_where(|m| split(&(m.to, m.comm, m.tag)))
    }

    fn take_where(&mut self, gone: impl Fn(&Outgoing) -> bool) -> Vec<OpId> {
        let (gone, kept): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.queue).into_iter().partition(gone);
        self.queue = kept;
        gone.into_iter().map(|m| m.op).collect()
    }

    /// Every send, removed.
    pub(crate) fn take_all(&mut self) -> Vec<OpId> {
        std::mem::take(&mut self.queue)
            .into_iter()
            .map(|m| m.op)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(out: &[Pumped]) -> Vec<(u32, u64, u64, usize)> {
        out.iter()
            .filter_map(|p| match p {
                Pumped::Part { to, part } => Some((*to, part.seq, part.offset, part.payload.len())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parts_interleave_round_robin_within_each_peers_room() {
        let mut o = Outbox::default();
        o.push(OpId(1), (1, 0, 5), 0, 0, Bytes::from(vec![1u8; 25]));
        o.push(OpId(2), (1, 0, 5), 1, 0, Bytes::from(vec![2u8; 10]));
        o.push(OpId(3), (2, 0, 9), 0, 0, Bytes::from(vec![3u8; 10]));
        let mut out = Vec::new();
        // Peer 1 takes 20 bytes now, peer 2 nothing: one part each of 1 and 2, then 1 again.
        o.pump(10, &mut |to| Some(if to == 1 { 20 } else { 0 }), &mut out);
        assert_eq!(parts(&out), vec![(1, 0, 0, 10), (1, 1, 0, 10)]);
        assert!(matches!(out.last(), Some(Pumped::Done(OpId(2)))));
        out.clear();
        o.pump(10, &mut |_| Some(usize::MAX), &mut out);
        assert_eq!(
            parts(&out),
            vec![(2, 0, 0, 10), (1, 0, 10, 10), (1, 0, 20, 5)]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn a_send_without_a_connection_fails_and_a_lost_peer_takes_its_sends() {
        let mut o = Outbox::default();
        o.push(OpId(1), (1, 0, 0), 0, 0, Bytes::from(vec![0u8; 4]));
        o.push(OpId(2), (2, 0, 0), 0, 0, Bytes::from(vec![0u8; 4]));
        o.push(OpId(3), (2, 0, 1), 0, 0, Bytes::from(vec![0u8; 4]));
        assert_eq!(o.take_to(2), vec![OpId(2), OpId(3)]);
        let mut out = Vec::new();
        o.pump(2, &mut |_| None, &mut out);
        assert!(matches!(out[..], [Pumped::Failed { op: OpId(1), to: 1 }]));
        assert!(o.is_empty());
    }
}
