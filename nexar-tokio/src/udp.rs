//! The socket calls both drivers make, through `quinn-udp`: GSO sends (one `sendmsg` for a
//! batch of equal-sized datagrams), GRO and `recvmmsg` receives (many datagrams per call),
//! and the ECN bits both ways. Shared verbatim with `nexar-smol` through `#[path]`, like
//! `api/`; the drivers only decide when the socket is ready.
//!
//! Every call here is non-blocking: it returns `WouldBlock` and the driver waits for
//! readiness its own way.

use std::io::{self, IoSliceMut};
use std::time::Instant;

use bytes::BytesMut;
use quinn_udp::{EcnCodepoint, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

use crate::api::{NodeHost, Outgoing, MAX_DATAGRAM};

/// Receive buffers per `recvmmsg` call. Each holds one datagram or one GRO batch (at most
/// 64 KiB: the kernel coalesces no more than an IP datagram's worth), so this many is
/// what one call can return; quinn sizes its buffers for more, at 2 MiB a socket.
const RECV_BUFFERS: usize = 8;

/// Bytes of the block received datagrams are copied into, one after another: a datagram
/// costs a copy but no allocation of its own, and once every datagram of a block is
/// dropped the block is reused in place (`BytesMut::reserve` reclaims it).
const ARENA: usize = 1 << 20;

/// quinn-udp's state for one socket plus our receive buffers.
#[derive(Debug)]
pub(crate) struct Udp {
    state: UdpSocketState,
    buf: Vec<u8>,
    meta: [RecvMeta; RECV_BUFFERS],
    arena: BytesMut,
}

impl Udp {
    /// Prepare `socket` (ECN and GRO options, don't-fragment) for quinn-udp's calls.
    pub(crate) fn new(socket: UdpSockRef<'_>) -> io::Result<Self> {
        Ok(Self {
            state: UdpSocketState::new(socket)?,
            buf: vec![0; MAX_DATAGRAM * RECV_BUFFERS],
            meta: [RecvMeta::default(); RECV_BUFFERS],
            arena: BytesMut::with_capacity(ARENA),
        })
    }

    /// Datagrams one send may batch. Drops to 1 if the kernel turned GSO down once (quinn-udp
    /// then stops offering it), so the driver re-reads it after sends.
    pub(crate) fn max_datagrams(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// One non-blocking receive call; every datagram it returned goes to `host` (a GRO
    /// batch split at its stride). Returns whether more may be queued: `false` when the
    /// call filled fewer buffers than it had, so the queue was empty when it returned and
    /// the driver can wait for readiness instead of paying a failing `recvmmsg` to learn it.
    pub(crate) fn recv(&mut self, socket: UdpSockRef<'_>, host: &mut NodeHost) -> io::Result<bool> {
        let mut slices: Vec<IoSliceMut<'_>> = self
            .buf
            .chunks_mut(MAX_DATAGRAM)
            .map(IoSliceMut::new)
            .collect();
        let n = self.state.recv(socket, &mut slices, &mut self.meta)?;
        let now = Instant::now();
        for (meta, slice) in self.meta.iter().zip(&slices).take(n) {
            let ecn = meta.ecn.map(|e| e as u8);
            let stride = meta.stride.max(1);
            for datagram in slice[..meta.len].chunks(stride) {
                self.arena.reserve(datagram.len());
                self.arena.extend_from_slice(datagram);
                host.handle_datagram(now, meta.addr, ecn, self.arena.split());
            }
        }
        Ok(n == RECV_BUFFERS)
    }

    /// One non-blocking send of `out` (a GSO batch when it holds several segments).
    pub(crate) fn send(&self, socket: UdpSockRef<'_>, out: &Outgoing<'_>) -> io::Result<()> {
        let transmit = Transmit {
            destination: out.to,
            ecn: out.ecn.and_then(EcnCodepoint::from_bits),
            contents: out.bytes,
            segment_size: (out.bytes.len() > out.segment).then_some(out.segment),
            src_ip: None,
        };
        self.state.try_send(socket, &transmit)
    }
}
