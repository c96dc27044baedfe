//! Failure detection: heartbeats out, silence in.
//!
//! Every tracked link gets a heartbeat every `interval`, and anything heard on it (a
//! heartbeat or any other message) renews it. A link silent for `timeout` is reported
//! once as down. QUIC's own idle timeout stays underneath as a backstop, but it is too
//! coarse and too late for a collective that needs to fail fast with a named rank.
//!
//! A node that was itself asleep (a process stopped, a machine swapping) must not blame
//! its peers for the silence it caused: if our own clock jumped by more than `timeout`
//! between two ticks, every link gets a fresh window instead of being declared dead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::transport::ConnId;

#[derive(Debug, Clone, Copy)]
struct Link {
    last_heard: Instant,
    next_beat: Instant,
    seq: u64,
}

/// What a tick asks the node to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tick {
    /// Send a heartbeat with this sequence number on each connection.
    pub(crate) beats: Vec<(ConnId, u64)>,
    /// These connections have been silent past the timeout (each reported once).
    pub(crate) silent: Vec<ConnId>,
}

/// Heartbeat schedule and silence detection for a set of connections.
#[derive(Debug)]
pub(crate) struct Liveness {
    interval: Duration,
    timeout: Duration,
    links: BTreeMap<ConnId, Link>,
    last_tick: Option<Instant>,
}

