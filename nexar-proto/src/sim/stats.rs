//! Counters of what the simulated network did, for assertions in tests.

use std::fmt;

/// Why a datagram did not reach its destination host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// No host has the destination address.
    UnknownAddress,
    /// A partition cut the link when it was sent.
    Partition,
    /// Larger than the link's MTU.
    Mtu,
    /// Lost by the link's loss model.
    Loss,
    /// The link's bandwidth queue was full.
    Queue,
    /// The destination host had crashed when it arrived.
    Crashed,
    /// The destination host was paused and its socket buffer was full.
    SocketBuffer,
}

impl DropReason {
    pub(crate) fn tag(self) -> u8 {
        match self {
            DropReason::UnknownAddress => 0,
            DropReason::Partition => 1,
            DropReason::Mtu => 2,
            DropReason::Loss => 3,
            DropReason::Queue => 4,
            DropReason::Crashed => 5,
            DropReason::SocketBuffer => 6,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::UnknownAddress => "unknown address",
            DropReason::Partition => "partition",
            DropReason::Mtu => "mtu",
            DropReason::Loss => "loss",
            DropReason::Queue => "queue full",
            DropReason::Crashed => "crashed",
            DropReason::SocketBuffer => "socket buffer full",
        })
    }
}

/// Totals since the simulation started. Datagrams are counted after GSO splitting.
///
/// Every datagram sent ends as delivered, dropped, or still in flight, and each
/// duplicate adds one to be accounted for, so
/// `sent + duplicated == delivered + dropped() + in flight (or in a paused host's buffer)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Datagrams hosts handed to the network.
    pub sent: u64,
    /// UDP payload bytes of those datagrams (QUIC headers, encryption and
    /// acknowledgements included): the bytes on the wire, less IP and UDP headers.
    pub sent_bytes: u64,
    /// Datagrams given to a host's `handle_datagram` (duplicates included).
    pub delivered: u64,
    /// Extra copies the links created.
    pub duplicated: u64,
    /// Dropped: destination address unknown.
    pub dropped_unknown: u64,
    /// Dropped: partition.
    pub dropped_partition: u64,
    /// Dropped: larger than the MTU.
    pub dropped_mtu: u64,
    /// Dropped: the loss model.
    pub dropped_loss: u64,
    /// Dropped: bandwidth queue full.
    pub dropped_queue: u64,
    /// Dropped: destination crashed.
    pub dropped_crash: u64,
    /// Dropped: destination paused with a full socket buffer.
    pub dropped_socket_buffer: u64,
    /// `handle_timeout` calls made.
    pub timeouts: u64,
    /// Faults applied.
    pub faults: u64,
}

impl SimStats {
    /// All dropped datagrams, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_unknown
            + self.dropped_partition
            + self.dropped_mtu
            + self.dropped_loss
            + self.dropped_queue
            + self.dropped_crash
            + self.dropped_socket_buffer
    }

    /// Datagrams dropped for `reason`.
    pub fn dropped_by(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::UnknownAddress => self.dropped_unknown,
            DropReason::Partition => self.dropped_partition,
            DropReason::Mtu => self.dropped_mtu,
            DropReason::Loss => self.dropped_loss,
            DropReason::Queue => self.dropped_queue,
            DropReason::Crashed => self.dropped_crash,
            DropReason::SocketBuffer => self.dropped_socket_buffer,
        }
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::UnknownAddress => &mut self.dropped_unknown,
            DropReason::Partition => &mut self.dropped_partition,
            DropReason::Mtu => &mut self.dropped_mtu,
            DropReason::Loss => &mut self.dropped_loss,
            DropReason::Queue => &mut self.dropped_queue,
            DropReason::Crashed => &mut self.dropped_crash,
            DropReason::SocketBuffer => &mut self.dropped_socket_buffer,
        };
        *counter += 1;
    }
}
