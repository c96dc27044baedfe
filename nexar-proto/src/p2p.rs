//! Tagged point-to-point messaging: matching receives to arrivals per (source,
//! communicator, tag).
//!
//! Sources and destinations here are world ranks; the communicator (`CommId`'s `u64`,
//! carried in every `Tagged` frame) is part of the matching key, so a message sent on a
//! split communicator never satisfies a world receive of the same tag, and back. A
//! receive remembers the rank it reports the sender as (its rank in the receive's
//! communicator).
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

/// (peer's world rank, communicator, tag): what a message is matched on.
type Key = (u32, u64, u64);

/// A posted receive: its id, and the sender's rank as the receive reports it.
#[derive(Debug, Clone, Copy)]
struct Posted {
    op: OpId,
    from: u32,
}

/// Matching state for one node.
#[derive(Debug, Default)]
pub(crate) struct P2p {
    /// Next sequence number we send per (destination, comm, tag).
    next_send: BTreeMap<Key, u64>,
    /// Next sequence number we expect per (source, comm, tag).
    next_recv: BTreeMap<Key, u64>,
    unmatched: BTreeMap<Key, VecDeque<Bytes>>,
    unmatched_bytes: BTreeMap<u32, usize>,
    posted: BTreeMap<Key, VecDeque<Posted>>,
}

impl P2p {
    /// The sequence number the next message to `key` will take, without taking it.
    pub(crate) fn peek_seq(&self, key: Key) -> u64 {
        self.next_send.get(&key).copied().unwrap_or(0)
    }

    /// The sequence number for the next message to `key`.
    pub(crate) fn next_seq(&mut self, key: Key) -> u64 {
        let seq = self.next_send.entry(key).or_insert(0);
        let s = *seq;
        *seq += 1;
        s
    }

    /// A message arrived from `key`'s peer. Completes a posted receive or buffers it.
    pub(crate) fn on_arrival(
        &mut self,
        key: Key,
        seq: u64,
        data: Bytes,
    ) -> Result<Option<Event>, ArrivalError> {
        let expected = self.next_recv.entry(key).or_insert(0);
        if seq != *expected {
            return Err(ArrivalError::OutOfSequence {
                expected: *expected,
                got: seq,
            });
        }
        *expected += 1;
        if let Some(posted) = pop(&mut self.posted, key) {
            return Ok(Some(received(posted, key.2, data)));
        }
        *self.unmatched_bytes.entry(key.0).or_insert(0) += cost(&data);
        self.unmatched
            .entry(key)
            .or_insert_with(|| VecDeque::with_capacity(1))
            .push_back(crate::retain::bytes(data));
        Ok(None)
    }

    /// Post a receive for `key`, reporting the sender as `report_from`: completes now if
    /// a message is waiting, else when one arrives.
    pub(crate) fn post(&mut self, op: OpId, key: Key, report_from: u32) -> Option<Event> {
        let posted = Posted {
            op,
            from: report_from,
        };
        if let Some(data) = pop(&mut self.unmatched, key) {
            if let Some(b) = self.unmatched_bytes.get_mut(&key.0) {
                *b = b.saturating_sub(cost(&data));
            }
            return Some(received(posted, key.2, data));
        }
        self.posted.entry(key).or_default().push_back(posted);
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
        let keys: Vec<Key> = self
            .posted
            .range((rank, 0, 0)..=(rank, u64::MAX, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.posted.remove(&k))
            .flatten()
            .map(|p| p.op)
            .collect()
    }
}

impl P2p {
    /// Every posted receive, to fail them all (the membership is changing).
    pub(crate) fn take_all_posted(&mut self) -> Vec<OpId> {
        std::mem::take(&mut self.posted)
            .into_values()
            .flatten()
            .map(|p| p.op)
            .collect()
    }

