//! The tokio driver: one UDP socket, one timer and the request channel around one
//! [`NodeHost`], in one task.
//!
//! It moves bytes and time and nothing else: datagrams from the socket go to the node,
//! the node's datagrams go to the socket, the clock reading goes in when the node's
//! deadline passes, and requests from the handles go in as they arrive. Which request
//! waits for which event, and when to stop, is decided in `api/`; protocol decisions
//! are the core's; the socket calls (GSO, GRO, ECN through quinn-udp) are `udp.rs`'s.
//! The loop works on a current-thread runtime as well as a multi-thread one (the task
//! never blocks and shares nothing).

use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::Instrument;

use crate::api::{Inbox, NexarError, NodeHost, RECV_BURST, SOCKET_BUFFER};
use crate::udp::Udp;

/// Run `host` on `socket` in a new task of the current tokio runtime.
pub(crate) fn spawn(
    socket: std::net::UdpSocket,
    host: NodeHost,
    inbox: Inbox,
) -> Result<(), NexarError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
        NexarError::io(
            "starting the driver (call nexar from within a tokio runtime)",
            std::io::Error::other(e),
        )
    })?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer only costs retransmissions.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let udp = Udp::new((&socket).into())
        .map_err(|e| NexarError::io("setting up the socket for GSO, GRO and ECN", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| NexarError::io("making the socket non-blocking", e))?;
    let socket = {
        let _guard = runtime.enter();
        UdpSocket::from_std(socket).map_err(|e| NexarError::io("registering the socket", e))?
    };
    let span = host.span().clone();
    runtime.spawn(run(socket, udp, host, inbox).instrument(span));
    Ok(())
}

/// Run `task` detached on the current runtime (RPC handlers; called from the driver task,
/// so the runtime context is there).
pub(crate) fn spawn_task(task: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(task);
}

/// The loop of [`NodeHost`]'s docs: drain outputs, then wait for exactly one input.
async fn run(socket: UdpSocket, mut udp: Udp, mut host: NodeHost, mut inbox: Inbox) {
    let mut inbox_open = true;
    host.set_max_datagrams(udp.max_datagrams());
    // One timer for the life of the task, re-armed only when the deadline moves.
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // Yields left before the task waits for the reactor alone (see [`LOOKS`]).
    let mut looks = 0u32;
    loop {
        let mut now = Instant::now();
        loop {
            while let Some(out) = host.poll_transmit(now) {
                // Waits while the socket buffer is full. Any error is a lost datagram,
                // which QUIC recovers from; the node notices an unreachable peer by its
                // idle timeout.
                let sent = socket
                    .async_io(Interest::WRITABLE, || udp.send((&socket).into(), &out))
                    .await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, to = %out.to, "send");
                }
            }
            // The kernel may have refused GSO once; then quinn-udp offers batches of 1.
            host.set_max_datagrams(udp.max_datagrams());
            if !host.drain_events(now) {
                break;
            }
            now = Instant::now();
        }
        if host.should_exit(now) {
            tracing::debug!("driver stopping");
            return;
        }
        let deadline = host.poll_timeout();
        if deadline.is_some_and(|d| d <= now) {
            // Due already: a steady stream of datagrams must not keep the node's timers
            // (loss detection, the linger) from firing.
            host.handle_timeout(now);
            continue;
        }
        if deadline != armed {
            armed = deadline;
            timer
                .as_mut()
                .reset(deadline.map_or_else(far, tokio::time::Instant::from_std));
        }
        // Unbiased (tokio polls the branches in random order), so that a flood of
        // datagrams cannot starve the handles' requests.
        tokio::select! {
            ready = socket.readable() => match ready {
                Ok(()) => {
                    looks = LOOKS;
                    read_burst(&socket, &mut udp, &mut host);
                }
                Err(e) => tracing::debug!(error = %e, "readable"),
            },
            // A yield puts the task behind every other runnable one, and the worker polls
            // the reactor without blocking before it comes back to it: the socket's
            // readiness is fresh on the next turn, and the thread has not slept.
            () = tokio::task::yield_now(), if looks > 0 => looks -= 1,
            request = inbox.recv(), if inbox_open => match request {
                Ok(request) => {
                    // A request usually starts an exchange whose answer comes soon.
                    looks = LOOKS;
                    host.handle_request(Instant::now(), request);
                }
                Err(_) => {
                    inbox_open = false;
                    host.close_inbox(Instant::now());
                }
            },
            () = &mut timer => {
                armed = None;
                host.handle_timeout(Instant::now());
            }
        }
    }
}

