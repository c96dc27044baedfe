//! Socket sizes, the OS random source and binding: shared by both drivers.

use super::*;

// ---- shared by both drivers -----------------------------------------------------------

/// Socket buffer size we ask for: a collective bursts a whole congestion window at a peer,
/// and the kernel's default (about 200 KiB) drops most of it on loopback. The kernel caps
/// the request at `net.core.{r,w}mem_max`, which is fine: it is only a hint.
pub(crate) const SOCKET_BUFFER: usize = 4 << 20;

/// Largest UDP payload we accept; QUIC never sends more than its path MTU.
pub(crate) const MAX_DATAGRAM: usize = 64 * 1024;

/// Datagrams read back-to-back after the one that woke the loop (bounded, so that requests
/// and the timer are never starved by a flood).
pub(crate) const RECV_BURST: usize = 32;

/// 32 bytes from the OS CSPRNG: node RNG seeds and the seed's join secret.
pub(crate) fn os_random() -> Result<[u8; 32], NexarError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        NexarError::io(
            "reading the OS random source",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(bytes)
}

pub(super) fn bind(addr: SocketAddr) -> Result<(UdpSocket, SocketAddr), NexarError> {
    let socket = UdpSocket::bind(addr).map_err(|e| NexarError::io("binding the UDP socket", e))?;
    let local = socket
        .local_addr()
        .map_err(|e| NexarError::io("reading the socket address", e))?;
    Ok((socket, local))
}

/// Port 0 on loopback for a seed on loopback, else on the unspecified address of the
/// seed's family (the seed then fills in the IP it sees us connect from).
pub(super) fn default_bind(seed: SocketAddr) -> SocketAddr {
    let ip = match seed.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}
