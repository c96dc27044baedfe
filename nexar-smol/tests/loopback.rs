//! The smol driver over real UDP on loopback, under `smol::block_on`, beyond the shared
//! scenario suite (`tests/tests/scenarios.rs` runs formation, every collective on 4 ranks,
//! send/recv and a rank that stops answering on the simulator and both drivers): the
//! ticket and stats, 1M-element collectives, non-blocking overlap, length errors,
//! point-to-point ordering and limits, split, the reproducible 1 MiB all-reduce (its bits
//! are compared with tokio's and the simulator's in `tests/tests/driver_bits.rs`) and use
//! without `smol::block_on`.

use std::future::Future;

use nexar_smol::reference::{digest, pattern_allreduce, pattern_f32, PATTERN_ELEMENTS};
use nexar_smol::{
    bootstrap_local, bootstrap_local_with, Client, CommandError, Config, NexarError, ReduceOp,
};

/// Run `f` on every client concurrently (one task each on the global executor); results
/// in rank order.
async fn on_all<F, Fut, R>(clients: Vec<Client>, f: F) -> Vec<R>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let tasks: Vec<_> = clients.into_iter().map(|c| smol::spawn(f(c))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// Rank r's input at i: small integers, exact in f32 whatever the reduction order.
fn v(rank: u32, i: usize) -> f32 {
    (((rank as usize * 7 + i * 3) % 9) as f32) - 4.0
}

fn input(rank: u32, len: usize) -> Vec<f32> {
    (0..len).map(|i| v(rank, i)).collect()
}

/// Sum over `ranks` of v(r, offset + i) for each i < len.
fn sum_over(ranks: impl Iterator<Item = u32> + Clone, len: usize, offset: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ranks.clone().map(|r| v(r, offset + i)).sum())
        .collect()
}

/// Formation itself is in the shared scenario suite (`tests/tests/scenarios.rs`); here,
/// the seed's ticket format and its connection count.
#[test]
fn seed_ticket_and_stats() {
    smol::block_on(async {
        let (seed, clients) = bootstrap_local(4).await.unwrap();
        assert!(seed.ticket().to_string().starts_with("nexar1-"));
        assert_eq!(seed.stats().await.unwrap().connections, 4);
        for c in clients {
            c.shutdown().await;
        }
        seed.shutdown().await;
    });
}

