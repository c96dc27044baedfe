//! The join proof: knowledge of the ticket's secret, bound to one TLS session.
//!
//! The worker never sends the secret. It sends HMAC-SHA256(secret, exporter), where the
//! exporter is RFC 5705 keying material from this very TLS session, which both ends can
//! compute and nobody else can. A captured Hello therefore proves nothing on any other
//! connection, and even a seed impostor that somehow passed the pin check learns nothing
//! it could replay.

use ring::hmac;

/// RFC 5705 exporter label for the join proof.
pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-nexar-join-proof-v1";

/// The proof a worker sends and the seed expects.
pub(crate) fn compute(secret: &[u8; 32], exporter: &[u8; 32]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, exporter);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time check, so timing reveals nothing about how much of a guess was right.
pub(crate) fn verify(secret: &[u8; 32], exporter: &[u8; 32], proof: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    compute(secret, exporter).ct_eq(proof).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_depends_on_secret_and_session() {
        let p = compute(&[1; 32], &[2; 32]);
        assert!(verify(&[1; 32], &[2; 32], &p));
        assert!(!verify(&[9; 32], &[2; 32], &p));
        assert!(!verify(&[1; 32], &[3; 32], &p));
    }
}
