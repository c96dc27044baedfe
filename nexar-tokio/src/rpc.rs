//! RPC in the async API: handlers registered by function id and run as tasks of the
//! runtime, calls that resolve to the answer, and the driver inbox that carries the
//! handlers' answers back to the node.
//!
//! Shared verbatim with `nexar-smol` (through `#[path]`, like `api/`), so it names no
//! runtime type. It asks the including crate for one more function in `crate::driver`:
//!
//! - `pub(crate) fn spawn_task(task: impl Future<Output = ()> + Send + 'static)`: run
//!   `task` detached on the runtime (called from within the driver task).
//!
//! Matching answers to calls, deadlines, the overload bound and typed failures are the
//! core's (`nexar_proto::Node`); this file only runs handlers and routes their results.
//!
//! Why a second channel: a handler task must reach the node after the request that
//! started it, but if the host kept a sender of the handles' channel, that channel would
//! never close and the driver would never notice that every handle is gone. Handlers
//! answer on their own channel instead, which the [`Inbox`] merges with the handles'.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use nexar_proto::codec::RpcStatus;
use nexar_proto::{Command, Outcome, RpcRequestId};

use crate::api::{send, unexpected, Client, Communicator, NexarError, NodeHost, Pending, Request};

/// What a handler returns: `Ok(answer)`, or `Err(detail)`, which the caller receives as
/// `OpError::RpcFailed { status: HandlerError, detail, .. }`.
pub type RpcResult = Result<Bytes, Bytes>;

type HandlerFuture = Pin<Box<dyn Future<Output = RpcResult> + Send + 'static>>;
type Handler = Arc<dyn Fn(u32, Bytes) -> HandlerFuture + Send + Sync + 'static>;

/// The RPC part of what a handle (or a handler task) asks of the driver task.
pub(crate) enum RpcMessage {
    /// Run `handler` for requests to `fn_id` (replacing any earlier one).
    Register {
        fn_id: u32,
        handler: Handler,
        reply: oneshot::Sender<()>,
    },
    /// Stop answering `fn_id`; the reply says whether it was registered.
    Unregister {
        fn_id: u32,
        reply: oneshot::Sender<bool>,
    },
    /// A handler finished (or never ran): answer the request.
    Answer {
        request: RpcRequestId,
        status: RpcStatus,
        payload: Bytes,
    },
}

impl std::fmt::Debug for RpcMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Register { fn_id, .. } => write!(f, "Register({fn_id})"),
            Self::Unregister { fn_id, .. } => write!(f, "Unregister({fn_id})"),
            Self::Answer {
                request, status, ..
            } => write!(f, "Answer({request:?}, {status:?})"),
        }
    }
}

// ---- the inbox ------------------------------------------------------------------------

/// The receiving end of a node's requests: the handles' channel merged with the handler
/// tasks' answers. It is closed once every handle is gone (answers still in flight then
/// are dropped: the node is going away, and callers learn it as `PeerLost`).
#[derive(Debug)]
pub(crate) struct Inbox {
    requests: mpsc::UnboundedReceiver<Request>,
    answers: mpsc::UnboundedReceiver<Request>,
    /// Which channel is polled first; alternates so that neither starves the other.
    answers_first: bool,
}

/// Every handle of the node is gone.
// The tokio driver awaits `recv`; the smol driver polls the `Stream` instead.
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct InboxClosed;

/// A node's channels: the handles' sender, the driver's inbox, and the sender handler
/// tasks answer on (kept by the host).
pub(crate) fn channel() -> (
    mpsc::UnboundedSender<Request>,
    Inbox,
    mpsc::UnboundedSender<Request>,
) {
    let (tx, requests) = mpsc::unbounded();
    let (answer_tx, answers) = mpsc::unbounded();
    let inbox = Inbox {
        requests,
        answers,
        answers_first: false,
    };
    (tx, inbox, answer_tx)
}

impl Inbox {
    /// The next request, or `InboxClosed` once every handle is gone.
    #[allow(dead_code)]
    pub(crate) async fn recv(&mut self) -> Result<Request, InboxClosed> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .ok_or(InboxClosed)
    }
}

