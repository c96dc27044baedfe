//! Operations started and awaited later.

use super::*;

// ---- pending operations ---------------------------------------------------------------

/// An operation under way; `.await` it for the result. Dropping it does not cancel the
/// operation (the other ranks take part in it regardless); the result is discarded.
#[must_use = "the operation runs anyway; await the handle to get its result"]
#[derive(Debug)]
pub struct Pending<R> {
    state: Result<oneshot::Receiver<Result<Outcome, NexarError>>, Option<NexarError>>,
    map: fn(Outcome) -> Result<R, NexarError>,
    span: tracing::Span,
}

/// A collective under way; resolves to its output vector.
pub type PendingCollective<T> = Pending<Vec<T>>;

impl<R> Pending<R> {
    pub(super) fn started(
        rx: oneshot::Receiver<Result<Outcome, NexarError>>,
        map: fn(Outcome) -> Result<R, NexarError>,
        span: tracing::Span,
    ) -> Self {
        Self {
            state: Ok(rx),
            map,
            span,
        }
    }

    pub(crate) fn failed(error: NexarError) -> Self {
        Self {
            state: Err(Some(error)),
            map: |_| Err(NexarError::Internal("polled a failed operation".into())),
            span: tracing::Span::none(),
        }
    }
}

impl<R> Future for Pending<R> {
    type Output = Result<R, NexarError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (a oneshot receiver, a fn pointer, a span).
        let this = self.get_mut();
        let _entered = this.span.enter();
        let rx = match &mut this.state {
            Ok(rx) => rx,
            Err(error) => {
                return Poll::Ready(Err(error.take().unwrap_or(NexarError::DriverStopped)))
            }
        };
        match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(NexarError::DriverStopped)),
            Poll::Ready(Ok(result)) => {
                let result = result.and_then(this.map);
                if let Err(error) = &result {
                    tracing::debug!(%error, "failed");
                }
                Poll::Ready(result)
            }
        }
    }
}
