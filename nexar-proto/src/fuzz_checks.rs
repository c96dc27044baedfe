//! The property behind every fuzz target, by target name.
//!
//! Shared by the `fuzz/` targets (each one is `check("<name>", data)`) and the corpus
//! replay test (`tests/tests/fuzz_corpus.rs`), so a corpus file is checked the same way in
//! both places. Every check accepts any bytes and panics only when a property is violated:
//! a panic is a bug, never merely an input the decoder refused.

use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::codec::{fuzzing, Kind, SeedSnapshot};
use crate::crypto::{rank_from_cert, ClusterCa, CryptoError, DetRng, UnixTime, MAX_CSR_LEN};
use crate::JoinTicket;

/// The per-message targets: each decodes its input as the payload of one kind.
pub const MESSAGE_TARGETS: &[(&str, Kind)] = &[
    ("hello", Kind::HELLO),
    ("welcome", Kind::WELCOME),
    ("join_rejected", Kind::JOIN_REJECTED),
    ("heartbeat", Kind::HEARTBEAT),
    ("leave", Kind::LEAVE),
    ("checkpoint_request", Kind::CHECKPOINT_REQUEST),
    ("checkpoint_agreed", Kind::CHECKPOINT_AGREED),
    ("recovery_vote", Kind::RECOVERY_VOTE),
    ("recovery_agreed", Kind::RECOVERY_AGREED),
    ("chunk", Kind::CHUNK),
    ("tagged", Kind::TAGGED),
    ("rpc_request", Kind::RPC_REQUEST),
    ("rpc_response", Kind::RPC_RESPONSE),
    ("relay", Kind::RELAY),
    ("tagged_start", Kind::TAGGED_START),
    ("tagged_part", Kind::TAGGED_PART),
];

/// The targets that are not a single message kind.
pub const OTHER_TARGETS: &[&str] = &["frame_stream", "join_ticket", "csr", "seed_snapshot"];

/// Every target name [`check`] accepts.
pub fn targets() -> impl Iterator<Item = &'static str> {
    OTHER_TARGETS
        .iter()
        .copied()
        .chain(MESSAGE_TARGETS.iter().map(|&(name, _)| name))
}

/// Runs target `target`'s property on `data`; `false` if no target has that name.
///
/// - `frame_stream`: [`fuzzing::check_stream`] (framing is independent of chunking, and
///   every decoded message round-trips);
/// - a message kind (see [`MESSAGE_TARGETS`]): [`fuzzing::check_message`];
/// - `join_ticket`: [`check_ticket`] on the input if it is UTF-8;
/// - `csr`: [`check_csr`];
/// - `seed_snapshot`: [`check_snapshot`].
pub fn check(target: &str, data: &[u8]) -> bool {
    match target {
        "frame_stream" => fuzzing::check_stream(data),
        "join_ticket" => {
            if let Ok(text) = std::str::from_utf8(data) {
                check_ticket(text);
            }
        }
        "csr" => check_csr(data),
        "seed_snapshot" => check_snapshot(data),
        _ => match MESSAGE_TARGETS.iter().find(|&&(name, _)| name == target) {
            Some(&(_, kind)) => fuzzing::check_message(kind.0, data),
            None => return false,
        },
    }
    true
}

/// If `text` parses as a [`JoinTicket`], its `Display` form parses back to an equal ticket
/// and displays identically (the printed form is canonical and lossless).
pub fn check_ticket(text: &str) {
    let Ok(ticket) = text.parse::<JoinTicket>() else {
        return;
    };
    let shown = ticket.to_string();
    let again = match shown.parse::<JoinTicket>() {
        Ok(again) => again,
        Err(e) => panic!("the display of a parsed ticket does not parse ({e}): {shown:?}"),
    };
    assert_eq!(again, ticket, "parse(display(t)) != t for {text:?}");
    assert_eq!(again.to_string(), shown, "display is not stable");
}

/// If `data` decodes as a seed snapshot (under small limits, so counts reach them), it is
/// exactly the canonical encoding of what it decoded to (no trailing bytes, one encoding
/// per state), and that decodes back to the same snapshot.
pub fn check_snapshot(data: &[u8]) {
    let limits = crate::codec::Limits {
        max_peers: 64,
        ..crate::codec::Limits::DEFAULT
    };
    let Ok(snapshot) = SeedSnapshot::decode(data, &limits) else {
        return;
    };
    let encoded = snapshot.encode();
    assert_eq!(
        &encoded[..],
        data,
        "the decoder accepted a non-canonical snapshot"
    );
    assert_eq!(SeedSnapshot::decode(&encoded, &limits), Ok(snapshot));
}

