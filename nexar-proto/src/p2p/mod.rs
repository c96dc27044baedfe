//! Tagged point-to-point messaging: matching receives to arrivals per (source, tag).
//!
//! Order and exactly-once come from QUIC: all tagged data from one rank travels on one
//! stream, so it arrives once and in order. The sequence number on each message is a
//! check on that, not a mechanism: a gap or repeat means a broken or hostile peer.
//!
//! Memory is bounded per source. Each unmatched message counts its payload plus a fixed
//! overhead (so a flood of empty messages, each with a new tag, is bounded too). Past
//! `max_unmatched_bytes` of messages nobody has asked for yet, the node stops reading that source's stream; the bytes stay in QUIC, whose
//! flow control stops the sender, whose own queue then fills and its next `send` fails
//! with `Backpressure`. Nothing is dropped and nothing grows without limit.
//!
//! A message longer than one frame opens with a `TaggedStart`, which takes its place in
//! the order, and follows in `TaggedPart`s ([`outbox`] sends them, [`parts`] takes them
//! in): unclaimed, its parts count against the same budget; claimed, they are copied
//! straight into the receive's buffer.

mod outbox;
mod parts;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::error::OpError;
use crate::event::{Event, OpId, Outcome};
pub(crate) use outbox::{Outbox, Pumped};
pub(crate) use parts::PartError;
use parts::Partial;

/// What one unmatched message costs beyond its payload: its queue (a message with a new
/// tag gets one of its own), the (source, tag) map entries that match and sequence it,
/// and the payload's own allocation, with the allocator's rounding.
pub(crate) const UNMATCHED_OVERHEAD: usize = 256;

/// Why an arrival was refused; each means a broken or hostile peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArrivalError {
    /// The sequence number is not the next one for (source, tag).
    OutOfSequence { expected: u64, got: u64 },
    /// A message announced longer than the configured maximum.
    TooLong { len: u64, limit: usize },
    /// A part for no message in progress: one this node has given up (its receive
    /// failed with the peer or the membership), so the part is dropped, not an offence.
    NoSuchMessage { tag: u64, seq: u64 },
    /// A part out of place in its message.
    BadPart(PartError),
}

/// A message no receive has claimed yet.
#[derive(Debug)]
enum Waiting {
    /// Arrived whole.
    Whole(Bytes),
    /// Arriving in parts: the sequence number of its entry in `P2p::partials`.
    Parts(u64),
}

/// Matching state for one node.
#[derive(Debug)]
pub(crate) struct P2p {
    /// The longest message accepted (`NodeConfig::max_message_len`).
    max_len: usize,
    /// Next sequence number we send per (destination, tag).
    next_send: BTreeMap<(u32, u64), u64>,
    /// Next sequence number we expect per (source, tag).
    next_recv: BTreeMap<(u32, u64), u64>,
    unmatched: BTreeMap<(u32, u64), VecDeque<Waiting>>,
    unmatched_bytes: BTreeMap<u32, usize>,
    posted: BTreeMap<(u32, u64), VecDeque<OpId>>,
    /// Messages arriving in parts, by (source, tag, seq).
    partials: BTreeMap<(u32, u64, u64), Partial>,
    /// Our own messages leaving in parts.
    pub(crate) outbox: Outbox,
}

impl P2p {
    /// Matching state accepting messages of at most `max_len` bytes.
    pub(crate) fn new(max_len: usize) -> Self {
        P2p {
            max_len,
            next_send: BTreeMap::new(),
            next_recv: BTreeMap::new(),
            unmatched: BTreeMap::new(),
            unmatched_bytes: BTreeMap::new(),
            posted: BTreeMap::new(),
            partials: BTreeMap::new(),
            outbox: Outbox::default(),
        }
    }

    /// The longest message accepted.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    /// The sequence number the next message to (to, tag) will take, without taking it.
    pub(crate) fn peek_seq(&self, to: u32, tag: u64) -> u64 {
        self.next_send.get(&(to, tag)).copied().unwrap_or(0)
    }

