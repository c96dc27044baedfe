//! A token bucket for log lines an attacker can cause (one per rejected joiner): enough
//! lines to see what is going on, never a disk filled by a flood. One bucket per kind of
//! line, keyed by nothing the attacker chooses (not the source address, which is free to
//! spoof), and a count of what was left out, reported with the next line that is let
//! through.

use std::time::{Duration, Instant};

/// A bucket of `burst` lines refilled at one line per `every`.
#[derive(Debug)]
pub(crate) struct LogLimit {
    burst: u32,
    every: Duration,
    tokens: u32,
    /// When the last token was added (or the bucket was made).
    refilled: Instant,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) fn new(burst: u32, every: Duration, now: Instant) -> Self {
        Self {
            burst,
            every: every.max(Duration::from_millis(1)),
            tokens: burst,
            refilled: now,
            suppressed: 0,
        }
    }

    /// May a line be logged at `now`? `Some(n)`: yes, and `n` lines were left out since
    /// the last one (say so); `None`: no, it is counted.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = (elapsed.as_nanos() / self.every.as_nanos()).min(u128::from(self.burst));
        if earned > 0 {
            self.tokens = (self.tokens + earned as u32).min(self.burst);
            self.refilled = if self.tokens == self.burst {
                now
            } else {
                self.refilled + self.every * earned as u32
            };
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_and_the_count_of_the_rest() {
        // Test-only: a starting point for virtual time.
        let t0 = Instant::now();
        let mut l = LogLimit::new(3, Duration::from_secs(1), t0);
        for _ in 0..3 {
            assert_eq!(l.admit(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(l.admit(t0), None);
        }
        assert_eq!(l.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), Some(1001));
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), None);
        // A long quiet refills the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.admit(later).is_some());
        }
        assert_eq!(l.admit(later), None);
    }
}