/// The cluster of the CA [`check_csr`] signs with.
const CSR_CLUSTER: [u8; 16] = [0x5a; 16];

/// One CA for the whole fuzzing run: building it costs a key generation and a signature.
fn fuzz_ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| {
        let start = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        ClusterCa::new(&mut DetRng::from_seed([7; 32]), CSR_CLUSTER, start)
    })
}

/// Feeds `data` to [`ClusterCa::sign_request`] as a joiner's certificate request, with a
/// rank and serial derived from `data` (so different requests exercise different names).
///
/// Properties: an error is a CSR rejection, or `CsrTooLarge` exactly when `data` exceeds
/// [`MAX_CSR_LEN`]; a certificate parses without trailing bytes, names exactly `rank` of
/// this cluster and no rank of another, carries the request's key and `serial`, is not a
/// CA, is signed by the CA, and signing again gives the same bytes.
pub fn check_csr(data: &[u8]) {
    let digest = Sha256::digest(data);
    let rank = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let mut serial = [0u8; 8];
    serial.copy_from_slice(&digest[4..12]);
    let serial = u64::from_le_bytes(serial);

    let ca = fuzz_ca();
    let cert = match ca.sign_request(data, rank, serial) {
        Ok(cert) => cert,
        Err(CryptoError::CsrTooLarge { len, limit }) => {
            assert!(
                data.len() > MAX_CSR_LEN,
                "a {}-byte CSR is not too large",
                data.len()
            );
            assert_eq!((len, limit), (data.len(), MAX_CSR_LEN));
            return;
        }
        Err(CryptoError::BadCertificateRequest(_)) => {
            assert!(data.len() <= MAX_CSR_LEN, "oversized CSR was parsed");
            return;
        }
        Err(other) => panic!("CSR refused with an untyped error: {other}"),
    };

    let (rest, parsed) = X509Certificate::from_der(&cert).expect("issued certificate parses");
    assert!(rest.is_empty(), "issued certificate has trailing bytes");
    assert_eq!(rank_from_cert(&cert, CSR_CLUSTER), Some(rank));
    assert_eq!(rank_from_cert(&cert, [0xa5; 16]), None);
    assert!(!parsed.is_ca(), "a leaf certificate claims to be a CA");

    let (_, csr) = X509CertificationRequest::from_der(data).expect("a signed CSR parses");
    assert_eq!(
        parsed.public_key().raw,
        csr.certification_request_info.subject_pki.raw,
        "the certificate does not carry the request's key"
    );
    // DER INTEGER content: minimal big-endian, a leading zero byte only before a high bit.
    let be = serial.to_be_bytes();
    let mut expected = be[be.iter().position(|&b| b != 0).unwrap_or(7)..].to_vec();
    if expected[0] & 0x80 != 0 {
        expected.insert(0, 0);
    }
    assert_eq!(
        parsed.tbs_certificate.raw_serial(),
        &expected[..],
        "serial {serial}"
    );

    let ca_der = ca.cert_der();
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).expect("the CA certificate parses");
    assert_eq!(parsed.issuer(), ca_cert.subject());
    parsed
        .verify_signature(Some(ca_cert.public_key()))
        .expect("the issued certificate verifies with the CA key");

    let again = ca
        .sign_request(data, rank, serial)
        .expect("a request signed once is signed again");
    assert_eq!(again, cert, "signing is not deterministic");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::NodeIdentity;

    #[test]
    fn every_known_kind_has_a_target() {
        let kinds: Vec<Kind> = MESSAGE_TARGETS.iter().map(|&(_, kind)| kind).collect();
        assert_eq!(kinds, Kind::KNOWN);
    }

    #[test]
    fn every_target_dispatches_and_unknown_names_do_not() {
        for target in targets() {
            assert!(check(target, b""), "{target}");
            assert!(check(target, b"\x01\x02garbage"), "{target}");
        }
        assert!(!check("no_such_target", b""));
        assert_eq!(targets().count(), 20);
    }

    #[test]
    fn a_real_csr_is_signed_and_checked() {
        let node = NodeIdentity::generate(&mut DetRng::from_seed([3; 32]));
        let csr = node.certificate_request_der("fuzz-seed").unwrap();
        assert!(fuzz_ca().sign_request(&csr, 1, 1).is_ok());
        check_csr(&csr);
    }

    #[test]
    fn tickets_round_trip() {
        let text = format!(
            "nexar1-{}-{}@[2001:db8::1]:4000",
            "ab".repeat(32),
            "0F".repeat(32)
        );
        check_ticket(&text);
        check_ticket(" not a ticket ");
    }
}
