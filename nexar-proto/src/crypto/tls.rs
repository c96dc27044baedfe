//! The four QUIC configurations a node uses: bootstrap (join) and mesh, server and client.
//!
//! Common to all four, and why:
//! - TLS 1.3 only (QUIC requires it) over the caller's seeded provider
//!   ([`super::crypto_provider`]);
//! - ALPN [`ALPN`] on both sides, so a peer speaking another protocol fails the handshake
//!   instead of misparsing frames;
//! - a fixed [`UnixTime`] for certificate validity ([`super::clock::FixedClock`]): the core
//!   never reads a clock;
//! - no resumption, tickets or 0-RTT: nexar connections are few and long-lived, and ring's
//!   ticketer draws from the OS RNG;
//! - the QUIC wrappers seed the remaining sources ([`super::quic`]).

use std::sync::Arc;

use quinn_proto::{ClientConfig, Connection, ServerConfig};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ConfigBuilder, RootCertStore, WantsVerifier};

use super::clock::FixedClock;
use super::error::CryptoError;
use super::identity::NodeIdentity;
use super::names::rank_from_cert;
use super::quic::{quic_client_config, quic_server_config, TransportParams};
use super::verify::PinnedServerVerifier;

/// The ALPN protocol id of nexar's wire protocol, version 1.
pub const ALPN: &[u8] = b"nexar/1";

const PURPOSE_TOKEN_BOOTSTRAP: &str = "nexar/quic/token-key/bootstrap";
const PURPOSE_TOKEN_MESH: &str = "nexar/quic/token-key/mesh";
const PURPOSE_DCID_BOOTSTRAP: &str = "nexar/quic/initial-dcid/bootstrap";
const PURPOSE_DCID_MESH: &str = "nexar/quic/initial-dcid/mesh";

/// The seed node's endpoint for joiners: presents the self-signed `bootstrap_cert` (made by
/// [`NodeIdentity::self_signed_bootstrap_cert`] for `identity`) and asks for no client
/// certificate.
///
/// Joiners have no certificate yet; they prove they may join with the join secret inside
/// the Hello message, which this encrypted, server-authenticated channel protects.
pub fn bootstrap_server_config(
    provider: &Arc<CryptoProvider>,
    identity: &NodeIdentity,
    bootstrap_cert: CertificateDer<'static>,
    seed: &[u8; 32],
    now: UnixTime,
    transport: &TransportParams,
) -> Result<ServerConfig, CryptoError> {
    let tls = server_builder(provider, now)?
        .with_no_client_auth()
        .with_single_cert(vec![bootstrap_cert], identity.private_key_der())?;
    quic_server_config(
        finish_server(tls),
        seed,
        PURPOSE_TOKEN_BOOTSTRAP,
        now,
        &transport.for_bootstrap_server(),
    )
}

/// A joiner's configuration for dialling the seed: accepts the server iff its key's
/// SHA-256 equals `pin` (from the join ticket), and still verifies the handshake signature
/// with the provider's algorithms, so the pin never replaces proof of key possession. A
/// server with any other key fails the handshake with a certificate error (TLS alert
/// `certificate_unknown`, reason [`super::PinMismatch`]); one replaying the pinned
/// certificate without its key fails the signature check (`decrypt_error`).
///
/// The server name passed to `connect` is not checked; use
/// [`super::BOOTSTRAP_SERVER_NAME`] for clarity.
pub fn bootstrap_client_config(
    provider: &Arc<CryptoProvider>,
    pin: [u8; 32],
    seed: &[u8; 32],
    now: UnixTime,
    transport: &TransportParams,
) -> Result<ClientConfig, CryptoError> {
    let verifier = PinnedServerVerifier::new(pin, provider.signature_verification_algorithms);
    let tls = client_builder(provider, now)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    quic_client_config(finish_client(tls), seed, PURPOSE_DCID_BOOTSTRAP, transport)
}

