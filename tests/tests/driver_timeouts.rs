//! Deadlines through the tokio and smol drivers over real UDP on loopback: a per-call
//! collective timeout (`Communicator::with_timeout`), the default RPC deadline
//! (`Config::with_rpc_timeout`) and its per-call override, and a worker whose seed does
//! not answer failing with the seed's address after `join_timeout`.
//!
//! No timing assertions: every default the tested deadline replaces is a minute or an
//! hour, so a test that returns at all took the short path.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use nexar_proto::{JoinError, JoinTicket, OpError};

const HANG: u32 = 1;
const GATED: u32 = 2;

/// A loopback address where nothing listens (a port the OS just handed out and took back).
fn silent_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn ticket_to(addr: SocketAddr) -> JoinTicket {
    format!("nexar1-{}-{}@{addr}", "ab".repeat(32), "cd".repeat(32))
        .parse()
        .unwrap()
}

macro_rules! scenario {
    ($name:ident, $krate:ident) => {
        async fn $name() {
            use $krate::{bootstrap_local_with, Client, Config, NexarError, ReduceOp};

            // -- the seed does not answer: at the formation timeout, a typed error naming it
            let addr = silent_addr();
            let mut config = Config::default();
            config.node.formation_timeout = Duration::from_millis(400);
            match Client::join(&ticket_to(addr), config).await {
                Err(NexarError::Join(JoinError::SeedUnreachable {
                    addr: named,
                    waited,
                })) => {
                    assert_eq!(named, addr);
                    assert!(waited >= Duration::from_millis(400), "{waited:?}");
                    let text = NexarError::Join(JoinError::SeedUnreachable {
                        addr: named,
                        waited,
                    })
                    .to_string();
                    assert!(text.contains(&addr.to_string()), "{text}");
                }
                other => panic!("expected SeedUnreachable, got {other:?}"),
            }

            // -- a formed cluster whose RPCs default to a short deadline
            let config = Config::default()
                .with_collective_timeout(Duration::from_secs(3600))
                .with_rpc_timeout(Some(Duration::from_millis(300)));
            let (seed, clients) = bootstrap_local_with(2, config).await.expect("formed");
            // A handler that never answers, and one that answers when released.
            let (_never, hang) = oneshot::channel::<()>();
            let hang = std::sync::Mutex::new(Some(hang));
            clients[1]
                .register_rpc(HANG, move |_, _| {
                    let gate = hang.lock().unwrap().take();
                    async move {
                        if let Some(gate) = gate {
                            let _ = gate.await;
                        }
                        Ok(Bytes::new())
                    }
                })
                .await
                .unwrap();
            let (release, gate) = oneshot::channel::<()>();
            let gate = std::sync::Mutex::new(Some(gate));
            clients[1]
                .register_rpc(GATED, move |_, args: Bytes| {
                    let gate = gate.lock().unwrap().take();
                    async move {
                        if let Some(gate) = gate {
                            let _ = gate.await;
                        }
                        Ok(args)
                    }
                })
                .await
                .unwrap();
            // rpc() takes the configured deadline.
            match clients[0].rpc(1, HANG, Bytes::new()).await {
                Err(NexarError::Op(OpError::RpcTimeout {
                    rank: 1,
                    fn_id: HANG,
                })) => {}
                other => panic!("expected RpcTimeout, got {other:?}"),
            }
            // rpc_with_timeout overrides it: held past the default, the call still gets
            // its answer.
            let releaser = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(900));
                let _ = release.send(());
            });
            let answer = clients[0]
                .rpc_with_timeout(
                    1,
                    GATED,
                    Bytes::from_static(b"late"),
                    Duration::from_secs(3600),
                )
                .await
                .expect("the per-call deadline replaces the default");
            assert_eq!(answer, Bytes::from_static(b"late"));
            releaser.join().unwrap();

            // -- a per-call collective deadline: fine when everyone comes...
            let timed: Vec<_> = clients
                .iter()
                .map(|c| c.with_timeout(Duration::from_secs(30)))
                .collect();
            let mut a = vec![1.0f32, 2.0];
            let mut b = vec![10.0f32, 20.0];
            let (ra, rb) = futures_join(
                timed[0].all_reduce(&mut a, ReduceOp::Sum),
                timed[1].all_reduce(&mut b, ReduceOp::Sum),
            )
            .await;
            ra.unwrap();
            rb.unwrap();
            assert_eq!((a, b), (vec![11.0, 22.0], vec![11.0, 22.0]));
            // ...and a typed Timeout naming the missing rank when rank 1 never comes
            // (the configured collective timeout is an hour).
            let quick = clients[0].with_timeout(Duration::from_millis(500));
            match quick.barrier().await {
                Err(NexarError::Op(OpError::Timeout { waiting_for, .. })) => {
                    assert_eq!(waiting_for, vec![1]);
                }
                other => panic!("expected a collective Timeout, got {other:?}"),
            }
            drop((quick, timed));
            for c in clients {
                c.shutdown().await;
            }
            seed.shutdown().await;
        }
    };
}

/// Both futures, polled together (no runtime-specific join).
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

scenario!(tokio_scenario, nexar_tokio);
scenario!(smol_scenario, nexar_smol);

#[test]
fn deadlines_on_tokio() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(tokio_scenario());
}

#[test]
fn deadlines_on_smol() {
    smol::block_on(smol_scenario());
}
