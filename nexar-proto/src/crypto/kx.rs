//! X25519 key exchange whose ephemeral secrets come from a seeded stream.
//!
//! ring's X25519 group draws its ephemeral secret from the OS RNG inside ring, out of
//! rustls' reach, which would make every handshake (and so every datagram after it) differ
//! between two runs with one seed. This group is standard X25519 (RFC 7748, via
//! `x25519-dalek`) with the secret drawn from a [`DetRng`]; it interoperates with any other
//! X25519 implementation.

use std::sync::{Mutex, PoisonError};

use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved};
use x25519_dalek::{PublicKey, StaticSecret};

use super::rng::DetRng;

/// Length of an X25519 public key and shared secret.
const X25519_LEN: usize = 32;

/// The X25519 group of a seeded provider; see the module docs.
///
/// The `Mutex` exists only because rustls takes `&'static dyn SupportedKxGroup` (so `&self`,
/// `Send + Sync`). The core is single-threaded and each provider belongs to one node, so the
/// lock is never contended; it costs an uncontended atomic per handshake.
pub(crate) struct SeededX25519 {
    rng: Mutex<DetRng>,
}

impl SeededX25519 {
    pub(crate) fn new(rng: DetRng) -> Self {
        Self {
            rng: Mutex::new(rng),
        }
    }

    fn draw_secret(&self) -> StaticSecret {
        // A poisoned lock only means another thread panicked mid-draw; the stream itself is
        // still a valid ChaCha state, so keep using it.
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        StaticSecret::from(rng.array::<X25519_LEN>())
    }
}

impl std::fmt::Debug for SeededX25519 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeededX25519")
    }
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let secret = self.draw_secret();
        let public = PublicKey::from(&secret);
        Ok(Box::new(ActiveX25519 { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One handshake's half-finished exchange. `StaticSecret` zeroizes itself on drop.
struct ActiveX25519 {
    secret: StaticSecret,
    public: PublicKey,
}

impl ActiveKeyExchange for ActiveX25519 {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; X25519_LEN] = peer_pub_key
            .try_into()
            .map_err(|_| Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer));
        // A low-order peer point yields an all-zero secret the peer could predict; refuse it
        // as ring does (RFC 7748 §6.1, RFC 8446 §7.4.2).
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(byte: u8) -> SeededX25519 {
        SeededX25519::new(DetRng::from_seed([byte; 32]))
    }

    #[test]
    fn interoperates_with_ring_x25519() {
        let ours = group(1).start().unwrap();
        let ring_group = rustls::crypto::ring::kx_group::X25519;
        let theirs = ring_group.start().unwrap();
        let ours_pub = ours.pub_key().to_vec();
        let theirs_pub = theirs.pub_key().to_vec();
        let a = ours.complete(&theirs_pub).unwrap();
        let b = theirs.complete(&ours_pub).unwrap();
        assert_eq!(a.secret_bytes(), b.secret_bytes());
    }

    #[test]
    fn seeded_and_advancing() {
        let g1 = group(3);
        let g2 = group(3);
        let first = g1.start().unwrap().pub_key().to_vec();
        assert_eq!(first, g2.start().unwrap().pub_key().to_vec());
        // A second handshake gets a fresh key.
        assert_ne!(first, g1.start().unwrap().pub_key().to_vec());
    }

    #[test]
    fn rejects_bad_peer_keys() {
        let short = group(4).start().unwrap().complete(&[1u8; 31]);
        assert!(short.is_err());
        // The all-zero point has low order: the shared secret would be zero.
        let zero = group(4).start().unwrap().complete(&[0u8; 32]);
        assert!(zero.is_err());
    }
}
