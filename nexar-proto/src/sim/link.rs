//! The run-time state of one directed link: its random streams, loss-chain state and
//! transmit queue. The configuration lives apart (see [`LinkConfig`]), so it can change
//! mid-run without resetting the streams.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::config::{LinkConfig, LossModel};
use super::rng::{below, chance, link_stream, Purpose};
use super::stats::DropReason;

/// What the link does with one datagram handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transit {
    /// The link dropped it.
    Dropped(DropReason),
    /// It arrives at `at`; if `copy` is set, a duplicate arrives then too.
    Arrives {
        at: Duration,
        copy: Option<Duration>,
    },
}

/// Mutable state of a directed link `from -> to`.
#[derive(Debug)]
pub(crate) struct LinkState {
    loss_rng: ChaCha8Rng,
    jitter_rng: ChaCha8Rng,
    dup_rng: ChaCha8Rng,
    /// Gilbert-Elliott chain state: true while in the bad (bursty loss) state.
    bad: bool,
    /// When the link finishes serialising the last datagram accepted (bandwidth model).
    busy_until: Duration,
}

impl LinkState {
    /// A fresh link whose streams depend only on (seed, from, to).
    pub(crate) fn new(seed: u64, from: usize, to: usize) -> Self {
        LinkState {
            loss_rng: link_stream(seed, Purpose::Loss, from, to),
            jitter_rng: link_stream(seed, Purpose::Jitter, from, to),
            dup_rng: link_stream(seed, Purpose::Duplicate, from, to),
            bad: false,
            busy_until: Duration::ZERO,
        }
    }

    /// Send a datagram of `len` bytes at virtual time `now` over a link configured `cfg`.
    ///
    /// Partitions, crashes and unknown destinations are not the link's business; the
    /// simulator checks them before and after.
    pub(crate) fn transit(&mut self, cfg: &LinkConfig, now: Duration, len: usize) -> Transit {
        if len > cfg.mtu {
            return Transit::Dropped(DropReason::Mtu);
        }
        if self.lose(cfg.loss) {
            return Transit::Dropped(DropReason::Loss);
        }
        let departure = match cfg.bandwidth_bps {
            None => now,
            Some(bps) => match self.serialise(now, len, bps, cfg.queue_bytes) {
                Some(t) => t,
                None => return Transit::Dropped(DropReason::Queue),
            },
        };
        let at = departure + cfg.latency + self.jitter(cfg.jitter);
        // Always draw, so the duplicate stream's later values do not depend on the rate.
        let copy = if chance(&mut self.dup_rng, cfg.duplicate) {
            Some(departure + cfg.latency + self.jitter(cfg.jitter))
        } else {
            None
        };
        Transit::Arrives { at, copy }
    }

    fn lose(&mut self, model: LossModel) -> bool {
        match model {
            LossModel::Bernoulli(p) => chance(&mut self.loss_rng, p),
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let flip = if self.bad {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if chance(&mut self.loss_rng, flip) {
                    self.bad = !self.bad;
                }
                let p = if self.bad { loss_bad } else { loss_good };
                chance(&mut self.loss_rng, p)
            }
        }
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        let ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(below(&mut self.jitter_rng, ns))
    }

    /// FIFO serialisation at `bps` bits per second: returns when the datagram has fully
    /// left the sender, or `None` if the queue in front of it is already full.
    fn serialise(
        &mut self,
        now: Duration,
        len: usize,
        bps: u64,
        limit: Option<usize>,
    ) -> Option<Duration> {
        // A zero rate would never drain; treat it as the slowest representable link.
        let bps = u128::from(bps.max(1));
        let start = self.busy_until.max(now);
        if let Some(limit) = limit {
            let waiting_ns = (start - now).as_nanos();
            let backlog = waiting_ns * bps / 8 / 1_000_000_000;
            if backlog + len as u128 > limit as u128 {
                return None;
            }
        }
        let ser_ns = (len as u128 * 8 * 1_000_000_000).div_ceil(bps);
        let done = start + Duration::from_nanos(u64::try_from(ser_ns).unwrap_or(u64::MAX));
        self.busy_until = done;
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(t: Transit) -> Duration {
        match t {
            Transit::Arrives { at, .. } => at,
            Transit::Dropped(r) => panic!("unexpected drop: {r:?}"),
        }
    }

    #[test]
    fn bandwidth_serialises_and_queues_fifo() {
        let cfg = LinkConfig {
            latency: Duration::from_millis(10),
            bandwidth_bps: Some(8_000_000), // 1 byte per microsecond
            queue_bytes: Some(2500),
            ..LinkConfig::default()
        };
        let mut l = LinkState::new(0, 0, 1);
        let t0 = Duration::from_secs(1);
        let us = Duration::from_micros;
        assert_eq!(
            arrival(l.transit(&cfg, t0, 1000)),
            t0 + us(1000) + cfg.latency
        );
        assert_eq!(
            arrival(l.transit(&cfg, t0, 1000)),
            t0 + us(2000) + cfg.latency
        );
        // 2000 bytes wait; 1000 more would exceed the 2500-byte queue.
        assert_eq!(
            l.transit(&cfg, t0, 1000),
            Transit::Dropped(DropReason::Queue)
        );
        assert_eq!(
            arrival(l.transit(&cfg, t0, 400)),
            t0 + us(2400) + cfg.latency
        );
        // Once idle, no queueing delay remains.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            arrival(l.transit(&cfg, later, 100)),
            later + us(100) + cfg.latency
        );
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let cfg = LinkConfig {
            jitter: Duration::from_millis(5),
            ..LinkConfig::default()
        };
        let mut l = LinkState::new(3, 0, 1);
        for _ in 0..1000 {
            let d = arrival(l.transit(&cfg, Duration::ZERO, 10));
            assert!(d >= cfg.latency && d < cfg.latency + cfg.jitter);
        }
    }
}
