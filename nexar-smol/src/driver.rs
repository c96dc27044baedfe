//! The smol driver: one UDP socket, one timer and the request channel around one
//! [`NodeHost`], in one task on smol's global executor (or this thread's, in
//! [`block_on_local`]).
//!
//! It moves bytes and time and nothing else, as `nexar-tokio`'s driver does (same socket
//! buffers and socket calls (`udp.rs`: GSO, GRO, ECN through quinn-udp), same bounded
//! receive burst, inputs polled in rotation like tokio's unbiased `select!`): datagrams
//! from the socket go to the node, the node's datagrams go to the socket, the clock
//! reading goes in when the node's deadline passes, and requests from the handles go in
//! as they arrive. Which request waits for which event, and when to stop, is decided in
//! `api/`; protocol decisions are the core's.
//!
//! Three things differ because async-io is not tokio: the timer is re-armed only to fire
//! earlier (each insertion wakes async-io's reactor); the socket remembers a `WouldBlock`
//! so that a wait costs no failing `recvmmsg` (tokio caches readiness itself); and an empty
//! socket is looked at again a few times, yielding to the executor in between, before the
//! driver waits for async-io's readiness report ([`LOOKS`]), which costs several system
//! calls and a thread wake-up each time where tokio's costs none.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::UdpSocket;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use smol::stream::StreamExt;
use smol::{Async, Executor, Task, Timer};
use tracing::Instrument;

use crate::api::{Inbox, NexarError, NodeHost, Outgoing, Request, RECV_BURST, SOCKET_BUFFER};
use crate::udp::Udp;

/// Run `host` on `socket` in a new detached task of smol's global executor.
///
/// Unlike tokio there is no runtime context to find: the global executor starts on first
/// use and lives as long as the process, so this works from any thread. The task ends by
/// itself once [`NodeHost::should_exit`] says so.
pub(crate) fn spawn(socket: UdpSocket, host: NodeHost, inbox: Inbox) -> Result<(), NexarError> {
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer only costs retransmissions.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let udp = Udp::new((&socket).into())
        .map_err(|e| NexarError::io("setting up the socket for GSO, GRO and ECN", e))?;
    // Makes the socket non-blocking and registers it with async-io's reactor.
    let socket = Async::new(socket).map_err(|e| NexarError::io("registering the socket", e))?;
    let span = host.span().clone();
    spawn_task(run(socket, udp, host, inbox).instrument(span));
    Ok(())
}

/// Run `task` detached (drivers and RPC handlers), where [`spawn_here`] would.
pub(crate) fn spawn_task(task: impl Future<Output = ()> + Send + 'static) {
    spawn_here(task).detach();
}

/// Start `future` as a task: inside [`block_on_local`] on that thread's executor, beside
/// the drivers of the nodes created there; elsewhere on smol's global executor, as
/// [`smol::spawn`].
pub fn spawn_here<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    match LOCAL.with_borrow(Option::clone) {
        Some(executor) => executor.spawn(future),
        None => smol::spawn(future),
    }
}

thread_local! {
    /// The executor of the [`block_on_local`] running on this thread, if any.
    static LOCAL: RefCell<Option<Arc<Executor<'static>>>> = const { RefCell::new(None) };
}

/// Run `future` to completion on this thread with an executor of its own: every node
/// created inside it (by [`Client::join`](crate::Client::join), [`Seed::bind`](crate::Seed::bind), ...)
/// has its driver and its RPC handlers on that executor, so they stay on this thread
/// instead of moving between smol's global executor threads.
///
/// For several ranks in one process on a few cores: one thread per core, each with
/// `block_on_local` and a block of ranks, keeps a rank's driver and the tasks it wakes on
/// one core; only datagrams cross between cores. The `nexar` CLI's `local --driver smol`
/// runs this way; see its `local` module for the measurements. Tasks still running when
/// `future` completes are dropped with the executor, so shut the nodes down inside.
pub fn block_on_local<T>(future: impl Future<Output = T>) -> T {
    let executor = Arc::new(Executor::new());
    let _restore = Restore(LOCAL.replace(Some(executor.clone())));
    smol::block_on(executor.run(future))
}

