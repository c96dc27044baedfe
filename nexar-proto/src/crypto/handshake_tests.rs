//! End-to-end tests of the TLS/QUIC configurations over the in-memory [`Net`].

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::HandshakeData;
use quinn_proto::{
    ConnectionError, ConnectionHandle, Dir, Event, ReadError, TransportErrorCode, WriteError,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};

use super::harness::Net;
use super::*;

/// TLS alerts as QUIC CRYPTO_ERROR codes (RFC 9001 §4.8).
const ALERT_BAD_CERTIFICATE: u8 = 42;
/// rustls' alert for `CertificateError::Other`, which the pin verifier returns.
const ALERT_CERTIFICATE_UNKNOWN: u8 = 46;
/// Sent when a certificate's signature does not verify against the named issuer: a foreign
/// CA of the same cluster id has the same subject name as ours, so webpki finds our CA by
/// name and then fails on the signature.
const ALERT_DECRYPT_ERROR: u8 = 51;
const ALERT_UNKNOWN_CA: u8 = 48;
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;
const CLUSTER: [u8; 16] = *b"nexar-test-clust";
const MAX_STEPS: usize = 200_000;

fn start() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000))
}

fn params() -> TransportParams {
    TransportParams::default()
}

/// Everything a node derives from its seed.
struct Node {
    seed: [u8; 32],
    provider: Arc<CryptoProvider>,
    identity: NodeIdentity,
}

impl Node {
    fn new(seed: [u8; 32]) -> Self {
        Self {
            seed,
            provider: crypto_provider(&seed),
            identity: NodeIdentity::generate(&mut DetRng::derive(&seed, "nexar/identity")),
        }
    }

    fn endpoint(&self) -> quinn_proto::EndpointConfig {
        endpoint_config(&self.seed, &params()).unwrap()
    }
}

/// A node admitted to `ca`'s cluster as `rank`, through a CSR.
struct Member {
    node: Node,
    cert: CertificateDer<'static>,
    ca_cert: CertificateDer<'static>,
    params: TransportParams,
}

impl Member {
    fn new(ca: &ClusterCa, rank: u32, seed: [u8; 32]) -> Self {
        let node = Node::new(seed);
        let csr = node.identity.certificate_request_der("worker").unwrap();
        let cert = ca.sign_request(&csr, rank, u64::from(rank) + 100).unwrap();
        Self {
            node,
            cert,
            ca_cert: ca.cert_der(),
            params: params(),
        }
    }

    fn server(&self) -> quinn_proto::ServerConfig {
        let n = &self.node;
        mesh_server_config(
            &n.provider,
            &n.identity,
            self.cert.clone(),
            self.ca_cert.clone(),
            &n.seed,
            start(),
            &self.params,
        )
        .unwrap()
    }

    fn client(&self) -> quinn_proto::ClientConfig {
        self.client_at(start())
    }

    fn client_at(&self, now: UnixTime) -> quinn_proto::ClientConfig {
        let n = &self.node;
        mesh_client_config(
            &n.provider,
            &n.identity,
            self.cert.clone(),
            self.ca_cert.clone(),
            &n.seed,
            now,
            &self.params,
        )
        .unwrap()
    }
}

fn ca(seed_byte: u8) -> ClusterCa {
    ClusterCa::new(&mut DetRng::from_seed([seed_byte; 32]), CLUSTER, start())
}

fn connected(e: &Event) -> bool {
    matches!(e, Event::Connected)
}

/// The CRYPTO_ERROR alert with which a connection was lost, locally or by the peer.
fn lost_with_alert(net: &Net, host: usize) -> Option<u8> {
    net.hosts[host].events.iter().find_map(|(_, e)| {
        let Event::ConnectionLost { reason } = e else {
            return None;
        };
        let code = match reason {
            ConnectionError::TransportError(t) => t.code,
            ConnectionError::ConnectionClosed(c) => c.error_code,
            _ => return None,
        };
        (0..=255u8).find(|&a| code == TransportErrorCode::crypto(a))
    })
}

