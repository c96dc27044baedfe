//! The simulator's speed: simulated seconds of 8-node traffic per wall second.
//!
//! Eight workers (and the seed) form a cluster on 100 µs, 10 Gbit/s links with an
//! Ethernet MTU; then, inside the timed loop, every rank runs 256 KiB f32 allreduces back
//! to back (the next starts when all ranks completed the last) for exactly 20 ms of
//! virtual time per iteration. Everything runs: QUIC, TLS records, the codec, the
//! executor and the network model. Throughput is set to the simulated microseconds per
//! iteration, so criterion's `Melem/s` reads as **simulated seconds per wall second**.
//!
//! `cargo bench -p nexar-proto --features sim --bench sim`

// The core bans the wall clock; a bench times itself with the wall clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::{Buffer, CommId};
use nexar_proto::sim::{ClusterHost, ClusterSim, HostId, LinkConfig};
use nexar_proto::{Command, Event};

const WORLD: u32 = 8;
const SPAN: Duration = Duration::from_millis(20);
const COUNT: usize = (256 << 10) / 4;

fn formed() -> (ClusterSim, Vec<HostId>) {
    let link = LinkConfig {
        latency: Duration::from_micros(100),
        bandwidth_bps: Some(10_000_000_000),
        ..LinkConfig::default()
    };
    let mut c = ClusterSim::with_workers(7, WORLD, link);
    let workers = c.workers.clone();
    assert!(
        c.run_until_ready(&workers, Duration::from_secs(30)),
        "cluster did not form"
    );
    for w in &workers {
        c.take_events(*w);
    }
    (c, workers)
}

/// Start one allreduce on every worker.
fn start_all(c: &mut ClusterSim, workers: &[HostId]) {
    for w in workers {
        c.command(
            *w,
            Command::Collective {
                comm: CommId::WORLD,
                kind: CollectiveKind::AllReduce,
                op: ReduceOp::Sum,
                root: 0,
                count: COUNT,
                input: Buffer::from_vec(vec![1.0f32; COUNT]),
                timeout: None,
            },
        )
        .expect("allreduce starts");
    }
}

/// Run exactly `SPAN` of virtual time, restarting allreduces as they complete. Returns
/// how many rounds completed (all ranks).
fn run_span(c: &mut ClusterSim, workers: &[HostId], pending: &mut usize) -> usize {
    let deadline = c.sim.elapsed() + SPAN;
    let mut rounds = 0;
    loop {
        let done = c.sim.run_until_cond(deadline, |sim| {
            for w in workers {
                if let ClusterHost::Node(n) = sim.host_mut(*w) {
                    while let Some(e) = n.poll_event() {
                        if let Event::Completed { outcome, .. } = e {
                            outcome.expect("allreduce succeeds");
                            *pending -= 1;
                        }
                    }
                }
            }
            *pending == 0
        });
        if !done {
            return rounds;
        }
        rounds += 1;
        start_all(c, workers);
        *pending = workers.len();
    }
}

fn sim_speed(c: &mut Criterion) {
    let (mut cluster, workers) = formed();
    start_all(&mut cluster, &workers);
    let mut pending = workers.len();
    // The first round takes about 100 ms of virtual time (slow start, MTU probing);
    // measure the steady state.
    let mut warm = 0;
    while run_span(&mut cluster, &workers, &mut pending) == 0 {
        warm += 1;
        assert!(
            warm < 50,
            "no allreduce completed in a second of virtual time"
        );
    }
    let mut g = c.benchmark_group("sim_8_nodes");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SPAN.as_micros() as u64));
    g.bench_function("allreduce_256KiB_traffic", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut rounds = 0;
            for _ in 0..iters {
                rounds += run_span(&mut cluster, &workers, &mut pending);
            }
            assert!(rounds > 0, "no allreduce completed in {iters} spans");
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, sim_speed);
criterion_main!(benches);
