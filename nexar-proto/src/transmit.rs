//! The one output type that carries bytes to the network.

use std::net::{IpAddr, SocketAddr};

/// A datagram (or a GSO batch of equal-sized datagrams) the driver must send.
///
/// The bytes themselves are written into the caller's buffer by `poll_transmit`; this
/// describes where they go. Mirrors `quinn_proto::Transmit` so a driver can hand it to
/// `quinn-udp` unchanged, but is our own type so the core's public API does not move
/// when quinn-proto's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send the bytes.
    pub destination: SocketAddr,
    /// Total number of bytes written into the buffer.
    pub size: usize,
    /// With GSO, the size of each datagram in the batch (the last may be shorter).
    pub segment_size: Option<usize>,
    /// Explicit congestion notification bits to set, if any (the IP header's two ECN bits).
    pub ecn: Option<u8>,
    /// The source address to send from, when the socket is bound to several.
    pub src_ip: Option<IpAddr>,
}