fn lost_reason(net: &Net, host: usize) -> String {
    net.hosts[host]
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::ConnectionLost { reason } => Some(reason.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

fn only_conn(net: &Net, host: usize) -> ConnectionHandle {
    *net.hosts[host].conns.keys().next().expect("one connection")
}

/// A seed node's bootstrap endpoint (host 0) and a joiner pinning `pin` (host 1).
fn bootstrap_net(server: &Node, joiner: &Node, pin: [u8; 32]) -> (Net, ConnectionHandle) {
    let cert = server.identity.self_signed_bootstrap_cert(start());
    let server_cfg = bootstrap_server_config(
        &server.provider,
        &server.identity,
        cert,
        &server.seed,
        start(),
        &params(),
    )
    .unwrap();
    let client_cfg =
        bootstrap_client_config(&joiner.provider, pin, &joiner.seed, start(), &params()).unwrap();
    let mut net = Net::new();
    net.add_host(server.endpoint(), Some(server_cfg));
    net.add_host(joiner.endpoint(), None);
    let ch = net.connect(1, 0, client_cfg, BOOTSTRAP_SERVER_NAME);
    (net, ch)
}

#[test]
fn bootstrap_with_right_pin_connects() {
    let seed_node = Node::new([1; 32]);
    let joiner = Node::new([2; 32]);
    let (mut net, ch) = bootstrap_net(&seed_node, &joiner, seed_node.identity.spki_sha256());
    assert!(net.run_until(MAX_STEPS, |n| n.saw(0, connected) && n.saw(1, connected)));

    let hs = net.conn(1, ch).crypto_session().handshake_data().unwrap();
    let hs = hs.downcast::<HandshakeData>().unwrap();
    assert_eq!(hs.protocol.as_deref(), Some(ALPN));
    // No client certificate on the bootstrap channel: the server learns no rank.
    let server_ch = only_conn(&net, 0);
    assert_eq!(peer_rank(net.conn(0, server_ch), CLUSTER), None);
}

#[test]
fn bootstrap_mitm_with_other_key_fails_on_certificate() {
    let seed_node = Node::new([1; 32]);
    let mitm = Node::new([3; 32]);
    let joiner = Node::new([2; 32]);
    // The joiner pins the real seed's key but reaches the MITM.
    let (mut net, _) = bootstrap_net(&mitm, &joiner, seed_node.identity.spki_sha256());
    net.run_until(MAX_STEPS, |n| lost_with_alert(n, 1).is_some());
    assert!(!net.saw(1, connected));
    assert_eq!(lost_with_alert(&net, 1), Some(ALERT_CERTIFICATE_UNKNOWN));
    let reason = lost_reason(&net, 1);
    assert!(reason.contains("PinMismatch"), "{reason}");
    assert!(!net.saw(0, connected));
}

/// A server that presents the seed's real certificate without holding its key: rustls'
/// own builders refuse such a pair, so it goes through a raw certificate resolver.
#[derive(Debug)]
struct StolenCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for StolenCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[test]
fn bootstrap_mitm_replaying_the_pinned_cert_fails_the_signature_check() {
    let seed_node = Node::new([1; 32]);
    let mitm = Node::new([3; 32]);
    let joiner = Node::new([2; 32]);
    let real_cert = seed_node.identity.self_signed_bootstrap_cert(start());
    let mitm_key = mitm
        .provider
        .key_provider
        .load_private_key(mitm.identity.private_key_der())
        .unwrap();
    let stolen = rustls::sign::CertifiedKey::new(vec![real_cert], mitm_key);
    let mut tls = rustls::ServerConfig::builder_with_provider(mitm.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(StolenCert(Arc::new(stolen))));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let server_cfg =
        super::quic::quic_server_config(tls, &mitm.seed, "test", start(), &params()).unwrap();
    let client_cfg = bootstrap_client_config(
        &joiner.provider,
        seed_node.identity.spki_sha256(),
        &joiner.seed,
        start(),
        &params(),
    )
    .unwrap();

    let mut net = Net::new();
    net.add_host(mitm.endpoint(), Some(server_cfg));
    net.add_host(joiner.endpoint(), None);
    net.connect(1, 0, client_cfg, BOOTSTRAP_SERVER_NAME);
    net.run_until(MAX_STEPS, |n| lost_with_alert(n, 1).is_some());
    assert!(!net.saw(1, connected));
    // The pin matches, but the handshake signature does not verify with the pinned key.
    assert_eq!(lost_with_alert(&net, 1), Some(ALERT_DECRYPT_ERROR));
}

/// Rank 1 serves on host 0; rank 2 dials it on host 1 with `server_name`.
fn mesh_net(server: &Member, client: &Member, server_name: &str) -> (Net, ConnectionHandle) {
    let mut net = Net::new();
    net.add_host(server.node.endpoint(), Some(server.server()));
    net.add_host(client.node.endpoint(), None);
    let ch = net.connect(1, 0, client.client(), server_name);
    (net, ch)
}

#[test]
fn mesh_mutual_tls_learns_ranks() {
    let ca = ca(10);
    let r1 = Member::new(&ca, 1, [11; 32]);
    let r2 = Member::new(&ca, 2, [12; 32]);
    let (mut net, ch) = mesh_net(&r1, &r2, &rank_server_name(CLUSTER, 1));
    assert!(net.run_until(MAX_STEPS, |n| n.saw(0, connected) && n.saw(1, connected)));
    let server_ch = only_conn(&net, 0);
    assert_eq!(peer_rank(net.conn(0, server_ch), CLUSTER), Some(2));
    assert_eq!(peer_rank(net.conn(1, ch), CLUSTER), Some(1));
    assert_eq!(peer_rank(net.conn(0, server_ch), [0; 16]), None);
}

#[test]
fn mesh_dialling_the_wrong_rank_fails() {
    let ca = ca(10);
    let r1 = Member::new(&ca, 1, [11; 32]);
    let r2 = Member::new(&ca, 2, [12; 32]);
    // Rank 2 expects rank 3 but reaches rank 1.
    let (mut net, _) = mesh_net(&r1, &r2, &rank_server_name(CLUSTER, 3));
    net.run_until(MAX_STEPS, |n| lost_with_alert(n, 1).is_some());
    assert!(!net.saw(1, connected));
    assert_eq!(lost_with_alert(&net, 1), Some(ALERT_BAD_CERTIFICATE));
    assert!(!net.saw(0, connected));
}

#[test]
fn mesh_client_from_another_ca_is_refused() {
    let ca_a = ca(10);
    let ca_b = ca(20);
    let r1 = Member::new(&ca_a, 1, [11; 32]);
    // Same cluster id and rank layout, but signed by a different CA.
    let mut intruder = Member::new(&ca_b, 2, [12; 32]);
    intruder.ca_cert = ca_a.cert_der(); // it even trusts the right CA
    let (mut net, _) = mesh_net(&r1, &intruder, &rank_server_name(CLUSTER, 1));
    net.run_until(MAX_STEPS, |n| {
        lost_with_alert(n, 0).is_some() && lost_with_alert(n, 1).is_some()
    });
    assert!(
        !net.saw(0, connected),
        "server must not accept the intruder"
    );
    assert_eq!(lost_with_alert(&net, 0), Some(ALERT_DECRYPT_ERROR));
    assert_eq!(lost_with_alert(&net, 1), Some(ALERT_DECRYPT_ERROR));
}

#[test]
fn mesh_member_of_another_cluster_is_refused() {
    let ca_a = ca(10);
    let other_cluster = ClusterCa::new(&mut DetRng::from_seed([30; 32]), [7; 16], start());
    let r1 = Member::new(&ca_a, 1, [11; 32]);
    let mut stranger = Member::new(&other_cluster, 2, [12; 32]);
    stranger.ca_cert = ca_a.cert_der();
    let (mut net, _) = mesh_net(&r1, &stranger, &rank_server_name(CLUSTER, 1));
    net.run_until(MAX_STEPS, |n| lost_with_alert(n, 0).is_some());
    assert!(!net.saw(0, connected));
    assert_eq!(lost_with_alert(&net, 0), Some(ALERT_UNKNOWN_CA));
}

#[test]
fn mesh_server_from_another_ca_is_refused() {
    let ca_a = ca(10);
    let ca_b = ca(20);
    let mut impostor = Member::new(&ca_b, 1, [11; 32]);
    impostor.ca_cert = ca_a.cert_der();
    let r2 = Member::new(&ca_a, 2, [12; 32]);
    let (mut net, _) = mesh_net(&impostor, &r2, &rank_server_name(CLUSTER, 1));
    net.run_until(MAX_STEPS, |n| lost_with_alert(n, 1).is_some());
    assert!(!net.saw(1, connected));
    assert_eq!(lost_with_alert(&net, 1), Some(ALERT_DECRYPT_ERROR));
}

#[test]
fn mesh_validity_is_judged_at_the_configured_time() {
    let ca = ca(10);
    let r1 = Member::new(&ca, 1, [11; 32]);
    let r2 = Member::new(&ca, 2, [12; 32]);
    // Two years after formation the certificates (valid one year) have expired.
    let later = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000 + 2 * 365 * 86_400));
    let mut net = Net::new();
    net.add_host(r1.node.endpoint(), Some(r1.server()));
    net.add_host(r2.node.endpoint(), None);
    net.connect(1, 0, r2.client_at(later), &rank_server_name(CLUSTER, 1));
    net.run_until(MAX_STEPS, |n| lost_with_alert(n, 1).is_some());
    assert!(!net.saw(1, connected));
    assert_eq!(lost_with_alert(&net, 1), Some(ALERT_CERTIFICATE_EXPIRED));
}

