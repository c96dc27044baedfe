//! `ClusterCa`: the ephemeral certificate authority the seed node runs for one cluster.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::FromDer;
use x509_parser::x509::AlgorithmIdentifier;

use super::error::{CryptoError, CsrRejection};
use super::identity::NodeIdentity;
use super::names::{cluster_domain, rank_server_name};
use super::rng::DetRng;
use super::x509::{hex, validity_window};

/// Largest certificate request [`ClusterCa::sign_request`] will parse. An Ed25519 request
/// with a short name is about 150 bytes; the limit leaves room for names and attributes
/// while bounding the parser's work on hostile input.
pub const MAX_CSR_LEN: usize = 4096;

/// The cluster's certificate authority: an Ed25519 key and a self-signed CA certificate.
///
/// It exists for the lifetime of one cluster and is never persisted (yet). It signs one
/// leaf per admitted node; each leaf names exactly one rank (see [`rank_server_name`]), so a
/// mesh connection proves both "member of this cluster" (the chain) and "this rank" (the
/// name). The CA certificate carries a name constraint for the cluster's domain, so even a
/// misissued leaf could not name another cluster's ranks.
///
/// All output is deterministic: the key comes from a [`DetRng`], times from the caller,
/// serials from the caller, and Ed25519 signatures are deterministic.
pub struct ClusterCa {
    cluster_id: [u8; 16],
    not_before: UnixTime,
    key: NodeIdentity,
    /// rcgen's view of our own certificate; it is the issuer of every leaf.
    cert: rcgen::Certificate,
}

impl ClusterCa {
    /// Creates the CA for `cluster_id`, drawing its key from `rng`.
    ///
    /// `not_before` is the instant the cluster forms; it anchors the validity of the CA
    /// certificate and of every leaf it signs (`[not_before - 1h, not_before + 365d]`).
    pub fn new(rng: &mut DetRng, cluster_id: [u8; 16], not_before: UnixTime) -> Self {
        let key = NodeIdentity::generate(rng);
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("nexar cluster CA {}", hex(&cluster_id)),
        );
        let (nb, na) = validity_window(not_before);
        params.not_before = nb;
        params.not_after = na;
        params.serial_number = Some(SerialNumber::from_slice(&cluster_id));
        // Path length 0: the CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName(cluster_domain(cluster_id))],
            excluded_subtrees: Vec::new(),
        });
        // Inputs are fixed (our own name, clamped times, an Ed25519 key): signing cannot
        // fail short of a bug in the parameters above.
        let cert = params
            .self_signed(key.rcgen_key())
            .expect("self-signing fixed CA parameters with an Ed25519 key cannot fail");
        Self {
            cluster_id,
            not_before,
            key,
            cert,
        }
    }

    /// The cluster this CA certifies.
    pub fn cluster_id(&self) -> [u8; 16] {
        self.cluster_id
    }

    /// The CA certificate (DER): the only trust root of mesh connections.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Verifies a joiner's certificate request and issues its certificate for `rank`.
    ///
    /// The request must be one DER PKCS#10 structure of at most [`MAX_CSR_LEN`] bytes, with
    /// an Ed25519 key and a valid Ed25519 self-signature (proof that the joiner holds the
    /// key). Everything else it asks for (subject, names, extensions) is ignored: the leaf
    /// carries the request's public key, the single SAN `rank_server_name(cluster_id, rank)`,
    /// `serial`, server+client authentication usage, and validity
    /// `[not_before - 1h, not_before + 365d]`.
    ///
    /// Hostile input yields a typed error, never a panic.
    pub fn sign_request(
        &self,
        csr_der: &[u8],
        rank: u32,
        serial: u64,
    ) -> Result<CertificateDer<'static>, CryptoError> {
        let spki_der = verified_csr_key(csr_der)?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|_| CryptoError::BadCertificateRequest(CsrRejection::UnsupportedAlgorithm))?;

        let name = rank_server_name(self.cluster_id, rank);
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        // Hex digits, 'r', decimal digits and dots: always a valid IA5 string.
        let dns: rcgen::Ia5String = name.clone().try_into()?;
        params.subject_alt_names = vec![SanType::DnsName(dns)];
        let (nb, na) = validity_window(self.not_before);
        params.not_before = nb;
        params.not_after = na;
        params.serial_number = Some(SerialNumber::from(serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&public_key, &self.cert, self.key.rcgen_key())?;
        Ok(leaf.der().clone())
    }
}

/// SHA-256 of a verified certificate request's public key (its DER SubjectPublicKeyInfo):
/// the digest [`NodeIdentity::spki_sha256`](super::NodeIdentity::spki_sha256) gives for
/// the requester. The seed recognises a returning member by it.
pub fn csr_key_sha256(csr_der: &[u8]) -> Result<[u8; 32], CryptoError> {
    use sha2::{Digest, Sha256};
    Ok(Sha256::digest(verified_csr_key(csr_der)?).into())
}

/// Parses and verifies a CSR; returns the DER SubjectPublicKeyInfo of its (Ed25519) key.
fn verified_csr_key(csr_der: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if csr_der.len() > MAX_CSR_LEN {
        return Err(CryptoError::CsrTooLarge {
            len: csr_der.len(),
            limit: MAX_CSR_LEN,
        });
    }
    let reject = CryptoError::BadCertificateRequest;
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|_| reject(CsrRejection::Malformed))?;
    if !rest.is_empty() {
        return Err(reject(CsrRejection::Malformed));
    }
    let spki = &csr.certification_request_info.subject_pki;
    // RFC 8410: Ed25519 keys and signatures use the bare OID, parameters absent.
    if !is_ed25519(&spki.algorithm) || !is_ed25519(&csr.signature_algorithm) {
        return Err(reject(CsrRejection::UnsupportedAlgorithm));
    }
    csr.verify_signature()
        .map_err(|_| reject(CsrRejection::BadSignature))?;
    Ok(spki.raw.to_vec())
}

