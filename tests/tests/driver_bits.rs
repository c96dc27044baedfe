//! The same 1 MiB f32 all-reduce on 4 ranks through the simulator, the tokio driver and
//! the smol driver gives the same bits on every rank of every run.
//!
//! The inputs are `reference::pattern_input` (full 24-bit mantissas, so float addition is
//! order-sensitive): equal bits mean that the three ran the same plan in the same order.
//! That holds because the core picks the algorithm and the chunking from world size,
//! bytes and config alone and reduces in plan order, never in arrival order; the drivers
//! only move bytes and time, and the simulator's virtual network delivers in another
//! order than loopback UDP does.

use std::time::Duration;

use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::{Buffer, CommId};
use nexar_proto::sim::{ClusterSim, HostId, LinkConfig};
use nexar_proto::{Command, Event, Outcome};
use nexar_tests::support::check_formed;
use nexar_tokio::reference::{digest, pattern_f32, pattern_input, PATTERN_ELEMENTS};

const RANKS: u32 = 4;

/// Each rank's output of the pattern all-reduce in the simulator, in rank order.
fn on_simulator(sim_seed: u64, link: LinkConfig) -> Vec<Vec<f32>> {
    let mut c = ClusterSim::with_workers(sim_seed, RANKS, link);
    let workers = c.workers.clone();
    assert!(
        c.run_until_ready(&workers, Duration::from_secs(30)),
        "sim seed {sim_seed}: no formation"
    );
    let by_rank = check_formed(&c, &workers).unwrap();
    let ops: Vec<(HostId, _)> = by_rank
        .iter()
        .enumerate()
        .map(|(rank, host)| {
            let command = Command::Collective {
                comm: CommId::WORLD,
                kind: CollectiveKind::AllReduce,
                op: ReduceOp::Sum,
                root: 0,
                count: PATTERN_ELEMENTS,
                input: Buffer::from_vec(pattern_input(rank as u32)),
                timeout: None,
            };
            (*host, c.command(*host, command).unwrap())
        })
        .collect();
    let completed = |c: &ClusterSim, host: HostId, op| {
        c.events(host)
            .iter()
            .any(|e| matches!(e, Event::Completed { op: o, .. } if *o == op))
    };
    assert!(
        c.run_until(Duration::from_secs(60), |c| ops
            .iter()
            .all(|(h, op)| completed(c, *h, *op))),
        "sim seed {sim_seed}: the all-reduce did not complete"
    );
    ops.iter()
        .map(|(host, op)| {
            let outcome = c.take_events(*host).into_iter().find_map(|e| match e {
                Event::Completed { op: o, outcome } if o == *op => Some(outcome),
                _ => None,
            });
            match outcome {
                Some(Ok(Outcome::Collective { buffer })) => buffer.into_vec::<f32>().unwrap(),
                other => panic!("sim seed {sim_seed}: {other:?}"),
            }
        })
        .collect()
}

/// Each rank's output on the tokio driver (a 2-thread runtime), in rank order.
fn on_tokio() -> Vec<Vec<f32>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (seed, clients) = nexar_tokio::bootstrap_local(RANKS).await.unwrap();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|c| {
                tokio::spawn(async move {
                    let out = nexar_tokio::reference::pattern_allreduce(&c).await.unwrap();
                    c.shutdown().await;
                    out
                })
            })
            .collect();
        let mut outputs = Vec::new();
        for task in tasks {
            outputs.push(task.await.unwrap());
        }
        seed.shutdown().await;
        outputs
    })
}

/// Each rank's output on the smol driver, in rank order.
fn on_smol() -> Vec<Vec<f32>> {
    smol::block_on(async {
        let (seed, clients) = nexar_smol::bootstrap_local(RANKS).await.unwrap();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|c| {
                smol::spawn(async move {
                    let out = nexar_smol::reference::pattern_allreduce(&c).await.unwrap();
                    c.shutdown().await;
                    out
                })
            })
            .collect();
        let mut outputs = Vec::new();
        for task in tasks {
            outputs.push(task.await);
        }
        seed.shutdown().await;
        outputs
    })
}

/// The exact bytes of a result.
fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn one_mib_allreduce_has_the_same_bits_on_simulator_tokio_and_smol() {
    // The two drivers include the very same reference file.
    assert_eq!(
        nexar_smol::reference::pattern_input(3),
        pattern_input(3),
        "the drivers' reference inputs differ"
    );
    let runs = [
        (
            "sim clean",
            on_simulator(7, LinkConfig::with_latency(Duration::from_micros(100))),
        ),
        // Another seed and a slower, jittery link: another arrival order, same bits.
        (
            "sim jittery",
            on_simulator(
                8,
                LinkConfig {
                    latency: Duration::from_millis(1),
                    jitter: Duration::from_millis(2),
                    ..LinkConfig::default()
                },
            ),
        ),
        ("tokio", on_tokio()),
        ("smol", on_smol()),
    ];
    let want = bytes(&runs[0].1[0]);
    assert_eq!(want.len(), PATTERN_ELEMENTS * 4);
    // The result is the sum (to within f32 rounding), so equal bits are not equal garbage.
    for i in (0..PATTERN_ELEMENTS).step_by(997) {
        let exact: f64 = (0..RANKS).map(|r| f64::from(pattern_f32(r, i))).sum();
        assert!(
            (f64::from(runs[0].1[0][i]) - exact).abs() < 1e-5,
            "element {i}"
        );
    }
    for (name, outputs) in &runs {
        assert_eq!(outputs.len(), RANKS as usize, "{name}: ranks");
        for (rank, out) in outputs.iter().enumerate() {
            let got = bytes(out);
            if got != want {
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                panic!(
                    "{name} rank {rank}: digest {:016x}, want {:016x} (first differing byte {first:?})",
                    digest(out),
                    digest(&runs[0].1[0]),
                );
            }
        }
    }
    eprintln!(
        "1 MiB f32 all-reduce on {RANKS} ranks: digest {:016x} on the simulator (2 seeds), tokio and smol",
        digest(&runs[0].1[0])
    );
}