/// Sends `len` bytes over a unidirectional stream from host 1 to host 0; returns the
/// SHA-256 of what host 0 received.
fn transfer(net: &mut Net, client_ch: ConnectionHandle, len: usize) -> [u8; 32] {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let stream = net.conn(1, client_ch).streams().open(Dir::Uni).unwrap();
    let server_ch = only_conn(net, 0);
    let (mut sent, mut finished, mut done) = (0, false, false);
    let mut incoming = None;
    let mut received = Sha256::new();
    let mut received_len = 0;
    let ok = net.run_until(MAX_STEPS, |net| {
        if sent < data.len() {
            match net
                .conn(1, client_ch)
                .send_stream(stream)
                .write(&data[sent..])
            {
                Ok(n) => sent += n,
                Err(WriteError::Blocked) => {}
                Err(e) => panic!("write: {e}"),
            }
        } else if !finished {
            net.conn(1, client_ch).send_stream(stream).finish().unwrap();
            finished = true;
        }
        let conn = net.conn(0, server_ch);
        if incoming.is_none() {
            incoming = conn.streams().accept(Dir::Uni);
        }
        if let (Some(id), false) = (incoming, done) {
            let mut recv = conn.recv_stream(id);
            let mut chunks = recv.read(true).unwrap();
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => {
                        received_len += chunk.bytes.len();
                        received.update(&chunk.bytes);
                    }
                    Ok(None) => {
                        done = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            let _ = chunks.finalize();
        }
        done
    });
    assert!(ok, "transfer did not finish");
    assert_eq!(received_len, len);
    let digest: [u8; 32] = received.finalize().into();
    assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&data)));
    digest
}

