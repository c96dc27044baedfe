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

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::event::{Event, OpId, Outcome};

/// What one unmatched message costs beyond its payload: its queue (a message with a new
/// tag gets one of its own), the (source, tag) map entries that match and sequence it,
/// and the payload's own allocation, with the allocator's rounding.
pub(crate) const UNMATCHED_OVERHEAD: usize = 256;

fn cost(data: &Bytes) -> usize {
    UNMATCHED_OVERHEAD + data.len()
}

/// Why an arrival was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArrivalError {
    /// The sequence number is not the next one for (source, tag).
    OutOfSequence { expected: u64, got: u64 },
}

/// Matching state for one node.
#[derive(Debug, Default)]
pub(crate) struct P2p {
    /// Next sequence number we send per (destination, tag).
    next_send: BTreeMap<(u32, u64), u64>,
    /// Next sequence number we expect per (source, tag).
    next_recv: BTreeMap<(u32, u64), u64>,
    unmatched: BTreeMap<(u32, u64), VecDeque<Bytes>>,
    unmatched_bytes: BTreeMap<u32, usize>,
    posted: BTreeMap<(u32, u64), VecDeque<OpId>>,
}

impl P2p {
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
        let expected = self.next_recv.entry((from, tag)).or_insert(0);
        if seq != *expected {
            return Err(ArrivalError::OutOfSequence {
                expected: *expected,
                got: seq,
            });
        }
        *expected += 1;
        if let Some(op) = pop(&mut self.posted, (from, tag)) {
            return Ok(Some(received(op, from, tag, data)));
        }
        *self.unmatched_bytes.entry(from).or_insert(0) += cost(&data);
        self.unmatched
            .entry((from, tag))
            .or_insert_with(|| VecDeque::with_capacity(1))
            .push_back(crate::retain::bytes(data));
        Ok(None)
    }

    /// Post a receive: completes now if a message is waiting, else when one arrives.
    pub(crate) fn post(&mut self, op: OpId, from: u32, tag: u64) -> Option<Event> {
        if let Some(data) = pop(&mut self.unmatched, (from, tag)) {
            if let Some(b) = self.unmatched_bytes.get_mut(&from) {
                *b = b.saturating_sub(cost(&data));
            }
            return Some(received(op, from, tag, data));
        }
        self.posted.entry((from, tag)).or_default().push_back(op);
        None
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

    /// Receives waiting on `rank`, removed: the caller fails them (the peer is gone).
    pub(crate) fn take_posted_from(&mut self, rank: u32) -> Vec<OpId> {
        let keys: Vec<(u32, u64)> = self
            .posted
            .range((rank, 0)..=(rank, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.posted.remove(&k))
            .flatten()
            .collect()
    }
}

impl P2p {
    /// Every posted receive, to fail them all (the membership is changing).
    pub(crate) fn take_all_posted(&mut self) -> Vec<OpId> {
        std::mem::take(&mut self.posted)
            .into_values()
            .flatten()
            .collect()
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
        let mut p = P2p::default();
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
        let mut p = P2p::default();
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
}
