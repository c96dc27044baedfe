//! Small X.509 helpers shared by the identity, the CA and the verifiers.

use rustls::pki_types::UnixTime;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// How far before the issuing instant a certificate is already valid: absorbs clock skew
/// between the seed (which issues) and the joiner (which checks with its own start time).
pub(crate) const BACKDATE_SECS: u64 = 60 * 60;
/// How long after the issuing instant a certificate stays valid. The CA is ephemeral (one
/// per cluster), so this only needs to outlive the cluster.
pub(crate) const LIFETIME_SECS: u64 = 365 * 24 * 60 * 60;
/// 9999-12-31T23:59:59Z, the last instant X.509 GeneralizedTime (and `time`) can express.
const MAX_X509_SECS: u64 = 253_402_300_799;

/// The validity window `[start - 1h, start + 365d]`, clamped to what X.509 can express, so
/// that no `UnixTime` (even a nonsense one) makes certificate generation fail.
pub(crate) fn validity_window(start: UnixTime) -> (OffsetDateTime, OffsetDateTime) {
    let secs = start.as_secs().min(MAX_X509_SECS);
    let not_before = secs.saturating_sub(BACKDATE_SECS);
    let not_after = secs.saturating_add(LIFETIME_SECS).min(MAX_X509_SECS);
    (to_datetime(not_before), to_datetime(not_after))
}

fn to_datetime(secs: u64) -> OffsetDateTime {
    // `secs` is at most MAX_X509_SECS, which fits an i64 and is inside `time`'s range; the
    // fallback is unreachable but cheaper to state than to prove to the compiler.
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The DER of the SubjectPublicKeyInfo of a DER certificate, or `None` if the certificate
/// does not parse (or has trailing bytes).
pub(crate) fn spki_der_of_cert(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (rest, cert) = X509Certificate::from_der(cert_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    Some(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// Lowercase hex of `bytes` (used for cluster ids in names and for fingerprints in `Debug`).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn window_is_backdated_and_year_long() {
        let start = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        let (nb, na) = validity_window(start);
        assert_eq!(nb.unix_timestamp(), 1_700_000_000 - 3600);
        assert_eq!(na.unix_timestamp(), 1_700_000_000 + 365 * 86_400);
    }

    #[test]
    fn window_clamps_extremes() {
        let (nb, _) = validity_window(UnixTime::since_unix_epoch(Duration::ZERO));
        assert_eq!(nb.unix_timestamp(), 0);
        let far = UnixTime::since_unix_epoch(Duration::from_secs(u64::MAX));
        let (nb, na) = validity_window(far);
        assert!(nb < na);
        assert_eq!(na.unix_timestamp(), MAX_X509_SECS as i64);
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn spki_of_garbage_is_none() {
        assert!(spki_der_of_cert(&[0x30, 0x03, 0x01]).is_none());
    }
}
