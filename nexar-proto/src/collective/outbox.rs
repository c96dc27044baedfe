//! The sends of one collective's current step that are not encoded yet, and received
//! payloads that can go out again as they are.
//!
//! Encoding copies a range of the working buffer into a payload. Doing it for a whole
//! step at once (a ring step of a 64 MiB allreduce is 16 MiB) holds a second copy of that
//! data until QUIC has sent it; instead each send waits here until its connection has
//! room ([`Outbox::take`]), so what QUIC packetises was copied moments before.
//!
//! A send whose range is exactly what a chunk of an earlier step wrote by copy (the ring
//! all-gather forwards each block it receives) reuses that chunk's payload: same bytes,
//! no copy. A payload is only kept while nothing has written over its range.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;

use super::buffer::Buffer;
use super::running::OutChunk;
use crate::codec::{ChunkHeader, Fingerprint, Pieces};

/// A send of the current step: destination, header fields, element range.
#[derive(Debug, Clone)]
pub(crate) struct Deferred {
    pub(crate) to: u32,
    pub(crate) header: ChunkHeader,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) range: Range<usize>,
}

/// A payload written into the buffer by copy: its range's end, the step, the bytes.
#[derive(Debug)]
struct Received {
    end: usize,
    step: u32,
    payload: Pieces,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    deferred: VecDeque<Deferred>,
    /// By the range's start; ranges never overlap (a write over one drops it).
    received: BTreeMap<usize, Received>,
}

impl Outbox {
    pub(crate) fn push(&mut self, send: Deferred) {
        self.deferred.push_back(send);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.deferred.is_empty()
    }

    /// Whether a waiting send reads any of `range`.
    pub(crate) fn reads(&self, range: &Range<usize>) -> bool {
        self.deferred.iter().any(|d| overlaps(&d.range, range))
    }

    /// Encode waiting sends, in order, while `room(to, bytes)` accepts them. A peer
    /// refused once is skipped for the rest of the call, so its sends stay in order.
    pub(crate) fn take(
        &mut self,
        buf: &Buffer,
        elem: usize,
        room: &mut dyn FnMut(u32, usize) -> bool,
        out: &mut Vec<OutChunk>,
    ) {
        // Called after every input, with up to a step's worth of sends waiting (64 for a
        // 16 MiB ring step): skip over the refused ones in place rather than rebuilding the
        // queue, which allocated and moved every waiting send on each call.
        let mut blocked = BTreeSet::new();
        let mut i = 0;
        while let Some(d) = self.deferred.get(i) {
            if blocked.contains(&d.to) || !room(d.to, d.range.len() * elem) {
                blocked.insert(d.to);
                i += 1;
                continue;
            }
            if let Some(d) = self.deferred.remove(i) {
                out.push(self.encode(buf, elem, d));
            }
        }
    }

    /// Encode every waiting send now (the step ends, or its data is about to change).
    pub(crate) fn flush(&mut self, buf: &Buffer, elem: usize, out: &mut Vec<OutChunk>) {
        while let Some(d) = self.deferred.pop_front() {
            out.push(self.encode(buf, elem, d));
        }
    }

    /// Encode one send: a kept payload of exactly its range, else a copy of the buffer.
    pub(crate) fn encode(&mut self, buf: &Buffer, elem: usize, d: Deferred) -> OutChunk {
        let kept = self
            .received
            .get(&d.range.start)
            .is_some_and(|r| r.end == d.range.end && r.payload.len() == d.range.len() * elem);
        // Forwarded once, then let go: held any longer it would double the memory the
        // step needs (another send of the range, a tree's second child, copies the buffer).
        let payload = match kept {
            true => self.received.remove(&d.range.start).map(|r| r.payload),
            false => None,
        };
        OutChunk {
            to: d.to,
            header: d.header,
            fingerprint: d.fingerprint,
            payload: payload.unwrap_or_else(|| buf.encode_range(d.range).into()),
        }
    }

    /// `range` of the buffer was written: payloads over any of it are stale.
    pub(crate) fn written(&mut self, range: &Range<usize>) {
        let stale: Vec<usize> = self
            .received
            .range(..range.end)
            .filter(|(start, r)| overlaps(&(**start..r.end), range))
            .map(|(start, _)| *start)
            .collect();
        for start in stale {
            self.received.remove(&start);
        }
    }