impl Stream for Inbox {
    type Item = Request;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Request>> {
        let this = self.get_mut();
        this.answers_first = !this.answers_first;
        if this.answers_first {
            if let Poll::Ready(Some(answer)) = Pin::new(&mut this.answers).poll_next(cx) {
                return Poll::Ready(Some(answer));
            }
            Pin::new(&mut this.requests).poll_next(cx)
        } else {
            match Pin::new(&mut this.requests).poll_next(cx) {
                Poll::Pending => match Pin::new(&mut this.answers).poll_next(cx) {
                    Poll::Ready(Some(answer)) => Poll::Ready(Some(answer)),
                    _ => Poll::Pending,
                },
                ready => ready,
            }
        }
    }
}

// ---- the host side ----------------------------------------------------------------------

/// The registered handlers of one node and the channel their tasks answer on.
#[derive(Debug)]
pub(crate) struct RpcHost {
    handlers: BTreeMap<u32, HandlerSlot>,
    answers: mpsc::UnboundedSender<Request>,
}

struct HandlerSlot(Handler);

impl std::fmt::Debug for HandlerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl RpcHost {
    pub(crate) fn new(answers: mpsc::UnboundedSender<Request>) -> Self {
        Self {
            handlers: BTreeMap::new(),
            answers,
        }
    }
}

/// Answers its request when dropped unanswered, so that a handler that panics (or whose
/// task the runtime drops) fails the call instead of leaving the caller waiting.
struct AnswerGuard {
    answers: mpsc::UnboundedSender<Request>,
    request: RpcRequestId,
    answered: bool,
}

impl AnswerGuard {
    fn answer(&mut self, status: RpcStatus, payload: Bytes) {
        self.answered = true;
        let _ = self
            .answers
            .unbounded_send(Request::Rpc(RpcMessage::Answer {
                request: self.request,
                status,
                payload,
            }));
    }
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if !self.answered {
            self.answer(
                RpcStatus::HandlerError,
                Bytes::from_static(b"the handler panicked or was cancelled"),
            );
        }
    }
}

impl NodeHost {
    /// A handle registered or unregistered a function, or a handler answered.
    pub(crate) fn handle_rpc(&mut self, now: Instant, message: RpcMessage) {
        match message {
            RpcMessage::Register {
                fn_id,
                handler,
                reply,
            } => {
                self.node.register_rpc(fn_id);
                self.rpc.handlers.insert(fn_id, HandlerSlot(handler));
                let _ = reply.send(());
            }
            RpcMessage::Unregister { fn_id, reply } => {
                let was = self.node.unregister_rpc(fn_id);
                self.rpc.handlers.remove(&fn_id);
                let _ = reply.send(was);
            }
            RpcMessage::Answer {
                request,
                status,
                payload,
            } => {
                let limit = self.node.max_rpc_payload();
                let (status, payload) = if payload.len() > limit {
                    let detail = format!(
                        "the handler's answer of {} bytes exceeds the limit of {limit}",
                        payload.len()
                    );
                    (RpcStatus::HandlerError, Bytes::from(detail))
                } else {
                    (status, payload)
                };
                // Nobody awaits the answer's own completion; a refusal for backpressure
                // parks it like a send, anything else means the caller is gone.
                let (reply, _) = oneshot::channel();
                let command = Command::RpcRespond {
                    request,
                    status,
                    payload,
                };
                self.handle_request(
                    now,
                    Request::Command {
                        command,
                        reply,
                        epoch: None,
                    },
                );
            }
        }
    }

