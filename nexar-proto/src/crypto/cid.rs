//! Connection IDs drawn from seeded streams.

use std::sync::{Arc, Mutex, PoisonError};

use quinn_proto::{ConnectionId, ConnectionIdGenerator};

use super::rng::DetRng;

/// Length of the connection IDs an endpoint issues for itself. Eight random bytes are
/// plenty to route among one node's connections and are unpredictable to outsiders.
pub(crate) const LOCAL_CID_LEN: usize = 8;
/// Length of a client's first destination CID. RFC 9000 §7.2 wants at least 8
/// unpredictable bytes; the server derives Initial keys from it, so use more.
pub(crate) const INITIAL_DCID_LEN: usize = 16;

/// quinn-proto's random CID generator reads the thread RNG (and the hashed one keys itself
/// from it), which would make CIDs, and so every packet header, differ between runs. This
/// one draws random CIDs of [`LOCAL_CID_LEN`] bytes, with no lifetime, from a [`DetRng`].
///
/// quinn-proto owns it mutably (`&mut self`), so unlike the TLS sources no lock is needed.
pub(crate) struct SeededCidGenerator {
    rng: DetRng,
}

impl SeededCidGenerator {
    pub(crate) fn new(rng: DetRng) -> Self {
        Self { rng }
    }
}

impl ConnectionIdGenerator for SeededCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        ConnectionId::new(&self.rng.array::<LOCAL_CID_LEN>())
    }

    fn cid_len(&self) -> usize {
        LOCAL_CID_LEN
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A client's first destination CID provider over a seeded stream.
///
/// quinn-proto calls it through `Arc<dyn Fn() + Send + Sync>`, hence the `Mutex`; one node
/// drives its endpoint from one thread, so it is never contended.
pub(crate) fn initial_dcid_provider(rng: DetRng) -> Arc<dyn Fn() -> ConnectionId + Send + Sync> {
    let rng = Mutex::new(rng);
    Arc::new(move || {
        let mut rng = rng.lock().unwrap_or_else(PoisonError::into_inner);
        ConnectionId::new(&rng.array::<INITIAL_DCID_LEN>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_seeded_and_fresh() {
        let mut a = SeededCidGenerator::new(DetRng::from_seed([1; 32]));
        let mut b = SeededCidGenerator::new(DetRng::from_seed([1; 32]));
        let first = a.generate_cid();
        assert_eq!(first, b.generate_cid());
        assert_eq!(first.len(), LOCAL_CID_LEN);
        assert_ne!(first, a.generate_cid());
    }

    #[test]
    fn initial_dcids_advance() {
        let p = initial_dcid_provider(DetRng::from_seed([2; 32]));
        let a = p();
        assert_eq!(a.len(), INITIAL_DCID_LEN);
        assert_ne!(a, p());
    }
}
