//! What the simulator drives: any sans-IO state machine with the node's input/output verbs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use crate::Transmit;

/// A sans-IO state machine the simulator can drive.
///
/// This is the subset of `Node`'s contract (DESIGN §2) that touches the network and the
/// clock. The simulator is generic over it so that it can run real nodes, a user's own
/// program built on a node, or a tiny test host, all under the same virtual clock.
///
/// Contract the simulator keeps, mirroring a real driver:
/// - after every input (`handle_datagram`, `handle_timeout`) it calls `poll_transmit`
///   until `None`, then reads `poll_timeout` once;
/// - `now` never goes backwards and is the clock reading, not the deadline (in the
///   simulator the two are equal, because the clock jumps exactly to the deadline);
/// - it never calls a crashed or paused host.
///
/// Application events (`poll_event` on a `Node`) are not part of this trait: the caller
/// drains them through [`Sim::host_mut`](super::Sim::host_mut) between steps, which keeps
/// the simulator free of any knowledge of what the events mean.
pub trait SimHost {
    /// Feed one datagram that arrived from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ecn: Option<u8>, data: &[u8]);

    /// The deadline returned by `poll_timeout` has passed (spurious calls must be no-ops).
    fn handle_timeout(&mut self, now: Instant);

    /// Write the next datagram (or GSO batch) into `buf` and describe it.
    ///
    /// The simulator clears `buf` before each call and reads `buf[..transmit.size]`. If
    /// `segment_size` is `Some(s)`, the bytes are split into datagrams of `s` bytes (the
    /// last may be shorter), each of which then travels the link independently.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit>;

    /// The next instant at which the host wants `handle_timeout`, if any.
    fn poll_timeout(&mut self) -> Option<Instant>;
}

/// A host's identity inside one simulation: its index in the order hosts were added.
///
/// Ids are stable across [`crash`](super::Sim::crash) and
/// [`restart`](super::Sim::restart), so a restarted host (a new incarnation at the same
/// address) keeps its id, its links and their random streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// The `index`-th address of the documentation ranges (RFC 5737), port 4433.
///
/// Simulated hosts need addresses that can never be mistaken for, or leak to, a real
/// network: 192.0.2.1..=254 first, then 198.51.100.1..=254, then 203.0.113.1..=254.
///
/// # Panics
/// If `index >= 762`, the number of host addresses in the three ranges.
pub fn doc_addr(index: usize) -> SocketAddr {
    const PREFIXES: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
    let (range, host) = (index / 254, index % 254);
    let Some(p) = PREFIXES.get(range) else {
        panic!("doc_addr({index}): the documentation ranges hold only 762 host addresses");
    };
    let ip = std::net::Ipv4Addr::new(p[0], p[1], p[2], host as u8 + 1);
    SocketAddr::new(ip.into(), 4433)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_addrs_walk_the_three_ranges() {
        assert_eq!(doc_addr(0).to_string(), "192.0.2.1:4433");
        assert_eq!(doc_addr(253).to_string(), "192.0.2.254:4433");
        assert_eq!(doc_addr(254).to_string(), "198.51.100.1:4433");
        assert_eq!(doc_addr(761).to_string(), "203.0.113.254:4433");
    }
}
