//! quinn-proto endpoint, server and client configuration with every random source seeded.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::congestion::{CubicConfig, NewRenoConfig};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    AckFrequencyConfig, ClientConfig, EndpointConfig, IdleTimeout, MtuDiscoveryConfig,
    ServerConfig, TransportConfig, VarInt,
};
use rustls::pki_types::UnixTime;

use super::cid::{initial_dcid_provider, SeededCidGenerator};
use super::clock::FixedClock;
use super::error::CryptoError;
use super::rng::{derive_seed, DetRng};

/// Smallest UDP payload QUIC allows (RFC 9000 §14).
const QUIC_MIN_UDP_PAYLOAD: u16 = 1200;

/// Purpose labels of the QUIC key and stream seeds (see [`DetRng::derive`]).
const PURPOSE_RESET_KEY: &str = "nexar/quic/reset-key";
const PURPOSE_ENDPOINT_RNG: &str = "nexar/quic/endpoint-rng";
const PURPOSE_CID: &str = "nexar/quic/cid";

/// Congestion controllers nexar allows. BBR is absent on purpose: quinn-proto's BBR seeds
/// its own generator from the thread RNG, which would break replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CongestionControl {
    /// CUBIC (RFC 9438): grows fast on high bandwidth-delay paths, the usual choice.
    #[default]
    Cubic,
    /// NewReno (RFC 9002 §7): simpler and more conservative.
    NewReno,
}

/// The transport knobs nexar exposes; everything else keeps quinn-proto's defaults.
///
/// Defaults suit a datacenter LAN carrying collective traffic: large flow-control windows so
/// one stream can fill a fast link, many streams, a keep-alive well inside the idle timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportParams {
    /// Close a connection after this long without any packet from the peer.
    pub idle_timeout: Duration,
    /// Send a PING after this long without sending, so an idle but live peer stays within
    /// the idle timeout. Must be shorter than `idle_timeout` to be useful.
    pub keep_alive_interval: Option<Duration>,
    /// UDP payload size used before MTU discovery; at least 1200.
    pub initial_mtu: u16,
    /// Largest UDP payload accepted, and the upper bound MTU discovery probes toward.
    pub max_udp_payload: u16,
    /// Whether to probe for a path MTU above `initial_mtu` (DPLPMTUD).
    pub mtu_discovery: bool,
    /// Per-stream receive window, bytes.
    pub stream_receive_window: u64,
    /// Per-connection receive window, bytes.
    pub connection_receive_window: u64,
    /// Bytes of unacknowledged data a connection may buffer for sending.
    pub send_window: u64,
    /// Bidirectional streams the peer may have open at once.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once.
    pub max_concurrent_uni_streams: u32,
    /// Congestion controller.
    pub congestion: CongestionControl,
    /// The congestion window before the first acknowledgement, bytes; `None` for RFC 9002
    /// §7.2's (from `initial_mtu`).
    pub initial_window: Option<u64>,
    /// Ack-eliciting packets the peer may take in without acknowledging them (the QUIC
    /// acknowledgement frequency extension, draft 04, which quinn speaks); `None` leaves
    /// RFC 9000's rule, an ACK for every second one. Reordered packets are still
    /// acknowledged at once, and the peer's delayed-ACK timer still bounds the wait.
    pub ack_eliciting_threshold: Option<u32>,
    /// Round-trip time assumed until one is measured (sets the first handshake
    /// retransmission timeout, about three times this).
    pub initial_rtt: Duration,
}

impl Default for TransportParams {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(5)),
            initial_mtu: QUIC_MIN_UDP_PAYLOAD,
            max_udp_payload: 1452,
            mtu_discovery: true,
            stream_receive_window: 16 << 20,
            connection_receive_window: 64 << 20,
            send_window: 64 << 20,
            max_concurrent_bidi_streams: 1024,
            max_concurrent_uni_streams: 1024,
            congestion: CongestionControl::Cubic,
            initial_window: None,
            ack_eliciting_threshold: None,
            initial_rtt: Duration::from_millis(333),
        }
    }
}

/// Per-stream and per-connection receive window of the seed's bootstrap endpoint. Four
/// times the largest Hello (16.4 KiB with the default limits), so a Hello never waits on
/// flow control, and small, because any stranger who finishes TLS gets it: 400 such
/// connections can make the seed buffer at most 25 MiB.
pub const BOOTSTRAP_RECEIVE_WINDOW: u64 = 64 << 10;