/// Turns through the executor (yields) the task takes, after a datagram or a request, before
/// it waits for the reactor alone. A peer's answer in a collective step usually arrives
/// within some tens of microseconds; a worker thread that sleeps meanwhile costs a futex
/// wake-up to revive, and on a virtual machine its virtual CPU halts and the host's wake-up
/// costs far more. 32 turns took the 4-rank 8 B allreduce from 65 to 60 µs on this
/// machine (8 or 64 did the same), 8 KiB-128 KiB by 10-14%, and cost nothing in bulk (a
/// turn here is a non-blocking `epoll_wait`, not smol's failing `recvmmsg`). A yielding
/// task runs only when no other task is ready, so the turns spend only time no one else
/// wanted; an idle node stops after them.
const LOOKS: u32 = 32;

/// Read what is queued on the socket, up to [`RECV_BURST`] calls (each may return many
/// datagrams), without going back to `select`.
///
/// Feeding several datagrams before draining outputs is how quinn itself handles a GRO
/// batch: inputs only change state, and the drain right after sees all of it (one ACK for
/// many packets instead of one each).
fn read_burst(socket: &UdpSocket, udp: &mut Udp, host: &mut NodeHost) {
    for _ in 0..RECV_BURST {
        // A short read drained the queue: report `WouldBlock` ourselves, so tokio clears
        // the readiness it caches without a failing `recvmmsg`. A datagram that came in
        // after the read is a new edge, which the reactor reports again.
        let read = || match udp.recv(socket.into(), host)? {
            true => Ok(()),
            false => Err(std::io::ErrorKind::WouldBlock.into()),
        };
        match socket.try_io(Interest::READABLE, read) {
            Ok(()) => {}
            // An ICMP error reported on an unconnected socket (some platforms do): the
            // datagram is simply lost; QUIC copes.
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                tracing::debug!(error = %e, "recv");
            }
            Err(_) => return,
        }
    }
}

/// The runtime of a blocking client or seed ([`crate::blocking`]): a multi-thread tokio
/// runtime with one worker, so that the node's driver keeps running between blocking
/// calls (a current-thread runtime only runs while someone blocks on it), and blocking
/// calls from any number of threads park only their own thread
/// ([`Runtime::block_on`](tokio::runtime::Runtime::block_on) may be called from many
/// threads at once).
#[derive(Debug)]
pub(crate) struct BlockingRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl BlockingRuntime {
    pub(crate) fn new() -> Result<Self, NexarError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("nexar-blocking")
            .enable_all()
            .build()
            .map_err(|e| NexarError::io("starting the blocking client's runtime", e))?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Run `future` to completion on this thread, with the runtime's context entered (so
    /// a node created inside runs on the runtime). Refused where tokio forbids blocking:
    /// on a thread inside a runtime's context, unless it runs a blocking RPC handler.
    pub(crate) fn block_on<F: std::future::Future>(
        &self,
        future: F,
    ) -> Result<F::Output, NexarError> {
        if tokio::runtime::Handle::try_current().is_ok() && !crate::api::blocking::in_handler() {
            return Err(NexarError::BlockingInAsync);
        }
        let runtime = self.runtime.as_ref().ok_or(NexarError::DriverStopped)?;
        Ok(runtime.block_on(future))
    }
}

impl Drop for BlockingRuntime {
    fn drop(&mut self) {
        // Dropping a runtime waits for its blocking threads, and tokio forbids that
        // inside async code; the last handle may go anywhere, so leave at once. Nodes
        // still running stop with it (`Client::shutdown` lets them linger first).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Run the blocking `f` on the runtime's blocking pool (RPC handlers of a blocking
/// client); `None` if it could not finish (it panicked, or the runtime shut down).
pub(crate) async fn unblock<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}
