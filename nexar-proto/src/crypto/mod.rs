//! Identities, the cluster CA, and deterministic TLS/QUIC configuration.
//!
//! Security model (DESIGN.md §4): the seed node runs an ephemeral [`ClusterCa`]. A joiner
//! dials the seed's bootstrap endpoint, authenticating it by the key pin in its join ticket
//! ([`bootstrap_client_config`]); it sends a certificate request for a key it made itself
//! ([`NodeIdentity`]), never a key; the CA returns a certificate naming the joiner's rank
//! ([`rank_server_name`]). Mesh connections are mutual TLS chained to the CA alone, and the
//! dialled name makes webpki check the rank too ([`mesh_client_config`], [`peer_rank`]).
//!
//! Determinism (DESIGN.md §3): nothing here reads a clock or the OS RNG. Every random
//! byte derives from the node's 32-byte seed through per-purpose [`DetRng`] streams:
//! rustls' `secure_random` and X25519 secrets ([`crypto_provider`]), Ed25519 keys,
//! QUIC reset and token keys, the endpoint RNG, connection IDs and the client's first
//! destination CID ([`endpoint_config`] and the config builders). Wall time enters as a
//! `UnixTime` argument. Two runs with one seed therefore produce identical datagrams.

mod ca;
mod cid;
mod clock;
mod error;
mod identity;
mod kx;
mod names;
mod provider;
mod quic;
mod rng;
mod tls;
mod verify;
mod x509;

#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod harness;

pub use ca::{csr_key_sha256, ClusterCa, MAX_CSR_LEN};
pub use error::{CryptoError, CsrRejection};
pub use identity::{NodeIdentity, BOOTSTRAP_SERVER_NAME};
pub use names::{rank_from_cert, rank_server_name};
pub use provider::crypto_provider;
pub use quic::{endpoint_config, CongestionControl, TransportParams, BOOTSTRAP_RECEIVE_WINDOW};
pub use rng::DetRng;
pub use rustls::pki_types::{CertificateDer, UnixTime};
pub use tls::{
    bootstrap_client_config, bootstrap_server_config, mesh_client_config, mesh_server_config,
    peer_rank, ALPN,
};
pub use verify::PinMismatch;
pub(crate) use x509::spki_der_of_cert as spki_of_cert;
