//! RPC among 3 ranks on loopback: every rank serves a key-value store (one function to
//! put, one to get) and calls the others' (and its own), checking every answer; then the
//! typed failures: a function nobody registered, a handler's error, and a deadline.
//!
//! `cargo run --release -p nexar-tokio --example rpc`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nexar_tokio::{bootstrap_local_with, Config, NexarError, OpError, RpcStatus};

const PUT: u32 = 1;
const GET: u32 = 2;
const SLEEPY: u32 = 3;
const MISSING: u32 = 99;

#[tokio::main]
async fn main() -> Result<(), NexarError> {
    // A default deadline for calls that name none (NEXAR_RPC_TIMEOUT_MS tunes it too).
    let config = Config::default().with_rpc_timeout(Some(Duration::from_secs(10)));
    let (seed, clients) = bootstrap_local_with(3, config).await?;
    for client in &clients {
        let store: Arc<Mutex<BTreeMap<Bytes, Bytes>>> = Arc::default();
        let mine = store.clone();
        // PUT: "key=value" stores value under key and answers the previous value.
        client
            .register_rpc(PUT, move |_from, args: Bytes| {
                let store = mine.clone();
                async move {
                    let split = args.iter().position(|b| *b == b'=');
                    let Some(at) = split else {
                        return Err(Bytes::from_static(b"expected key=value"));
                    };
                    let (key, value) = (args.slice(..at), args.slice(at + 1..));
                    Ok(store.lock().unwrap().insert(key, value).unwrap_or_default())
                }
            })
            .await?;
        client
            .register_rpc(GET, move |_from, key: Bytes| {
                let store = store.clone();
                async move { Ok(store.lock().unwrap().get(&key).cloned().unwrap_or_default()) }
            })
            .await?;
        client
            .register_rpc(SLEEPY, |_from, args: Bytes| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(args)
            })
            .await?;
    }
    // Every rank puts its name on every rank (itself included), then reads them back.
    for client in &clients {
        let me = client.rank();
        for to in 0..client.world_size() {
            let put = Bytes::from(format!("from{me}=rank {me} was here"));
            let previous = client.rpc(to, PUT, put).await?;
            assert!(previous.is_empty(), "a fresh key");
        }
    }
    for client in &clients {
        for from in 0..client.world_size() {
            let key = Bytes::from(format!("from{from}"));
            let value = client.rpc(client.rank(), GET, key).await?;
            assert_eq!(value, format!("rank {from} was here"));
        }
    }
    println!("every rank stored and read back every rank's value");

    // The failures are typed.
    match clients[0].rpc(1, MISSING, Bytes::new()).await {
        Err(NexarError::Op(OpError::RpcFailed {
            status: RpcStatus::UnknownFunction,
            ..
        })) => println!("function {MISSING}: unknown, as expected"),
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    match clients[0]
        .rpc(2, PUT, Bytes::from_static(b"no equals sign"))
        .await
    {
        Err(NexarError::Op(OpError::RpcFailed {
            status: RpcStatus::HandlerError,
            detail,
            ..
        })) => {
            assert_eq!(detail, Bytes::from_static(b"expected key=value"));
            println!("a malformed put: the handler's error came back");
        }
        other => panic!("expected HandlerError, got {other:?}"),
    }
    let short = Duration::from_millis(200);
    match clients[0]
        .rpc_with_timeout(1, SLEEPY, Bytes::new(), short)
        .await
    {
        Err(NexarError::Op(OpError::RpcTimeout { rank: 1, fn_id })) => {
            assert_eq!(fn_id, SLEEPY);
            println!("a call past its {short:?} deadline: RpcTimeout");
        }
        other => panic!("expected RpcTimeout, got {other:?}"),
    }
    for client in clients {
        client.shutdown().await;
    }
    seed.shutdown().await;
    Ok(())
}
