//! Load shedding from tower's parts: `ConcurrencyLimit` caps the calls being handled at once
//! (`--max-concurrent-calls`) and `LoadShed` refuses a call at once when the cap is reached,
//! instead of queueing it. This layer, outside them, holds only the policy of how a refusal
//! reads: UNAVAILABLE, which clients retry with backoff. A streaming call holds its slot only
//! until its response starts, so long-lived watches do not use the cap up.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tonic::Status;
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Layer, Service};

use super::{Response, refusal_response, status_response};

#[derive(Clone, Copy)]
pub struct ShedLayer {
    limit: usize,
}

impl ShedLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    limit: usize,
}

/// Turns `LoadShed`'s refusal into an UNAVAILABLE response naming the cap.
fn answer(result: Result<Response, BoxError>, limit: usize) -> Response {
    match result {
        Ok(response) => response,
        Err(err) if err.is::<Overloaded>() => refusal_response(
            Status::unavailable(format!(
                "the server is handling its limit of {}; retry with backoff",
                crate::text::count(limit as u64, "call", "calls")
            )),
            "load_shed",
        ),
        Err(err) => {
            tracing::error!(error = %err, "a call failed below load shedding");
            status_response(Status::internal("internal error"))
        }
    }
}

impl<S, R> Service<R> for Shed<S>
where
    S: Service<R, Response = Response, Error = BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // `LoadShed` is always ready: a call past the cap is refused when it is made. An error
        // from below is answered by the call too.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        Answer {
            inner: self.inner.call(request),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct Answer<F> {
        #[pin]
        inner: F,
        limit: usize,
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, BoxError>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        Poll::Ready(Ok(answer(result, *this.limit)))
    }
}
