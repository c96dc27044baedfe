//! A false recovery vote over real UDP sockets on loopback: the tokio driver's seed, two
//! honest workers on the tokio driver, and a lying member, a core `Node` driven by a
//! plain `std::net::UdpSocket` loop that sends the seed a vote naming both others dead.
//! The liar is evicted; the honest workers stay, renumbered, and still compute together.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use nexar_proto::codec::{Message, RecoveryVote, ReduceOp};
use nexar_proto::{Event, JoinTicket, Node, NodeConfig, RecoveryPolicy};
use nexar_tokio::{Client, Config, Seed};

const HEARTBEAT: Duration = Duration::from_millis(100);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(600);

fn config() -> Config {
    Config::default()
        .with_loopback_transport()
        .with_recovery(RecoveryPolicy::Automatic)
        .with_heartbeat(HEARTBEAT, HEARTBEAT_TIMEOUT)
}

/// The liar: join, and once told (`lie`), send the seed a vote naming every other rank.
/// Its events go to `events`.
fn liar(
    ticket: JoinTicket,
    lie: mpsc::Receiver<()>,
    events: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut c = NodeConfig::new([0x17; 32], unix, addr);
    c.recovery = RecoveryPolicy::Automatic;
    c.heartbeat_interval = HEARTBEAT;
    c.heartbeat_timeout = HEARTBEAT_TIMEOUT;
    c.initial_rtt = Duration::from_millis(10);
    let mut node = Node::worker(c, &ticket, Instant::now()).expect("a worker");
    let mut me = None;
    let mut out = Vec::with_capacity(64 * 1024);
    let mut inbuf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if let (Some((rank, world, epoch)), Ok(())) = (me, lie.try_recv()) {
            let vote = RecoveryVote {
                epoch,
                voter: rank,
                dead: (0..world).filter(|r| *r != rank).collect(),
            };
            assert!(node.send_to_seed(&Message::RecoveryVote(vote)), "queued");
        }
        let now = Instant::now();
        while let Some(t) = node.poll_transmit(now, &mut out) {
            let seg = t.segment_size.unwrap_or(t.size).max(1);
            for d in out[..t.size].chunks(seg) {
                let _ = socket.send_to(d, t.destination);
            }
        }
        while let Some(e) = node.poll_event() {
            if let Event::Ready {
                rank,
                world_size,
                epoch,
            } = &e
            {
                me = Some((*rank, *world_size, *epoch));
            }
            let _ = events.send(e);
        }
        let wait = node
            .poll_timeout()
            .map_or(Duration::from_millis(20), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_micros(50), Duration::from_millis(20));
        socket.set_read_timeout(Some(wait)).expect("timeout");
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

/// Wait up to `limit` for an event matching `want` from the liar, without blocking the
/// runtime thread the seed and the honest workers run on.
async fn expect_event(
    events: &mpsc::Receiver<Event>,
    limit: Duration,
    want: impl Fn(&Event) -> bool,
) -> Result<(), Vec<Event>> {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < end {
        match events.try_recv() {
            Ok(e) if want(&e) => return Ok(()),
            Ok(e) => seen.push(e),
            Err(mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
    Err(seen)
}

#[test]
fn a_false_vote_over_real_sockets_evicts_only_the_liar() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let seed = Seed::bind("127.0.0.1:0".parse().unwrap(), 3, config())
            .await
            .expect("seed");
        let ticket = seed.ticket().clone();
        let (lie_tx, lie_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let liar_thread = {
            let (ticket, stop) = (ticket.clone(), stop.clone());
            std::thread::spawn(move || liar(ticket, lie_rx, ev_tx, stop))
        };
        let (a, b) = tokio::join!(
            Client::join(&ticket, config()),
            Client::join(&ticket, config())
        );
        let (a, b) = (a.expect("honest a"), b.expect("honest b"));
        assert_eq!((a.world_size(), b.world_size()), (3, 3));
        expect_event(&ev_rx, Duration::from_secs(10), |e| {
            matches!(e, Event::Ready { .. })
        })
        .await
        .expect("the liar joined");
        lie_tx.send(()).expect("tell the liar");
        let evicted = expect_event(&ev_rx, Duration::from_secs(15), |e| {
            matches!(e, Event::Evicted { .. })
        })
        .await;
        assert!(evicted.is_ok(), "the liar was not evicted: {evicted:?}");
        let end = Instant::now() + Duration::from_secs(10);
        while (a.world_size(), b.world_size()) != (2, 2) && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            (a.world_size(), b.world_size()),
            (2, 2),
            "the honest pair did not move on"
        );
        let mut ranks = [a.rank(), b.rank()];
        ranks.sort_unstable();
        assert_eq!(ranks, [0, 1]);
        let (ra, rb) = tokio::join!(
            a.all_reduce_start(vec![1.0f32 + a.rank() as f32; 1000], ReduceOp::Sum),
            b.all_reduce_start(vec![1.0f32 + b.rank() as f32; 1000], ReduceOp::Sum)
        );
        for r in [ra.expect("allreduce a"), rb.expect("allreduce b")] {
            assert!(r.iter().all(|x| *x == 3.0), "wrong sum");
        }
        stop.store(true, Ordering::Relaxed);
        liar_thread.join().expect("liar thread");
        a.shutdown().await;
        b.shutdown().await;
        seed.shutdown().await;
    });
}
