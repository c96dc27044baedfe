//! Limits applied to every length read from the network, before anything is allocated.

/// Upper bounds on what a peer may make us buffer or allocate.
///
/// Checked before reserving memory, so a header or count claiming gigabytes costs nothing.
/// Both ends should use the same limits: a sender that exceeds the receiver's limits gets
/// its connection closed, so the collective layer sizes chunks with
/// [`Chunk::max_payload`](super::Chunk::max_payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame *payload* (the header's length field), in bytes.
    ///
    /// The decoder's buffer never reserves more than this (plus the fixed header).
    pub max_frame_len: u32,
    /// Largest accepted element count for membership vectors (peers, members, leavers,
    /// dead ranks): a cluster can never legitimately have more nodes than this.
    pub max_peers: u32,
    /// Largest accepted DER blob (certificate request, CA and node certificates).
    pub max_cert_len: u32,
}

impl Limits {
    /// 16 MiB frames, 65 536 peers, 16 KiB certificates.
    ///
    /// 16 MiB keeps one connection's worst-case buffer modest while letting a chunk carry
    /// enough data to amortise the per-frame overhead; Ed25519 certificates are well under
    /// 1 KiB, so 16 KiB leaves room for long chains and extensions.
    pub const DEFAULT: Limits = Limits {
        max_frame_len: 16 * 1024 * 1024,
        max_peers: 65_536,
        max_cert_len: 16 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