impl TransportParams {
    /// These parameters restricted for an endpoint whose clients are strangers until they
    /// prove the join secret (the seed's bootstrap endpoint): one unidirectional stream
    /// (the control stream, which carries the Hello and later the member's control
    /// traffic; the seed carries no data), no bidirectional stream, and
    /// [`BOOTSTRAP_RECEIVE_WINDOW`] of flow control.
    pub fn for_bootstrap_server(&self) -> TransportParams {
        TransportParams {
            stream_receive_window: BOOTSTRAP_RECEIVE_WINDOW,
            connection_receive_window: BOOTSTRAP_RECEIVE_WINDOW,
            max_concurrent_bidi_streams: 0,
            max_concurrent_uni_streams: 1,
            ..self.clone()
        }
    }

    /// quinn-proto's transport configuration for these parameters.
    ///
    /// Fails with [`CryptoError::TransportParam`] naming the first parameter out of range.
    pub fn transport_config(&self) -> Result<Arc<TransportConfig>, CryptoError> {
        let bad = |name| CryptoError::TransportParam { name };
        if self.initial_mtu < QUIC_MIN_UDP_PAYLOAD {
            return Err(bad("initial_mtu"));
        }
        if self.max_udp_payload < self.initial_mtu {
            return Err(bad("max_udp_payload"));
        }
        let varint = |v: u64, name| VarInt::from_u64(v).map_err(|_| bad(name));
        let mut t = TransportConfig::default();
        t.max_idle_timeout(Some(
            IdleTimeout::try_from(self.idle_timeout).map_err(|_| bad("idle_timeout"))?,
        ))
        .keep_alive_interval(self.keep_alive_interval)
        .initial_rtt(self.initial_rtt)
        .initial_mtu(self.initial_mtu)
        .stream_receive_window(varint(self.stream_receive_window, "stream_receive_window")?)
        .receive_window(varint(
            self.connection_receive_window,
            "connection_receive_window",
        )?)
        .send_window(self.send_window)
        .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams));
        if let Some(threshold) = self.ack_eliciting_threshold {
            let mut frequency = AckFrequencyConfig::default();
            frequency.ack_eliciting_threshold(VarInt::from_u32(threshold));
            t.ack_frequency_config(Some(frequency));
        }
        if self.mtu_discovery {
            let mut mtud = MtuDiscoveryConfig::default();
            mtud.upper_bound(self.max_udp_payload);
            t.mtu_discovery_config(Some(mtud));
        } else {
            t.mtu_discovery_config(None);
        }
        // RFC 9002 §7.2 for the first packet size, not quinn's fixed 14 720 bytes: a
        // window smaller than one packet (with a 64 KiB initial MTU) would never open.
        let window = self
            .initial_window
            .unwrap_or_else(|| initial_window(self.initial_mtu));
        // A window smaller than one packet would never open.
        if window < u64::from(self.initial_mtu) {
            return Err(bad("initial_window"));
        }
        match self.congestion {
            CongestionControl::Cubic => {
                let mut c = CubicConfig::default();
                c.initial_window(window);
                t.congestion_controller_factory(Arc::new(c))
            }
            CongestionControl::NewReno => {
                let mut c = NewRenoConfig::default();
                c.initial_window(window);
                t.congestion_controller_factory(Arc::new(c))
            }
        };
        Ok(Arc::new(t))
    }
}

/// RFC 9002 §7.2: `min(10 * max_datagram_size, max(14720, 2 * max_datagram_size))`.
fn initial_window(mtu: u16) -> u64 {
    let mtu = u64::from(mtu);
    (10 * mtu).min(14_720u64.max(2 * mtu))
}

/// The endpoint configuration for a node whose randomness derives from `seed`.
///
/// Every source quinn-proto would otherwise take from the thread RNG is fixed:
/// - the stateless-reset HMAC key derives from the seed (`EndpointConfig::default()`
///   draws one at random);
/// - the endpoint's own generator (packet-number skips, GREASE, path challenges,
///   transport-parameter order) is seeded through `rng_seed`;
/// - local connection IDs come from a seeded generator of 8-byte random CIDs with no
///   lifetime (quinn-proto's generators read the thread RNG).
///
/// Build **one endpoint per node** from it: the CID factory restarts its stream for each
/// endpoint built, so two endpoints from one configuration would issue the same CIDs.
pub fn endpoint_config(
    seed: &[u8; 32],
    transport: &TransportParams,
) -> Result<EndpointConfig, CryptoError> {
    let reset_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &derive_seed(seed, PURPOSE_RESET_KEY),
    );
    let mut config = EndpointConfig::new(Arc::new(reset_key));
    config
        .max_udp_payload_size(transport.max_udp_payload)
        .map_err(|_| CryptoError::TransportParam {
            name: "max_udp_payload",
        })?;
    config.rng_seed(Some(derive_seed(seed, PURPOSE_ENDPOINT_RNG)));
    // Capture only the CID sub-seed, not the node seed, in the long-lived closure.
    let cid_seed = derive_seed(seed, PURPOSE_CID);
    config.cid_generator(move || Box::new(SeededCidGenerator::new(DetRng::from_seed(cid_seed))));
    Ok(config)
}