/// A member's server side for mesh connections: presents `node_cert` and requires a client
/// certificate that chains to `ca_cert`, the sole trust root.
///
/// The chain proves cluster membership; learn *which* rank connected with [`peer_rank`].
pub fn mesh_server_config(
    provider: &Arc<CryptoProvider>,
    identity: &NodeIdentity,
    node_cert: CertificateDer<'static>,
    ca_cert: CertificateDer<'static>,
    seed: &[u8; 32],
    now: UnixTime,
    transport: &TransportParams,
) -> Result<ServerConfig, CryptoError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(ca_roots(ca_cert)?, provider.clone())
            .build()?;
    let tls = server_builder(provider, now)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![node_cert], identity.private_key_der())?;
    quic_server_config(finish_server(tls), seed, PURPOSE_TOKEN_MESH, now, transport)
}

/// A member's client side for mesh connections: authenticates with `node_cert` and accepts
/// only servers whose certificate chains to `ca_cert`, the sole trust root.
///
/// Dial with server name `rank_server_name(cluster_id, expected_rank)`: webpki then also
/// checks that the server's certificate names that rank, so a member cannot answer for
/// another. One configuration serves every peer.
pub fn mesh_client_config(
    provider: &Arc<CryptoProvider>,
    identity: &NodeIdentity,
    node_cert: CertificateDer<'static>,
    ca_cert: CertificateDer<'static>,
    seed: &[u8; 32],
    now: UnixTime,
    transport: &TransportParams,
) -> Result<ClientConfig, CryptoError> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(ca_roots(ca_cert)?, provider.clone())
            .build()?;
    let tls = client_builder(provider, now)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(vec![node_cert], identity.private_key_der())?;
    quic_client_config(finish_client(tls), seed, PURPOSE_DCID_MESH, transport)
}

/// The rank the peer of an established mesh connection proved, from its certificate.
///
/// `None` while handshaking, if the peer presented no certificate (bootstrap connections),
/// or if the certificate names no single rank of `cluster_id`. Safe to trust on mesh
/// connections because the TLS handshake has already chained that certificate to the CA.
pub fn peer_rank(conn: &Connection, cluster_id: [u8; 16]) -> Option<u32> {
    let identity = conn.crypto_session().peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    rank_from_cert(chain.first()?, cluster_id)
}

/// A root store holding only the cluster CA.
fn ca_roots(ca_cert: CertificateDer<'static>) -> Result<Arc<RootCertStore>, CryptoError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert)?;
    Ok(Arc::new(roots))
}

/// A TLS 1.3-only server builder over `provider` with the fixed clock.
fn server_builder(
    provider: &Arc<CryptoProvider>,
    now: UnixTime,
) -> Result<ConfigBuilder<rustls::ServerConfig, WantsVerifier>, CryptoError> {
    Ok(
        rustls::ServerConfig::builder_with_details(provider.clone(), Arc::new(FixedClock(now)))
            .with_protocol_versions(&[&rustls::version::TLS13])?,
    )
}

/// A TLS 1.3-only client builder over `provider` with the fixed clock.
fn client_builder(
    provider: &Arc<CryptoProvider>,
    now: UnixTime,
) -> Result<ConfigBuilder<rustls::ClientConfig, WantsVerifier>, CryptoError> {
    Ok(
        rustls::ClientConfig::builder_with_details(provider.clone(), Arc::new(FixedClock(now)))
            .with_protocol_versions(&[&rustls::version::TLS13])?,
    )
}

/// Settings shared by every server configuration (see the module docs).
fn finish_server(mut tls: rustls::ServerConfig) -> rustls::ServerConfig {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(NoServerSessionStorage {});
    // QUIC allows only 0 or u32::MAX; 0 disables 0-RTT.
    tls.max_early_data_size = 0;
    tls
}

/// Settings shared by every client configuration (see the module docs).
fn finish_client(mut tls: rustls::ClientConfig) -> rustls::ClientConfig {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = Resumption::disabled();
    tls.enable_early_data = false;
    tls
}
