//! The driver's timed actions: applying the scenario's faults, undoing them, and bringing
//! the seed back from its snapshot. Separate because faults are the one thing done to the run.

use nexar_proto::codec::RpcStatus;
use nexar_proto::sim::{ClusterHost, ClusterSim, HostId};
use nexar_proto::Node;

use super::driver::{Run, Wake};
use super::gen::FaultPlan;
use super::program::echo;

impl Run<'_> {
    pub(super) fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Fault(i) => {
                let plan = self.sc.faults[i].1.clone();
                self.apply_fault(plan);
            }
            Wake::CheckpointFault(i) => {
                let plan = self.sc.checkpoint_faults[i].1.clone();
                self.apply_fault(plan);
            }
            Wake::Restore(a, b) => {
                let link = self.sc.link;
                self.c.sim.set_link_both(a, b, link);
            }
            Wake::Heal(a, b) => self.c.sim.heal(a, b),
            Wake::SeedBack => self.restart_seed(),
            Wake::Answer(id, key) => {
                if let Some((request, payload)) =
                    self.hosts.get_mut(&id).and_then(|h| h.stalled.remove(&key))
                {
                    self.respond(id, request, RpcStatus::Ok, echo(&payload), true);
                }
            }
        }
    }

    pub(super) fn apply_fault(&mut self, plan: FaultPlan) {
        let now = self.c.sim.elapsed();
        let host = |i: usize| HostId(i);
        if !plan.benign(self.sc.heartbeat_timeout) {
            self.harm = true;
        }
        self.note(format!("fault {plan:?}"));
        let end = match plan {
            FaultPlan::LossBurst { a, b, loss, len } => {
                let mut l = self.sc.link;
                l.loss = nexar_proto::sim::LossModel::Bernoulli(loss);
                self.c.sim.set_link_both(host(a), host(b), l);
                self.wake(now + len, Wake::Restore(host(a), host(b)));
                now + len
            }
            FaultPlan::Partition { a, b, oneway, len } => {
                if oneway {
                    self.c.sim.partition_oneway(host(a), host(b));
                } else {
                    self.c.sim.partition(host(a), host(b));
                }
                self.wake(now + len, Wake::Heal(host(a), host(b)));
                now + len
            }
            FaultPlan::Pause { host: h, len } => {
                if !self.c.sim.is_crashed(host(h)) {
                    self.c.sim.pause(host(h), len);
                }
                now + len
            }
            FaultPlan::Crash { host: h, replace } => {
                if !self.c.sim.is_crashed(host(h)) {
                    self.c.sim.crash(host(h));
                    if let Some(x) = self.hosts.get_mut(&host(h)) {
                        x.gone = true;
                    }
                    // What it had in flight is gone with it.
                    self.pending.retain(|(id, _), _| *id != host(h));
                    if replace {
                        self.add_worker(true);
                    }
                }
                now
            }
            FaultPlan::SeedRestart { down } => {
                let seed = self.c.seed;
                if !self.c.sim.is_crashed(seed) {
                    self.c.sim.crash(seed);
                    self.wake(now + down, Wake::SeedBack);
                }
                now + down
            }
        };
        // Detection and a recovery round may follow the end of a fault.
        let settle = self.sc.heartbeat_timeout * 2 + self.sc.recovery_timeout * 3;
        self.last_fault_end = self.last_fault_end.max(end + settle);
    }

    pub(super) fn restart_seed(&mut self) {
        let Some(snap) = self.snapshot.clone() else {
            return self.violate("the seed never produced a snapshot".into());
        };
        let seed = self.c.seed;
        let addr = self.c.sim.addr(seed);
        let config = (self.adjust)(ClusterSim::node_config(self.sc.seed ^ 0x5eed, 999, addr));
        match Node::seed_restore(config, &snap, self.c.sim.now()) {
            Ok(node) => {
                self.c.sim.restart(seed, ClusterHost::Node(Box::new(node)));
                self.note("seed restarted from its snapshot".into());
            }
            Err(e) => self.violate(format!("seed_restore refused its own snapshot: {e}")),
        }
    }
}
