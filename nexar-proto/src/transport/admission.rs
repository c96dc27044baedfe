//! Admission of accepted connections that have not yet proven themselves: the caps on
//! how many may be open (in all and per address), eviction of the oldest to make room,
//! the stateless Retry under a handshake flood, the handshake deadline, and the counters
//! of what these rules did. Separate because it is the transport's defence against
//! strangers, with rules and limits of its own, apart from carrying messages.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::Incoming;

use super::peer::Peer;
use super::{convert, ConnId, Transport};

/// What the admission rules for accepted connections have done (for stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AdmissionStats {
    /// Accepted connections not yet proven, now.
    pub unproven: usize,
    /// Unproven connections closed to make room for a newer one.
    pub evicted: u64,
    /// Stateless Retry packets sent instead of accepting.
    pub retries: u64,
    /// Accepted connections closed because their handshake did not complete in time.
    pub handshake_timeouts: u64,
    /// New connections refused outright (not listening, or no room could be made).
    pub refused: u64,
}

/// Application close code for an unproven connection closed to make room for a newer one
/// (too many unproven connections, in all or from its address). An honest joiner that
/// gets it dials again.
pub(crate) const CLOSE_EVICTED: u64 = 0x6;

/// Application close code for an accepted connection whose handshake took too long.
pub(crate) const CLOSE_HANDSHAKE_TIMEOUT: u64 = 0x7;

impl Transport {
    /// What the admission rules have done so far.
    pub(crate) fn admission(&self) -> AdmissionStats {
        AdmissionStats {
            unproven: self.peers.values().filter(|p| p.unproven()).count(),
            ..self.admission
        }
    }

    /// Make room for one more unproven connection from `ip`: close the oldest unproven
    /// connection from `ip` while that address is at its limit, then the oldest of all
    /// while the total is. Evicting rather than refusing means connections that stall
    /// (half-open, or TLS done and no Hello) cannot keep a newcomer out: to displace an
    /// honest joiner an attacker must open `max_unproven_per_ip` connections from its
    /// address within the few round trips the joiner needs. False if no room can be made.
    fn make_room(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.limits.max_unproven == 0 || self.limits.max_unproven_per_ip == 0 {
            return false;
        }
        loop {
            let mut total = 0;
            let mut from_ip = 0;
            let mut oldest: Option<(Instant, ConnId)> = None;
            let mut oldest_from_ip: Option<(Instant, ConnId)> = None;
            for (id, peer) in &self.peers {
                if !peer.unproven() {
                    continue;
                }
                let key = (peer.accepted_at.unwrap_or(now), *id);
                total += 1;
                oldest = oldest.min(Some(key)).or(Some(key));
                if peer.conn.remote_address().ip() == ip {
                    from_ip += 1;
                    oldest_from_ip = oldest_from_ip.min(Some(key)).or(Some(key));
                }
            }
            let victim = if from_ip >= self.limits.max_unproven_per_ip {
                oldest_from_ip
            } else if total >= self.limits.max_unproven {
                oldest
            } else {
                return true;
            };
            let Some((_, victim)) = victim else {
                return false;
            };
            self.admission.evicted += 1;
            self.close(
                now,
                victim,
                CLOSE_EVICTED,
                Bytes::from_static(b"too many unproven connections"),
            );
        }
    }

    /// Decide on a new connection before it costs any state: refuse it, send a Retry,
    /// or make room for it. Returns it if it is to be accepted; otherwise the response
    /// is queued.
    pub(super) fn admit(
        &mut self,
        now: Instant,
        incoming: Incoming,
        buf: &mut Vec<u8>,
    ) -> Option<Incoming> {
        if self.server_config.is_none() {
            self.admission.refused += 1;
            let t = self.endpoint.refuse(incoming, buf);
            self.responses.push_back((convert(&t), std::mem::take(buf)));
            return None;
        }
        // Under a handshake flood, make each new source prove it receives at its
        // address before it costs a slot: a Retry is stateless, so spoofed
        // Initials cost us one small packet each and hold nothing.
        let handshaking = self.peers.values().filter(|p| p.handshaking()).count();
        if !incoming.remote_address_validated()
            && handshaking >= self.limits.retry_above_handshaking
        {
            match self.endpoint.retry(incoming, buf) {
                Ok(t) => {
                    self.admission.retries += 1;
                    self.responses.push_back((convert(&t), std::mem::take(buf)));
                }
                // Unvalidated yet already retried: the token did not check out.
                Err(e) => {
                    self.admission.refused += 1;
                    let t = self.endpoint.refuse(e.into_incoming(), buf);
                    self.responses.push_back((convert(&t), std::mem::take(buf)));
                }
            }
            return None;
        }
        if !self.make_room(now, incoming.remote_address().ip()) {
            self.admission.refused += 1;
            let t = self.endpoint.refuse(incoming, buf);
            self.responses.push_back((convert(&t), std::mem::take(buf)));
            return None;
        }
        Some(incoming)
    }

    /// Close every accepted connection whose handshake has passed its deadline.
    pub(super) fn close_late_handshakes(&mut self, now: Instant) {
        let late: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, p)| self.handshake_deadline(p).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.admission.handshake_timeouts += 1;
            self.close(
                now,
                id,
                CLOSE_HANDSHAKE_TIMEOUT,
                Bytes::from_static(b"handshake timed out"),
            );
        }
    }

    /// When an accepted connection still handshaking is cut off.
    pub(super) fn handshake_deadline(&self, peer: &Peer) -> Option<Instant> {
        peer.handshaking()
            .then_some(peer.accepted_at)
            .flatten()
            .map(|at| at + self.limits.handshake_timeout)
    }
}
