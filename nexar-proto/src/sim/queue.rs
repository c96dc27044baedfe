//! The simulator's single agenda: every future event, in the order it will happen.

use std::collections::BTreeMap;
use std::time::Duration;

/// Kind of an event, which orders events due at the same instant.
///
/// Faults go first, so a partition scheduled at `t` already cuts datagrams that arrive at
/// `t`; deliveries go before timers, so a reply arriving exactly at a retransmission
/// deadline is seen before the host decides to retransmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EventClass {
    Fault,
    Deliver,
    Timeout,
}

/// Position of an event in the agenda: (time, class, sequence number).
///
/// The sequence number breaks the remaining ties in insertion order, which is itself
/// deterministic, so no two runs with one seed can order events differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EventKey {
    pub(crate) at: Duration,
    pub(crate) class: EventClass,
    seq: u64,
}

/// A priority queue with removal, ordered by [`EventKey`].
///
/// A `BTreeMap` rather than a binary heap so that an event can be cancelled in place (a
/// host's timer replaced by a new deadline, a pause ended early) instead of leaving stale
/// entries behind to be skipped later.
#[derive(Debug)]
pub(crate) struct EventQueue<T> {
    events: BTreeMap<EventKey, T>,
    next_seq: u64,
}

impl<T> EventQueue<T> {
    pub(crate) fn new() -> Self {
        EventQueue {
            events: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Add an event; the key can later cancel it.
    pub(crate) fn push(&mut self, at: Duration, class: EventClass, event: T) -> EventKey {
        let key = EventKey {
            at,
            class,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.events.insert(key, event);
        key
    }

    /// Remove and return the earliest event.
    pub(crate) fn pop(&mut self) -> Option<(EventKey, T)> {
        self.events.pop_first()
    }

    /// When the earliest event is due.
    pub(crate) fn peek_time(&self) -> Option<Duration> {
        self.events.first_key_value().map(|(k, _)| k.at)
    }

    /// Cancel an event (no effect if it already happened).
    pub(crate) fn cancel(&mut self, key: EventKey) -> Option<T> {
        self.events.remove(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_class_then_insertion() {
        let mut q = EventQueue::new();
        let ms = Duration::from_millis;
        q.push(ms(2), EventClass::Fault, "late");
        q.push(ms(1), EventClass::Timeout, "timer");
        q.push(ms(1), EventClass::Deliver, "first delivery");
        let cancelled = q.push(ms(1), EventClass::Deliver, "cancelled");
        q.push(ms(1), EventClass::Deliver, "second delivery");
        q.push(ms(1), EventClass::Fault, "fault");
        assert_eq!(q.cancel(cancelled), Some("cancelled"));
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(
            order,
            [
                "fault",
                "first delivery",
                "second delivery",
                "timer",
                "late"
            ]
        );
    }
}
