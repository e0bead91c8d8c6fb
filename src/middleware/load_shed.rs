//! Load shedding: at most `--max-concurrent-calls` calls of the user and auth services are
//! handled at once; a call past the cap is refused at once, not queued, with UNAVAILABLE,
//! which clients retry with backoff. A call holds its slot until its response starts, so
//! long-lived streams (watches, syncs once answered) do not use the cap up.
//!
//! One shared counter rather than tower's `LoadShed` over `ConcurrencyLimit`: those take a
//! semaphore permit in `poll_ready` and pass it through two more futures, which showed in the
//! profile of every GetUser; and they made one cap per service, where the flag means one cap
//! for the server.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tonic::Status;
use tower::{BoxError, Layer, Service};

use super::{Response, refusal_response, status_response};

/// One cap for every service this layer wraps.
#[derive(Clone)]
pub struct ShedLayer {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

impl ShedLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            in_flight: Arc::default(),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            limit: self.limit,
            in_flight: self.in_flight.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

/// A call's place under the cap, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn refused(limit: usize) -> Response {
    refusal_response(
        Status::unavailable(format!(
            "the server is handling its limit of {}; retry with backoff",
            crate::text::count(limit as u64, "call", "calls")
        )),
        "load_shed",
    )
}

impl<S, R> Service<R> for Shed<S>
where
    S: Service<R, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An error from below is answered by the call.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Answer {
                inner: None,
                slot: None,
                limit: self.limit,
            };
        }
        Answer {
            slot: Some(Slot(self.in_flight.clone())),
            inner: Some(self.inner.call(request)),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The call's answer; `inner` is `None` for a call refused at once.
    pub struct Answer<F> {
        #[pin]
        inner: Option<F>,
        slot: Option<Slot>,
        limit: usize,
    }
}

impl<F, E> Future for Answer<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Ok(refused(*this.limit)));
        };
        let result = ready!(inner.poll(cx));
        // The response has started: the slot is free for the next call.
        this.slot.take();
        Poll::Ready(Ok(result.unwrap_or_else(|err| {
            tracing::error!(error = %err.into(), "a call failed below load shedding");
            status_response(Status::internal("internal error"))
        })))
    }
}
