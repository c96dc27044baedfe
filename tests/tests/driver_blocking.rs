//! The blocking client on the tokio and smol drivers over real UDP on loopback.
//!
//! Four OS threads, each owning one blocking client, run every collective kind on the
//! world and on a split communicator (checked against the test crate's reference,
//! `nexar_tests::collectives::Case`), tagged messages (world and split with the same tag
//! between the same two nodes, each taken by its own receive; `recv_into` on the split,
//! exact fit and truncated), a send on one thread of a
//! client and the matching receive on another, collectives on two communicators of one
//! client from two threads at once, RPC by world and by split rank, ranks outside a
//! communicator as typed errors, a checkpoint, and a leave, after which the split
//! communicator of the old epoch refuses every call with `EpochChanged`. Then: a peer
//! lost while the others wait in a collective gives a typed error naming it; a blocking
//! call inside async code is refused, typed; an RPC handler may itself block on a call.

use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::{CommandError, OpError};
use nexar_tests::collectives::Case;

const N: u32 = 4;
const ECHO: u32 = 1;

/// Every collective kind with the reference's inputs and expected outputs.
fn cases() -> Vec<Case> {
    let case = |kind, op, root, count| Case {
        kind,
        dtype: DType::I64,
        op,
        root,
        count,
    };
    use CollectiveKind::*;
    vec![
        case(AllReduce, ReduceOp::Sum, 0, 37),
        case(AllReduce, ReduceOp::Max, 0, 5),
        case(Broadcast, ReduceOp::None, 1, 23),
        case(Reduce, ReduceOp::Min, 1, 9),
        case(AllGather, ReduceOp::None, 0, 7),
        case(ReduceScatter, ReduceOp::Sum, 0, 6),
        case(Gather, ReduceOp::None, 1, 4),
        case(Scatter, ReduceOp::None, 0, 3),
        case(AllToAll, ReduceOp::None, 0, 5),
        case(Scan, ReduceOp::Sum, 0, 8),
        case(ExclusiveScan, ReduceOp::Prod, 0, 3),
    ]
}

/// What the ECHO handler of world rank `me` answers a call from world rank `from`.
fn echo(me: u32, from: u32, args: &[u8]) -> Bytes {
    let mut out = vec![me as u8, from as u8];
    out.extend(args.iter().rev());
    out.into()
}

