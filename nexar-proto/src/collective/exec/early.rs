//! Chunks that arrive before their operation starts here, held in a bounded window.
//!
//! A peer may legitimately run ahead (non-blocking collectives, or it simply started
//! first), so its chunks are kept rather than dropped. What a member can make us keep
//! is bounded per sender: each chunk costs its payload plus a fixed overhead (so empty
//! chunks count too), and a sender over its share of `max_early_bytes` has its stream
//! paused (QUIC flow control holds the rest). The share is per sender so that one
//! member filling the window with chunks for operations that never start cannot stall
//! the honest ranks' streams with it.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::Chunk;

/// What one held chunk costs beyond its payload: its slot in the window (a `Vec` that
/// may be up to half empty), its key's map entry and the payload's own allocation.
pub(crate) const EARLY_OVERHEAD: usize = 2 * std::mem::size_of::<(u32, Chunk)>() + 128;

#[derive(Debug, Default)]
pub(super) struct Early {
    chunks: BTreeMap<(u64, u64), Vec<(u32, Chunk)>>,
    /// Held bytes (payload plus overhead) per sender.
    by_sender: BTreeMap<u32, usize>,
    bytes: usize,
    paused: BTreeSet<u32>,
}

fn cost(chunk: &Chunk) -> usize {
    EARLY_OVERHEAD + chunk.payload.len()
}

impl Early {
    /// Hold `chunk` from `from`; `true` if `from` is now over `share` and was reading
    /// (the caller pauses it).
    pub(super) fn hold(&mut self, from: u32, mut chunk: Chunk, share: usize) -> bool {
        chunk.payload = crate::retain::pieces(chunk.payload);
        let c = cost(&chunk);
        self.bytes += c;
        let mine = self.by_sender.entry(from).or_default();
        *mine += c;
        let over = *mine > share;
        self.chunks
            .entry((chunk.header.comm, chunk.header.seq))
            .or_default()
            .push((from, chunk));
        over && self.paused.insert(from)
    }

    /// The chunks held for (comm, seq), in arrival order, no longer counted.
    pub(super) fn take(&mut self, key: (u64, u64)) -> Vec<(u32, Chunk)> {
        let chunks = self.chunks.remove(&key).unwrap_or_default();
        for (from, chunk) in &chunks {
            let c = cost(chunk);
            self.bytes = self.bytes.saturating_sub(c);
            if let Some(mine) = self.by_sender.get_mut(from) {
                *mine = mine.saturating_sub(c);
                if *mine == 0 {
                    self.by_sender.remove(from);
                }
            }
        }
        chunks
    }

    /// Paused senders now at or below half their share: the caller resumes them.
    pub(super) fn resumable(&mut self, share: usize) -> Vec<u32> {
        let ready: Vec<u32> = self
            .paused
            .iter()
            .copied()
            .filter(|r| self.by_sender.get(r).copied().unwrap_or(0) <= share / 2)
            .collect();
        for r in &ready {
            self.paused.remove(r);
        }
        ready
    }

    /// Held bytes, overhead included.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}