    /// `payload` was copied into `range` in `step`; a later step may send it on.
    pub(crate) fn copied(&mut self, range: Range<usize>, step: u32, payload: Pieces) {
        self.written(&range);
        if !range.is_empty() {
            let end = range.end;
            self.received
                .insert(range.start, Received { end, step, payload });
        }
    }

    /// Step `step` begins: payloads from before the previous step will not be forwarded
    /// (the plans forward a block in the step right after it came), so let them go,
    /// unless a send still waiting for room is for exactly their range.
    pub(crate) fn begin_step(&mut self, step: u32) {
        let deferred = &self.deferred;
        self.received.retain(|start, r| {
            r.step + 1 >= step
                || deferred
                    .iter()
                    .any(|d| d.range.start == *start && d.range.end == r.end)
        });
    }
}

#[cfg(test)]
impl Outbox {
    /// The ranges whose payloads are kept for a later send.
    pub(crate) fn kept(&self) -> Vec<Range<usize>> {
        self.received.iter().map(|(s, r)| *s..r.end).collect()
    }
}

pub(crate) fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Algorithm;

    fn send(range: Range<usize>) -> Deferred {
        Deferred {
            to: 1,
            header: ChunkHeader {
                epoch: 1,
                comm: 0,
                seq: 0,
                algorithm: Algorithm::Ring,
                step: 1,
                offset: 0,
            },
            fingerprint: None,
            range,
        }
    }

    fn le(values: &[f32]) -> Pieces {
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes.into()
    }

    #[test]
    fn a_copied_payload_goes_out_again_without_a_copy_until_written_over() {
        let buf = Buffer::from_vec(vec![1f32, 2.0, 3.0, 4.0]);
        let mut o = Outbox::default();
        let payload = le(&[3.0, 4.0]);
        o.copied(2..4, 0, payload.clone());
        let c = o.encode(&buf, 4, send(2..4));
        assert_eq!(
            c.payload.parts()[0].as_ptr(),
            payload.parts()[0].as_ptr(),
            "the same bytes, not a copy"
        );
        assert!(o.received.is_empty(), "forwarded once, then let go");
        // A range that does not match exactly is encoded from the buffer.
        o.copied(2..4, 0, payload.clone());
        let c = o.encode(&buf, 4, send(2..3));
        assert_eq!(c.payload, le(&[3.0]));
        // Written over (a reduction into part of it): the buffer is the truth.
        o.written(&(3..4));
        let c = o.encode(&buf, 4, send(2..4));
        assert_ne!(c.payload.parts()[0].as_ptr(), payload.parts()[0].as_ptr());
        assert_eq!(c.payload, le(&[3.0, 4.0]));
    }

    #[test]
    fn payloads_older_than_the_previous_step_are_dropped() {
        let mut o = Outbox::default();
        o.copied(0..2, 0, le(&[1.0, 2.0]));
        o.copied(2..4, 1, le(&[3.0, 4.0]));
        o.begin_step(2);
        assert_eq!(o.received.keys().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn take_skips_a_refused_peer_and_keeps_each_peers_order() {
        let buf = Buffer::from_vec(vec![0f32; 8]);
        let mut o = Outbox::default();
        for (to, start) in [(1, 0), (2, 1), (1, 2), (2, 3), (1, 4)] {
            o.push(Deferred {
                to,
                ..send(start..start + 1)
            });
        }
        // Peer 1 has room for one send, peer 2 for all of them.
        let mut room1 = 1;
        let mut out = Vec::new();
        o.take(
            &buf,
            4,
            &mut |to, _| match to {
                1 if room1 > 0 => {
                    room1 -= 1;
                    true
                }
                1 => false,
                _ => true,
            },
            &mut out,
        );
        let sent: Vec<(u32, usize)> = out.iter().map(|c| (c.to, c.payload.len())).collect();
        assert_eq!(sent, vec![(1, 4), (2, 4), (2, 4)]);
        let waiting: Vec<(u32, usize)> = o.deferred.iter().map(|d| (d.to, d.range.start)).collect();
        assert_eq!(waiting, vec![(1, 2), (1, 4)], "peer 1's rest, in order");
        let mut out = Vec::new();
        o.take(&buf, 4, &mut |_, _| true, &mut out);
        assert_eq!(out.iter().map(|c| c.to).collect::<Vec<_>>(), vec![1, 1]);
        assert!(o.is_empty());
    }
}
