//! RPC through the tokio and smol drivers over real UDP on loopback: concurrent calls
//! among three ranks (self-calls included) while a slow handler holds a request, each
//! answered with its own result; unknown functions, handler errors, deadlines,
//! unregistering and oversized arguments as typed errors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use nexar_proto::codec::RpcStatus;
use nexar_proto::{CommandError, OpError};

const ECHO: u32 = 1;
const FAILS: u32 = 2;
const SLOW: u32 = 3;
const MISSING: u32 = 99;

fn echo(rank: u32, from: u32, args: &[u8]) -> Bytes {
    let mut out = rank.to_le_bytes().to_vec();
    out.extend_from_slice(&from.to_le_bytes());
    out.extend(args.iter().rev());
    out.into()
}

fn args(caller: u32, i: u32) -> Bytes {
    let mut out = caller.to_le_bytes().to_vec();
    out.extend_from_slice(&i.to_le_bytes());
    out.extend((0..(i * 97) % 5000).map(|k| (k * 31 + i) as u8));
    out.into()
}

/// Gates that hold `SLOW` requests, by argument, until the test releases them.
type Gates = Arc<Mutex<BTreeMap<Vec<u8>, oneshot::Receiver<()>>>>;

macro_rules! scenario {
    ($name:ident, $krate:ident) => {
        async fn $name() {
            use $krate::{bootstrap_local, NexarError};
            let (seed, clients) = bootstrap_local(3).await.expect("formed");
            for c in &clients {
                let rank = c.rank();
                c.register_rpc(ECHO, move |from, a: Bytes| async move {
                    Ok(echo(rank, from, &a))
                })
                .await
                .unwrap();
                c.register_rpc(FAILS, |_, a: Bytes| async move {
                    Err(Bytes::from([b"no:".as_slice(), &a].concat()))
                })
                .await
                .unwrap();
            }
            let gates: Gates = Arc::default();
            let (release_a, gate) = oneshot::channel();
            gates.lock().unwrap().insert(b"a".to_vec(), gate);
            let (release_b, gate) = oneshot::channel::<()>();
            gates.lock().unwrap().insert(b"b".to_vec(), gate);
            let held = gates.clone();
            clients[1]
                .register_rpc(SLOW, move |_, a: Bytes| {
                    let gate = held.lock().unwrap().remove(a.as_ref());
                    async move {
                        if let Some(gate) = gate {
                            let _ = gate.await;
                        }
                        Ok(a)
                    }
                })
                .await
                .unwrap();

            // Two calls the slow handler holds; one of them with a deadline.
            let slow = clients[0].rpc_start(1, SLOW, Bytes::from_static(b"a"), None);
            let timed = clients[2].rpc_start(
                1,
                SLOW,
                Bytes::from_static(b"b"),
                Some(Duration::from_millis(300)),
            );
            // Meanwhile 20 calls from each rank, all in flight at once.
            let mut calls = Vec::new();
            for i in 0..20u32 {
                for c in &clients {
                    let to = (c.rank() + i) % 3;
                    let a = args(c.rank(), i);
                    let want = echo(to, c.rank(), &a);
                    calls.push((c.rpc_start(to, ECHO, a, None), want));
                }
            }
            for (i, (call, want)) in calls.into_iter().enumerate() {
                assert_eq!(call.await.expect("echo"), want, "call {i}");
            }
            // The slow calls did not hold the others up: both are still waiting.
            assert_eq!(clients[0].stats().await.unwrap().rpc_calls, 1);
            assert_eq!(clients[1].stats().await.unwrap().rpc_requests, 2);

            match timed.await {
                Err(NexarError::Op(OpError::RpcTimeout {
                    rank: 1,
                    fn_id: SLOW,
                })) => {}
                other => panic!("deadline: {other:?}"),
            }
            release_a.send(()).unwrap();
            assert_eq!(slow.await.unwrap(), Bytes::from_static(b"a"));
            let _ = release_b.send(());

            for (caller, target) in [(0, 2), (1, 1)] {
                match clients[caller].rpc(target, MISSING, Bytes::new()).await {
                    Err(NexarError::Op(OpError::RpcFailed {
                        rank,
                        fn_id: MISSING,
                        status: RpcStatus::UnknownFunction,
                        ..
                    })) if rank == target => {}
                    other => panic!("unknown function on {target}: {other:?}"),
                }
            }
            match clients[2].rpc(0, FAILS, Bytes::from_static(b"x")).await {
                Err(NexarError::Op(OpError::RpcFailed {
                    rank: 0,
                    fn_id: FAILS,
                    status: RpcStatus::HandlerError,
                    detail,
                })) => assert_eq!(detail, Bytes::from_static(b"no:x")),
                other => panic!("handler error: {other:?}"),
            }
            assert!(clients[2].unregister_rpc(ECHO).await.unwrap());
            assert!(!clients[2].unregister_rpc(ECHO).await.unwrap());
            match clients[0].rpc(2, ECHO, Bytes::new()).await {
                Err(NexarError::Op(OpError::RpcFailed {
                    status: RpcStatus::UnknownFunction,
                    ..
                })) => {}
                other => panic!("after unregistering: {other:?}"),
            }
            let huge = Bytes::from(vec![0u8; 17 << 20]);
            match clients[0].rpc(1, ECHO, huge).await {
                Err(NexarError::Command(CommandError::MessageTooLarge { .. })) => {}
                other => panic!("oversized arguments: {other:?}"),
            }
            for c in clients {
                c.shutdown().await;
            }
            seed.shutdown().await;
        }
    };
}

scenario!(tokio_scenario, nexar_tokio);
scenario!(smol_scenario, nexar_smol);

#[test]
fn rpc_over_tokio() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(tokio_scenario());
}

#[test]
fn rpc_over_smol() {
    smol::block_on(smol_scenario());
}

/// A handler that panics fails its call with `HandlerError` rather than leaving the
/// caller waiting (tokio catches the panic of a spawned task, dropping it unanswered).
#[test]
fn a_panicking_handler_fails_the_call_on_tokio() {
    use nexar_tokio::{bootstrap_local, NexarError};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (seed, clients) = bootstrap_local(2).await.expect("formed");
        clients[1]
            .register_rpc(ECHO, |_, a: Bytes| async move {
                assert!(a.is_empty(), "this handler panics on purpose");
                Ok(a)
            })
            .await
            .unwrap();
        match clients[0].rpc(1, ECHO, Bytes::from_static(b"boom")).await {
            Err(NexarError::Op(OpError::RpcFailed {
                status: RpcStatus::HandlerError,
                detail,
                ..
            })) => assert!(String::from_utf8_lossy(&detail).contains("panicked")),
            other => panic!("{other:?}"),
        }
        // The node and the handler still work.
        assert_eq!(
            clients[0].rpc(1, ECHO, Bytes::new()).await.unwrap(),
            Bytes::new()
        );
        for c in clients {
            c.shutdown().await;
        }
        seed.shutdown().await;
    });
}
