//! Faults applied to the world: partitions, crashes, restarts, pauses and link changes,
//! now or at a scheduled virtual time.

use std::time::Duration;

use super::fault::Fault;
use super::host::{HostId, SimHost};
use super::queue::EventClass;
use super::stats::DropReason;
use super::trace::TraceEvent;
use super::world::{Event, HostState, Sim};

impl<H: SimHost> Sim<H> {
    /// Cut both directions between `a` and `b` (datagrams already in flight still arrive).
    pub fn partition(&mut self, a: HostId, b: HostId) {
        self.apply(Fault::Partition(a, b));
    }

    /// Cut only `from -> to`.
    pub fn partition_oneway(&mut self, from: HostId, to: HostId) {
        self.apply(Fault::PartitionOneway { from, to });
    }

    /// Undo a partition between `a` and `b`, both directions.
    pub fn heal(&mut self, a: HostId, b: HostId) {
        self.apply(Fault::Heal(a, b));
    }

    /// Undo a one-way partition `from -> to`.
    pub fn heal_oneway(&mut self, from: HostId, to: HostId) {
        self.apply(Fault::HealOneway { from, to });
    }

    /// Undo every partition.
    pub fn heal_all(&mut self) {
        self.apply(Fault::HealAll);
    }

    /// Crash a host: no more input, datagrams to it dropped, its buffered ones lost.
    pub fn crash(&mut self, id: HostId) {
        self.apply(Fault::Crash(id));
    }

    /// Replace a host with a new incarnation at the same id and address.
    pub fn restart(&mut self, id: HostId, host: H) {
        self.apply(Fault::Restart(id, host));
    }

    /// Freeze a host for `duration` of virtual time (see [`Fault::Pause`]). Pausing a
    /// paused host sets a new resume time, `duration` from now.
    pub fn pause(&mut self, id: HostId, duration: Duration) {
        self.apply(Fault::Pause(id, duration));
    }

    /// End a pause now.
    pub fn resume(&mut self, id: HostId) {
        self.apply(Fault::Resume(id));
    }

    /// Schedule a fault at virtual time `at`. A time already past means the current
    /// instant. Faults at one instant apply in scheduling order, before any delivery or
    /// timer due at that instant.
    pub fn schedule(&mut self, at: Duration, fault: Fault<H>) {
        let at = at.max(self.elapsed);
        self.queue.push(at, EventClass::Fault, Event::Fault(fault));
    }

    /// Apply a fault now.
    ///
    /// # Panics
    /// If the fault names a host id that does not exist.
    pub fn apply(&mut self, fault: Fault<H>) {
        let kind = fault.kind();
        self.stats.faults += 1;
        self.trace
            .record(self.elapsed, TraceEvent::Fault(kind), &[]);
        match fault {
            Fault::Partition(a, b) => {
                self.check_ids(&[a, b]);
                self.partitions.insert((a, b));
                self.partitions.insert((b, a));
            }
            Fault::PartitionOneway { from, to } => {
                self.check_ids(&[from, to]);
                self.partitions.insert((from, to));
            }
            Fault::Heal(a, b) => {
                self.partitions.remove(&(a, b));
                self.partitions.remove(&(b, a));
            }
            Fault::HealOneway { from, to } => {
                self.partitions.remove(&(from, to));
            }
            Fault::HealAll => self.partitions.clear(),
            Fault::Crash(id) => self.stop(id),
            Fault::Restart(id, host) => {
                self.stop(id);
                let slot = self.slot_mut(id);
                slot.host = host;
                slot.state = HostState::Running;
                self.dirty.insert(id);
            }
            Fault::Pause(id, duration) => self.pause_now(id, duration),
            Fault::Resume(id) => self.resume_now(id),
            Fault::SetLink { from, to, config } => {
                self.check_ids(&[from, to]);
                self.set_link(from, to, config);
            }
        }
    }

    /// Mark a host crashed, cancelling its timer and pause and losing its socket buffer.
    fn stop(&mut self, id: HostId) {
        let slot = self.slot_mut(id);
        let state = std::mem::replace(&mut slot.state, HostState::Crashed);
        let timer = slot.timer.take();
        let lost = std::mem::take(&mut slot.inbox);
        slot.inbox_bytes = 0;
        if let HostState::Paused { resume } = state {
            self.queue.cancel(resume);
        }
        if let Some(key) = timer {
            self.queue.cancel(key);
        }
        for d in lost {
            self.drop_datagram(d.from, Some(d.to), DropReason::Crashed, &d.data);
        }
        self.dirty.remove(&id);
    }

    fn pause_now(&mut self, id: HostId, duration: Duration) {
        let until = self.elapsed + duration;
        let old = match self.slot(id).state {
            HostState::Crashed => return,
            HostState::Running => None,
            HostState::Paused { resume } => Some(resume),
        };
        if let Some(key) = old {
            self.queue.cancel(key);
        }
        if let Some(key) = self.slot_mut(id).timer.take() {
            self.queue.cancel(key);
        }
        let resume = self
            .queue
            .push(until, EventClass::Fault, Event::Fault(Fault::Resume(id)));
        self.slot_mut(id).state = HostState::Paused { resume };
    }

    fn resume_now(&mut self, id: HostId) {
        let HostState::Paused { resume } = self.slot(id).state else {
            return;
        };
        // Already gone if this is the scheduled resume firing; present if ended early.
        self.queue.cancel(resume);
        let slot = self.slot_mut(id);
        slot.state = HostState::Running;
        slot.inbox_bytes = 0;
        // A process woken from a long stop finds its timers overdue as well as data in
        // its socket; it runs the overdue timer first (so it acts on its stale view
        // before it reads what happened meanwhile, the harder case for its peers).
        let now = self.now();
        if self
            .slot_mut(id)
            .host
            .poll_timeout()
            .is_some_and(|t| t <= now)
        {
            self.stats.timeouts += 1;
            self.trace.record(
                self.elapsed,
                super::trace::TraceEvent::Timeout { host: id },
                &[],
            );
            self.slot_mut(id).host.handle_timeout(now);
            self.drain(id);
        }
        let inbox = std::mem::take(&mut self.slot_mut(id).inbox);
        for d in inbox {
            self.deliver_now(d);
        }
        // Re-arm the timer (possibly already due) even if nothing was buffered.
        self.drain(id);
    }
}
