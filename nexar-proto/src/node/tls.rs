//! The node's keys and TLS/QUIC configurations, built once from its config.
//!
//! The identity key derives from the config's seed alone, so a restarted node keeps its
//! identity; every other random source derives from (seed, incarnation), so a new life
//! never replays the old one's connection IDs or TLS randoms.

use std::sync::Arc;

use quinn_proto::{ClientConfig, EndpointConfig, ServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::codec::Welcome;
use crate::config::NodeConfig;
use crate::crypto::{
    bootstrap_client_config, bootstrap_server_config, crypto_provider, endpoint_config,
    mesh_client_config, mesh_server_config, rank_from_cert, DetRng, NodeIdentity, TransportParams,
};
use crate::error::ConfigError;

/// Certificates from a Welcome, kept until the mesh configs are built from them.
struct Staged {
    ca: CertificateDer<'static>,
    node: CertificateDer<'static>,
}

pub(super) struct Tls {
    provider: Arc<CryptoProvider>,
    identity: NodeIdentity,
    /// Seed for this incarnation's randomness.
    seed: [u8; 32],
    unix_time: UnixTime,
    params: TransportParams,
    staged: Option<Staged>,
    /// Built once and cloned per dial: the seeded initial-CID source inside is shared, so
    /// each dial draws fresh IDs.
    mesh_client: Option<ClientConfig>,
    /// The same for dials of the seed (the first, and any after a failed attempt).
    bootstrap_client: Option<ClientConfig>,
}

impl Tls {
    pub(super) fn new(config: &NodeConfig) -> Result<Self, ConfigError> {
        let identity = NodeIdentity::generate(&mut DetRng::derive(&config.rng_seed, "identity"));
        let seed = DetRng::derive(
            &config.rng_seed,
            &format!("incarnation-{}", config.incarnation),
        )
        .array();
        let params = TransportParams {
            idle_timeout: config.idle_timeout,
            keep_alive_interval: Some(config.keep_alive),
            max_udp_payload: config.max_udp_payload,
            initial_rtt: config.initial_rtt,
            initial_mtu: config.initial_mtu,
            initial_window: config.initial_window,
            ack_eliciting_threshold: config.ack_eliciting_threshold,
            send_window: config.send_window,
            // nexar uses exactly four unidirectional streams per direction and never a
            // bidirectional one; granting more would only let a peer pin more buffers.
            max_concurrent_bidi_streams: 0,
            max_concurrent_uni_streams: 4,
            ..TransportParams::default()
        };
        Ok(Self {
            provider: crypto_provider(&seed),
            identity,
            seed,
            unix_time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(config.unix_time)),
            params,
            staged: None,
            mesh_client: None,
            bootstrap_client: None,
        })
    }

    pub(super) fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub(super) fn unix_time(&self) -> UnixTime {
        self.unix_time
    }

    pub(super) fn endpoint_config(&self) -> Result<EndpointConfig, ConfigError> {
        endpoint_config(&self.seed, &self.params).map_err(crypto)
    }

    pub(super) fn bootstrap_server_config(&self) -> Result<Arc<ServerConfig>, ConfigError> {
        let cert = self.identity.self_signed_bootstrap_cert(self.unix_time);
        bootstrap_server_config(
            &self.provider,
            &self.identity,
            cert,
            &self.seed,
            self.unix_time,
            &self.params,
        )
        .map(Arc::new)
        .map_err(crypto)
    }

    /// The client configuration for dialling the seed; built once (for one pin), so each
    /// dial draws fresh connection IDs.
    pub(super) fn bootstrap_client_config(
        &mut self,
        pin: [u8; 32],
    ) -> Result<ClientConfig, ConfigError> {
        if let Some(c) = &self.bootstrap_client {
            return Ok(c.clone());
        }
        let c = bootstrap_client_config(
            &self.provider,
            pin,
            &self.seed,
            self.unix_time,
            &self.params,
        )
        .map_err(crypto)?;
        self.bootstrap_client = Some(c.clone());
        Ok(c)
    }

    /// Keep the Welcome's certificates for the mesh configs.
    pub(super) fn stage_welcome(&mut self, welcome: &Welcome) {
        self.staged = Some(Staged {
            ca: CertificateDer::from(welcome.ca_cert_der.to_vec()),
            node: CertificateDer::from(welcome.node_cert_der.to_vec()),
        });
        self.mesh_client = None;
    }

    /// The certificate the seed issued must carry our own public key and name our rank;
    /// anything else would fail every mesh handshake later, so fail the join now instead.
    pub(super) fn check_welcome(&self, welcome: &Welcome) -> Result<(), String> {
        let spki = crate::crypto::spki_of_cert(&welcome.node_cert_der)
            .ok_or_else(|| "node certificate does not parse".to_string())?;
        if spki != self.identity.public_key_der() {
            return Err("node certificate is not for our key".into());
        }
        // The certificate names our member id (fixed for life), which the peer table
        // gives next to our rank (which changes with epochs).
        let member = welcome
            .peers
            .iter()
            .find(|p| p.rank == welcome.rank)
            .map(|p| p.member);
        match rank_from_cert(&welcome.node_cert_der, welcome.cluster_id) {
            Some(id) if Some(id) == member => Ok(()),
            other => Err(format!(
                "node certificate names member {other:?}, the peer table says {member:?} for rank {}",
                welcome.rank
            )),
        }
    }

    pub(super) fn mesh_server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let s = self.staged.as_ref().ok_or("no welcome")?;
        mesh_server_config(
            &self.provider,
            &self.identity,
            s.node.clone(),
            s.ca.clone(),
            &self.seed,
            self.unix_time,
            &self.params,
        )
        .map(Arc::new)
        .map_err(|e| e.to_string())
    }

    pub(super) fn mesh_client_config(&mut self) -> Result<ClientConfig, String> {
        if let Some(c) = &self.mesh_client {
            return Ok(c.clone());
        }
        let s = self.staged.as_ref().ok_or("no welcome")?;
        let c = mesh_client_config(
            &self.provider,
            &self.identity,
            s.node.clone(),
            s.ca.clone(),
            &self.seed,
            self.unix_time,
            &self.params,
        )
        .map_err(|e| e.to_string())?;
        self.mesh_client = Some(c.clone());
        Ok(c)
    }
}

fn crypto(e: crate::crypto::CryptoError) -> ConfigError {
    ConfigError::Crypto(e.to_string())
}