/// Wraps a rustls server configuration for QUIC with seeded keys and a fixed clock.
///
/// - The token key (which seals retry and NEW_TOKEN tokens) is an HKDF key derived from the
///   seed under `token_purpose`: `ServerConfig::with_crypto` would draw it at random.
/// - The time source is `now` ([`FixedClock`]): tokens carry their issue time. Token
///   expiry is therefore judged against that fixed reading, so retry tokens do not age; they
///   still bind the client's address and original CID. A node that starts using Retry
///   against spoofing floods should rebuild this configuration with fresh readings.
/// - No NEW_TOKEN frames are sent (`validation_token.sent(0)`): nexar peers dial each other
///   once per cluster, so address-validation tokens would buy nothing, and a fixed clock
///   would make their expiry meaningless.
pub(crate) fn quic_server_config(
    tls: rustls::ServerConfig,
    seed: &[u8; 32],
    token_purpose: &str,
    now: UnixTime,
    transport: &TransportParams,
) -> Result<ServerConfig, CryptoError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|_| CryptoError::NoInitialCipherSuite)?;
    let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[])
        .extract(&derive_seed(seed, token_purpose));
    let mut config = ServerConfig::new(Arc::new(crypto), Arc::new(token_key));
    config
        .transport_config(transport.transport_config()?)
        .time_source(Arc::new(FixedClock(now)));
    config.validation_token.sent(0);
    Ok(config)
}

/// Wraps a rustls client configuration for QUIC with a seeded first destination CID.
///
/// quinn-proto's default provider draws the client's first destination CID from the thread
/// RNG; this one draws from the seed's `dcid_purpose` stream. Reuse the returned
/// configuration for all connections of one kind (it continues the stream); building it
/// twice from one seed would repeat the first CIDs.
pub(crate) fn quic_client_config(
    tls: rustls::ClientConfig,
    seed: &[u8; 32],
    dcid_purpose: &str,
    transport: &TransportParams,
) -> Result<ClientConfig, CryptoError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|_| CryptoError::NoInitialCipherSuite)?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    config
        .transport_config(transport.transport_config()?)
        .initial_dst_cid_provider(initial_dcid_provider(DetRng::derive(seed, dcid_purpose)));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_params_are_valid() {
        TransportParams::default().transport_config().unwrap();
        endpoint_config(&[0; 32], &TransportParams::default()).unwrap();
    }

    #[test]
    fn the_initial_window_holds_packets_of_the_initial_size() {
        // quinn's default (14 720 bytes) is 12 packets of 1200 bytes but not one of 64 KiB.
        assert_eq!(initial_window(1200), 12_000);
        assert_eq!(initial_window(1452), 14_520);
        assert_eq!(initial_window(65_000), 130_000);
        assert!(initial_window(u16::MAX) >= 2 * u64::from(u16::MAX));
    }

    /// The name `transport_config` refuses `p` with, if it does.
    fn refused(p: &TransportParams) -> Option<&'static str> {
        match p.transport_config() {
            Err(CryptoError::TransportParam { name }) => Some(name),
            _ => None,
        }
    }

    #[test]
    fn out_of_range_params_are_named() {
        let p = TransportParams {
            initial_mtu: 1000,
            ..TransportParams::default()
        };
        assert_eq!(refused(&p), Some("initial_mtu"));
        let p = TransportParams {
            max_udp_payload: 1199,
            initial_mtu: 1200,
            ..TransportParams::default()
        };
        assert_eq!(refused(&p), Some("max_udp_payload"));
        let p = TransportParams {
            initial_mtu: 65_000,
            max_udp_payload: 65_000,
            initial_window: Some(64_999),
            ..TransportParams::default()
        };
        assert_eq!(refused(&p), Some("initial_window"));
        let p = TransportParams {
            initial_window: Some(650_000),
            ..p
        };
        p.transport_config().unwrap();
        let p = TransportParams {
            stream_receive_window: u64::MAX,
            ..TransportParams::default()
        };
        assert_eq!(refused(&p), Some("stream_receive_window"));
    }
}
