//! Detaching the bytes a node keeps from the receive buffers they arrived in.
//!
//! A received payload is usually a slice of a datagram buffer, and the drivers copy
//! datagrams one after another into shared blocks (`nexar-tokio/src/udp.rs`), so one
//! slice keeps a whole block alive. Limits count payload bytes; a small slice kept for
//! long would hold far more memory than it is charged for (a member's flood of 1-byte
//! messages nobody receives could pin a block each). So what the node keeps beyond the
//! input that brought it (unmatched tagged messages, traffic held for the next epoch,
//! chunks for operations not started here, RPC requests waiting for the application)
//! is detached here: anything that may be a datagram slice is copied; larger payloads
//! were assembled by the decoder in buffers of their own, exactly sized, and are kept.
//! Data consumed at once (chunks of running collectives, matched receives) is never
//! copied, so the bulk path stays zero-copy.

use bytes::Bytes;

use crate::codec::Pieces;

/// Below this a payload may be a slice of one datagram (the drivers' largest).
pub(crate) const DETACH_BELOW: usize = 64 << 10;

/// `b`, in a buffer of its own if it may be a datagram slice.
pub(crate) fn bytes(b: Bytes) -> Bytes {
    if b.len() < DETACH_BELOW {
        Bytes::copy_from_slice(&b)
    } else {
        b
    }
}

/// `p` with every part that may be a datagram slice copied into one buffer (a chunk
/// frame keeps at most 15 slices; the rest of it is already an owned buffer).
pub(crate) fn pieces(p: Pieces) -> Pieces {
    if p.parts().iter().all(|part| part.len() >= DETACH_BELOW) {
        return p;
    }
    if p.parts().iter().all(|part| part.len() < DETACH_BELOW) {
        return Pieces::from(join_copied(&p));
    }
    Pieces::from_parts(p.parts().iter().cloned().map(bytes))
}

/// All parts in one new buffer (`Pieces::to_bytes` returns a lone part as it is).
fn join_copied(p: &Pieces) -> Bytes {
    let mut out = Vec::with_capacity(p.len());
    for part in p.parts() {
        out.extend_from_slice(part);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `a` and `b` share memory.
    fn same_memory(a: &Bytes, b: &Bytes) -> bool {
        !a.is_empty() && a.as_ptr() == b.as_ptr()
    }

    #[test]
    fn small_slices_are_copied_and_large_buffers_kept() {
        let block = Bytes::from(vec![7u8; 1 << 20]);
        let small = block.slice(10..11);
        let kept = bytes(small.clone());
        assert_eq!(kept, small);
        assert!(!same_memory(&kept, &small));
        let edge = block.slice(0..DETACH_BELOW - 1);
        assert!(!same_memory(&bytes(edge.clone()), &edge));
        let large = block.slice(0..DETACH_BELOW);
        assert!(same_memory(&bytes(large.clone()), &large));
    }

    #[test]
    fn pieces_copy_only_their_small_parts() {
        let block = Bytes::from(vec![1u8; 1 << 20]);
        let small = block.slice(0..1500);
        let own = Bytes::from(vec![2u8; DETACH_BELOW]);
        let mixed = Pieces::from_parts([small.clone(), own.clone()]);
        let detached = pieces(mixed.clone());
        assert_eq!(detached, mixed);
        assert!(!same_memory(&detached.parts()[0], &small));
        assert!(same_memory(&detached.parts()[1], &own));
        let all_small = Pieces::from_parts([small.clone(), block.slice(5000..6000)]);
        let joined = pieces(all_small.clone());
        assert_eq!(joined, all_small);
        assert_eq!(joined.parts().len(), 1);
        assert!(!same_memory(&joined.parts()[0], &small));
    }
}
