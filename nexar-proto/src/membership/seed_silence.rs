//! A seed that never answers: the worker says so within seconds (the address it dials,
//! that it keeps dialling, and until when) and, if nothing ever comes back by the
//! formation deadline, fails naming that address rather than with a bare formation
//! timeout.
//!
//! "Answered" means any datagram arrived on a connection to the seed. The worker keeps
//! dialling for the whole `formation_timeout`, not less: a seed started after its workers
//! (common under launchers) and a first handshake lost on a bad path (QUIC backs off its
//! retransmissions, so a few losses in a row are seconds of silence) both look silent for
//! a while, and giving up early would fail a join that would have worked.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::JoinError;

/// When to warn about a silent seed: early, so that a mistyped address shows long before
/// the join gives up, but after a lost first flight would have been resent.
const WARN_AFTER: Duration = Duration::from_secs(2);

/// Whether the seed has answered yet, and what to do while it has not.
#[derive(Debug)]
pub(super) struct SeedSilence {
    addr: SocketAddr,
    started: Instant,
    give_up: Instant,
    warn_at: Option<Instant>,
    heard: bool,
}

impl SeedSilence {
    pub(super) fn new(addr: SocketAddr, now: Instant, timeout: Duration) -> Self {
        tracing::info!(
            seed = %addr,
            ?timeout,
            "dialling the seed; retrying until it answers, for at most formation_timeout"
        );
        Self {
            addr,
            started: now,
            give_up: now + timeout,
            warn_at: Some(now + WARN_AFTER.min(timeout / 2)),
            heard: false,
        }
    }

    /// A datagram came from the seed.
    pub(super) fn heard(&mut self) {
        self.heard = true;
        self.warn_at = None;
    }

    /// The next instant [`check`](Self::check) has something to do.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if self.heard {
            return None;
        }
        self.warn_at.into_iter().chain([self.give_up]).min()
    }

    /// Warn once if the seed is still silent, and give up at the timeout given to `new`
    /// (or at `formation_deadline` if that comes first) with the error naming its
    /// address.
    pub(super) fn check(&mut self, now: Instant, formation_deadline: Instant) -> Option<JoinError> {
        if self.heard {
            return None;
        }
        let waited = now.saturating_duration_since(self.started);
        let give_up = self.give_up.min(formation_deadline);
        if now >= give_up {
            return Some(JoinError::SeedUnreachable {
                addr: self.addr,
                waited,
            });
        }
        if self.warn_at.is_some_and(|at| at <= now) {
            self.warn_at = None;
            tracing::warn!(
                seed = %self.addr,
                ?waited,
                giving_up_in = ?give_up.saturating_duration_since(now),
                "no answer from the seed yet; still dialling it"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_exactly_at_the_timeout_unless_the_seed_answered() {
        // Test-only: a starting point for virtual time, never read again.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let addr: SocketAddr = "192.0.2.1:7000".parse().unwrap();
        let timeout = Duration::from_secs(10);
        let far = now + Duration::from_secs(60);
        let mut s = SeedSilence::new(addr, now, timeout);
        assert_eq!(s.poll_timeout(), Some(now + WARN_AFTER));
        assert_eq!(s.check(now + WARN_AFTER, far), None);
        assert_eq!(s.poll_timeout(), Some(now + timeout));
        let just_before = now + timeout - Duration::from_millis(1);
        assert_eq!(s.check(just_before, far), None);
        assert_eq!(
            s.check(now + timeout, far),
            Some(JoinError::SeedUnreachable {
                addr,
                waited: timeout
            })
        );
        // The formation deadline, if earlier, bounds it too.
        let mut s = SeedSilence::new(addr, now, timeout);
        assert!(s
            .check(now + Duration::from_secs(3), now + Duration::from_secs(3))
            .is_some());
        // A seed that answered once is never given up on here.
        let mut s = SeedSilence::new(addr, now, timeout);
        s.heard();
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.check(far, far), None);
    }
}
