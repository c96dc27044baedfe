//! Moving through virtual time: popping the next event, feeding hosts, and carrying what
//! they send across the links.

use std::net::SocketAddr;
use std::time::Duration;

use super::host::{HostId, SimHost};
use super::link::{LinkState, Transit};
use super::queue::EventClass;
use super::stats::DropReason;
use super::trace::TraceEvent;
use super::world::{Datagram, Event, HostState, Sim};

impl<H: SimHost> Sim<H> {
    /// Process the single next event (one delivery, one timer or one fault), moving the
    /// clock to its instant. Returns `false`, leaving the clock alone, when nothing is
    /// left to happen.
    ///
    /// Hosts touched through [`host_mut`](Sim::host_mut), added or restarted since the last
    /// step are drained first, at the current time.
    ///
    /// # Panics
    /// If more than [`SimConfig::livelock_limit`](super::SimConfig::livelock_limit) events
    /// happen at one instant, which means a host never lets time advance.
    pub fn step(&mut self) -> bool {
        self.flush_dirty();
        let Some((key, event)) = self.queue.pop() else {
            return false;
        };
        self.advance_to(key.at);
        self.events_at_instant += 1;
        if self.events_at_instant > self.config.livelock_limit {
            let last = match &event {
                Event::Deliver(d) => format!("a delivery {} -> {}", d.from, d.to),
                Event::Timeout(id) => format!("the timer of {id}"),
                Event::Fault(_) => "a fault".to_string(),
            };
            panic!(
                "nexar sim (seed {}): over {} events at {:?} without time advancing (the \
                 last: {last}); does a host keep returning a past poll_timeout?",
                self.config.seed, self.config.livelock_limit, self.elapsed
            );
        }
        match event {
            Event::Deliver(d) => self.arrive(d),
            Event::Timeout(id) => self.fire_timer(id),
            Event::Fault(f) => self.apply(f),
        }
        true
    }

    /// Process every event due at or before `deadline`, then set the clock to `deadline`
    /// (if it is later than now).
    pub fn run_until(&mut self, deadline: Duration) {
        self.run_until_cond(deadline, |_| false);
    }

