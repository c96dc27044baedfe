//! The seeded rustls `CryptoProvider` every nexar TLS configuration is built on.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::crypto::ring::default_provider;
use rustls::crypto::{CryptoProvider, GetRandomFailed, SecureRandom};

use super::kx::SeededX25519;
use super::rng::DetRng;

/// Purpose label of the stream behind rustls' `secure_random`.
const PURPOSE_TLS_RANDOM: &str = "nexar/tls/secure-random";
/// Purpose label of the stream behind the X25519 ephemeral secrets.
const PURPOSE_TLS_X25519: &str = "nexar/tls/x25519";

/// ring's provider, made deterministic and narrowed to what nexar uses.
///
/// Differences from `rustls::crypto::ring::default_provider()`, and why:
/// - `secure_random` is a ChaCha20 stream derived from `seed` (hello randoms, session ids,
///   extension order): rustls draws all its own randomness here.
/// - the only key-exchange group is X25519 over seeded secrets (via `x25519-dalek`): ring's
///   groups draw their secrets from the OS RNG behind rustls' back.
/// - cipher suites are TLS 1.3 only: AES-128-GCM first (cheapest with AES-NI, and QUIC's
///   initial suite anyway), then AES-256-GCM, then ChaCha20-Poly1305 for CPUs without AES.
///   They are aws-lc's, not ring's: every byte a collective moves is sealed once and
///   opened once, and aws-lc's AES-GCM uses 512-bit vector AES where the CPU has it
///   (ring stops at 256-bit). On this machine's Zen 5 cores, 65 000-byte packets: ring
///   11.8 GB/s, aws-lc 26.2 GB/s; ring's AES was 37% of all CPU a 4-rank 1 MiB allreduce
///   spent. A suite's AEAD and HKDF draw no randomness, so determinism is unchanged
///   (AES-GCM is the same function whoever computes it).
/// - signature verification and key loading are ring's. Nexar keys are Ed25519, whose
///   signatures are deterministic (ECDSA and RSA-PSS would draw fresh randomness).
///
/// Create **one provider per node** and share the `Arc`: each provider replays the same
/// stream, so two providers from one seed would reuse ephemeral keys between them. The seed
/// must be secret and unique per node outside simulation (the driver takes it from the OS).
///
/// rustls requires `&'static` references for `secure_random` and `kx_groups`, so the two
/// seeded sources (a few hundred bytes) are leaked once per call. That is bounded by the
/// number of nodes created, which is why the function must not be called per connection.
pub fn crypto_provider(seed: &[u8; 32]) -> Arc<CryptoProvider> {
    let sources: &'static SeededSources = Box::leak(Box::new(SeededSources {
        random: SeededRandom::new(DetRng::derive(seed, PURPOSE_TLS_RANDOM)),
        x25519: SeededX25519::new(DetRng::derive(seed, PURPOSE_TLS_X25519)),
    }));
    let ring = default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![&sources.x25519],
        signature_verification_algorithms: ring.signature_verification_algorithms,
        secure_random: &sources.random,
        key_provider: ring.key_provider,
    })
}

/// Both seeded sources of one provider, leaked together (one allocation).
struct SeededSources {
    random: SeededRandom,
    x25519: SeededX25519,
}

/// rustls' `SecureRandom` over a [`DetRng`].
///
/// The `Mutex` exists only because rustls calls `fill(&self)` through a `&'static dyn`
/// that must be `Send + Sync`. The core drives each node from one thread, so the lock is
/// never contended.
struct SeededRandom {
    rng: Mutex<DetRng>,
}

impl SeededRandom {
    fn new(rng: DetRng) -> Self {
        Self {
            rng: Mutex::new(rng),
        }
    }
}

impl std::fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeededRandom")
    }
}

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        // Poisoning means another thread panicked while holding the lock; the ChaCha state
        // is still valid, so carry on rather than fail every later handshake.
        self.rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fill(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite;

    #[test]
    fn suites_are_tls13_aes128_first() {
        let p = crypto_provider(&[0u8; 32]);
        let suites: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            vec![
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
        assert!(p.cipher_suites.iter().all(|s| s.tls13().is_some()));
        assert_eq!(p.kx_groups.len(), 1);
    }

    #[test]
    fn secure_random_is_seeded() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        crypto_provider(&[5u8; 32])
            .secure_random
            .fill(&mut a)
            .unwrap();
        crypto_provider(&[5u8; 32])
            .secure_random
            .fill(&mut b)
            .unwrap();
        assert_eq!(a, b);
        crypto_provider(&[6u8; 32])
            .secure_random
            .fill(&mut b)
            .unwrap();
        assert_ne!(a, b);
    }
}