macro_rules! scenario {
    ($name:ident, $krate:ident) => {
        mod $name {
            use super::*;
            use ::$krate::blocking::{self, Communicator};
            use ::$krate::{Config, NexarError};

            /// Run every case on `comm` and compare with the reference.
            fn every_collective(comm: &Communicator) -> Result<(), String> {
                let (me, n) = (comm.rank(), comm.size());
                for case in cases() {
                    let root = case.root % n;
                    let case = Case { root, ..case };
                    let input = case.input(me, n);
                    let count = case.count;
                    let nc = n as usize * count;
                    let got: Vec<i64> = match case.kind {
                        CollectiveKind::AllReduce => {
                            let mut d = input.clone();
                            comm.all_reduce(&mut d, case.op).map(|()| d)
                        }
                        CollectiveKind::Broadcast => {
                            let mut d = if me == root {
                                input.clone()
                            } else {
                                vec![0; count]
                            };
                            comm.broadcast(&mut d, root).map(|()| d)
                        }
                        CollectiveKind::Reduce => {
                            let mut d = input.clone();
                            let r = comm.reduce(&mut d, case.op, root);
                            // Away from the root the data is left as it was.
                            if me != root && r.is_ok() && d != input {
                                return Err(format!("reduce changed rank {me}'s data"));
                            }
                            r.map(|()| if me == root { d } else { Vec::new() })
                        }
                        CollectiveKind::AllGather => {
                            let mut r = vec![0; nc];
                            comm.all_gather(&input, &mut r).map(|()| r)
                        }
                        CollectiveKind::ReduceScatter => {
                            let mut r = vec![0; count];
                            comm.reduce_scatter(&input, &mut r, case.op).map(|()| r)
                        }
                        CollectiveKind::Gather => {
                            let mut r = vec![0; if me == root { nc } else { 0 }];
                            comm.gather(&input, &mut r, root).map(|()| r)
                        }
                        CollectiveKind::Scatter => {
                            let mut r = vec![0; count];
                            comm.scatter(&input, &mut r, root).map(|()| r)
                        }
                        CollectiveKind::AllToAll => {
                            let mut r = vec![0; nc];
                            comm.all_to_all(&input, &mut r).map(|()| r)
                        }
                        CollectiveKind::Scan => {
                            let mut d = input.clone();
                            comm.scan(&mut d, case.op).map(|()| d)
                        }
                        CollectiveKind::ExclusiveScan => {
                            let mut d = input.clone();
                            comm.exclusive_scan(&mut d, case.op).map(|()| d)
                        }
                        other => return Err(format!("no case for {other:?}")),
                    }
                    .map_err(|e| format!("{:?}: {e}", case.kind))?;
                    let want = case.expected_output(me, n);
                    if got != want {
                        return Err(format!(
                            "{:?} on comm rank {me} of {n}: got {got:?}, want {want:?}",
                            case.kind
                        ));
                    }
                }
                comm.barrier().map_err(|e| format!("barrier: {e}"))
            }

            /// Everything one rank does, on its own thread.
            fn rank_program(client: &blocking::Client) -> Result<(), String> {
                let (r, n) = (client.rank(), client.world_size());
                // The world's ranks are world ranks, up to the last and not one past.
                if client.members() != (0..n).collect::<Vec<_>>()
                    || client.world_rank(n - 1) != Some(n - 1)
                    || client.world_rank(n).is_some()
                    || client.comm_rank(n).is_some()
                {
                    return Err("world rank mapping".into());
                }
                every_collective(client)?;

                // A ring of tagged messages on the world.
                client
                    .send((r + 1) % n, 5, &[r as u8; 3])
                    .map_err(|e| e.to_string())?;
                let got = client.recv((r + n - 1) % n, 5).map_err(|e| e.to_string())?;
                if got[..] != [((r + n - 1) % n) as u8; 3] {
                    return Err(format!("ring: got {got:?}"));
                }

                let sub = split_pairs(client)?;
                every_collective(&sub)?;
                same_tag(client, &sub)?;
                one_client_many_threads(client, &sub)?;
                rpc_and_outside(client, &sub)?;
                membership(client, &sub)
            }

            /// (world rank, world size, the partner's split rank, its world rank).
            fn place(client: &blocking::Client, sub: &Communicator) -> (u32, u32, u32, u32) {
                let (r, n) = (client.rank(), client.world_size());
                (r, n, 1 - sub.rank(), (r + 2) % n)
            }

            fn split_pairs(client: &blocking::Client) -> Result<Communicator, String> {
                let (r, n) = (client.rank(), client.world_size());
                // Pairs {0, 2} and {1, 3}, the higher world rank first.
                let sub = client
                    .split(Some(r % 2), -(r as i64))
                    .map_err(|e| e.to_string())?
                    .ok_or("split gave no communicator")?;
                let partner_world = (r + 2) % n;
                let want_members = vec![r.max(partner_world), r.min(partner_world)];
                if sub.members() != want_members || sub.size() != 2 {
                    return Err(format!(
                        "members {:?}, want {want_members:?}",
                        sub.members()
                    ));
                }
                let partner = 1 - sub.rank();
                if sub.world_rank(partner) != Some(partner_world)
                    || sub.comm_rank(partner_world) != Some(partner)
                    || sub.world_rank(sub.rank()) != Some(r)
                    || sub.world_rank(2).is_some()
                    || sub.comm_rank((r + 1) % n).is_some()
                {
                    return Err("rank mapping".into());
                }
                Ok(sub)
            }

            fn same_tag(client: &blocking::Client, sub: &Communicator) -> Result<(), String> {
                let (_, _, partner, partner_world) = place(client, sub);
                // Same tag, same two nodes: the split message is sent first, so a matcher
                // that ignored the communicator would hand it to the world receive.
                sub.send(partner, 9, b"sub").map_err(|e| e.to_string())?;
                client
                    .send(partner_world, 9, b"world")
                    .map_err(|e| e.to_string())?;
                let world_got = client.recv(partner_world, 9).map_err(|e| e.to_string())?;
                let sub_got = sub.recv(partner, 9).map_err(|e| e.to_string())?;
                if &world_got[..] != b"world" || &sub_got[..] != b"sub" {
                    return Err(format!("world got {world_got:?}, split got {sub_got:?}"));
                }
                // `recv_into` on the split: an exact fit, then one byte too short (the
                // message is consumed, its head kept), then the message after it.
                for data in [&b"fits"[..], b"longer", b"next"] {
                    sub.send(partner, 10, data).map_err(|e| e.to_string())?;
                }
                let mut buf = [0u8; 4];
                let fits = sub.recv_into(partner, 10, &mut buf);
                if fits.as_ref().ok() != Some(&4) || &buf != b"fits" {
                    return Err(format!("recv_into an exact fit: {fits:?}, {buf:?}"));
                }
                let mut short = [0u8; 5];
                match sub.recv_into(partner, 10, &mut short) {
                    Err(NexarError::Truncated {
                        len: 6,
                        capacity: 5,
                    }) if &short == b"longe" => {}
                    other => return Err(format!("recv_into one byte short: {other:?}, {short:?}")),
                }
                let next = sub.recv_into(partner, 10, &mut buf);
                if next.as_ref().ok() != Some(&4) || &buf != b"next" {
                    return Err(format!("recv_into after a truncation: {next:?}, {buf:?}"));
                }
                Ok(())
            }

            fn one_client_many_threads(
                client: &blocking::Client,
                sub: &Communicator,
            ) -> Result<(), String> {
                let (r, n, partner, partner_world) = place(client, sub);
                // One client, several threads: sends on one and receives on another, and
                // collectives on two communicators at once.
                std::thread::scope(|s| {
                    let sender =
                        s.spawn(|| (0..5u8).try_for_each(|i| sub.send(partner, 11, &[i, r as u8])));
                    let receiver = s.spawn(|| {
                        (0..5u8)
                            .map(|_| sub.recv(partner, 11).map(|b| b.to_vec()))
                            .collect::<Result<Vec<_>, _>>()
                    });
                    let world_sum = s.spawn(|| {
                        let mut d = vec![r as i64 + 1; 16];
                        client.all_reduce(&mut d, ReduceOp::Sum).map(|()| d)
                    });
                    let mut sub_max = vec![r as i64; 16];
                    sub.all_reduce(&mut sub_max, ReduceOp::Max)
                        .map_err(|e| e.to_string())?;
                    sender.join().unwrap().map_err(|e| e.to_string())?;
                    let got = receiver.join().unwrap().map_err(|e| e.to_string())?;
                    let want: Vec<Vec<u8>> =
                        (0..5u8).map(|i| vec![i, partner_world as u8]).collect();
                    let sum = world_sum.join().unwrap().map_err(|e| e.to_string())?;
                    let total = (1..=n as i64).sum::<i64>();
                    if got != want || sum != vec![total; 16] {
                        return Err(format!("threads: got {got:?}, sum {sum:?}"));
                    }
                    if sub_max != vec![r.max(partner_world) as i64; 16] {
                        return Err(format!("split max {sub_max:?}"));
                    }
                    Ok::<_, String>(())
                })?;
                Ok(())
            }

            fn rpc_and_outside(
                client: &blocking::Client,
                sub: &Communicator,
            ) -> Result<(), String> {
                let (r, n, partner, partner_world) = place(client, sub);
                // RPC by world rank and by split rank: the handler sees world ranks.
                let next = (r + 1) % n;
                let a = client
                    .rpc(next, ECHO, Bytes::from_static(b"ab"))
                    .map_err(|e| e.to_string())?;
                let b = sub
                    .rpc(partner, ECHO, Bytes::from_static(b"cd"))
                    .map_err(|e| e.to_string())?;
                if a != echo(next, r, b"ab") || b != echo(partner_world, r, b"cd") {
                    return Err(format!("rpc answers {a:?} {b:?}"));
                }

                // Ranks outside the communicator: typed, nothing started.
                let outside = |got: Result<(), NexarError>, rank| match got {
                    Err(NexarError::Command(CommandError::NotInCommunicator {
                        comm,
                        rank: got_rank,
                        size: 2,
                    })) if comm == sub.id() && got_rank == rank => Ok(()),
                    other => Err(format!("rank {rank} of the split: {other:?}")),
                };
                outside(sub.send(2, 1, b"x"), 2)?;
                outside(sub.recv(3, 1).map(drop), 3)?;
                outside(sub.rpc(2, ECHO, Bytes::new()).map(drop), 2)?;
                match client.send(n, 1, b"x") {
                    Err(NexarError::Command(CommandError::UnknownRank { rank, world_size }))
                        if rank == n && world_size == n => {}
                    other => return Err(format!("world rank {n}: {other:?}")),
                }
                Ok(())
            }

            fn membership(client: &blocking::Client, sub: &Communicator) -> Result<(), String> {
                let (r, n, partner, _) = place(client, sub);
                // A checkpoint with nothing pending keeps the epoch, and the split lives on.
                let before = client.epoch();
                let m = client.checkpoint().map_err(|e| e.to_string())?;
                if m.epoch != before || m.rank != Some(r) || m.world_size != n {
                    return Err(format!("checkpoint: {m:?}"));
                }
                sub.barrier()
                    .map_err(|e| format!("split after checkpoint: {e}"))?;

                // The last rank leaves; the others' checkpoint moves to the next epoch,
                // which ends the split communicator.
                if r == n - 1 {
                    let m = client.leave().map_err(|e| e.to_string())?;
                    return match m.rank {
                        None => Ok(()),
                        Some(_) => Err(format!("leave: {m:?}")),
                    };
                }
                let m = client.checkpoint().map_err(|e| e.to_string())?;
                if m.epoch != before + 1 || m.world_size != n - 1 || m.rank != Some(r) {
                    return Err(format!("checkpoint with a leave: {m:?}"));
                }
                let mut d = vec![1i64; 4];
                client
                    .all_reduce(&mut d, ReduceOp::Sum)
                    .map_err(|e| e.to_string())?;
                if d != vec![(n - 1) as i64; 4] {
                    return Err(format!("allreduce on the new world: {d:?}"));
                }
                let stale = |got: Result<(), NexarError>| match got {
                    Err(NexarError::EpochChanged { expected, current })
                        if expected == before && current == before + 1 =>
                    {
                        Ok(())
                    }
                    other => Err(format!("a call on a split of the old epoch: {other:?}")),
                };
                stale(sub.send(partner, 9, b"late"))?;
                stale(sub.recv(partner, 9).map(drop))?;
                stale(sub.barrier())?;
                stale(sub.rpc(partner, ECHO, Bytes::new()).map(drop))?;
                stale(sub.split(Some(0), 0).map(drop))?;
                let mut d = vec![0i64; 2];
                stale(sub.all_reduce(&mut d, ReduceOp::Sum))?;
                if sub.epoch() != before || client.epoch() != before + 1 {
                    return Err("epochs".into());
                }
                Ok(())
            }

            #[test]
            fn threads_each_owning_a_client_run_everything() {
                let (seed, clients) = blocking::bootstrap_local(N).expect("formed");
                for c in &clients {
                    let me = c.rank();
                    c.register_rpc(ECHO, move |from, args| Ok(echo(me, from, &args)))
                        .unwrap();
                }
                let threads: Vec<_> = clients
                    .into_iter()
                    .map(|client| {
                        std::thread::spawn(move || {
                            let result = rank_program(&client);
                            let rank = client.rank();
                            client.shutdown().unwrap();
                            (rank, result)
                        })
                    })
                    .collect();
                for t in threads {
                    let (rank, result) = t.join().expect("rank thread");
                    if let Err(e) = result {
                        panic!("rank {rank}: {e}");
                    }
                }
                seed.shutdown().unwrap();
            }

            #[test]
            fn a_peer_lost_mid_call_is_a_typed_error() {
                let config = Config::default()
                    .with_heartbeat(Duration::from_millis(100), Duration::from_millis(800));
                let (seed, mut clients) =
                    blocking::bootstrap_local_with(3, config).expect("formed");
                let lost = clients.pop().expect("rank 2");
                let waiting: Vec<_> = clients
                    .into_iter()
                    .map(|client| {
                        std::thread::spawn(move || {
                            let mut d = vec![1.0f32; 64];
                            let got = client.all_reduce(&mut d, ReduceOp::Sum);
                            let later = client.barrier();
                            drop(client);
                            (got, later)
                        })
                    })
                    .collect();
                // Give the survivors time to be waiting in the call (if one is not yet,
                // its call is refused instead, typed and naming the same rank).
                std::thread::sleep(Duration::from_millis(300));
                // Dropped without a shutdown: its runtime stops at once, like a crash.
                drop(lost);
                for t in waiting {
                    let (got, later) = t.join().expect("survivor");
                    match got {
                        Err(NexarError::Op(OpError::PeerLost { rank: 2 }))
                        | Err(NexarError::Command(CommandError::Aborted { rank: 2 })) => {}
                        other => panic!("the call waiting on a lost peer gave {other:?}"),
                    }
                    match later {
                        Err(NexarError::Command(CommandError::Aborted { rank: 2 })) => {}
                        other => panic!("a call after the loss gave {other:?}"),
                    }
                }
                drop(seed);
            }

            #[test]
            fn an_rpc_handler_may_block_on_a_call() {
                let (seed, clients) = blocking::bootstrap_local(2).expect("formed");
                let clients: Vec<_> = clients.into_iter().map(std::sync::Arc::new).collect();
                let peer = clients[1].clone();
                peer.register_rpc(ECHO, |from, args| Ok(echo(1, from, &args)))
                    .unwrap();
                // Rank 0's handler asks rank 1 before it answers.
                clients[0]
                    .register_rpc(2, move |_, args| {
                        peer.rpc(1, ECHO, args)
                            .map_err(|e| Bytes::from(e.to_string()))
                    })
                    .unwrap();
                let got = clients[1].rpc(0, 2, Bytes::from_static(b"xy")).unwrap();
                assert_eq!(got, echo(1, 1, b"xy"));
                // The handler holds rank 1's client: unregister it to let it go.
                assert!(clients[0].unregister_rpc(2).unwrap());
                for c in clients {
                    let c = std::sync::Arc::try_unwrap(c).expect("no other holder");
                    c.shutdown().unwrap();
                }
                seed.shutdown().unwrap();
            }
        }
    };
}

