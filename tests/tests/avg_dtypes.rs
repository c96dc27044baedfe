//! `ReduceOp::Avg` on every floating dtype (f32, f64, f16, bf16), all-reduce and reduce,
//! on the simulator and on both drivers, against a reference computed here in f64.
//!
//! The inputs are small integers, so every partial sum is exact in every dtype whatever
//! the order of reduction; the one rounding is the division by the world size (3: not a
//! power of two), which the reference does in f64 and rounds to the dtype. f64 has more
//! than twice the precision plus two bits of each dtype (and f32 of the halves), so that
//! double rounding equals the single correctly rounded quotient the node computes.

use std::time::Duration;

use half::{bf16, f16};
use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::{Buffer, CommId, Element};
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Command, Outcome};
use nexar_tests::collectives::wait_all;
use nexar_tests::support::{form, lan};

const RANKS: u32 = 3;
/// A few elements (recursive doubling) and enough to take the bandwidth algorithm in
/// every dtype (halving-doubling from 48 KiB).
const COUNTS: [usize; 2] = [7, 30_000];

trait Float: Element + PartialEq + std::fmt::Debug {
    fn of(x: f64) -> Self;
}

impl Float for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
}

impl Float for f64 {
    fn of(x: f64) -> Self {
        x
    }
}

impl Float for f16 {
    fn of(x: f64) -> Self {
        f16::from_f64(x)
    }
}

impl Float for bf16 {
    fn of(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

/// Rank `rank`'s `i`th input: an integer in -5..=10.
fn value(rank: u32, i: usize) -> f64 {
    ((rank as usize * 7 + i * 3) % 16) as f64 - 5.0
}

fn input<T: Float>(rank: u32, count: usize) -> Vec<T> {
    (0..count).map(|i| T::of(value(rank, i))).collect()
}

fn expected<T: Float>(count: usize) -> Vec<T> {
    (0..count)
        .map(|i| {
            let sum: f64 = (0..RANKS).map(|r| value(r, i)).sum();
            T::of(sum / f64::from(RANKS))
        })
        .collect()
}

fn check<T: Float>(what: &str, got: &[T], count: usize) {
    let want = expected::<T>(count);
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..count).find(|&i| got[i] != want[i]) {
        panic!(
            "{what} {:?}: element {i} is {:?}, expected {:?}",
            T::DTYPE,
            got[i],
            want[i]
        );
    }
}

/// All-reduce and reduce-to-1 with `Avg` of `T` in the simulator.
fn on_simulator<T: Float>(c: &mut ClusterSim, hosts: &[HostId], count: usize) {
    for (kind, root) in [(CollectiveKind::AllReduce, 0), (CollectiveKind::Reduce, 1)] {
        let ops: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(rank, h)| {
                let command = Command::Collective {
                    comm: CommId::WORLD,
                    kind,
                    op: ReduceOp::Avg,
                    root,
                    count,
                    input: Buffer::from_vec(input::<T>(rank as u32, count)),
                    timeout: None,
                };
                (*h, c.command(*h, command).expect("starts"))
            })
            .collect();
        let results = wait_all(c, &ops, Duration::from_secs(60)).expect("completes");
        for (rank, r) in results.into_iter().enumerate() {
            let out = match r {
                Ok(Outcome::Collective { buffer }) => buffer.into_vec::<T>().expect("dtype"),
                other => panic!("{kind:?} rank {rank}: {other:?}"),
            };
            if kind == CollectiveKind::Reduce && rank as u32 != root {
                continue;
            }
            check(&format!("sim {kind:?} rank {rank}"), &out, count);
        }
    }
}

#[test]
fn avg_of_every_float_dtype_on_the_simulator() {
    let mut c = ClusterSim::with_workers(11, RANKS, lan());
    let hosts = form(&mut c).expect("formed");
    for count in COUNTS {
        on_simulator::<f32>(&mut c, &hosts, count);
        on_simulator::<f64>(&mut c, &hosts, count);
        on_simulator::<f16>(&mut c, &hosts, count);
        on_simulator::<bf16>(&mut c, &hosts, count);
    }
}

macro_rules! on_driver {
    ($name:ident, $krate:ident) => {
        /// All-reduce and reduce-to-1 with `Avg` of `T` on one rank of the driver.
        async fn $name<T: Float>(client: &$krate::Client, count: usize) {
            let rank = client.rank();
            let mut data = input::<T>(rank, count);
            client.all_reduce(&mut data, ReduceOp::Avg).await.unwrap();
            check(&format!("all_reduce rank {rank}"), &data, count);
            let out = client
                .reduce_start(input::<T>(rank, count), ReduceOp::Avg, 1)
                .await
                .unwrap();
            if rank == 1 {
                check("reduce root 1", &out, count);
            }
        }
    };
}

on_driver!(avg_on_tokio, nexar_tokio);
on_driver!(avg_on_smol, nexar_smol);

#[test]
fn avg_of_every_float_dtype_on_tokio() {
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
                    for count in COUNTS {
                        avg_on_tokio::<f32>(&c, count).await;
                        avg_on_tokio::<f64>(&c, count).await;
                        avg_on_tokio::<f16>(&c, count).await;
                        avg_on_tokio::<bf16>(&c, count).await;
                    }
                    c.shutdown().await;
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        seed.shutdown().await;
    });
}

#[test]
fn avg_of_every_float_dtype_on_smol() {
    smol::block_on(async {
        let (seed, clients) = nexar_smol::bootstrap_local(RANKS).await.unwrap();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|c| {
                smol::spawn(async move {
                    for count in COUNTS {
                        avg_on_smol::<f32>(&c, count).await;
                        avg_on_smol::<f64>(&c, count).await;
                        avg_on_smol::<f16>(&c, count).await;
                        avg_on_smol::<bf16>(&c, count).await;
                    }
                    c.shutdown().await;
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        seed.shutdown().await;
    });
}

#[test]
fn the_reference_is_not_trivial() {
    // Division by 3 rounds differently per dtype: the test would catch a node that
    // averaged in the wrong precision or divided by the wrong count.
    let i = (0..COUNTS[1])
        .find(|&i| (0..RANKS).map(|r| value(r, i)).sum::<f64>() % 3.0 != 0.0)
        .expect("an inexact quotient");
    let q = (0..RANKS).map(|r| value(r, i)).sum::<f64>() / 3.0;
    assert_ne!(f64::from(f16::from_f64(q)), q);
    assert_ne!(f64::from(bf16::from_f64(q)), f64::from(f16::from_f64(q)));
}