/// Puts the outer executor back in [`LOCAL`] even if the future run meanwhile panics: a
/// caller that catches the panic and goes on must not spawn onto an executor that no one
/// runs any more.
struct Restore(Option<Arc<Executor<'static>>>);

impl Drop for Restore {
    fn drop(&mut self) {
        LOCAL.set(self.0.take());
    }
}

/// The runtime of a blocking client or seed ([`crate::blocking`]): an executor of its own,
/// run by a thread of its own, where the node's driver and its RPC handlers' tasks run,
/// so that the node keeps running between blocking calls and a caller blocking inside
/// some other executor can never stall it.
#[derive(Debug)]
pub(crate) struct BlockingRuntime {
    executor: Arc<Executor<'static>>,
    /// Dropped to stop the thread.
    stop: Option<futures_channel::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlockingRuntime {
    pub(crate) fn new() -> Result<Self, NexarError> {
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = futures_channel::oneshot::channel::<()>();
        let ours = executor.clone();
        let thread = std::thread::Builder::new()
            .name("nexar-blocking".into())
            .spawn(move || {
                // Tasks spawned by tasks here (RPC handlers) stay on this executor.
                let _restore = Restore(LOCAL.replace(Some(ours.clone())));
                smol::block_on(ours.run(async move {
                    let _ = stopped.await;
                }));
            })
            .map_err(|e| NexarError::io("starting the blocking client's thread", e))?;
        Ok(Self {
            executor,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Run `future` to completion on this thread; nodes it creates run on this runtime's
    /// executor. Refused inside [`block_on_local`], whose thread runs other nodes.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> Result<F::Output, NexarError> {
        if LOCAL.with_borrow(Option::is_some) {
            return Err(NexarError::BlockingInAsync);
        }
        let _restore = Restore(LOCAL.replace(Some(self.executor.clone())));
        Ok(smol::block_on(future))
    }
}

impl Drop for BlockingRuntime {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The last handle may go on the runtime's own thread: it cannot wait for
            // itself, and stops anyway once this returns.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Run the blocking `f` on smol's thread pool for blocking work (RPC handlers of a
/// blocking client).
pub(crate) async fn unblock<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    Some(smol::unblock(f).await)
}

/// The one input the loop got while waiting.
enum Input {
    /// The socket may hold datagrams.
    Readable(io::Result<()>),
    /// `None`: every handle is gone.
    Request(Option<Request>),
    Timeout,
}

/// The loop of [`NodeHost`]'s docs: drain outputs, then wait for exactly one input.
async fn run(socket: Async<UdpSocket>, udp: Udp, mut host: NodeHost, mut inbox: Inbox) {
    let mut socket = Socket {
        io: socket,
        udp,
        readable: true,
        looks: LOOKS,
        yielded: false,
    };
    let mut inbox_open = true;
    host.set_max_datagrams(socket.udp.max_datagrams());
    // One timer for the life of the task.
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    // Which input is polled first; rotates so that none can starve the others.
    let mut turn = 0usize;
    loop {
        let mut now = Instant::now();
        loop {
            while let Some(out) = host.poll_transmit(now) {
                socket.send(&out).await;
            }
            // The kernel may have refused GSO once; then quinn-udp offers batches of 1.
            host.set_max_datagrams(socket.udp.max_datagrams());
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
        // Re-arm only to fire earlier: async-io wakes its reactor thread on every timer
        // insertion, and the node's deadline moves later on almost every datagram (idle
        // and loss timers pushed back). A timer that fires before the deadline (or after
        // it went away) costs one spurious `handle_timeout`, which the core ignores.
        if let Some(at) = deadline.filter(|at| armed.is_none_or(|armed| *at < armed)) {
            armed = Some(at);
            timer.set_at(at);
        }
        turn = turn.wrapping_add(1);
        let input = poll_fn(|cx| {
            // Polled in turn, starting with a different one each time (as tokio's unbiased
            // `select!` does); the first ready wins. A closed inbox is not polled.
            for k in 0..3 {
                let polled = match (turn + k) % 3 {
                    0 => socket.poll_readable(cx).map(Input::Readable),
                    1 if inbox_open => inbox.poll_next(cx).map(Input::Request),
                    1 => Poll::Pending,
                    _ => Pin::new(&mut timer).poll(cx).map(|_| Input::Timeout),
                };
                if polled.is_ready() {
                    return polled;
                }
            }
            Poll::Pending
        })
        .await;
        match input {
            Input::Readable(Ok(())) => socket.read_burst(&mut host),
            Input::Readable(Err(e)) => tracing::debug!(error = %e, "readable"),
            Input::Request(Some(request)) => {
                // A request usually starts an exchange whose answer comes soon.
                socket.looks = LOOKS;
                host.handle_request(Instant::now(), request)
            }
            Input::Request(None) => {
                inbox_open = false;
                host.close_inbox(Instant::now());
            }
            Input::Timeout => {
                armed = None;
                host.handle_timeout(Instant::now());
            }
        }
    }
}

/// Reads tried between yields to the executor, once the socket was found empty, before
/// waiting for async-io's readiness report. That report costs an `epoll_ctl` to re-arm
/// the socket, the reactor thread's `epoll_wait`, and a futex to wake the executor thread
/// that runs us: several system calls where a failing `recvmmsg` is one, and a peer's
/// answer in a collective usually arrives within a few of our yields. On a virtual machine
/// a thread that sleeps also lets its virtual CPU halt, and waking it again costs the host
/// far more than the sleep saved. 16 looks took the 4-rank 8 B allreduce from 70-74 µs to
/// 57-63 against 8. 32 cost 4-8% at 512 KiB-1 MiB while ring's AES took twice the CPU it
/// does now (each look's failing `recvmmsg` is time the other ranks' encryption wanted);
/// with aws-lc's it costs 2-4% at 512 KiB-2 MiB and gains 8-19% at 32-256 KiB, and the
/// first (8 B) row after formation, 60.4 -> 54.1 µs (medians of five alternating sweeps).
/// Yields let every other task run first.
const LOOKS: u32 = 32;

/// The UDP socket, quinn-udp's state for it, and what the last read said about it.
struct Socket {
    io: Async<UdpSocket>,
    udp: Udp,
    /// Whether a read may find a datagram: false once a read saw `WouldBlock`, until the
    /// reactor reports the socket readable (saves a failing `recvmmsg` per wait).
    readable: bool,
    /// Reads left to try before waiting on the reactor (see [`LOOKS`]); refilled whenever
    /// a read finds datagrams or a request comes in.
    looks: u32,
    /// Whether the last poll yielded to the executor for a look.
    yielded: bool,
}

impl Socket {
    /// Ready at once while `readable`, so a queue that is already full costs no trip
    /// through the reactor. Else, while looks are left, yields once (other tasks run) and
    /// then reports ready for one more read; after that registers interest
    /// (level-triggered, so a datagram that came in since the failed read is reported at
    /// once; the read tells if it is stale).
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.readable {
            return Poll::Ready(Ok(()));
        }
        if self.looks > 0 {
            if self.yielded {
                self.yielded = false;
                self.looks -= 1;
                return Poll::Ready(Ok(()));
            }
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(self.io.poll_readable(cx))?;
        self.readable = true;
        Poll::Ready(Ok(()))
    }

    /// Read what is queued, up to [`RECV_BURST`] calls (each may return many datagrams),
    /// without going back to the poll.
    ///
    /// Feeding several datagrams before draining outputs is how quinn itself handles a GRO
    /// batch: inputs only change state, and the drain right after sees all of it (one ACK
    /// for many packets instead of one each).
    fn read_burst(&mut self, host: &mut NodeHost) {
        for _ in 0..RECV_BURST {
            match self.udp.recv(self.io.get_ref().into(), host) {
                Ok(true) => self.looks = LOOKS,
                // A short read drained the queue; the reactor reports what comes next.
                Ok(false) => {
                    self.looks = LOOKS;
                    self.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                // An ICMP error reported on an unconnected socket (some platforms do):
                // the datagram is simply lost; QUIC copes.
                Err(e) => tracing::debug!(error = %e, "recv"),
            }
        }
    }

    async fn send(&self, out: &Outgoing<'_>) {
        // Tries at once, waits while the socket buffer is full. Any error is a lost
        // datagram, which QUIC recovers from; the node itself notices an unreachable peer
        // by its idle timeout.
        if let Err(e) = self.io.write_with(|s| self.udp.send(s.into(), out)).await {
            tracing::debug!(error = %e, to = %out.to, "send");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_local_restores_the_global_executor_after_a_panic() {
        let caught = std::panic::catch_unwind(|| block_on_local(async { panic!("in the block") }));
        assert!(caught.is_err());
        assert!(LOCAL.with_borrow(Option::is_none));
        // Spawning now goes to smol's global executor, which runs without us.
        assert_eq!(smol::block_on(spawn_here(async { 7 })), 7);
        // Inside, tasks run on the block's executor.
        assert_eq!(block_on_local(async { spawn_here(async { 8 }).await }), 8);
    }
}
