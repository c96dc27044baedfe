//! Tagged point-to-point messaging: matching receives to arrivals per (source,
//! communicator, tag).
//!
//! Sources and destinations here are world ranks; the communicator (`CommId`'s `u64`,
//! carried in every `Tagged`, `TaggedStart` and `TaggedPart` frame) is part of the
//! matching key, so a message sent on a split communicator never satisfies a world
//! receive of the same tag, and back. A receive remembers the rank it reports the sender
//! as (its rank in the receive's communicator).
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

/// (peer's world rank, communicator, tag): what a message is matched on.
pub(crate) type Key = (u32, u64, u64);

/// A message arriving in parts: its key and sequence number.
type PartKey = (u32, u64, u64, u64);

fn part_key((from, comm, tag): Key, seq: u64) -> PartKey {
    (from, comm, tag, seq)
}

/// Whether `key` belongs to a split communicator (not the world's, id 0).
fn split(key: &Key) -> bool {
    key.1 != 0
}

/// A posted receive: its id, and the sender's rank as the receive reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Posted {
    op: OpId,
    from: u32,
}

/// What one unmatched message costs beyond its payload: its queue (a message with a new
/// tag gets one of its own), the (source, tag) map entries that match and sequence it,
/// and the payload's own allocation, with the allocator's rounding.
pub(crate) const UNMATCHED_OVERHEAD: usize = 256;