    /// The sequence number for the next message to (to, tag).
    pub(crate) fn next_seq(&mut self, to: u32, tag: u64) -> u64 {
        let seq = self.next_send.entry((to, tag)).or_insert(0);
        let s = *seq;
        *seq += 1;
        s
    }

    /// A message arrived. Completes a posted receive or buffers it.
    pub(crate) fn on_arrival(
        &mut self,
        from: u32,
        tag: u64,
        seq: u64,
        data: Bytes,
    ) -> Result<Option<Event>, ArrivalError> {
        self.take_seq(from, tag, seq)?;
        if let Some(op) = pop(&mut self.posted, (from, tag)) {
            return Ok(Some(received(op, from, tag, data)));
        }
        self.charge(from, UNMATCHED_OVERHEAD + data.len());
        self.wait(from, tag, Waiting::Whole(crate::retain::bytes(data)));
        Ok(None)
    }

    /// A message of `total` bytes starts; its parts follow. Nothing is allocated for it
    /// until a receive claims it, and a length over the maximum is refused before that.
    pub(crate) fn on_start(
        &mut self,
        from: u32,
        tag: u64,
        seq: u64,
        total: u64,
    ) -> Result<Option<Event>, ArrivalError> {
        let total = usize::try_from(total)
            .ok()
            .filter(|&t| t <= self.max_len)
            .ok_or(ArrivalError::TooLong {
                len: total,
                limit: self.max_len,
            })?;
        self.take_seq(from, tag, seq)?;
        let op = pop(&mut self.posted, (from, tag));
        if op.is_none() {
            self.charge(from, UNMATCHED_OVERHEAD);
            self.wait(from, tag, Waiting::Parts(seq));
        }
        self.partials
            .insert((from, tag, seq), Partial::new(total, op));
        Ok(self.finish_if_complete(from, tag, seq))
    }

