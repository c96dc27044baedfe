//! Join handshake messages: `Hello` (joiner to seed), `Welcome` and `JoinRejected`
//! (seed to joiner).

use std::fmt;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use super::message::{Body, WireMessage};
use super::wire::{self, Reader, ADDR_MIN_LEN};
use super::{DecodeError, Kind, Limits};

/// A joiner's request to be admitted.
///
/// Carries a certificate *request*, never a key: the joiner keeps its private key and the
/// seed returns only a signed certificate (DESIGN §4).
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// Version of the membership protocol the joiner speaks.
    pub version: u16,
    /// Proof that the joiner holds the join ticket's secret.
    pub join_proof: [u8; 32],
    /// PKCS#10 certificate request, DER; at most [`Limits::max_cert_len`] bytes.
    pub csr_der: Bytes,
    /// Where the joiner accepts mesh connections.
    pub listen_addr: SocketAddr,
    /// A rank the joiner asks for (e.g. a restart keeping its identity), if any.
    pub requested_rank: Option<u32>,
    /// Bumped by the joiner on every restart so that stale state about an earlier run can
    /// be told apart.
    pub incarnation: u64,
}

/// Hand-written so that logging a `Hello` never prints the join proof.
impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("join_proof", &"<redacted>")
            .field("csr_der", &format_args!("<{} bytes>", self.csr_der.len()))
            .field("listen_addr", &self.listen_addr)
            .field("requested_rank", &self.requested_rank)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl Hello {
    /// The largest Hello payload `limits` let a decoder accept: every field at its
    /// largest (a certificate request of `max_cert_len` bytes, an IPv6 address, a
    /// requested rank). The transport reads an unproven peer with this frame limit.
    pub fn max_payload_len(limits: &Limits) -> u32 {
        let largest_addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        let fixed = 2 + 32 + 4 + wire::addr_len(&largest_addr) + wire::opt_u32_len(Some(0)) + 8;
        limits.max_cert_len.saturating_add(fixed as u32)
    }
}

impl Body for Hello {
    fn body_len(&self) -> usize {
        2 + 32
            + wire::bytes_len(&self.csr_der)
            + wire::addr_len(&self.listen_addr)
            + wire::opt_u32_len(self.requested_rank)
            + 8
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u16_le(self.version);
        out.put_slice(&self.join_proof);
        wire::put_bytes(out, &self.csr_der);
        wire::put_addr(out, &self.listen_addr);
        wire::put_opt_u32(out, self.requested_rank);
        out.put_u64_le(self.incarnation);
    }
}

impl WireMessage for Hello {
    const KIND: Kind = Kind::HELLO;

    fn decode_body(r: &mut Reader, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Hello {
            version: r.u16("hello.version")?,
            join_proof: r.array("hello.join_proof")?,
            csr_der: r.bytes("hello.csr_der", limits.max_cert_len)?,
            listen_addr: r.addr("hello.listen_addr")?,
            requested_rank: r.opt_u32("hello.requested_rank")?,
            incarnation: r.u64("hello.incarnation")?,
        })
    }
}

/// One member of the cluster as the joiner must know it to open mesh connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The member's rank at the welcome's epoch.
    pub rank: u32,
    /// Its member id: the name its certificate carries, fixed for the member's life
    /// while its rank changes with every epoch (ranks are dense; ids are never reused).
    pub member: u32,
    /// Its mesh address.
    pub addr: SocketAddr,
    /// Its incarnation (see [`Hello::incarnation`]).
    pub incarnation: u64,
}

impl PeerEntry {
    const MIN_LEN: usize = 4 + 4 + ADDR_MIN_LEN + 8;

    fn len(&self) -> usize {
        4 + 4 + wire::addr_len(&self.addr) + 8
    }

    fn put(&self, out: &mut BytesMut) {
        out.put_u32_le(self.rank);
        out.put_u32_le(self.member);
        wire::put_addr(out, &self.addr);
        out.put_u64_le(self.incarnation);
    }

    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(PeerEntry {
            rank: r.u32("welcome.peers.rank")?,
            member: r.u32("welcome.peers.member")?,
            addr: r.addr("welcome.peers.addr")?,
            incarnation: r.u64("welcome.peers.incarnation")?,
        })
    }
}

/// The seed's admission of a joiner: its rank, the membership, and its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The joiner's rank.
    pub rank: u32,
    /// Number of ranks at `epoch`.
    pub world_size: u32,
    /// The membership epoch the rank is valid in.
    pub epoch: u64,
    /// Names the cluster in certificates, so that nodes of two clusters never mesh.
    pub cluster_id: [u8; 16],
    /// The other members; at most [`Limits::max_peers`].
    pub peers: Vec<PeerEntry>,
    /// The cluster CA certificate, DER; at most [`Limits::max_cert_len`] bytes.
    pub ca_cert_der: Bytes,
    /// The joiner's certificate signed by the CA, DER; at most [`Limits::max_cert_len`].
    pub node_cert_der: Bytes,
}

impl Body for Welcome {
    fn body_len(&self) -> usize {
        4 + 4
            + 8
            + 16
            + 4
            + self.peers.iter().map(PeerEntry::len).sum::<usize>()
            + wire::bytes_len(&self.ca_cert_der)
            + wire::bytes_len(&self.node_cert_der)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u32_le(self.rank);
        out.put_u32_le(self.world_size);
        out.put_u64_le(self.epoch);
        out.put_slice(&self.cluster_id);
        wire::put_len(out, self.peers.len());
        for peer in &self.peers {
            peer.put(out);
        }
        wire::put_bytes(out, &self.ca_cert_der);
        wire::put_bytes(out, &self.node_cert_der);
    }
}

