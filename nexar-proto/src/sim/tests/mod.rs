//! Tests of the simulator, driving [`ping::PingHost`]s.

mod determinism;
mod faults;
mod network;
mod ping;

use std::time::Duration;

use super::{doc_addr, HostId, LinkConfig, Sim, SimConfig};
use ping::PingHost;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `a` pings `b` `count` times every 10 ms from time zero; `b` only echoes. The a->b link
/// (and b->a unless `both`) uses `link`; other links the 1 ms default.
fn pair(seed: u64, link: LinkConfig, both: bool, count: u32) -> (Sim<PingHost>, HostId, HostId) {
    pair_with(seed, link, both, |b_addr, start| {
        PingHost::pinger(b_addr, start, ms(10), count)
    })
}

fn pair_with(
    seed: u64,
    link: LinkConfig,
    both: bool,
    make_a: impl FnOnce(std::net::SocketAddr, std::time::Instant) -> PingHost,
) -> (Sim<PingHost>, HostId, HostId) {
    let mut sim = Sim::new(SimConfig::with_seed(seed));
    let start = sim.now();
    let a = sim.add_host(doc_addr(0), make_a(doc_addr(1), start));
    let b = sim.add_host(doc_addr(1), PingHost::echo());
    sim.set_link(a, b, link);
    if both {
        sim.set_link(b, a, link);
    }
    (sim, a, b)
}

/// Run until nothing is left to happen (bounded so a bug cannot hang the test).
fn run_to_end(sim: &mut Sim<PingHost>) {
    sim.run_until(Duration::from_secs(3600));
    assert_eq!(sim.next_event_time(), None, "still busy after an hour");
}

/// Every datagram sent (plus every duplicate) ends delivered or dropped once idle.
fn assert_conserved(sim: &Sim<PingHost>) {
    let s = sim.stats();
    assert_eq!(s.sent + s.duplicated, s.delivered + s.dropped(), "{s:?}");
}