impl Liveness {
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            timeout,
            links: BTreeMap::new(),
            last_tick: None,
        }
    }

    /// Start watching `conn` (a fresh window; the first heartbeat goes out at once).
    pub(crate) fn track(&mut self, conn: ConnId, now: Instant) {
        self.links.entry(conn).or_insert(Link {
            last_heard: now,
            next_beat: now,
            seq: 0,
        });
    }

    pub(crate) fn untrack(&mut self, conn: ConnId) {
        self.links.remove(&conn);
    }

    #[cfg(test)]
    pub(crate) fn is_tracked(&self, conn: ConnId) -> bool {
        self.links.contains_key(&conn)
    }

    /// When `conn` was last heard from; `None` if it is not watched (never tracked, lost,
    /// or already reported silent).
    pub(crate) fn last_heard(&self, conn: ConnId) -> Option<Instant> {
        self.links.get(&conn).map(|l| l.last_heard)
    }

    /// Stop watching every connection not in `keep`.
    pub(crate) fn retain(&mut self, keep: &[ConnId]) {
        self.links.retain(|c, _| keep.contains(c));
    }

    /// Something arrived on `conn`.
    pub(crate) fn heard(&mut self, conn: ConnId, now: Instant) {
        if let Some(link) = self.links.get_mut(&conn) {
            link.last_heard = link.last_heard.max(now);
        }
    }

    /// A fresh window for every link (say, once formation is over).
    pub(crate) fn refresh(&mut self, now: Instant) {
        for link in self.links.values_mut() {
            link.last_heard = link.last_heard.max(now);
        }
    }

    /// Heartbeats due and links gone silent at `now`. With `detect` false only the
    /// heartbeats are produced (during formation, when other logic owns the links).
    pub(crate) fn handle_timeout(&mut self, now: Instant, detect: bool) -> Tick {
        let asleep = self
            .last_tick
            .is_some_and(|t| now.saturating_duration_since(t) > self.timeout);
        self.last_tick = Some(now);
        let mut tick = Tick::default();
        for (conn, link) in &mut self.links {
            if asleep {
                // We were the silent one: give every peer a new window.
                link.last_heard = now;
            }
            if link.next_beat <= now {
                tick.beats.push((*conn, link.seq));
                link.seq += 1;
                link.next_beat = now + self.interval;
            }
            if detect && now.saturating_duration_since(link.last_heard) >= self.timeout {
                tick.silent.push(*conn);
            }
        }
        for conn in &tick.silent {
            self.links.remove(conn);
        }
        tick
    }

    /// The next heartbeat, and with `detect` (as the next [`handle_timeout`] will be
    /// given) the next silence deadline. A tick without detection reports no silence, so
    /// a silence deadline then is no deadline: once past, it would stay in the past and
    /// have the driver call `handle_timeout` again at the same instant, forever.
    ///
    /// [`handle_timeout`]: Self::handle_timeout
    pub(crate) fn poll_timeout(&self, detect: bool) -> Option<Instant> {
        self.links
            .values()
            .map(|l| {
                if detect {
                    l.next_beat.min(l.last_heard + self.timeout)
                } else {
                    l.next_beat
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: usize) -> ConnId {
        ConnId(n)
    }

    /// Any base instant: the detector only ever compares instants it was given.
    fn base() -> Instant {
        // Test-only: a starting point for virtual time, never read again.
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn beats_every_interval_and_reports_silence_once() {
        let t0 = base();
        let mut l = Liveness::new(Duration::from_secs(1), Duration::from_secs(3));
        l.track(conn(1), t0);
        l.track(conn(2), t0);
        let tick = l.handle_timeout(t0, true);
        assert_eq!(tick.beats, vec![(conn(1), 0), (conn(2), 0)]);
        assert!(tick.silent.is_empty());
        for s in 1..3 {
            let now = t0 + Duration::from_secs(s);
            l.heard(conn(2), now);
            let tick = l.handle_timeout(now, true);
            assert_eq!(tick.beats.len(), 2);
            assert!(tick.silent.is_empty());
        }
        let tick = l.handle_timeout(t0 + Duration::from_secs(3), true);
        assert_eq!(tick.silent, vec![conn(1)]);
        assert!(!l.is_tracked(conn(1)));
        assert!(l.is_tracked(conn(2)));
        assert!(l
            .handle_timeout(t0 + Duration::from_secs(4), true)
            .silent
            .is_empty());
    }

    #[test]
    fn a_stall_shorter_than_the_timeout_is_no_failure() {
        let t0 = base();
        let mut l = Liveness::new(Duration::from_millis(250), Duration::from_secs(1));
        l.track(conn(1), t0);
        let _ = l.handle_timeout(t0, true);
        l.heard(conn(1), t0 + Duration::from_millis(900));
        assert!(l
            .handle_timeout(t0 + Duration::from_millis(1500), true)
            .silent
            .is_empty());
        assert_eq!(
            l.poll_timeout(true),
            Some(t0 + Duration::from_millis(1750)),
            "next beat"
        );
    }

    #[test]
    fn our_own_sleep_gives_peers_a_new_window() {
        let t0 = base();
        let mut l = Liveness::new(Duration::from_secs(1), Duration::from_secs(3));
        l.track(conn(1), t0);
        let _ = l.handle_timeout(t0, true);
        let woke = t0 + Duration::from_secs(10);
        assert!(l.handle_timeout(woke, true).silent.is_empty());
        assert_eq!(
            l.handle_timeout(woke + Duration::from_secs(3), true).silent,
            vec![conn(1)]
        );
    }

    /// Without detection (formation), a link silent past the timeout is not reported, so
    /// its silence must not be a deadline: every deadline given is one a tick moves past.
    /// Detection on again reports it at once.
    #[test]
    fn silence_is_no_deadline_while_detection_is_off() {
        let t0 = base();
        let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(1500));
        let mut l = Liveness::new(interval, timeout);
        l.track(conn(1), t0);
        let mut now = t0;
        while now <= t0 + timeout * 2 {
            let tick = l.handle_timeout(now, false);
            assert!(tick.silent.is_empty());
            let next = l.poll_timeout(false).expect("a beat is always due");
            assert!(
                next > now,
                "deadline {:?} not after now {:?}",
                next - t0,
                now - t0
            );
            assert_eq!(next, now + interval, "only the next beat");
            now = next;
        }
        // Silent for 3 s, past the 1.5 s timeout: with detection, that is due now.
        let past = l.poll_timeout(true).expect("tracked");
        assert_eq!(past, t0 + timeout);
        assert!(past < now);
        assert_eq!(l.handle_timeout(now, true).silent, vec![conn(1)]);
        assert_eq!(l.poll_timeout(true), None);
        assert_eq!(l.poll_timeout(false), None);
    }
}