/// A mesh handshake plus a 1 MiB transfer; returns the hash over all datagrams.
fn mesh_run(seed_byte: u8) -> ([u8; 32], u64) {
    let ca = ca(seed_byte);
    let r1 = Member::new(&ca, 1, [seed_byte.wrapping_add(1); 32]);
    let r2 = Member::new(&ca, 2, [seed_byte.wrapping_add(2); 32]);
    let (mut net, ch) = mesh_net(&r1, &r2, &rank_server_name(CLUSTER, 1));
    assert!(net.run_until(MAX_STEPS, |n| n.saw(0, connected) && n.saw(1, connected)));
    transfer(&mut net, ch, 1 << 20);
    (net.trace_hash(), net.datagrams)
}

#[test]
fn same_seed_same_datagrams() {
    let (a, count) = mesh_run(40);
    let (b, _) = mesh_run(40);
    assert!(count > 700, "1 MiB should take many datagrams, got {count}");
    assert_eq!(
        a, b,
        "two runs with one seed must produce identical datagrams"
    );
    let (c, _) = mesh_run(41);
    assert_ne!(a, c, "a different seed must change the datagrams");
}

/// Datagrams (receiver, sender) while host 1 sends host 0 a hundred 8-byte writes, one
/// per network step (each its own datagram, as a collective's small messages are), on a
/// mesh connection whose ends ask each other for `threshold`.
fn ack_run(threshold: Option<u32>) -> (u64, u64) {
    let ca = ca(60);
    let mut r1 = Member::new(&ca, 1, [61; 32]);
    let mut r2 = Member::new(&ca, 2, [62; 32]);
    r1.params.ack_eliciting_threshold = threshold;
    r2.params.ack_eliciting_threshold = threshold;
    let (mut net, ch) = mesh_net(&r1, &r2, &rank_server_name(CLUSTER, 1));
    assert!(net.run_until(MAX_STEPS, |n| n.saw(0, connected) && n.saw(1, connected)));
    // Let the handshake's last packets land.
    for _ in 0..20 {
        net.step();
    }
    let before = (net.hosts[0].sent, net.hosts[1].sent);
    let stream = net.conn(1, ch).streams().open(Dir::Uni).unwrap();
    let mut writes = 0;
    net.run_until(MAX_STEPS, |net| {
        if writes == 100 {
            return true;
        }
        net.conn(1, ch).send_stream(stream).write(&[7; 8]).unwrap();
        writes += 1;
        false
    });
    assert_eq!(writes, 100);
    (net.hosts[0].sent - before.0, net.hosts[1].sent - before.1)
}

#[test]
fn ack_eliciting_threshold_thins_acknowledgements() {
    let (acks_rfc, data_rfc) = ack_run(None);
    let (acks_thin, data_thin) = ack_run(Some(7));
    assert!(
        data_rfc >= 100 && data_thin >= 100,
        "{data_rfc}, {data_thin}"
    );
    // RFC 9000: an ACK for every second datagram.
    assert!(acks_rfc * 3 > data_rfc, "{acks_rfc} ACKs for {data_rfc}");
    // Asked for one every eighth at least.
    assert!(
        acks_thin * 6 < data_thin,
        "{acks_thin} ACKs for {data_thin}"
    );
}

#[test]
fn bootstrap_handshake_is_deterministic() {
    let run = || {
        let seed_node = Node::new([50; 32]);
        let joiner = Node::new([51; 32]);
        let (mut net, _) = bootstrap_net(&seed_node, &joiner, seed_node.identity.spki_sha256());
        assert!(net.run_until(MAX_STEPS, |n| n.saw(0, connected) && n.saw(1, connected)));
        net.trace_hash()
    };
    assert_eq!(run(), run());
}
