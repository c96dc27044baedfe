//! `PinnedServerVerifier`: how a joiner authenticates the seed's bootstrap endpoint.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::x509::spki_der_of_cert;

/// The seed's certificate carries a key other than the one pinned in the join ticket.
#[derive(Debug, thiserror::Error)]
#[error("server key does not match the pinned SHA-256 of the join ticket")]
pub struct PinMismatch;

/// Accepts a server iff the SHA-256 of its end-entity certificate's SubjectPublicKeyInfo
/// equals the pin from the join ticket (kubeadm's discovery-token-ca-cert-hash, applied to
/// the seed's own key).
///
/// The bootstrap certificate is self-signed, so there is no chain to check; the pin replaces
/// it. Nothing else is skipped: rustls still requires the server to sign the handshake
/// transcript with that certificate's key, and [`Self::verify_tls13_signature`] checks that
/// signature with the provider's algorithms. A man in the middle therefore needs the pinned
/// private key, not just the certificate. Names and validity dates are not checked: the pin
/// names exactly one key, whatever the certificate around it says.
#[derive(Debug)]
pub(crate) struct PinnedServerVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    pub(crate) fn new(pin: [u8; 32], algorithms: WebPkiSupportedAlgorithms) -> Arc<Self> {
        Arc::new(Self { pin, algorithms })
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let spki = spki_der_of_cert(end_entity)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let digest: [u8; 32] = Sha256::digest(&spki).into();
        // The pin is public, but comparing in constant time costs nothing and removes the
        // question.
        if bool::from(digest.ct_eq(&self.pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Unreachable with our TLS 1.3-only configurations; verify properly regardless.
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::identity::NodeIdentity;
    use crate::crypto::rng::DetRng;
    use std::time::Duration;

    fn verifier_for(pin: [u8; 32]) -> Arc<PinnedServerVerifier> {
        PinnedServerVerifier::new(
            pin,
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn check(v: &PinnedServerVerifier, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let name = ServerName::try_from("bootstrap.nexar").unwrap();
        let now = UnixTime::since_unix_epoch(Duration::from_secs(1));
        v.verify_server_cert(cert, &[], &name, &[], now).map(|_| ())
    }

    #[test]
    fn pin_decides() {
        let start = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        let seed = NodeIdentity::generate(&mut DetRng::from_seed([1; 32]));
        let mitm = NodeIdentity::generate(&mut DetRng::from_seed([2; 32]));
        let v = verifier_for(seed.spki_sha256());
        assert!(check(&v, &seed.self_signed_bootstrap_cert(start)).is_ok());
        let err = check(&v, &mitm.self_signed_bootstrap_cert(start)).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidCertificate(CertificateError::Other(_))
        ));
        assert!(err.to_string().contains("PinMismatch"), "{err}");
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        assert_eq!(
            check(&v, &garbage).unwrap_err(),
            Error::InvalidCertificate(CertificateError::BadEncoding)
        );
    }
}