#[test]
fn big_collectives_overlap_and_length_errors() {
    smol::block_on(async {
        let (_seed, clients) = bootstrap_local(4).await.unwrap();
        let errors = on_all(clients, |c| async move {
            let mut errors = Vec::new();
            let (r, n) = (c.rank(), c.world_size());
            let nu = n as usize;
            // Small sizes of every collective are in the shared scenario suite
            // (`tests/tests/scenarios.rs`); here, 1M elements (the ring and pipelining).
            {
                let len = 1usize << 20;
                let mut check = |what: &str, ok: bool| {
                    if !ok {
                        errors.push(format!("rank {r}: {what} with {len} elements"));
                    }
                };
                let all = 0..n;
                let everyone: Vec<f32> = all.clone().flat_map(|s| input(s, len)).collect();

                let mut d = input(r, len);
                c.all_reduce(&mut d, ReduceOp::Sum).await.unwrap();
                check("all_reduce", d == sum_over(all.clone(), len, 0));

                let mut d = if r == 2 {
                    input(2, len)
                } else {
                    vec![0.0; len]
                };
                c.broadcast(&mut d, 2).await.unwrap();
                check("broadcast", d == input(2, len));

                let mut d = input(r, len);
                c.reduce(&mut d, ReduceOp::Sum, 1).await.unwrap();
                let want = if r == 1 {
                    sum_over(all.clone(), len, 0)
                } else {
                    input(r, len)
                };
                check("reduce", d == want);

                let mut recv = vec![0.0; len * nu];
                c.all_gather(&input(r, len), &mut recv).await.unwrap();
                check("all_gather", recv == everyone);

                let mut recv = vec![0.0; len];
                c.reduce_scatter(&input(r, len * nu), &mut recv, ReduceOp::Sum)
                    .await
                    .unwrap();
                check(
                    "reduce_scatter",
                    recv == sum_over(all.clone(), len, r as usize * len),
                );

                let mut recv = if r == 3 {
                    vec![0.0; len * nu]
                } else {
                    Vec::new()
                };
                c.gather(&input(r, len), &mut recv, 3).await.unwrap();
                check("gather", r != 3 || recv == everyone);

                let mut recv = vec![0.0; len];
                let send = if r == 0 {
                    input(0, len * nu)
                } else {
                    Vec::new()
                };
                c.scatter(&send, &mut recv, 0).await.unwrap();
                let want: Vec<f32> = (0..len).map(|i| v(0, r as usize * len + i)).collect();
                check("scatter", recv == want);

                let mut recv = vec![0.0; len * nu];
                c.all_to_all(&input(r, len * nu), &mut recv).await.unwrap();
                let want: Vec<f32> = (0..n)
                    .flat_map(|s| (0..len).map(move |i| v(s, r as usize * len + i)))
                    .collect();
                check("all_to_all", recv == want);

                let mut d = input(r, len);
                c.scan(&mut d, ReduceOp::Sum).await.unwrap();
                check("scan", d == sum_over(0..=r, len, 0));

                let mut d = input(r, len);
                c.exclusive_scan(&mut d, ReduceOp::Sum).await.unwrap();
                check("exclusive_scan", d == sum_over(0..r, len, 0));

                let mut d: Vec<i32> = (0..len).map(|i| v(r, i) as i32).collect();
                c.all_reduce(&mut d, ReduceOp::Max).await.unwrap();
                let want: Vec<i32> = (0..len)
                    .map(|i| all.clone().map(|s| v(s, i) as i32).max().unwrap())
                    .collect();
                check("all_reduce(max, i32)", d == want);

                c.barrier().await.unwrap();
            }
            // Non-blocking forms overlap: both are in flight before either is awaited.
            let a = c.all_reduce_start(input(r, 64), ReduceOp::Sum);
            let b = c.all_gather_start(vec![r as u64; 2]);
            let (a, b) = (a.await.unwrap(), b.await.unwrap());
            if a != sum_over(0..n, 64, 0) || b != [0, 0, 1, 1, 2, 2, 3, 3] {
                errors.push(format!("rank {r}: overlapping non-blocking collectives"));
            }
            // A wrong length is refused locally with a typed error.
            let mut short = vec![0.0f32; 1];
            match c.all_gather(&[1.0f32, 2.0], &mut short).await {
                Err(NexarError::Length {
                    expected: 8,
                    got: 1,
                    ..
                }) => {}
                other => errors.push(format!("rank {r}: bad length gave {other:?}")),
            }
            c.barrier().await.unwrap();
            c.shutdown().await;
            errors
        })
        .await;
        let errors: Vec<String> = errors.into_iter().flatten().collect();
        assert!(errors.is_empty(), "{errors:#?}");
    });
}

#[test]
fn send_recv_ordering_self_large_and_refusals() {
    smol::block_on(async {
        let (_seed, clients) = bootstrap_local(4).await.unwrap();
        on_all(clients, |c| async move {
            let (r, n) = (c.rank(), c.world_size());
            let right = (r + 1) % n;
            let left = (r + n - 1) % n;
            // Several messages on one tag arrive in order; another tag is independent.
            for k in 0..5u8 {
                c.send(right, 7, &[r as u8, k]).await.unwrap();
            }
            c.send(right, 8, b"other tag").await.unwrap();
            assert_eq!(&c.recv(left, 8).await.unwrap()[..], b"other tag");
            for k in 0..5u8 {
                assert_eq!(&c.recv(left, 7).await.unwrap()[..], &[left as u8, k]);
            }
            // To ourselves, and a large message (many QUIC packets).
            c.send(r, 1, b"me").await.unwrap();
            assert_eq!(&c.recv(r, 1).await.unwrap()[..], b"me");
            let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8 ^ r as u8).collect();
            let posted = c.recv_start(left, 2);
            c.send(right, 2, &big).await.unwrap();
            let got = posted.await.unwrap();
            assert_eq!(got.len(), big.len());
            assert!(got
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8 ^ left as u8));
            // A rank outside the world is refused at once.
            assert!(matches!(
                c.send(9, 0, b"x").await,
                Err(NexarError::Command(CommandError::UnknownRank {
                    rank: 9,
                    ..
                }))
            ));
            c.barrier().await.unwrap();
            c.shutdown().await;
        })
        .await;
    });
}