    /// Forget every split communicator's traffic (an epoch change ended them, even where
    /// the world's ranks stay): sequence numbers, unclaimed messages (their bytes no
    /// longer count against their sender) and posted receives, whose ids are returned
    /// for the caller to fail. The world's state is kept.
    pub(crate) fn drop_split_comms(&mut self) -> Vec<OpId> {
        let split = |k: &Key| k.1 != 0;
        self.next_send.retain(|k, _| !split(k));
        self.next_recv.retain(|k, _| !split(k));
        let dropped: Vec<Key> = self
            .unmatched
            .keys()
            .filter(|k| split(k))
            .copied()
            .collect();
        for key in dropped {
            for data in self.unmatched.remove(&key).into_iter().flatten() {
                if let Some(b) = self.unmatched_bytes.get_mut(&key.0) {
                    *b = b.saturating_sub(cost(&data));
                }
            }
        }
        let posted: Vec<Key> = self.posted.keys().filter(|k| split(k)).copied().collect();
        posted
            .into_iter()
            .filter_map(|k| self.posted.remove(&k))
            .flatten()
            .map(|p| p.op)
            .collect()
    }
}

/// The front of `key`'s queue, dropping the entry once empty (so maps keyed by tags a
/// peer chooses do not keep one entry per tag ever used).
fn pop<T>(map: &mut BTreeMap<Key, VecDeque<T>>, key: Key) -> Option<T> {
    let queue = map.get_mut(&key)?;
    let item = queue.pop_front();
    if queue.is_empty() {
        map.remove(&key);
    }
    item
}

fn received(posted: Posted, tag: u64, data: Bytes) -> Event {
    Event::Completed {
        op: posted.op,
        outcome: Ok(Outcome::Received {
            from: posted.from,
            tag,
            data,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_in_order_per_source_and_tag() {
        let mut p = P2p::default();
        assert_eq!(
            p.on_arrival((1, 0, 7), 0, Bytes::from_static(b"a")),
            Ok(None)
        );
        assert_eq!(
            p.on_arrival((1, 0, 7), 1, Bytes::from_static(b"b")),
            Ok(None)
        );
        assert_eq!(p.unmatched_bytes(1), 2 + 2 * UNMATCHED_OVERHEAD);
        let first = p.post(OpId(1), (1, 0, 7), 1).unwrap();
        assert!(
            matches!(first, Event::Completed { outcome: Ok(Outcome::Received { ref data, .. }), .. } if data == "a")
        );
        assert!(p.post(OpId(2), (1, 0, 8), 1).is_none());
        let later = p
            .on_arrival((1, 0, 8), 0, Bytes::from_static(b"c"))
            .unwrap()
            .unwrap();
        assert!(matches!(later, Event::Completed { op: OpId(2), .. }));
        assert_eq!(p.unmatched_bytes(1), 1 + UNMATCHED_OVERHEAD);
    }

    #[test]
    fn gaps_and_repeats_are_refused() {
        let mut p = P2p::default();
        assert!(p.on_arrival((0, 0, 1), 0, Bytes::new()).is_ok());
        assert_eq!(
            p.on_arrival((0, 0, 1), 0, Bytes::new()),
            Err(ArrivalError::OutOfSequence {
                expected: 1,
                got: 0
            })
        );
        assert_eq!(
            p.on_arrival((0, 0, 1), 5, Bytes::new()),
            Err(ArrivalError::OutOfSequence {
                expected: 1,
                got: 5
            })
        );
    }

    #[test]
    fn communicators_do_not_share_a_tag() {
        let mut p = P2p::default();
        // Same peer (world rank 2), same tag 5: one message on the world, one on comm 77.
        assert_eq!(
            p.on_arrival((2, 77, 5), 0, Bytes::from_static(b"sub")),
            Ok(None)
        );
        assert_eq!(
            p.on_arrival((2, 0, 5), 0, Bytes::from_static(b"world")),
            Ok(None)
        );
        let world = p.post(OpId(1), (2, 0, 5), 2).unwrap();
        assert!(
            matches!(world, Event::Completed { op: OpId(1), outcome: Ok(Outcome::Received { from: 2, ref data, .. }) } if data == "world")
        );
        // The split receive reports the sender's rank in the split communicator.
        let sub = p.post(OpId(2), (2, 77, 5), 0).unwrap();
        assert!(
            matches!(sub, Event::Completed { op: OpId(2), outcome: Ok(Outcome::Received { from: 0, ref data, .. }) } if data == "sub")
        );
        // Sequence numbers are per communicator: both started at 0 above.
        assert_eq!(p.peek_seq((3, 77, 5)), 0);
        assert_eq!(p.next_seq((3, 77, 5)), 0);
        assert_eq!(p.peek_seq((3, 0, 5)), 0);
    }

    #[test]
    fn dropping_split_comms_keeps_the_world() {
        let mut p = P2p::default();
        p.on_arrival((1, 9, 3), 0, Bytes::from_static(b"gone"))
            .unwrap();
        p.on_arrival((1, 0, 3), 0, Bytes::from_static(b"kept"))
            .unwrap();
        assert!(p.post(OpId(4), (2, 9, 3), 0).is_none());
        assert!(p.post(OpId(5), (2, 0, 3), 2).is_none());
        p.next_seq((2, 9, 3));
        p.next_seq((2, 0, 3));
        assert_eq!(p.drop_split_comms(), vec![OpId(4)]);
        assert_eq!(p.unmatched_bytes(1), 4 + UNMATCHED_OVERHEAD);
        assert_eq!(p.peek_seq((2, 9, 3)), 0);
        assert_eq!(p.peek_seq((2, 0, 3)), 1);
        // The split comm's receive state is gone too: sequence 0 is expected again.
        assert!(p.on_arrival((1, 9, 3), 0, Bytes::new()).is_ok());
        assert_eq!(p.take_all_posted(), vec![OpId(5)]);
    }
}
