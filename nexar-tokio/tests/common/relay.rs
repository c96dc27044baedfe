//! A seeded userspace UDP relay that sits between every pair of nodes and injects loss,
//! delay (hence reordering) and duplication.
//!
//! Topology. Node `k` has a real address `real[k]` (its one UDP socket) and a *front*
//! address `F_k` on the relay, which it advertises so that every peer dials the relay
//! instead of the node. For each ordered pair `(s, k)` the relay also owns a *cross*
//! socket `X_{s,k}` (same IP, ephemeral port):
//!
//! ```text
//!   s --(to F_k)--> relay --(from X_{s,k})--> k        direction s -> k
//!   s <--(from F_k)-- relay <--(to X_{s,k})-- k        direction k -> s
//! ```
//!
//! So `k` sees one stable address per source (`X_{s,k}`), and `s` sees its replies come
//! from the address it dialed (`F_k`). Sources are recognised by their exact real address;
//! anything else is counted as `stray` and dropped.
//!
//! Faults are decided per direction by a SplitMix64 stream seeded from `(seed, s, k)`, and
//! every datagram draws the same four numbers whatever its fate, so the n-th datagram of
//! a direction meets the same fate in every run with the same seed (which datagrams the
//! nodes send, and when, still depends on the OS scheduler). Delayed datagrams wait in a
//! bounded min-heap serviced by one sender thread; a uniform delay between `min_delay`
//! and `max_delay` reorders datagrams sent closer together than the spread.
//!
//! Every thread is bounded: it stops on the stop flag (set by [`Relay::stop`] or on drop)
//! or at the relay's deadline, whichever comes first; receives time out every 20 ms.

use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Datagrams waiting for their delivery time, at most (beyond: dropped as `overflow`).
const MAX_PENDING: usize = 8192;
/// Bytes waiting, at most.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// How often blocked threads look at the stop flag and the deadline.
const POLL: Duration = Duration::from_millis(20);
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Socket buffers asked for (best effort, capped by the kernel).
const SOCKET_BUFFER: usize = 4 << 20;

/// The faults applied to every direction.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (each copy with its own delay).
    pub duplicate: f64,
    /// Smallest delay.
    pub min_delay: Duration,
    /// Largest delay (uniform in between).
    pub max_delay: Duration,
}

/// What the relay did, summed over every direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams received from a known source.
    pub received: u64,
    /// Datagrams (copies included) handed to the kernel for delivery.
    pub forwarded: u64,
    /// Datagrams dropped by the injected loss.
    pub dropped: u64,
    /// Extra copies injected.
    pub duplicated: u64,
    /// Copies held back for a non-zero delay.
    pub delayed: u64,
    /// Copies delivered after a later datagram of the same direction.
    pub reordered: u64,
    /// Copies dropped because the delay queue was full (not an injected fault).
    pub overflow: u64,
    /// Datagrams from an unexpected source address (dropped).
    pub stray: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Sum of the delays of the delayed copies, in microseconds.
    pub delay_us_total: u64,
}

/// A SplitMix64 generator: tiny, seedable, and good enough to decide faults.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction `from -> to`: its fault stream and its ordering bookkeeping.
#[derive(Debug)]
struct Direction {
    rng: SplitMix64,
    /// Sequence number the next datagram received in this direction gets.
    next_seq: u64,
    /// Highest sequence number delivered so far, plus one (0: none yet).
    delivered_high: u64,
    /// Copies delivered in this direction.
    forwarded: u64,
}

/// A copy waiting for its delivery time.
#[derive(Debug)]
struct Pending {
    due: Instant,
    /// Admission order: ties on `due` go first-in first-out.
    order: u64,
    direction: usize,
    seq: u64,
    /// Index of the socket to send from.
    via: usize,
    to: SocketAddr,
    payload: Arc<[u8]>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest due first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

#[derive(Debug)]
struct State {
    directions: Vec<Direction>,
    queue: BinaryHeap<Pending>,
    queued_bytes: usize,
    next_order: u64,
    stats: RelayStats,
}

/// What a relay socket receives, and where it sends it on.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// `F_k`: datagrams from any other node to node `k`.
    Front(usize),
    /// `X_{s,k}`: node `k`'s datagrams back to node `s`.
    Cross { s: usize, k: usize },
}