fn is_ed25519(alg: &AlgorithmIdentifier<'_>) -> bool {
    alg.algorithm == OID_SIG_ED25519 && alg.parameters.is_none()
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster_id", &hex(&self.cluster_id))
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::names::rank_from_cert;
    use crate::crypto::x509::spki_der_of_cert;
    use std::time::Duration;
    use x509_parser::certificate::X509Certificate;

    const CLUSTER: [u8; 16] = [0x5a; 16];

    fn start() -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000))
    }

    fn ca(byte: u8) -> ClusterCa {
        ClusterCa::new(&mut DetRng::from_seed([byte; 32]), CLUSTER, start())
    }

    fn joiner(byte: u8) -> NodeIdentity {
        NodeIdentity::generate(&mut DetRng::from_seed([byte; 32]))
    }

    #[test]
    fn signed_cert_carries_csr_key_and_rank_name() {
        let ca = ca(1);
        let node = joiner(2);
        let csr = node.certificate_request_der("asks-for-anything").unwrap();
        let cert = ca.sign_request(&csr, 7, 42).unwrap();

        assert_eq!(spki_der_of_cert(&cert), Some(node.public_key_der()));
        assert_eq!(rank_from_cert(&cert, CLUSTER), Some(7));
        assert_eq!(rank_from_cert(&cert, [0u8; 16]), None);

        let (_, parsed) = X509Certificate::from_der(&cert).unwrap();
        assert_eq!(
            parsed.tbs_certificate.raw_serial(),
            &42u64.to_be_bytes()[7..]
        );
        assert_eq!(
            parsed.validity().not_before.timestamp(),
            1_700_000_000 - 3600
        );
        assert_eq!(
            parsed.validity().not_after.timestamp(),
            1_700_000_000 + 365 * 86_400
        );
        // Signed by the CA.
        let ca_der = ca.cert_der();
        let (_, ca_parsed) = X509Certificate::from_der(&ca_der).unwrap();
        parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .unwrap();
        assert!(!parsed.is_ca());
        assert!(ca_parsed.is_ca());
    }

    #[test]
    fn signing_is_deterministic() {
        let csr = joiner(3).certificate_request_der("n").unwrap();
        let a = ca(1).sign_request(&csr, 1, 1).unwrap();
        let b = ca(1).sign_request(&csr, 1, 1).unwrap();
        assert_eq!(a, b);
        assert_eq!(ca(1).cert_der(), ca(1).cert_der());
        assert_ne!(ca(1).cert_der(), ca(2).cert_der());
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let ca = ca(1);
        for input in [&b""[..], b"garbage", &[0x30, 0x82, 0xff, 0xff], &[0u8; 100]] {
            assert!(matches!(
                ca.sign_request(input, 0, 0),
                Err(CryptoError::BadCertificateRequest(CsrRejection::Malformed))
            ));
        }
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let big = vec![0x30; MAX_CSR_LEN + 1];
        assert!(matches!(
            ca(1).sign_request(&big, 0, 0),
            Err(CryptoError::CsrTooLarge {
                len,
                limit: MAX_CSR_LEN
            }) if len == MAX_CSR_LEN + 1
        ));
    }

    #[test]
    fn tampered_csr_fails_signature() {
        let mut csr = joiner(4).certificate_request_der("node-name").unwrap();
        // Flip a byte of the subject name (inside the signed info, outside any length).
        let pos = csr
            .windows(9)
            .position(|w| w == b"node-name")
            .expect("name in CSR");
        csr[pos] ^= 0x01;
        assert!(matches!(
            ca(1).sign_request(&csr, 0, 0),
            Err(CryptoError::BadCertificateRequest(
                CsrRejection::BadSignature
            ))
        ));
        // Trailing bytes are refused too.
        let mut trailing = joiner(4).certificate_request_der("n").unwrap();
        trailing.push(0);
        assert!(matches!(
            ca(1).sign_request(&trailing, 0, 0),
            Err(CryptoError::BadCertificateRequest(CsrRejection::Malformed))
        ));
    }

    #[test]
    fn non_ed25519_csr_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        assert!(matches!(
            ca(1).sign_request(csr.der(), 0, 0),
            Err(CryptoError::BadCertificateRequest(
                CsrRejection::UnsupportedAlgorithm
            ))
        ));
    }

    #[test]
    fn debug_redacts_ca_key() {
        let shown = format!("{:?}", ca(1));
        assert!(shown.contains("ClusterCa"));
        assert!(shown.contains(&hex(&CLUSTER)));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let ca = ca(9);
            proptest::prop_assert!(ca.sign_request(&bytes, 0, 0).is_err());
        }

        #[test]
        fn mutated_csr_never_panics(pos in 0usize..200, xor in 1u8..=255) {
            let ca = ca(9);
            let mut csr = joiner(10).certificate_request_der("node").unwrap();
            let i = pos % csr.len();
            csr[i] ^= xor;
            // Any outcome but a panic is fine; a success must still carry a valid rank name.
            if let Ok(cert) = ca.sign_request(&csr, 3, 3) {
                proptest::prop_assert_eq!(rank_from_cert(&cert, CLUSTER), Some(3));
            }
        }
    }
}