    /// [`run_until`](Sim::run_until) `elapsed() + duration`.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.elapsed + duration);
    }

    /// Step until `pred` holds or `deadline` passes; returns whether `pred` held.
    ///
    /// `pred` is checked before the first step and after every step, so it sees every
    /// intermediate state: use it to check invariants (panic inside it) as well as to
    /// wait for a goal. It gets `&mut Sim` so it can drain hosts' events. If it never
    /// holds, the clock ends at `deadline`.
    pub fn run_until_cond(
        &mut self,
        deadline: Duration,
        mut pred: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        loop {
            if pred(self) {
                return true;
            }
            self.flush_dirty();
            match self.queue.peek_time() {
                Some(at) if at <= deadline => {
                    self.step();
                }
                _ => {
                    self.advance_to(deadline);
                    return false;
                }
            }
        }
    }

    /// Drain a host's transmits and re-read its timer now, after a command issued through
    /// [`host_mut`](Sim::host_mut). Optional: the next step does it anyway at the same
    /// virtual time; kicking just makes the effect visible before stepping. No effect on
    /// a paused host (it is drained when it resumes) or a crashed one.
    pub fn kick(&mut self, id: HostId) {
        self.dirty.remove(&id);
        self.drain(id);
    }

    /// When the next event is due, if any (virtual time since the start).
    pub fn next_event_time(&self) -> Option<Duration> {
        self.queue.peek_time()
    }

    /// Move the clock forward (never back, even for a fault scheduled in the past).
    fn advance_to(&mut self, at: Duration) {
        if at > self.elapsed {
            self.elapsed = at;
            self.events_at_instant = 0;
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(id) = self.dirty.pop_first() {
            self.drain(id);
        }
    }

    /// A datagram reaches its destination's socket.
    fn arrive(&mut self, d: Datagram) {
        let socket_buffer = self.config.socket_buffer;
        let slot = self.slot_mut(d.to);
        match slot.state {
            HostState::Running => self.deliver_now(d),
            HostState::Crashed => {
                self.drop_datagram(d.from, Some(d.to), DropReason::Crashed, &d.data)
            }
            HostState::Paused { .. } => {
                if slot.inbox_bytes + d.data.len() > socket_buffer {
                    self.drop_datagram(d.from, Some(d.to), DropReason::SocketBuffer, &d.data);
                } else {
                    slot.inbox_bytes += d.data.len();
                    slot.inbox.push_back(d);
                }
            }
        }
    }

    /// Hand a datagram to a running host and drain it.
    pub(crate) fn deliver_now(&mut self, d: Datagram) {
        let now = self.now();
        let from_addr = self.slot(d.from).addr;
        self.stats.delivered += 1;
        let event = TraceEvent::Deliver {
            from: d.from,
            to: d.to,
            len: d.data.len(),
        };
        self.trace.record(self.elapsed, event, &d.data);
        self.slot_mut(d.to)
            .host
            .handle_datagram(now, from_addr, d.ecn, &d.data);
        self.drain(d.to);
    }

    fn fire_timer(&mut self, id: HostId) {
        let now = self.now();
        let slot = self.slot_mut(id);
        slot.timer = None;
        // Paused and crashed hosts have no timer event queued; this is belt and braces.
        if slot.state != HostState::Running {
            return;
        }
        self.stats.timeouts += 1;
        self.trace
            .record(self.elapsed, TraceEvent::Timeout { host: id }, &[]);
        self.slot_mut(id).host.handle_timeout(now);
        self.drain(id);
    }

    /// After an input: send everything the host has to send, then re-arm its timer.
    pub(crate) fn drain(&mut self, id: HostId) {
        if self.slot(id).state != HostState::Running {
            return;
        }
        let now = self.now();
        let mut buf = std::mem::take(&mut self.buf);
        let mut transmits = 0u64;
        loop {
            buf.clear();
            let Some(t) = self.slot_mut(id).host.poll_transmit(now, &mut buf) else {
                break;
            };
            transmits += 1;
            if transmits > self.config.livelock_limit {
                panic!(
                    "nexar sim (seed {}): host {id} returned over {} transmits in one drain",
                    self.config.seed, self.config.livelock_limit
                );
            }
            assert!(
                t.size <= buf.len(),
                "host {id} reported a {}-byte transmit but wrote {} bytes",
                t.size,
                buf.len()
            );
            let data = &buf[..t.size];
            match t.segment_size {
                Some(seg) if seg > 0 && !data.is_empty() => {
                    for chunk in data.chunks(seg) {
                        self.send(id, t.destination, t.ecn, chunk);
                    }
                }
                _ => self.send(id, t.destination, t.ecn, data),
            }
        }
        self.buf = buf;
        self.rearm_timer(id);
    }

    /// Make the queued timer match the host's current `poll_timeout`.
    fn rearm_timer(&mut self, id: HostId) {
        let (base, elapsed) = (self.base, self.elapsed);
        let slot = self.slot_mut(id);
        // A deadline in the past fires now: the clock never goes backwards.
        let want = slot
            .host
            .poll_timeout()
            .map(|t| t.saturating_duration_since(base).max(elapsed));
        let current = slot.timer;
        if current.map(|k| k.at) == want {
            return;
        }
        if let Some(key) = current {
            self.queue.cancel(key);
        }
        let key = want.map(|at| self.queue.push(at, EventClass::Timeout, Event::Timeout(id)));
        self.slot_mut(id).timer = key;
    }

    /// One datagram leaves host `from` for `dest`: route it, apply the link model, and
    /// queue its arrival (or record its drop).
    fn send(&mut self, from: HostId, dest: SocketAddr, ecn: Option<u8>, data: &[u8]) {
        self.stats.sent += 1;
        self.stats.sent_bytes += data.len() as u64;
        let to = self.host_at(dest);
        let event = TraceEvent::Send {
            from,
            to,
            len: data.len(),
        };
        self.trace.record(self.elapsed, event, &[]);
        let Some(to) = to else {
            return self.drop_datagram(from, None, DropReason::UnknownAddress, data);
        };
        if self.partitions.contains(&(from, to)) {
            return self.drop_datagram(from, Some(to), DropReason::Partition, data);
        }
        let config = self.link(from, to);
        let seed = self.config.seed;
        let link = self
            .links
            .entry((from, to))
            .or_insert_with(|| LinkState::new(seed, from.0, to.0));
        match link.transit(&config, self.elapsed, data.len()) {
            Transit::Dropped(reason) => self.drop_datagram(from, Some(to), reason, data),
            Transit::Arrives { at, copy } => {
                let datagram = |data: Vec<u8>| {
                    Event::Deliver(Datagram {
                        from,
                        to,
                        ecn,
                        data,
                    })
                };
                self.queue
                    .push(at, EventClass::Deliver, datagram(data.to_vec()));
                if let Some(copy_at) = copy {
                    self.stats.duplicated += 1;
                    self.queue
                        .push(copy_at, EventClass::Deliver, datagram(data.to_vec()));
                }
            }
        }
    }
}
