//! One recovery round at the seed: who has voted, who is dead, and the accusations the
//! seed has not yet been able to check.
//!
//! A vote is one member's word, and a member may lie or sit behind a broken link. So a
//! rank a vote names is not dead on that word alone. It is dead when the seed itself
//! finds it down (its control connection silent for `heartbeat_timeout`, or lost), or
//! when a second voter names it too. Otherwise the seed asks the accused: every live
//! member heartbeats the seed each `heartbeat_interval`, so the question is "be heard
//! within `heartbeat_timeout` of the accusation" and needs no message of its own. An
//! accused that stays silent that long is dead (the seed's liveness finds it so at the
//! same instant). An accused that is heard after the accusation is alive, and its
//! accusers are then the ones that cannot talk to the cluster: a one-way link fault on
//! their side, or a lie. They are evicted instead, which settles an honest one-way
//! partition and means one member's votes can evict no one but itself.
//!
//! Members are called for their votes only once the round has something corroborated
//! to report (or was opened by a vote naming nobody, an explicit `Recover`): an
//! accusation still being checked does not disturb anyone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A rank named dead by voters, not yet corroborated.
#[derive(Debug)]
struct Accusation {
    /// When it was first named: the accused must be heard after this.
    since: Instant,
    /// The voters naming it.
    by: BTreeSet<u32>,
}

#[derive(Debug)]
pub(crate) struct Round {
    pub(crate) dead: BTreeSet<u32>,
    pub(crate) voted: BTreeSet<u32>,
    accused: BTreeMap<u32, Accusation>,
    /// How long an accused has to be heard from.
    probe: Duration,
    /// When the silent are counted dead; set once members have been called.
    pub(crate) deadline: Option<Instant>,
}

impl Round {
    pub(crate) fn new(probe: Duration) -> Self {
        Self {
            dead: BTreeSet::new(),
            voted: BTreeSet::new(),
            accused: BTreeMap::new(),
            probe,
            deadline: None,
        }
    }

    /// Members have been called (the round is public).
    pub(crate) fn called(&self) -> bool {
        self.deadline.is_some()
    }

    /// Whether the round may call members now: it has a corroborated death to report,
    /// or nothing is being checked (a vote naming nobody asked for a round).
    pub(crate) fn callable(&self) -> bool {
        !self.dead.is_empty() || self.accused.is_empty()
    }

    /// `voter` (a member not dead in this round) names `names` (already checked: in
    /// range, not itself, no repeats). `down` are the ranks the seed found down itself.
    pub(crate) fn vote(&mut self, now: Instant, voter: u32, names: &[u32], down: &BTreeSet<u32>) {
        self.voted.insert(voter);
        for &rank in names {
            if self.dead.contains(&rank) {
                continue;
            }
            if down.contains(&rank) {
                self.kill(rank);
                continue;
            }
            let a = self.accused.entry(rank).or_insert_with(|| Accusation {
                since: now,
                by: BTreeSet::new(),
            });
            a.by.insert(voter);
            if a.by.len() >= 2 {
                self.kill(rank);
            }
        }
    }

    /// The seed knows `rank` is dead.
    pub(crate) fn kill(&mut self, rank: u32) {
        self.dead.insert(rank);
        self.accused.remove(&rank);
    }

    /// Settle the accusations whose probe window has closed at `now`: `heard(rank, since)`
    /// says whether the seed heard from `rank` after `since`.
    pub(crate) fn resolve(&mut self, now: Instant, heard: impl Fn(u32, Instant) -> bool) {
        let due: Vec<u32> = self
            .accused
            .iter()
            .filter(|(_, a)| a.since + self.probe <= now)
            .map(|(r, _)| *r)
            .collect();
        for rank in due {
            let Some(a) = self.accused.remove(&rank) else {
                continue;
            };
            if self.dead.contains(&rank) {
                continue;
            }
            if heard(rank, a.since) {
                self.dead.extend(a.by);
            } else {
                self.dead.insert(rank);
            }
        }
        // What the dead accused, or what was said of the dead, no longer matters.
        let dead = &self.dead;
        self.accused
            .retain(|r, a| !dead.contains(r) && a.by.iter().any(|v| !dead.contains(v)));
    }

    /// Ranks not dead that have not voted.
    pub(crate) fn silent(&self, world: u32) -> Vec<u32> {
        (0..world)
            .filter(|r| !self.dead.contains(r) && !self.voted.contains(r))
            .collect()
    }

    /// Called, nothing left to check, and every rank dead or heard.
    pub(crate) fn complete(&self, world: u32) -> bool {
        self.called() && self.accused.is_empty() && self.silent(world).is_empty()
    }

    /// The next probe window to close.
    pub(crate) fn next_probe(&self) -> Option<Instant> {
        self.accused.values().map(|a| a.since + self.probe).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Instant {
        // Test-only: a starting point for virtual time, never read again.
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    const PROBE: Duration = Duration::from_millis(500);

    #[test]
    fn one_accuser_of_a_live_rank_is_the_one_evicted() {
        let t0 = base();
        let mut r = Round::new(PROBE);
        r.vote(t0, 0, &[1, 2, 3], &BTreeSet::new());
        assert!(!r.callable(), "nothing corroborated yet");
        r.resolve(t0 + PROBE - Duration::from_millis(1), |_, _| true);
        assert!(r.dead.is_empty(), "window still open");
        r.resolve(t0 + PROBE, |_, _| true);
        assert_eq!(r.dead, BTreeSet::from([0]));
        assert!(
            r.next_probe().is_none(),
            "the liar's other accusations are moot"
        );
    }

    #[test]
    fn an_unheard_accused_is_dead_and_two_voters_corroborate() {
        let t0 = base();
        let mut r = Round::new(PROBE);
        r.vote(t0, 0, &[3], &BTreeSet::new());
        r.vote(t0, 1, &[2], &BTreeSet::new());
        r.vote(t0, 4, &[2], &BTreeSet::new());
        assert_eq!(r.dead, BTreeSet::from([2]), "two voters name 2");
        r.resolve(t0 + PROBE, |rank, _| rank != 3);
        assert_eq!(r.dead, BTreeSet::from([2, 3]));
        let down = BTreeSet::from([5]);
        r.vote(t0, 1, &[5], &down);
        assert!(r.dead.contains(&5), "the seed's own finding corroborates");
    }
}