#[derive(Debug)]
struct Shared {
    faults: Faults,
    /// Node `k`'s real address.
    real: Vec<SocketAddr>,
    /// Every socket: fronts first (index `k`), then cross sockets.
    sockets: Vec<UdpSocket>,
    roles: Vec<Role>,
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    deadline: Instant,
}

/// A running relay; stops (and joins its threads) on [`Relay::stop`] or on drop.
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Start relaying between nodes at `real` addresses. Node `k`'s front socket is bound
    /// at `ip:front_ports[k]` (0: any port). Threads stop by themselves after `lifetime`.
    pub fn start(
        ip: IpAddr,
        real: &[SocketAddr],
        front_ports: &[u16],
        faults: Faults,
        seed: u64,
        lifetime: Duration,
    ) -> io::Result<Self> {
        assert_eq!(real.len(), front_ports.len(), "one front port per node");
        assert!(
            faults.min_delay <= faults.max_delay,
            "min_delay > max_delay"
        );
        let n = real.len();
        let mut sockets = Vec::new();
        let mut roles = Vec::new();
        for (k, port) in front_ports.iter().enumerate() {
            sockets.push(bind(SocketAddr::new(ip, *port))?);
            roles.push(Role::Front(k));
        }
        for s in 0..n {
            for k in 0..n {
                if s != k {
                    sockets.push(bind(SocketAddr::new(ip, 0))?);
                    roles.push(Role::Cross { s, k });
                }
            }
        }
        let directions = (0..n * n)
            .map(|d| Direction {
                rng: SplitMix64(seed ^ (d as u64 + 1).wrapping_mul(0xd6e8_feb8_6659_fd93)),
                next_seq: 0,
                delivered_high: 0,
                forwarded: 0,
            })
            .collect();
        let shared = Arc::new(Shared {
            faults,
            real: real.to_vec(),
            sockets,
            roles,
            state: Mutex::new(State {
                directions,
                queue: BinaryHeap::new(),
                queued_bytes: 0,
                next_order: 0,
                stats: RelayStats::default(),
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            deadline: Instant::now() + lifetime,
        });
        let mut relay = Relay {
            shared: shared.clone(),
            threads: Vec::new(),
        };
        // On a spawn failure, `relay` is dropped here and stops the threads already started.
        for index in 0..shared.sockets.len() {
            let shared = shared.clone();
            relay.threads.push(
                std::thread::Builder::new()
                    .name(format!("relay-rx-{index}"))
                    .spawn(move || receive_loop(&shared, index))?,
            );
        }
        relay.threads.push(
            std::thread::Builder::new()
                .name("relay-tx".into())
                .spawn(move || send_loop(&shared))?,
        );
        Ok(relay)
    }

    /// The address peers should dial to reach node `k` through the relay.
    pub fn front(&self, k: usize) -> SocketAddr {
        self.shared.sockets[k]
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        self.shared.lock().stats
    }

    /// Copies delivered per direction: `matrix[s][k]` for `s -> k`.
    pub fn forwarded_matrix(&self) -> Vec<Vec<u64>> {
        let n = self.shared.real.len();
        let state = self.shared.lock();
        (0..n)
            .map(|s| {
                (0..n)
                    .map(|k| state.directions[s * n + k].forwarded)
                    .collect()
            })
            .collect()
    }

    /// Stop every thread and return the final counters.
    pub fn stop(mut self) -> RelayStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            // A relay thread that panicked already printed why; the test's own checks fail.
            let _ = thread.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another relay thread panicked; the counters still are
        // the best account of what happened.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && Instant::now() < self.deadline
    }

    /// A datagram `from -> to` arrived: decide its fate and queue its copies.
    fn admit(&self, from: usize, to: usize, via: usize, payload: &[u8]) {
        let n = self.real.len();
        let d = from * n + to;
        let now = Instant::now();
        let f = &self.faults;
        let spread = f.max_delay.saturating_sub(f.min_delay);
        let mut state = self.lock();
        let state = &mut *state;
        state.stats.received += 1;
        let dir = &mut state.directions[d];
        let seq = dir.next_seq;
        dir.next_seq += 1;
        // Always four draws, so a datagram's fate does not depend on earlier fates.
        let (lose, dup, d0, d1) = (
            dir.rng.unit(),
            dir.rng.unit(),
            dir.rng.unit(),
            dir.rng.unit(),
        );
        if lose < f.loss {
            state.stats.dropped += 1;
            return;
        }
        let copies: &[f64] = if dup < f.duplicate {
            state.stats.duplicated += 1;
            &[d0, d1]
        } else {
            &[d0]
        };
        let payload: Arc<[u8]> = Arc::from(payload);
        for u in copies {
            if state.queue.len() >= MAX_PENDING
                || state.queued_bytes + payload.len() > MAX_PENDING_BYTES
            {
                state.stats.overflow += 1;
                continue;
            }
            let delay = f.min_delay + spread.mul_f64(*u);
            if !delay.is_zero() {
                state.stats.delayed += 1;
                state.stats.delay_us_total += delay.as_micros() as u64;
            }
            state.queued_bytes += payload.len();
            state.queue.push(Pending {
                due: now + delay,
                order: state.next_order,
                direction: d,
                seq,
                via,
                to: self.real[to],
                payload: payload.clone(),
            });
            state.next_order += 1;
        }
        self.wake.notify_one();
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_read_timeout(Some(POLL))?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer only adds (unseeded) loss under bursts.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    Ok(socket)
}

/// Read one socket until stopped, admitting what comes from the expected sources.
fn receive_loop(shared: &Shared, index: usize) {
    let socket = &shared.sockets[index];
    let n = shared.real.len();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while shared.running() {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            // ICMP errors reported on the socket (a node not up yet): nothing to relay.
            Err(_) => continue,
        };
        match shared.roles[index] {
            Role::Front(k) => match shared.real.iter().position(|a| *a == from) {
                Some(s) if s != k => {
                    // s -> k leaves through X_{s,k}.
                    let via = n + cross_index(n, s, k);
                    shared.admit(s, k, via, &buf[..len]);
                }
                _ => shared.lock().stats.stray += 1,
            },
            Role::Cross { s, k } => {
                if from == shared.real[k] {
                    // k -> s leaves through F_k, the address s dialed.
                    shared.admit(k, s, k, &buf[..len]);
                } else {
                    shared.lock().stats.stray += 1;
                }
            }
        }
    }
}

