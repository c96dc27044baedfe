//! A tiny host for testing the simulator: it echoes pings and can send numbered pings of
//! its own on a timer, recording when everything happened.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sim::SimHost;
use crate::Transmit;

const PING: u8 = 0;
const PONG: u8 = 1;

/// Echo host with an optional pinger.
///
/// Wire format: a kind byte (ping or pong), the sequence number (u32 little-endian), then
/// zero padding up to `payload` bytes. A pong has the length of its ping.
#[derive(Debug)]
pub(crate) struct PingHost {
    /// Whom to ping (`None`: echo only).
    peer: Option<SocketAddr>,
    interval: Duration,
    count: u32,
    payload: usize,
    /// Pings queued per timer tick.
    batch: u32,
    /// Coalesce equal-sized datagrams to one destination into a GSO batch.
    gso: bool,
    next_ping: Option<Instant>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    /// When each of our pings was queued, by sequence number.
    pub(crate) sent_at: Vec<Instant>,
    /// Pongs received: (sequence number, arrival).
    pub(crate) replies: Vec<(u32, Instant)>,
    /// Pings received: (sequence number, arrival, sender).
    pub(crate) pings_seen: Vec<(u32, Instant, SocketAddr)>,
    /// ECN bits of the last datagram received.
    pub(crate) last_ecn: Option<u8>,
    /// `poll_transmit` calls that returned a transmit.
    pub(crate) transmits: u32,
    /// ECN to mark our datagrams with.
    ecn: Option<u8>,
}

impl PingHost {
    /// A host that only answers pings.
    pub(crate) fn echo() -> Self {
        PingHost {
            peer: None,
            interval: Duration::from_millis(10),
            count: 0,
            payload: 64,
            batch: 1,
            gso: false,
            next_ping: None,
            outbox: VecDeque::new(),
            sent_at: Vec::new(),
            replies: Vec::new(),
            pings_seen: Vec::new(),
            last_ecn: None,
            transmits: 0,
            ecn: None,
        }
    }

    /// A host that sends `count` pings to `peer`, one tick every `interval` from `start`.
    pub(crate) fn pinger(peer: SocketAddr, start: Instant, interval: Duration, count: u32) -> Self {
        PingHost {
            peer: Some(peer),
            interval,
            count,
            next_ping: (count > 0).then_some(start),
            ..PingHost::echo()
        }
    }

    pub(crate) fn payload(mut self, bytes: usize) -> Self {
        assert!(bytes >= 5, "a ping needs 5 bytes");
        self.payload = bytes;
        self
    }

    pub(crate) fn batch(mut self, pings_per_tick: u32, gso: bool) -> Self {
        self.batch = pings_per_tick;
        self.gso = gso;
        self
    }

    pub(crate) fn ecn(mut self, ecn: u8) -> Self {
        self.ecn = Some(ecn);
        self
    }

    /// A direct command, as a test would issue through `Sim::host_mut`.
    pub(crate) fn ping_now(&mut self, now: Instant, to: SocketAddr) {
        let seq = self.sent_at.len() as u32;
        self.sent_at.push(now);
        self.outbox
            .push_back((to, self.message(PING, seq, self.payload)));
    }

    /// Sequence numbers of pongs received, sorted and deduplicated.
    pub(crate) fn replied_seqs(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.replies.iter().map(|r| r.0).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn message(&self, kind: u8, seq: u32, len: usize) -> Vec<u8> {
        let mut m = vec![0; len];
        m[0] = kind;
        m[1..5].copy_from_slice(&seq.to_le_bytes());
        m
    }
}

impl SimHost for PingHost {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ecn: Option<u8>, data: &[u8]) {
        self.last_ecn = ecn;
        let Some(seq) = data.get(1..5) else {
            return;
        };
        let seq = u32::from_le_bytes(seq.try_into().expect("4 bytes"));
        match data[0] {
            PING => {
                self.pings_seen.push((seq, now, from));
                self.outbox
                    .push_back((from, self.message(PONG, seq, data.len())));
            }
            PONG => self.replies.push((seq, now)),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let (Some(due), Some(peer)) = (self.next_ping, self.peer) else {
            return;
        };
        if now < due {
            return; // spurious
        }
        for _ in 0..self.batch {
            if self.sent_at.len() as u32 >= self.count {
                break;
            }
            self.ping_now(now, peer);
        }
        let more = (self.sent_at.len() as u32) < self.count;
        self.next_ping = more.then(|| now + self.interval);
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (dest, first) = self.outbox.pop_front()?;
        let seg = first.len();
        buf.extend_from_slice(&first);
        let mut segments = 1;
        while self.gso {
            match self.outbox.front() {
                Some((d, m)) if *d == dest && m.len() == seg => {
                    buf.extend_from_slice(m);
                    self.outbox.pop_front();
                    segments += 1;
                }
                _ => break,
            }
        }
        self.transmits += 1;
        Some(Transmit {
            destination: dest,
            size: buf.len(),
            segment_size: (segments > 1).then_some(seg),
            ecn: self.ecn,
            src_ip: None,
        })
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_ping
    }
}
