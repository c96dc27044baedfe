//! The tokio driver over real UDP on loopback, beyond the shared scenario suite
//! (`tests/tests/scenarios.rs` runs formation, every collective on 4 ranks, send/recv and
//! a rank that stops answering on the simulator and both drivers): the ticket, 1M-element
//! collectives, non-blocking overlap, length errors, point-to-point ordering and limits,
//! split, and the reproducible 1 MiB all-reduce.

use std::future::Future;

use nexar_tokio::reference::{digest, pattern_allreduce, pattern_f32, PATTERN_ELEMENTS};
use nexar_tokio::{
    bootstrap_local, bootstrap_local_with, Client, CommandError, Config, NexarError, ReduceOp,
};

/// Run `f` on every client concurrently (one task each); results in rank order.
async fn on_all<F, Fut, R>(clients: Vec<Client>, f: F) -> Vec<R>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let tasks: Vec<_> = clients.into_iter().map(|c| tokio::spawn(f(c))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("rank task panicked"));
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

/// Sum over `ranks` of v(r, i) for each i < len.
fn sum_over(ranks: impl Iterator<Item = u32> + Clone, len: usize, offset: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ranks.clone().map(|r| v(r, offset + i)).sum())
        .collect()
}

/// Formation itself is in the shared scenario suite (`tests/tests/scenarios.rs`); here,
/// the seed's ticket format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_ticket_is_printable() {
    let (seed, _clients) = bootstrap_local(4).await.unwrap();
    assert!(seed.ticket().to_string().starts_with("nexar1-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_collectives_overlap_and_length_errors() {
    let (_seed, clients) = bootstrap_local(4).await.unwrap();
    let errors = on_all(clients, |c| async move {
        let mut errors = Vec::new();
        let (r, n) = (c.rank(), c.world_size());
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

            let mut recv = vec![0.0; len * n as usize];
            c.all_gather(&input(r, len), &mut recv).await.unwrap();
            let want: Vec<f32> = all.clone().flat_map(|s| input(s, len)).collect();
            check("all_gather", recv == want);

            // In place: garbage outside our block is never read, and the vector we pass
            // is the one we get back (nothing allocated per call).
            let mut whole = vec![f32::NAN; len * n as usize];
            whole[r as usize * len..(r as usize + 1) * len].copy_from_slice(&input(r, len));
            let ptr = whole.as_ptr() as usize;
            let got = c.all_gather_in_place_start(whole).await.unwrap();
            check(
                "all_gather_in_place",
                got == want && got.as_ptr() as usize == ptr,
            );
            let d = match r {
                2 => input(2, len),
                _ => vec![f32::NAN; len],
            };
            let ptr = d.as_ptr() as usize;
            let got = c.broadcast_start(d, 2).await.unwrap();
            check(
                "broadcast_start",
                got == input(2, len) && got.as_ptr() as usize == ptr,
            );

            let mut recv = vec![0.0; len];
            c.reduce_scatter(&input(r, len * n as usize), &mut recv, ReduceOp::Sum)
                .await
                .unwrap();
            check(
                "reduce_scatter",
                recv == sum_over(all.clone(), len, r as usize * len),
            );

            let mut recv = if r == 3 {
                vec![0.0; len * n as usize]
            } else {
                Vec::new()
            };
            c.gather(&input(r, len), &mut recv, 3).await.unwrap();
            check("gather", r != 3 || recv == want);

            let mut recv = vec![0.0; len];
            let send = if r == 0 {
                input(0, len * n as usize)
            } else {
                Vec::new()
            };
            c.scatter(&send, &mut recv, 0).await.unwrap();
            let want_block: Vec<f32> = (0..len).map(|i| v(0, r as usize * len + i)).collect();
            check("scatter", recv == want_block);

            let mut recv = vec![0.0; len * n as usize];
            c.all_to_all(&input(r, len * n as usize), &mut recv)
                .await
                .unwrap();
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
        match c.all_gather_in_place_start(vec![0u8; 5]).await {
            Err(NexarError::Length { got: 5, .. }) => {}
            other => errors.push(format!("rank {r}: 5 bytes in 4 blocks gave {other:?}")),
        }
        errors
    })
    .await;
    let errors: Vec<String> = errors.into_iter().flatten().collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_recv_ordering_self_large_and_refusals() {
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_into_even_and_odd() {
    let (_seed, clients) = bootstrap_local(4).await.unwrap();
    on_all(clients, |c| async move {
        let r = c.rank();
        // Key reverses the order: world rank 2 is rank 0 of the even group.
        let sub = c.split(Some(r % 2), -(r as i64)).await.unwrap().unwrap();
        assert_eq!(sub.size(), 2);
        assert_eq!(sub.rank(), if r >= 2 { 0 } else { 1 });
        let mut d = vec![r as f64; 10];
        sub.all_reduce(&mut d, ReduceOp::Sum).await.unwrap();
        let want = if r % 2 == 0 { 2.0 } else { 4.0 };
        assert_eq!(d, vec![want; 10]);
        let mut b = vec![r; 3];
        sub.broadcast(&mut b, 0).await.unwrap();
        assert_eq!(b, vec![if r % 2 == 0 { 2 } else { 3 }; 3]);
        // Only rank 0 joins a group; the others get None.
        let solo = c.split((r == 0).then_some(5), 0).await.unwrap();
        assert_eq!(solo.is_some(), r == 0);
        if let Some(solo) = solo {
            assert_eq!((solo.rank(), solo.size()), (0, 1));
            let mut x = [1.5f32];
            solo.all_reduce(&mut x, ReduceOp::Sum).await.unwrap();
            assert_eq!(x, [1.5]);
        }
        // The world still works after splits.
        let mut x = [1u64];
        c.all_reduce(&mut x, ReduceOp::Sum).await.unwrap();
        assert_eq!(x, [4]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_allreduce_is_bit_identical_everywhere_and_every_time() {
    let mut digests = Vec::new();
    for _run in 0..2 {
        let (_seed, clients) = bootstrap_local(4).await.unwrap();
        let results = on_all(
            clients,
            |c| async move { pattern_allreduce(&c).await.unwrap() },
        )
        .await;
        // Close to the exact sum (the order is the plan's, so only bits may differ from f64).
        for (i, got) in results[0].iter().enumerate().step_by(997) {
            let exact: f64 = (0..4).map(|r| f64::from(pattern_f32(r, i))).sum();
            assert!(
                (f64::from(*got) - exact).abs() < 1e-5,
                "element {i}: {got} vs {exact}"
            );
        }
        assert_eq!(results[0].len(), PATTERN_ELEMENTS);
        let d: Vec<u64> = results.iter().map(|r| digest(r)).collect();
        assert!(d.iter().all(|x| *x == d[0]), "ranks differ: {d:x?}");
        digests.push(d[0]);
    }
    assert_eq!(digests[0], digests[1], "two runs differ");
    eprintln!(
        "1 MiB f32 all-reduce digest on 4 ranks: {:016x}",
        digests[0]
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_mib_message_in_parts_into_a_user_buffer() {
    let config = Config::default().with_max_message(40 << 20);
    let (_seed, clients) = bootstrap_local_with(2, config).await.unwrap();
    on_all(clients, forty_mib_message).await;
}
