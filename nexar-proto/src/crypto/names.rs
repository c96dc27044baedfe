//! The DNS names that bind a certificate to a (cluster, member).
//!
//! What a certificate names is the *member id*: equal to the rank at formation, but fixed
//! for the member's life while ranks are renumbered at every epoch change (so a cert
//! never needs re-issuing, and a restarted node, which gets a new id, is never taken for
//! its earlier self). Functions below say "rank" for that number, as it began.
//!
//! A mesh certificate carries exactly one SAN DNS name, `r{rank}.{hex(cluster_id)}.nexar`.
//! The client side of a mesh connection passes that name as the TLS server name, so webpki
//! itself checks that the peer is the rank it was dialled as; the server side reads the rank
//! back with [`rank_from_cert`].

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::x509::hex;

/// Top-level label of every nexar name; `.nexar` is not a public TLD, so these names can
/// never collide with a certificate from the web PKI.
const TLD: &str = "nexar";

/// The name a rank's certificate carries and that peers dial it as:
/// `r{rank}.{hex(cluster_id)}.nexar`.
pub fn rank_server_name(cluster_id: [u8; 16], rank: u32) -> String {
    format!("r{rank}.{}.{TLD}", hex(&cluster_id))
}

/// The domain under which all of a cluster's rank names live, `{hex(cluster_id)}.nexar`
/// (the CA's name constraint).
pub(crate) fn cluster_domain(cluster_id: [u8; 16]) -> String {
    format!("{}.{TLD}", hex(&cluster_id))
}

/// The rank a certificate names for `cluster_id`, from its SAN DNS names.
///
/// Returns `None` if the certificate does not parse, names no rank of this cluster, or
/// names more than one (a certificate must identify exactly one rank).
///
/// This does **not** verify the certificate: call it only on a certificate that a TLS
/// handshake has already chained to the cluster CA (as [`super::peer_rank`] does).
pub fn rank_from_cert(cert_der: &[u8], cluster_id: [u8; 16]) -> Option<u32> {
    let (rest, cert) = X509Certificate::from_der(cert_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let san = cert.subject_alternative_name().ok()??;
    let suffix = format!(".{}", cluster_domain(cluster_id));
    let mut found = None;
    for name in &san.value.general_names {
        let GeneralName::DNSName(dns) = name else {
            continue;
        };
        let Some(rank) = parse_rank_label(dns, &suffix) else {
            continue;
        };
        match found {
            None => found = Some(rank),
            Some(r) if r == rank => {}
            Some(_) => return None,
        }
    }
    found
}

/// `r{rank}{suffix}` -> rank, accepting only the canonical decimal form that
/// [`rank_server_name`] writes (no sign, no leading zeros), so one rank has one name.
fn parse_rank_label(dns: &str, suffix: &str) -> Option<u32> {
    // The CA writes lowercase names only, so matching is exact (no case folding).
    let head = dns.strip_suffix(suffix)?;
    let digits = head.strip_prefix('r')?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: [u8; 16] = [0xab; 16];

    #[test]
    fn name_format() {
        assert_eq!(
            rank_server_name([0x01; 16], 7),
            "r7.01010101010101010101010101010101.nexar"
        );
    }

    #[test]
    fn parse_label_round_trips_and_rejects_noise() {
        let suffix = format!(".{}", cluster_domain(CLUSTER));
        for rank in [0u32, 1, 42, u32::MAX] {
            let name = rank_server_name(CLUSTER, rank);
            assert_eq!(parse_rank_label(&name, &suffix), Some(rank));
        }
        for label in ["r", "r01", "r+1", "rr1", "R1", "r99999999999", "1", "", "é"] {
            let name = format!("{label}{suffix}");
            assert_eq!(parse_rank_label(&name, &suffix), None, "{name}");
        }
        assert_eq!(parse_rank_label("r1.other.nexar", &suffix), None);
        assert_eq!(parse_rank_label("x", &suffix), None);
    }

    #[test]
    fn garbage_cert_has_no_rank() {
        assert_eq!(rank_from_cert(b"not a certificate", CLUSTER), None);
        assert_eq!(rank_from_cert(&[], CLUSTER), None);
    }
}
