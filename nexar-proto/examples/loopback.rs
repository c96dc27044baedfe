//! The main job: a seed and 4 ranks on loopback, over real UDP sockets, running real
//! collectives and printing the results.
//!
//! Each node is driven by a hand-written loop over `std::net::UdpSocket` in its own
//! thread: exactly the run-loop contract of the crate docs, with no async runtime. This is
//! what embedding the core in your own event loop looks like.
//!
//! `cargo run --release -p nexar-proto --example loopback [ranks] [elements]`

// This file is a driver, not the core: it reads the clock, the OS RNG and spawns threads.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::{Buffer, CommId};
use nexar_proto::{Command, Event, JoinTicket, Node, NodeConfig, Outcome, SeedConfig};

fn os_random() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the OS random source");
    b
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Drive `node` until `on_event` returns false (or `stop` is set).
fn drive(
    mut node: Node,
    socket: UdpSocket,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&mut Node, Event) -> bool,
) {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut inbuf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        while let Some(t) = node.poll_transmit(now, &mut out) {
            let seg = t.segment_size.unwrap_or(t.size);
            for dgram in out[..t.size].chunks(seg.max(1)) {
                // A send error on loopback is a lost datagram; QUIC recovers.
                let _ = socket.send_to(dgram, t.destination);
            }
        }
        let mut progressed = false;
        while let Some(event) = node.poll_event() {
            progressed = true;
            if !on_event(&mut node, event) {
                return;
            }
        }
        if progressed || stop.load(Ordering::Relaxed) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            continue; // commands issued from events have transmits to flush
        }
        let wait = node
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_micros(50), Duration::from_millis(100));
        socket.set_read_timeout(Some(wait)).expect("read timeout");
        match socket.recv_from(&mut inbuf) {
            Ok((n, from)) => {
                node.handle_datagram(Instant::now(), from, None, BytesMut::from(&inbuf[..n]))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                node.handle_timeout(Instant::now())
            }
            Err(_) => node.handle_timeout(Instant::now()),
        }
    }
}