#[test]
fn split_into_even_and_odd() {
    smol::block_on(async {
        let (_seed, clients) = bootstrap_local(4).await.unwrap();
        on_all(clients, |c| async move {
            let r = c.rank();
            // Key reverses the order: world rank 2 is rank 0 of the even group.
            let sub = c.split(Some(r % 2), -(r as i64)).await.unwrap().unwrap();
            assert_eq!((sub.rank(), sub.size()), (if r >= 2 { 0 } else { 1 }, 2));
            let mut d = vec![r as f64; 10];
            sub.all_reduce(&mut d, ReduceOp::Sum).await.unwrap();
            assert_eq!(d, vec![if r % 2 == 0 { 2.0 } else { 4.0 }; 10]);
            // The world still works after a split.
            let mut x = [1u64];
            c.all_reduce(&mut x, ReduceOp::Sum).await.unwrap();
            assert_eq!(x, [4]);
            drop(sub);
            c.shutdown().await;
        })
        .await;
    });
}

#[test]
fn one_mib_allreduce_is_bit_identical_on_every_rank_and_run() {
    let mut digests = Vec::new();
    for _run in 0..2 {
        let results = smol::block_on(async {
            let (_seed, clients) = bootstrap_local(4).await.unwrap();
            on_all(clients, |c| async move {
                let out = pattern_allreduce(&c).await.unwrap();
                c.shutdown().await;
                out
            })
            .await
        });
        assert_eq!(results[0].len(), PATTERN_ELEMENTS);
        // Close to the exact sum (the order is the plan's, so only bits may differ from f64).
        for (i, got) in results[0].iter().enumerate().step_by(997) {
            let exact: f64 = (0..4).map(|r| f64::from(pattern_f32(r, i))).sum();
            assert!(
                (f64::from(*got) - exact).abs() < 1e-5,
                "element {i}: {got} vs {exact}"
            );
        }
        let d: Vec<u64> = results.iter().map(|r| digest(r)).collect();
        assert!(d.iter().all(|x| *x == d[0]), "ranks differ: {d:x?}");
        digests.push(d[0]);
    }
    assert_eq!(digests[0], digests[1], "two runs differ");
    eprintln!(
        "1 MiB f32 all-reduce digest on 4 ranks (smol): {:016x}",
        digests[0]
    );
}

/// No runtime context is needed: the API works from a plain thread with a bare executor
/// (`futures-lite`'s `block_on`, which is not smol's), because the drivers live on smol's
/// global executor.
#[test]
fn works_without_smol_block_on() {
    let sum = std::thread::spawn(|| {
        smol::future::block_on(async {
            let (_seed, clients) = bootstrap_local(2).await.unwrap();
            on_all(clients, |c| async move {
                let mut d = [c.rank() + 1; 16];
                c.all_reduce(&mut d, ReduceOp::Sum).await.unwrap();
                c.shutdown().await;
                d[0]
            })
            .await
        })
    })
    .join()
    .unwrap();
    assert_eq!(sum, vec![3, 3]);
}

/// A 40 MiB message (many frames, sent in parts) between two ranks over loopback, taken
/// with `recv_into`, while a small message on another tag goes by; past the configured
/// maximum a send is refused typed, and a buffer too short gives `Truncated`.
async fn forty_mib_message(c: Client) {
    const LEN: usize = 40 << 20;
    let pattern = |i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    assert_eq!(c.max_message(), LEN);
    if c.rank() == 0 {
        let too_big = bytes::Bytes::from(vec![0u8; LEN + 1]);
        assert!(matches!(
            c.send_bytes(1, 3, too_big).await,
            Err(NexarError::MessageTooLarge { len, max }) if len == LEN + 1 && max == LEN
        ));
        let big: Vec<u8> = (0..LEN).map(pattern).collect();
        let sending = c.send_start(1, 1, big.into());
        c.send(1, 2, b"small").await.unwrap();
        sending.await.unwrap();
        c.send(1, 4, &[7u8; 100]).await.unwrap();
    } else {
        assert_eq!(&c.recv(0, 2).await.unwrap()[..], b"small");
        let mut buf = vec![0u8; LEN + 5];
        assert_eq!(c.recv_into(0, 1, &mut buf).await.unwrap(), LEN);
        assert!(buf[..LEN].iter().enumerate().all(|(i, b)| *b == pattern(i)));
        let mut short = [0u8; 10];
        assert!(matches!(
            c.recv_into(0, 4, &mut short).await,
            Err(NexarError::Truncated {
                len: 100,
                capacity: 10
            })
        ));
        assert_eq!(short, [7u8; 10]);
    }
    c.barrier().await.unwrap();
}

#[test]
fn a_forty_mib_message_in_parts_into_a_user_buffer() {
    smol::block_on(async {
        let config = Config::default().with_max_message(40 << 20);
        let (_seed, clients) = bootstrap_local_with(2, config).await.unwrap();
        on_all(clients, forty_mib_message).await;
    });
}