    /// The node handed us a request: run its handler as a task of its own, so that a
    /// slow handler holds up neither the node nor other requests.
    pub(crate) fn on_rpc_request(
        &mut self,
        from: u32,
        request: RpcRequestId,
        fn_id: u32,
        payload: Bytes,
    ) {
        let mut guard = AnswerGuard {
            answers: self.rpc.answers.clone(),
            request,
            answered: false,
        };
        let Some(HandlerSlot(handler)) = self.rpc.handlers.get(&fn_id) else {
            guard.answer(RpcStatus::UnknownFunction, Bytes::new());
            return;
        };
        let task = handler(from, payload);
        crate::driver::spawn_task(async move {
            let (status, payload) = match task.await {
                Ok(answer) => (RpcStatus::Ok, answer),
                Err(detail) => (RpcStatus::HandlerError, detail),
            };
            guard.answer(status, payload);
        });
    }
}

// ---- the client side ------------------------------------------------------------------

impl Client {
    /// Run `handler` for every RPC to `fn_id` on this rank (replacing an earlier handler
    /// for it); once this returns, calls to it reach the handler. It gets the caller's
    /// rank and the arguments and returns the answer, or `Err(detail)`, which the caller
    /// gets as `OpError::RpcFailed` with status `HandlerError`. Each request runs as its
    /// own task, so handlers run concurrently and may take their time. A rank holds at
    /// most `NodeConfig::max_rpc_inbound` unanswered requests per caller; more are
    /// answered `Overloaded`.
    pub async fn register_rpc<F, Fut>(&self, fn_id: u32, handler: F) -> Result<(), NexarError>
    where
        F: Fn(u32, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RpcResult> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |from, args| Box::pin(handler(from, args)));
        let (reply, rx) = oneshot::channel();
        let message = RpcMessage::Register {
            fn_id,
            handler,
            reply,
        };
        send(&self.world().tx, Request::Rpc(message));
        rx.await.map_err(|_| NexarError::DriverStopped)
    }

    /// Stop answering `fn_id` (callers get `RpcFailed` with `UnknownFunction`); whether
    /// it was registered. Requests already running finish.
    pub async fn unregister_rpc(&self, fn_id: u32) -> Result<bool, NexarError> {
        let (reply, rx) = oneshot::channel();
        send(
            &self.world().tx,
            Request::Rpc(RpcMessage::Unregister { fn_id, reply }),
        );
        rx.await.map_err(|_| NexarError::DriverStopped)
    }
}

impl Communicator {
    /// Call function `fn_id` on rank `to` of this communicator (this rank too) and wait
    /// for its answer, however long the handler takes. Fails with `OpError::RpcFailed`
    /// (unknown function, handler error, overloaded), `OpError::PeerLost` (the target is
    /// gone), or `CommandError::NotInCommunicator` for a rank a split communicator does
    /// not have. Handlers are registered per node ([`Client::register_rpc`]) and are
    /// told the caller's world rank ([`Communicator::comm_rank`] maps it back).
    pub async fn rpc(&self, to: u32, fn_id: u32, args: Bytes) -> Result<Bytes, NexarError> {
        self.rpc_start(to, fn_id, args, None).await
    }

    /// [`rpc`](Self::rpc) with a deadline: past `timeout` the call fails with
    /// `OpError::RpcTimeout` (a late answer is dropped).
    pub async fn rpc_with_timeout(
        &self,
        to: u32,
        fn_id: u32,
        args: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NexarError> {
        self.rpc_start(to, fn_id, args, Some(timeout)).await
    }

    /// Start a call and return at once; await the handle later (many calls may be in
    /// flight at once, each matched to its own answer).
    pub fn rpc_start(
        &self,
        to: u32,
        fn_id: u32,
        args: Bytes,
        timeout: Option<Duration>,
    ) -> Pending<Bytes> {
        let target = match self.rpc_target(to) {
            Ok(target) => target,
            Err(e) => return Pending::failed(e),
        };
        let span = tracing::debug_span!(
            "rpc",
            rank = self.rank(),
            comm = self.id().0,
            to,
            fn_id,
            len = args.len()
        );
        let command = Command::Rpc {
            to: target,
            fn_id,
            payload: args,
            timeout,
        };
        self.submit(command, span, |o| match o {
            Outcome::Rpc { data } => Ok(data),
            other => Err(unexpected("Rpc", &other)),
        })
    }
}