    /// A part of the message (from, tag, seq) arrived.
    pub(crate) fn on_part(
        &mut self,
        from: u32,
        tag: u64,
        seq: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<Option<Event>, ArrivalError> {
        let partial = self
            .partials
            .get_mut(&(from, tag, seq))
            .ok_or(ArrivalError::NoSuchMessage { tag, seq })?;
        let buffered = partial.add(offset, data).map_err(ArrivalError::BadPart)?;
        self.charge(from, buffered);
        Ok(self.finish_if_complete(from, tag, seq))
    }

    /// Whether (from, tag, seq) is a message still arriving in parts here.
    pub(crate) fn is_arriving(&self, from: u32, tag: u64, seq: u64) -> bool {
        self.partials.contains_key(&(from, tag, seq))
    }

    /// Post a receive: completes now if a message is waiting, else when one arrives.
    pub(crate) fn post(&mut self, op: OpId, from: u32, tag: u64) -> Option<Event> {
        match pop(&mut self.unmatched, (from, tag)) {
            Some(Waiting::Whole(data)) => {
                self.release(from, UNMATCHED_OVERHEAD + data.len());
                Some(received(op, from, tag, data))
            }
            Some(Waiting::Parts(seq)) => {
                let Some(partial) = self.partials.get_mut(&(from, tag, seq)) else {
                    // Its sender was lost mid-message and the parts dropped.
                    return Some(failed(op, from));
                };
                let released = partial.claim(op);
                self.release(from, UNMATCHED_OVERHEAD + released);
                self.finish_if_complete(from, tag, seq)
            }
            None => {
                self.posted.entry((from, tag)).or_default().push_back(op);
                None
            }
        }
    }

    fn take_seq(&mut self, from: u32, tag: u64, seq: u64) -> Result<(), ArrivalError> {
        let expected = self.next_recv.entry((from, tag)).or_insert(0);
        if seq != *expected {
            return Err(ArrivalError::OutOfSequence {
                expected: *expected,
                got: seq,
            });
        }
        *expected += 1;
        Ok(())
    }

    fn wait(&mut self, from: u32, tag: u64, waiting: Waiting) {
        self.unmatched
            .entry((from, tag))
            .or_insert_with(|| VecDeque::with_capacity(1))
            .push_back(waiting);
    }

    fn charge(&mut self, from: u32, bytes: usize) {
        if bytes > 0 {
            *self.unmatched_bytes.entry(from).or_insert(0) += bytes;
        }
    }

    fn release(&mut self, from: u32, bytes: usize) {
        if let Some(b) = self.unmatched_bytes.get_mut(&from) {
            *b = b.saturating_sub(bytes);
            if *b == 0 {
                self.unmatched_bytes.remove(&from);
            }
        }
    }

    /// The completion of (from, tag, seq) if it is claimed and all its bytes are in.
    fn finish_if_complete(&mut self, from: u32, tag: u64, seq: u64) -> Option<Event> {
        let key = (from, tag, seq);
        if !self.partials.get(&key)?.is_complete() || self.partials.get(&key)?.op().is_none() {
            return None;
        }
        let (op, data) = self.partials.remove(&key)?.finish()?;
        Some(received(op, from, tag, data))
    }

    /// Bytes buffered from `from` that no receive has claimed (with the per-message
    /// overhead).
    pub(crate) fn unmatched_bytes(&self, from: u32) -> usize {
        self.unmatched_bytes.get(&from).copied().unwrap_or(0)
    }

    /// Bytes buffered from all sources that no receive has claimed.
    pub(crate) fn total_unmatched_bytes(&self) -> usize {
        self.unmatched_bytes.values().sum()
    }

    /// Receives waiting on `rank` and sends to it in progress, removed: the caller
    /// fails them (the peer is gone). Its messages still arriving in parts are dropped
    /// and their memory released; a receive that later meets one fails too.
    pub(crate) fn take_posted_from(&mut self, rank: u32) -> Vec<OpId> {
        let keys: Vec<(u32, u64)> = self
            .posted
            .range((rank, 0)..=(rank, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut ops: Vec<OpId> = keys
            .into_iter()
            .filter_map(|k| self.posted.remove(&k))
            .flatten()
            .collect();
        let partial_keys: Vec<(u32, u64, u64)> = self
            .partials
            .range((rank, 0, 0)..=(rank, u64::MAX, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in partial_keys {
            if let Some(partial) = self.partials.remove(&key) {
                self.release(rank, partial.charged());
                ops.extend(partial.op());
            }
        }
        ops.extend(self.outbox.take_to(rank));
        ops
    }
}

impl P2p {
    /// Every posted receive, claimed message in parts and send in parts, to fail them
    /// all (the membership is changing).
    pub(crate) fn take_all_posted(&mut self) -> Vec<OpId> {
        let mut ops: Vec<OpId> = std::mem::take(&mut self.posted)
            .into_values()
            .flatten()
            .collect();
        // Every message in parts goes: the claimed fail with their receives, and the
        // memory of the unclaimed is released (a receive that meets one later fails).
        for ((from, _, _), partial) in std::mem::take(&mut self.partials) {
            self.release(from, partial.charged());
            ops.extend(partial.op());
        }
        ops.extend(self.outbox.take_all());
        ops
    }
}

/// The front of `key`'s queue, dropping the entry once empty (so maps keyed by tags a
/// peer chooses do not keep one entry per tag ever used).
fn pop<T>(map: &mut BTreeMap<(u32, u64), VecDeque<T>>, key: (u32, u64)) -> Option<T> {
    let queue = map.get_mut(&key)?;
    let item = queue.pop_front();
    if queue.is_empty() {
        map.remove(&key);
    }
    item
}

fn failed(op: OpId, rank: u32) -> Event {
    Event::Completed {
        op,
        outcome: Err(OpError::PeerLost { rank }),
    }
}

fn received(op: OpId, from: u32, tag: u64, data: Bytes) -> Event {
    Event::Completed {
        op,
        outcome: Ok(Outcome::Received { from, tag, data }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_in_order_per_source_and_tag() {
        let mut p = P2p::new(1 << 20);
        assert_eq!(p.on_arrival(1, 7, 0, Bytes::from_static(b"a")), Ok(None));
        assert_eq!(p.on_arrival(1, 7, 1, Bytes::from_static(b"b")), Ok(None));
        assert_eq!(p.unmatched_bytes(1), 2 + 2 * UNMATCHED_OVERHEAD);
        let first = p.post(OpId(1), 1, 7).unwrap();
        assert!(
            matches!(first, Event::Completed { outcome: Ok(Outcome::Received { ref data, .. }), .. } if data == "a")
        );
        assert!(p.post(OpId(2), 1, 8).is_none());
        let later = p
            .on_arrival(1, 8, 0, Bytes::from_static(b"c"))
            .unwrap()
            .unwrap();
        assert!(matches!(later, Event::Completed { op: OpId(2), .. }));
        assert_eq!(p.unmatched_bytes(1), 1 + UNMATCHED_OVERHEAD);
    }

    #[test]
    fn gaps_and_repeats_are_refused() {
        let mut p = P2p::new(1 << 20);
        assert!(p.on_arrival(0, 1, 0, Bytes::new()).is_ok());
        assert_eq!(
            p.on_arrival(0, 1, 0, Bytes::new()),
            Err(ArrivalError::OutOfSequence {
                expected: 1,
                got: 0
            })
        );
        assert_eq!(
            p.on_arrival(0, 1, 5, Bytes::new()),
            Err(ArrivalError::OutOfSequence {
                expected: 1,
                got: 5
            })
        );
    }

    #[test]
    fn messages_in_parts_are_charged_until_claimed_and_released_when_lost() {
        let mut p = P2p::new(10);
        assert_eq!(
            p.on_start(1, 7, 0, 11),
            Err(ArrivalError::TooLong { len: 11, limit: 10 })
        );
        assert_eq!(
            p.on_start(1, 7, 0, u64::MAX),
            Err(ArrivalError::TooLong {
                len: u64::MAX,
                limit: 10
            })
        );
        assert_eq!(p.unmatched_bytes(1), 0, "a refused length costs nothing");
        assert_eq!(p.on_start(1, 7, 0, 10), Ok(None));
        assert_eq!(p.on_part(1, 7, 0, 0, Bytes::from_static(b"0123")), Ok(None));
        assert_eq!(p.unmatched_bytes(1), UNMATCHED_OVERHEAD + 4);
        // A whole message behind it on the same tag waits its turn.
        assert_eq!(p.on_arrival(1, 7, 1, Bytes::from_static(b"w")), Ok(None));
        assert!(p.post(OpId(1), 1, 7).is_none(), "claimed, not complete");
        assert_eq!(p.unmatched_bytes(1), UNMATCHED_OVERHEAD + 1);
        let done = p.on_part(1, 7, 0, 4, Bytes::from_static(b"456789"));
        assert!(
            matches!(done, Ok(Some(Event::Completed { op: OpId(1), outcome: Ok(Outcome::Received { ref data, .. }) })) if data == "0123456789")
        );
        assert!(matches!(
            p.post(OpId(2), 1, 7),
            Some(Event::Completed { op: OpId(2), .. })
        ));
        assert_eq!(
            p.on_part(1, 7, 0, 10, Bytes::from_static(b"x")),
            Err(ArrivalError::NoSuchMessage { tag: 7, seq: 0 })
        );

        // Lost mid-message: the claimed receive fails, the unclaimed bytes are released.
        assert_eq!(p.on_start(2, 1, 0, 8), Ok(None));
        assert_eq!(p.on_start(2, 2, 0, 8), Ok(None));
        assert!(p.post(OpId(3), 2, 1).is_none());
        assert_eq!(p.on_part(2, 2, 0, 0, Bytes::from_static(b"ab")), Ok(None));
        assert_eq!(p.unmatched_bytes(2), UNMATCHED_OVERHEAD + 2);
        assert_eq!(p.take_posted_from(2), vec![OpId(3)]);
        assert_eq!(p.unmatched_bytes(2), 0);
        let late = p.post(OpId(4), 2, 2);
        assert!(matches!(
            late,
            Some(Event::Completed {
                op: OpId(4),
                outcome: Err(OpError::PeerLost { rank: 2 })
            })
        ));
    }
}
