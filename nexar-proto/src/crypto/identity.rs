//! `NodeIdentity`: a node's Ed25519 key pair, generated from the seeded stream.

use rcgen::{CertificateParams, DnType, KeyPair, SanType, SerialNumber, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::CryptoError;
use super::rng::DetRng;
use super::x509::{hex, validity_window};

/// DER prefix of a PKCS#8 v1 (RFC 5208/8410) Ed25519 private key; the 32-byte seed follows.
///
/// `SEQUENCE(46) { INTEGER 0, SEQUENCE(5) { OID 1.3.101.112 }, OCTET STRING(34) {
/// OCTET STRING(32) seed } }`. Fixed because every field but the seed has a fixed length.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Upper bound on a node name in a CSR: X.520's `ub-common-name`.
const MAX_NODE_NAME_LEN: usize = 64;

/// Subject alternative name of the seed's bootstrap certificate. Joiners pin the key, not
/// the name, so this is informative only.
pub const BOOTSTRAP_SERVER_NAME: &str = "bootstrap.nexar";

/// A node's Ed25519 key pair.
///
/// Ed25519 because its signatures are deterministic and fixed-length (ECDSA and RSA-PSS
/// signatures draw randomness and vary in length), which keeps handshakes replayable.
///
/// The key is generated from a [`DetRng`] rather than by ring, whose `generate` reads the OS
/// RNG: the 32 random bytes are the Ed25519 seed, wrapped in PKCS#8 v1 DER by hand.
///
/// The private key never leaves this type: there is no public accessor to its bytes, it is
/// wiped on drop, `Debug` prints only the public key's fingerprint, and only certificate
/// requests (never keys) are meant to cross the wire (DESIGN.md §4). Inside the crate the
/// TLS builders borrow it as a `PrivateKeyDer`.
pub struct NodeIdentity {
    /// PKCS#8 v1 DER of the key (prefix + seed); wiped on drop.
    pkcs8: Zeroizing<Vec<u8>>,
    /// The same key, loaded for rcgen (CSRs and certificates).
    key_pair: KeyPair,
    /// DER SubjectPublicKeyInfo.
    spki_der: Vec<u8>,
}

impl NodeIdentity {
    /// Draws a fresh key pair from `rng` (32 bytes).
    ///
    /// The same stream position always yields the same key, so a restarted simulated node
    /// keeps its identity.
    pub fn generate(rng: &mut DetRng) -> Self {
        let seed = Zeroizing::new(rng.array::<32>());
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + 32));
        pkcs8.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        pkcs8.extend_from_slice(&seed[..]);
        // Every 32-byte string is a valid Ed25519 seed and the DER around it is fixed, so
        // parsing cannot fail: a failure would be a bug in the prefix above.
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(&pkcs8[..]),
            &PKCS_ED25519,
        )
        .expect("a PKCS#8 v1 Ed25519 key built from a 32-byte seed always parses");
        let spki_der = key_pair.public_key_der();
        Self {
            pkcs8,
            key_pair,
            spki_der,
        }
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    /// SHA-256 of [`Self::public_key_der`]: the pin a join ticket carries.
    pub fn spki_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.spki_der).into()
    }

    /// A PKCS#10 certificate request for this key, self-signed, naming `node_name` as the
    /// subject common name.
    ///
    /// The name is informative only: the cluster CA ignores every name a request asks for
    /// and names the certificate after the rank it assigns. Fails with
    /// [`CryptoError::InvalidNodeName`] if the name is empty or longer than 64 bytes.
    pub fn certificate_request_der(&self, node_name: &str) -> Result<Vec<u8>, CryptoError> {
        if node_name.is_empty() || node_name.len() > MAX_NODE_NAME_LEN {
            return Err(CryptoError::InvalidNodeName {
                len: node_name.len(),
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        let csr = params.serialize_request(&self.key_pair)?;
        Ok(csr.der().to_vec())
    }

    /// A self-signed certificate for the seed's bootstrap endpoint, valid over
    /// `[start - 1h, start + 365d]`.
    ///
    /// Joiners do not chain it to anything: they pin the SHA-256 of its public key from the
    /// join ticket. It is deterministic: the serial derives from the key and the signature
    /// is Ed25519.
    pub fn self_signed_bootstrap_cert(&self, start: UnixTime) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "nexar bootstrap");
        let (not_before, not_after) = validity_window(start);
        params.not_before = not_before;
        params.not_after = not_after;
        let fingerprint = self.spki_sha256();
        params.serial_number = Some(SerialNumber::from_slice(&fingerprint[..8]));
        // The name is a constant, valid IA5 string, so conversion cannot fail.
        if let Ok(name) = BOOTSTRAP_SERVER_NAME.try_into() {
            params.subject_alt_names = vec![SanType::DnsName(name)];
        }
        // Inputs are fixed (constant names, clamped times, our own Ed25519 key), so signing
        // cannot fail: a failure would be a bug in the parameters above.
        let cert = params
            .self_signed(&self.key_pair)
            .expect("self-signing fixed parameters with an Ed25519 key cannot fail");
        cert.der().clone()
    }

    /// The key for rcgen (certificate and request signing). Crate-internal: the CA signs
    /// with it.
    pub(crate) fn rcgen_key(&self) -> &KeyPair {
        &self.key_pair
    }

    /// The key for rustls. Crate-internal: only the TLS builders may see key bytes.
    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()))
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("spki_sha256", &hex(&self.spki_sha256()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn identity(byte: u8) -> NodeIdentity {
        NodeIdentity::generate(&mut DetRng::from_seed([byte; 32]))
    }

    #[test]
    fn deterministic_per_stream() {
        assert_eq!(identity(1).public_key_der(), identity(1).public_key_der());
        assert_ne!(identity(1).public_key_der(), identity(2).public_key_der());
    }

    #[test]
    fn spki_is_ed25519_and_hash_matches() {
        let id = identity(3);
        let spki = id.public_key_der();
        // SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (33) }: 44 bytes.
        assert_eq!(spki.len(), 44);
        assert_eq!(
            &spki[..9],
            &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]
        );
        let digest: [u8; 32] = Sha256::digest(&spki).into();
        assert_eq!(id.spki_sha256(), digest);
    }

    #[test]
    fn public_key_matches_ring() {
        use ring::signature::{Ed25519KeyPair, KeyPair as _};
        let id = identity(4);
        let ring_key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&id.pkcs8).unwrap();
        assert!(id
            .public_key_der()
            .ends_with(ring_key.public_key().as_ref()));
    }

    #[test]
    fn rustls_loads_the_key() {
        let id = identity(5);
        let provider = rustls::crypto::ring::default_provider();
        let key = provider
            .key_provider
            .load_private_key(id.private_key_der())
            .unwrap();
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ED25519);
    }

    #[test]
    fn debug_redacts_key_material() {
        let id = identity(6);
        let shown = format!("{id:?}");
        let seed_hex = hex(&id.pkcs8[16..]);
        assert!(!shown.contains(&seed_hex));
        assert!(!shown.contains(&format!("{:?}", &id.pkcs8[16..])));
        assert!(shown.contains(&hex(&id.spki_sha256())));
    }

    #[test]
    fn node_name_bounds() {
        let id = identity(7);
        assert!(matches!(
            id.certificate_request_der(""),
            Err(CryptoError::InvalidNodeName { len: 0 })
        ));
        let long = "x".repeat(65);
        assert!(matches!(
            id.certificate_request_der(&long),
            Err(CryptoError::InvalidNodeName { len: 65 })
        ));
        assert!(id.certificate_request_der("worker-1").is_ok());
    }

    #[test]
    fn bootstrap_cert_is_deterministic_and_carries_the_key() {
        let start = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        let id = identity(8);
        let a = id.self_signed_bootstrap_cert(start);
        assert_eq!(a, identity(8).self_signed_bootstrap_cert(start));
        assert_eq!(
            super::super::x509::spki_der_of_cert(&a),
            Some(id.public_key_der())
        );
    }
}