impl WireMessage for Welcome {
    const KIND: Kind = Kind::WELCOME;

    fn decode_body(r: &mut Reader, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Welcome {
            rank: r.u32("welcome.rank")?,
            world_size: r.u32("welcome.world_size")?,
            epoch: r.u64("welcome.epoch")?,
            cluster_id: r.array("welcome.cluster_id")?,
            peers: r.vec(
                "welcome.peers",
                PeerEntry::MIN_LEN,
                limits.max_peers,
                PeerEntry::read,
            )?,
            ca_cert_der: r.bytes("welcome.ca_cert_der", limits.max_cert_len)?,
            node_cert_der: r.bytes("welcome.node_cert_der", limits.max_cert_len)?,
        })
    }
}

code_enum! {
    /// Why the seed refused a joiner; the joiner surfaces it as a typed error.
    #[non_exhaustive]
    pub enum RejectReason {
        /// `Hello::version` is not one the seed speaks.
        BadVersion = 0,
        /// The join proof does not match the ticket's secret.
        BadProof = 1,
        /// The requested rank belongs to a live member.
        RankTaken = 2,
        /// The requested rank is outside the cluster's size.
        RankOutOfRange = 3,
        /// The cluster has reached its configured size.
        ClusterFull = 4,
        /// Too many joins are already pending.
        QueueFull = 5,
        /// The joiner did not finish the handshake before its deadline.
        Timeout = 6,
        /// The joiner's messages did not decode.
        Malformed = 7,
        /// The joiner sent a frame over the seed's limit.
        FrameTooLarge = 8,
        /// The certificate request did not parse or did not verify.
        BadCertificateRequest = 9,
        /// The seed is shutting down.
        ShuttingDown = 10,
    }
}

/// The seed's refusal of a joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRejected {
    /// Why.
    pub reason: RejectReason,
    /// A reason-specific number (e.g. the supported version, the cluster size, the rank
    /// in conflict); 0 when there is nothing to add.
    pub detail: u64,
}

impl Body for JoinRejected {
    fn body_len(&self) -> usize {
        1 + 8
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u8(self.reason.code());
        out.put_u64_le(self.detail);
    }
}

impl WireMessage for JoinRejected {
    const KIND: Kind = Kind::JOIN_REJECTED;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(JoinRejected {
            reason: r.code("join_rejected.reason")?,
            detail: r.u64("join_rejected.detail")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Message, HEADER_LEN};

    fn hello() -> Hello {
        Hello {
            version: 1,
            join_proof: [0xAB; 32],
            csr_der: Bytes::from_static(b"csr"),
            listen_addr: "[2001:db8::1]:9000".parse().unwrap(),
            requested_rank: Some(3),
            incarnation: 7,
        }
    }

    #[test]
    fn hello_layout_is_pinned() {
        let frame = Message::Hello(hello()).to_frame();
        let mut expected = vec![b'N', b'X', 2, 0x01, 0];
        expected.extend_from_slice(&(2u32 + 32 + 4 + 3 + 19 + 5 + 8).to_le_bytes());
        expected.extend_from_slice(&[1, 0]);
        expected.extend_from_slice(&[0xAB; 32]);
        expected.extend_from_slice(&[3, 0, 0, 0, b'c', b's', b'r']);
        expected.push(6);
        expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&9000u16.to_le_bytes());
        expected.extend_from_slice(&[1, 3, 0, 0, 0]);
        expected.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(&frame[..], &expected[..]);
    }

    #[test]
    fn hello_debug_hides_the_proof() {
        let shown = format!("{:?}", hello());
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn oversize_certificates_and_peer_counts_are_refused() {
        let limits = Limits {
            max_cert_len: 2,
            max_peers: 1,
            ..Limits::default()
        };
        let payload = Message::Hello(hello()).to_frame().slice(HEADER_LEN..);
        assert_eq!(
            Message::decode(Kind::HELLO, payload, &limits),
            Err(DecodeError::FieldTooLarge {
                field: "hello.csr_der",
                len: 3,
                limit: 2
            })
        );
        let peer = PeerEntry {
            rank: 0,
            member: 0,
            addr: "192.0.2.1:1".parse().unwrap(),
            incarnation: 0,
        };
        let welcome = Welcome {
            rank: 1,
            world_size: 3,
            epoch: 1,
            cluster_id: [0; 16],
            peers: vec![peer.clone(), peer],
            ca_cert_der: Bytes::new(),
            node_cert_der: Bytes::new(),
        };
        let payload = Message::Welcome(welcome).to_frame().slice(HEADER_LEN..);
        assert_eq!(
            Message::decode(Kind::WELCOME, payload, &limits),
            Err(DecodeError::FieldTooLarge {
                field: "welcome.peers",
                len: 2,
                limit: 1
            })
        );
    }

    #[test]
    fn unknown_reject_reason_is_an_error() {
        let payload = Bytes::from_static(&[11, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Message::decode(Kind::JOIN_REJECTED, payload, &Limits::default()),
            Err(DecodeError::BadField {
                field: "join_rejected.reason",
                reason: "unknown code",
                value: 11
            })
        );
    }
}