scenario!(on_tokio, nexar_tokio);
scenario!(on_smol, nexar_smol);

#[test]
fn a_blocking_call_inside_tokio_is_refused() {
    let (seed, clients) = nexar_tokio::blocking::bootstrap_local(2).expect("formed");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = runtime.block_on(async { clients[0].barrier() });
    assert!(
        matches!(got, Err(nexar_tokio::NexarError::BlockingInAsync)),
        "{got:?}"
    );
    // Nothing was started: both ranks still line up on their next barrier.
    std::thread::scope(|s| {
        for c in &clients {
            s.spawn(move || c.barrier().unwrap());
        }
    });
    // Dropping a client's last handle inside async code does not panic (its runtime is
    // let go of without waiting).
    let mut clients = clients;
    let last = clients.pop().unwrap();
    runtime.block_on(async move { drop(last) });
    for c in clients {
        c.shutdown().unwrap();
    }
    seed.shutdown().unwrap();
}

#[test]
fn a_blocking_call_inside_block_on_local_is_refused() {
    let (seed, clients) = nexar_smol::blocking::bootstrap_local(2).expect("formed");
    let got = nexar_smol::block_on_local(async { clients[0].barrier() });
    assert!(
        matches!(got, Err(nexar_smol::NexarError::BlockingInAsync)),
        "{got:?}"
    );
    // Elsewhere in async code (smol's own `block_on`) the call blocks, and works.
    std::thread::scope(|s| {
        s.spawn(|| smol::block_on(async { clients[1].barrier() }).unwrap());
        clients[0].barrier().unwrap();
    });
    for c in clients {
        c.shutdown().unwrap();
    }
    seed.shutdown().unwrap();
}
