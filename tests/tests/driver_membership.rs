//! Checkpoints, leaves and manual recovery through the tokio and smol drivers over real
//! UDP on loopback (the simulator suites cover them at scale; this holds the drivers'
//! `Client::checkpoint`, `leave` and `recover` to the same results):
//!
//! - a late joiner admitted at a checkpoint, then a leave, then a leave that would go
//!   below `min_world_size` and waits for the joiner that makes up the difference;
//! - under `RecoveryPolicy::Manual`, a crashed rank reported as `PeerDown` and the
//!   survivors agreeing with `recover()` on the smaller world.
//!
//! Each world is checked with an all-reduce of the ranks (sum `0 + 1 + ... + n-1`).

use std::time::Duration;

use nexar_proto::{Event, RecoveryPolicy};

macro_rules! scenario {
    ($krate:ident) => {
        /// Until the seed holds a joiner (handshaking or queued for a checkpoint).
        async fn queued(seed: &$krate::Seed) {
            while seed.stats().await.unwrap().pending_joiners == 0 {
                pause(Duration::from_millis(20)).await;
            }
        }

        /// Sum of every rank's number, on every client given (concurrently).
        async fn sum_of_ranks(clients: &[std::sync::Arc<$krate::Client>]) -> Vec<f64> {
            let tasks: Vec<_> = clients
                .iter()
                .cloned()
                .map(|c| {
                    spawn(async move {
                        let mut v = [f64::from(c.rank())];
                        c.all_reduce(&mut v, $krate::ReduceOp::Sum).await.unwrap();
                        v[0]
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(join(t).await);
            }
            out
        }

        /// Everyone in `clients` checkpoints, except `leaver` (an index), which leaves;
        /// each one's resulting membership.
        async fn round(
            clients: &[std::sync::Arc<$krate::Client>],
            leaver: Option<usize>,
        ) -> Vec<$krate::Membership> {
            let tasks: Vec<_> = clients
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, c)| {
                    spawn(async move {
                        if Some(i) == leaver {
                            c.leave().await.unwrap()
                        } else {
                            c.checkpoint().await.unwrap()
                        }
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(join(t).await);
            }
            out
        }

        pub(super) async fn elastic() {
            use std::sync::Arc;
            use $krate::{bootstrap_local_with, Client, Config, Membership};
            let config = Config::default()
                .with_loopback_transport()
                .with_max_world_size(4)
                .with_min_world_size(3);
            let (seed, clients) = bootstrap_local_with(3, config.clone()).await.unwrap();
            let epoch0 = clients[0].epoch();
            let mut world: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();
            assert_eq!(sum_of_ranks(&world).await, vec![3.0; 3]);

            // A late joiner waits for the next checkpoint.
            let ticket = seed.ticket().clone();
            let joiner_config = config.clone();
            let joining = spawn(async move { Client::join(&ticket, joiner_config).await });
            queued(&seed).await;
            let ms = round(&world, None).await;
            for (i, m) in ms.iter().enumerate() {
                let want = Membership {
                    epoch: epoch0 + 1,
                    rank: Some(i as u32),
                    world_size: 4,
                };
                assert_eq!(*m, want, "rank {i}");
            }
            let joiner = join(joining).await.expect("admitted at the checkpoint");
            assert_eq!((joiner.rank(), joiner.world_size()), (3, 4));
            world.push(Arc::new(joiner));
            assert_eq!(sum_of_ranks(&world).await, vec![6.0; 4]);

            // Rank 1 leaves: the others renumber densely in their old order.
            let ms = round(&world, Some(1)).await;
            assert_eq!(ms[1].rank, None);
            let stayers: Vec<Option<u32>> = [0, 2, 3].iter().map(|&i| ms[i].rank).collect();
            assert_eq!(stayers, vec![Some(0), Some(1), Some(2)]);
            assert!(ms
                .iter()
                .all(|m| m.world_size == 3 && m.epoch == epoch0 + 2));
            let gone = world.remove(1);
            assert_eq!(sum_of_ranks(&world).await, vec![3.0; 3]);

            // Another leave would take the world to 2, below the minimum of 3: the
            // round completes only with the joiner that makes up the difference, so it
            // lands on a world of 3 in one epoch change (without the floor it would
            // agree on 2 at once, and the joiner would wait for a later checkpoint).
            let ticket = seed.ticket().clone();
            let ms = spawn({
                let world = world.clone();
                async move { round(&world, Some(0)).await }
            });
            // Long enough for many checkpoint round trips: a round below the floor that
            // went through would now have agreed on a world of 2.
            pause(Duration::from_millis(500)).await;
            let joining = spawn(async move { Client::join(&ticket, config).await });
            let ms = join(ms).await;
            assert_eq!(ms[0].rank, None);
            assert_eq!((ms[1].rank, ms[2].rank), (Some(0), Some(1)));
            assert!(ms
                .iter()
                .all(|m| m.world_size == 3 && m.epoch == epoch0 + 3));
            let joiner = join(joining).await.expect("admitted");
            assert_eq!((joiner.rank(), joiner.world_size()), (2, 3));
            let left = world.remove(0);
            world.push(Arc::new(joiner));
            assert_eq!(sum_of_ranks(&world).await, vec![3.0; 3]);

            drop((gone, left));
            for c in world {
                Arc::into_inner(c).unwrap().shutdown().await;
            }
            seed.shutdown().await;
        }

        pub(super) async fn recover() {
            use std::sync::Arc;
            use $krate::{bootstrap_local_with, Config, Membership};
            let config = Config::default()
                .with_linger(Duration::ZERO)
                .with_recovery(RecoveryPolicy::Manual)
                .with_heartbeat(Duration::from_millis(100), Duration::from_millis(600));
            let (seed, mut clients) = bootstrap_local_with(3, config).await.unwrap();
            let epoch0 = clients[0].epoch();
            let mut events: Vec<_> = clients
                .iter()
                .map(|c| c.membership_events().expect("first take"))
                .collect();
            // Rank 1 crashes (no linger: its peers hear nothing more from it).
            let crashed = clients.remove(1);
            events.remove(1);
            crashed.shutdown().await;
            for (i, ev) in events.iter_mut().enumerate() {
                match ev.next().await {
                    Some(Event::PeerDown { rank: 1, .. }) => {}
                    other => panic!("survivor {i}: expected PeerDown of rank 1, got {other:?}"),
                }
            }
            let survivors: Vec<Arc<_>> = clients.into_iter().map(Arc::new).collect();
            let tasks: Vec<_> = survivors
                .iter()
                .cloned()
                .map(|c| spawn(async move { c.recover().await.unwrap() }))
                .collect();
            let mut ms = Vec::new();
            for t in tasks {
                ms.push(join(t).await);
            }
            for (i, m) in ms.iter().enumerate() {
                let want = Membership {
                    epoch: epoch0 + 1,
                    rank: Some(i as u32),
                    world_size: 2,
                };
                assert_eq!(*m, want, "survivor {i}");
            }
            assert_eq!(sum_of_ranks(&survivors).await, vec![1.0; 2]);
            for c in survivors {
                Arc::into_inner(c).unwrap().shutdown().await;
            }
            seed.shutdown().await;
        }
    };
}

mod on_tokio {
    use super::*;

    fn spawn<F>(f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(f)
    }

    async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
        task.await.expect("task")
    }

    async fn pause(d: Duration) {
        tokio::time::sleep(d).await
    }

    scenario!(nexar_tokio);
}

mod on_smol {
    use super::*;

    fn spawn<F>(f: F) -> smol::Task<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        smol::spawn(f)
    }

    async fn join<T>(task: smol::Task<T>) -> T {
        task.await
    }

    async fn pause(d: Duration) {
        smol::Timer::after(d).await;
    }

    scenario!(nexar_smol);
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn checkpoint_join_leave_and_min_world_on_tokio() {
    tokio_runtime().block_on(on_tokio::elastic());
}

#[test]
fn checkpoint_join_leave_and_min_world_on_smol() {
    smol::block_on(on_smol::elastic());
}

#[test]
fn manual_recovery_on_tokio() {
    tokio_runtime().block_on(on_tokio::recover());
}

#[test]
fn manual_recovery_on_smol() {
    smol::block_on(on_smol::recover());
}