/// Position of `X_{s,k}` among the cross sockets.
fn cross_index(n: usize, s: usize, k: usize) -> usize {
    s * (n - 1) + if k < s { k } else { k - 1 }
}

/// Deliver queued copies when due, until stopped.
fn send_loop(shared: &Shared) {
    let mut batch = Vec::new();
    while shared.running() {
        {
            let mut state = shared.lock();
            let now = Instant::now();
            while let Some(top) = state.queue.peek() {
                if top.due > now || batch.len() >= 256 {
                    break;
                }
                let p = state.queue.pop().expect("peeked");
                state.queued_bytes -= p.payload.len();
                let dir = &mut state.directions[p.direction];
                let out_of_order = p.seq + 1 < dir.delivered_high;
                dir.delivered_high = dir.delivered_high.max(p.seq + 1);
                dir.forwarded += 1;
                if out_of_order {
                    state.stats.reordered += 1;
                }
                batch.push(p);
            }
            if batch.is_empty() {
                let wait = state
                    .queue
                    .peek()
                    .map_or(POLL, |top| top.due.saturating_duration_since(now).min(POLL));
                let _unused = shared
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
        }
        let mut sent = 0;
        let mut failed = 0;
        for p in batch.drain(..) {
            match shared.sockets[p.via].send_to(&p.payload, p.to) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        let mut state = shared.lock();
        state.stats.forwarded += sent;
        state.stats.send_errors += failed;
    }
}