/// Why an arrival was refused; each means a broken or hostile peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArrivalError {
    /// The sequence number is not the next one for (source, comm, tag).
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
    /// Next sequence number we send per (destination, comm, tag).
    next_send: BTreeMap<Key, u64>,
    /// Next sequence number we expect per (source, comm, tag).
    next_recv: BTreeMap<Key, u64>,
    unmatched: BTreeMap<Key, VecDeque<Waiting>>,
    unmatched_bytes: BTreeMap<u32, usize>,
    posted: BTreeMap<Key, VecDeque<Posted>>,
    /// Messages arriving in parts, by (source, comm, tag, seq).
    partials: BTreeMap<PartKey, Partial>,
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
        self.take_seq(key, seq)?;
        if let Some(posted) = pop(&mut self.posted, key) {
            return Ok(Some(received(posted, key.2, data)));
        }
        self.charge(key.0, UNMATCHED_OVERHEAD + data.len());
        self.wait(key, Waiting::Whole(crate::retain::bytes(data)));
        Ok(None)
    }

    /// A message of `total` bytes starts; its parts follow. Nothing is allocated for it
    /// until a receive claims it, and a length over the maximum is refused before that.
    pub(crate) fn on_start(
        &mut self,
        key: Key,
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
        self.take_seq(key, seq)?;
        let posted = pop(&mut self.posted, key);
        if posted.is_none() {
            self.charge(key.0, UNMATCHED_OVERHEAD);
            self.wait(key, Waiting::Parts(seq));
        }
        self.partials
            .insert(part_key(key, seq), Partial::new(total, posted));
        Ok(self.finish_if_complete(key, seq))
    }

    /// A part of the message (`key`, seq) arrived.
    pub(crate) fn on_part(
        &mut self,
        key: Key,
        seq: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<Option<Event>, ArrivalError> {
        let partial = self
            .partials
            .get_mut(&part_key(key, seq))
            .ok_or(ArrivalError::NoSuchMessage { tag: key.2, seq })?;
        let buffered = partial.add(offset, data).map_err(ArrivalError::BadPart)?;
        self.charge(key.0, buffered);
        Ok(self.finish_if_complete(key, seq))
    }

    /// Whether (`key`, seq) is a message still arriving in parts here.
    pub(crate) fn is_arriving(&self, key: Key, seq: u64) -> bool {
        self.partials.contains_key(&part_key(key, seq))
    }

    /// Post a receive for `key`, reporting the sender as `report_from`: completes now if
    /// a message is waiting, else when one arrives.
    pub(crate) fn post(&mut self, op: OpId, key: Key, report_from: u32) -> Option<Event> {
        let posted = Posted {
            op,
            from: report_from,
        };
        match pop(&mut self.unmatched, key) {
            Some(Waiting::Whole(data)) => {
                self.release(key.0, UNMATCHED_OVERHEAD + data.len());
                Some(received(posted, key.2, data))
            }
            Some(Waiting::Parts(seq)) => {
                let Some(partial) = self.partials.get_mut(&part_key(key, seq)) else {
                    // Its sender was lost mid-message and the parts dropped.
                    return Some(failed(op, key.0));
                };
                let released = partial.claim(posted);
                self.release(key.0, UNMATCHED_OVERHEAD + released);
                self.finish_if_complete(key, seq)
            }
            None => {
                self.posted.entry(key).or_default().push_back(posted);
                None
            }
        }
    }

    fn take_seq(&mut self, key: Key, seq: u64) -> Result<(), ArrivalError> {
        let expected = self.next_recv.entry(key).or_insert(0);
        if seq != *expected {
            return Err(ArrivalError::OutOfSequence {
                expected: *expected,
                got: seq,
            });
        }
        *expected += 1;
        Ok(())
    }

    fn wait(&mut self, key: Key, waiting: Waiting) {
        self.unmatched
            .entry(key)
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

    /// The completion of (`key`, seq) if it is claimed and all its bytes are in.
    fn finish_if_complete(&mut self, key: Key, seq: u64) -> Option<Event> {
        let pk = part_key(key, seq);
        let partial = self.partials.get(&pk)?;
        if !partial.is_complete() || partial.op().is_none() {
            return None;
        }
        let (posted, data) = self.partials.remove(&pk)?.finish()?;
        Some(received(posted, key.2, data))
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

    /// The receives posted under `keys`, removed: their operations, for the caller to fail.
    fn remove_posted(&mut self, keys: Vec<Key>) -> Vec<OpId> {
        keys.into_iter()
            .filter_map(|k| self.posted.remove(&k))
            .flatten()
            .map(|p| p.op)
            .collect()
    }

    /// Receives waiting on `rank` and sends to it in progress, removed: the caller
    /// fails them (the peer is gone). Its messages still arriving in parts are dropped
    /// and their memory released; a receive that later meets one fails too.
    pub(crate) fn take_posted_from(&mut self, rank: u32) -> Vec<OpId> {
        let keys: Vec<Key> = self
            .posted
            .range((rank, 0, 0)..=(rank, u64::MAX, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut ops = self.remove_posted(keys);
        let partial_keys: Vec<PartKey> = self
            .partials
            .range((rank, 0, 0, 0)..=(rank, u64::MAX, u64::MAX, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        ops.extend(self.drop_partials(partial_keys));
        ops.extend(self.outbox.take_to(rank));
        ops
    }

    /// Remove the messages in parts at `keys`, releasing what they cost their senders:
    /// the receives that had claimed them, to fail.
    fn drop_partials(&mut self, keys: Vec<PartKey>) -> Vec<OpId> {
        let mut ops = Vec::new();
        for key in keys {
            if let Some(partial) = self.partials.remove(&key) {
                self.release(key.0, partial.charged());
                ops.extend(partial.op());
            }
        }
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
            .map(|p| p.op)
            .collect();
        // Every message in parts goes: the claimed fail with their receives, and the
        // memory of the unclaimed is released (a receive that meets one later fails).
        let partial_keys: Vec<PartKey> = self.partials.keys().copied().collect();
        ops.extend(self.drop_partials(partial_keys));
        ops.extend(self.outbox.take_all());
        ops
    }

    /// Forget every split communicator's traffic (an epoch change ended them, even where
    /// the world's ranks stay): sequence numbers, unclaimed messages (their bytes no
    /// longer count against their sender), messages in parts either way, posted
    /// receives and sends in parts, whose ids are returned for the caller to fail. The
    /// world's state is kept.
    pub(crate) fn drop_split_comms(&mut self) -> Vec<OpId> {
        self.next_send.retain(|k, _| !split(k));
        self.next_recv.retain(|k, _| !split(k));
        let dropped: Vec<Key> = self
            .unmatched
            .keys()
            .filter(|k| split(k))
            .copied()
            .collect();
        for key in dropped {
            for waiting in self.unmatched.remove(&key).into_iter().flatten() {
                // A message in parts is charged through its partial, dropped below.
                if let Waiting::Whole(data) = waiting {
                    self.release(key.0, UNMATCHED_OVERHEAD + data.len());
                }
            }
        }
        let posted: Vec<Key> = self.posted.keys().filter(|k| split(k)).copied().collect();
        let mut ops = self.remove_posted(posted);
        let partial_keys: Vec<PartKey> = self
            .partials
            .keys()
            .filter(|&&(from, comm, tag, _)| split(&(from, comm, tag)))
            .copied()
            .collect();
        ops.extend(self.drop_partials(partial_keys));
        ops.extend(self.outbox.take_split());
        ops
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

fn failed(op: OpId, rank: u32) -> Event {
    Event::Completed {
        op,
        outcome: Err(OpError::PeerLost { rank }),
    }
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
mod tests;
