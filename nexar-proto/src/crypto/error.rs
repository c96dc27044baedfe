//! The one error type of the crypto module.

use thiserror::Error;

/// Why a certificate signing request was refused.
///
/// Kept separate from [`CryptoError`] so that the join state machine can map each reason to
/// its own rejection code without matching on strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsrRejection {
    /// The bytes are not one DER-encoded PKCS#10 request (or carry trailing bytes).
    Malformed,
    /// The request's self-signature does not verify with the key it carries.
    BadSignature,
    /// The key or the signature is not Ed25519, the only algorithm the cluster issues for.
    UnsupportedAlgorithm,
}

impl std::fmt::Display for CsrRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed PKCS#10 request",
            Self::BadSignature => "self-signature does not verify",
            Self::UnsupportedAlgorithm => "key or signature is not Ed25519",
        })
    }
}

/// Errors from building identities, certificates and TLS/QUIC configurations.
///
/// Input from the network (CSRs, certificates) yields a typed variant, never a panic.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A joiner's certificate signing request was refused.
    #[error("bad certificate request: {0}")]
    BadCertificateRequest(CsrRejection),
    /// A certificate signing request is longer than the limit; it was not parsed.
    #[error("certificate request of {len} bytes exceeds the limit of {limit}")]
    CsrTooLarge {
        /// Length received.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A node name for a certificate request is empty or longer than 64 bytes (X.520's bound
    /// on a common name).
    #[error("invalid node name ({len} bytes; must be 1..=64)")]
    InvalidNodeName {
        /// Length given.
        len: usize,
    },
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(String),
    /// rustls refused a configuration (key/certificate mismatch, unsupported version, ...).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls could not build a certificate verifier (for example: the CA certificate is not
    /// a valid trust anchor).
    #[error("certificate verifier: {0}")]
    Verifier(String),
    /// The provider lacks the QUIC initial cipher suite (AES-128-GCM-SHA256).
    #[error("no QUIC initial cipher suite in the crypto provider")]
    NoInitialCipherSuite,
    /// A transport parameter is out of range (for example an MTU below 1200 bytes).
    #[error("transport parameter `{name}` out of range")]
    TransportParam {
        /// Which parameter.
        name: &'static str,
    },
}

impl From<rcgen::Error> for CryptoError {
    fn from(e: rcgen::Error) -> Self {
        Self::Rcgen(e.to_string())
    }
}

impl From<rustls::server::VerifierBuilderError> for CryptoError {
    fn from(e: rustls::server::VerifierBuilderError) -> Self {
        Self::Verifier(e.to_string())
    }
}