/// What one rank does once ready: allreduce, broadcast, allgather, barrier.
fn worker(ticket: JoinTicket, elements: usize) -> Result<Vec<String>, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = socket.local_addr().map_err(|e| e.to_string())?;
    let node = Node::worker(
        NodeConfig::new(os_random(), unix_now(), addr),
        &ticket,
        Instant::now(),
    )
    .map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    let mut error = None;
    let mut stage = 0;
    let (mut rank, mut world) = (0u32, 0u32);
    let mut started = Instant::now();
    let stop = AtomicBool::new(false);
    drive(node, socket, &stop, |node, event| {
        let now = Instant::now();
        let collective = |node: &mut Node, kind, op, root, count, input: Vec<f32>| {
            node.command(
                now,
                Command::Collective {
                    comm: CommId::WORLD,
                    kind,
                    op,
                    root,
                    count,
                    input: Buffer::from_vec(input),
                    timeout: None,
                },
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let result = match event {
            Event::Ready {
                rank: r,
                world_size,
                ..
            } => {
                (rank, world) = (r, world_size);
                started = Instant::now();
                let input = vec![(r + 1) as f32; elements];
                collective(
                    node,
                    CollectiveKind::AllReduce,
                    ReduceOp::Sum,
                    0,
                    elements,
                    input,
                )
            }
            Event::Completed {
                outcome: Ok(Outcome::Collective { buffer }),
                ..
            } => {
                let elapsed = started.elapsed();
                let v = buffer.into_vec::<f32>().unwrap_or_default();
                stage += 1;
                started = Instant::now();
                match stage {
                    1 => {
                        let want = (world * (world + 1) / 2) as f32;
                        let ok = v.iter().all(|x| *x == want);
                        lines.push(format!(
                            "rank {rank}: allreduce(sum) of {elements} f32 -> {} (expected {want}) {} in {elapsed:.2?}",
                            v.first().copied().unwrap_or(f32::NAN),
                            if ok { "ok" } else { "WRONG" }
                        ));
                        if !ok {
                            error = Some("allreduce result wrong".to_string());
                        }
                        let input = if rank == 0 {
                            (0..elements).map(|i| i as f32).collect()
                        } else {
                            Vec::new()
                        };
                        collective(
                            node,
                            CollectiveKind::Broadcast,
                            ReduceOp::None,
                            0,
                            elements,
                            input,
                        )
                    }
                    2 => {
                        let ok = v.iter().enumerate().all(|(i, x)| *x == i as f32);
                        lines.push(format!(
                            "rank {rank}: broadcast from rank 0 -> [{}, {}, ..] {} in {elapsed:.2?}",
                            v.first().copied().unwrap_or(f32::NAN),
                            v.get(1).copied().unwrap_or(f32::NAN),
                            if ok { "ok" } else { "WRONG" }
                        ));
                        if !ok {
                            error = Some("broadcast result wrong".to_string());
                        }
                        collective(
                            node,
                            CollectiveKind::AllGather,
                            ReduceOp::None,
                            0,
                            1,
                            vec![rank as f32 * 10.0],
                        )
                    }
                    3 => {
                        let ok = v == (0..world).map(|r| r as f32 * 10.0).collect::<Vec<_>>();
                        lines.push(format!(
                            "rank {rank}: allgather -> {v:?} {}",
                            if ok { "ok" } else { "WRONG" }
                        ));
                        if !ok {
                            error = Some("allgather result wrong".to_string());
                        }
                        collective(
                            node,
                            CollectiveKind::Barrier,
                            ReduceOp::None,
                            0,
                            0,
                            Vec::new(),
                        )
                    }
                    _ => {
                        lines.push(format!("rank {rank}: barrier passed"));
                        return false;
                    }
                }
            }
            Event::Completed {
                outcome: Err(e), ..
            } => Err(e.to_string()),
            Event::JoinFailed { error } => Err(error.to_string()),
            _ => Ok(()),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                error = Some(e);
                false
            }
        }
    });
    match error {
        Some(e) => Err(format!("rank {rank}: {e}")),
        None => Ok(lines),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let ranks: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let elements: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1 << 20);

    let seed_socket = UdpSocket::bind("127.0.0.1:0").expect("bind the seed socket");
    let seed_addr = seed_socket.local_addr().expect("seed address");
    let seed = Node::seed(
        NodeConfig::new(os_random(), unix_now(), seed_addr),
        SeedConfig::new(ranks, os_random()),
        Instant::now(),
    )
    .expect("seed config");
    let ticket = seed.ticket().expect("a seed has a ticket").clone();
    println!("seed listening on {seed_addr}; join ticket: {ticket}");

    let stop = Arc::new(AtomicBool::new(false));
    let seed_stop = stop.clone();
    let formation = Instant::now();
    let seed_thread = std::thread::spawn(move || {
        drive(seed, seed_socket, &seed_stop, |_, event| {
            if let Event::ClusterFormed { world_size, epoch } = &event {
                println!(
                    "seed: cluster of {world_size} formed (epoch {epoch}) in {:.2?}",
                    formation.elapsed()
                );
            }
            true
        })
    });
    let workers: Vec<_> = (0..ranks)
        .map(|_| {
            let t = ticket.clone();
            std::thread::spawn(move || worker(t, elements))
        })
        .collect();
    let mut failed = false;
    for w in workers {
        match w.join() {
            Ok(Ok(lines)) => lines.iter().for_each(|l| println!("{l}")),
            Ok(Err(e)) => {
                eprintln!("error: {e}");
                failed = true;
            }
            Err(_) => {
                eprintln!("error: a worker thread panicked");
                failed = true;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = seed_thread.join();
    if failed {
        std::process::exit(1);
    }
    println!("all {ranks} ranks done");
}
