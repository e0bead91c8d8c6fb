//! Inside the access log and the metrics: the caller's deadline (`grpc-timeout`). A call still
//! running when it passes ends with DEADLINE_EXCEEDED, whether its answer had not started or
//! was still streaming, so the access log outside sees, and records, how it ended.
//!
//! tonic's transport runs its own timer on the same header and answers CANCELLED ("Timeout
//! expired"), a code the gRPC spec reserves for calls the client gave up on. Ours is set
//! first, from inside tonic's, so it always fires first: tonic's timer polls this layer
//! before its own sleep, and finds the answer ready.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tower::{Layer, Service};

use super::Response;

/// Made once: a name given as a string is parsed at each lookup.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// When the call must end, from its `grpc-timeout` header.
pub fn from_headers(headers: &http::HeaderMap) -> Option<Instant> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    parse_timeout(value).map(|timeout| Instant::now() + timeout)
}

/// `grpc-timeout` is up to 8 digits and a unit: H, M, S, m (milli), u (micro), n (nano).
fn parse_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn expired() -> Status {
    Status::deadline_exceeded("the call's deadline (grpc-timeout) passed before it finished")
}

#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = from_headers(request.headers());
        DeadlineFuture {
            inner: self.inner.call(request),
            deadline,
            sleep: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        // Carried into the handler's task (`call_deadline`), so storage can honour it.
        deadline: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let polled = crate::call_deadline::sync_scope(*this.deadline, || inner.poll(cx));
        if let Poll::Ready(result) = polled {
            // The answer started in time; its body, if it streams, still owes the deadline.
            return Poll::Ready(result.map(|response| match this.sleep.take() {
                Some(sleep) => response.map(|body| {
                    tonic::body::Body::new(DeadlineBody {
                        inner: body,
                        sleep: Some(sleep),
                    })
                }),
                None => response,
            }));
        }
        if let Some(sleep) = this.sleep {
            ready!(sleep.as_mut().poll(cx));
            return Poll::Ready(Ok(expired().into_http()));
        }
        Poll::Pending
    }
}

/// A response body that ends with DEADLINE_EXCEEDED trailers if it is still open at the
/// deadline.
struct DeadlineBody {
    inner: tonic::body::Body,
    /// `None` once the body has ended, one way or the other.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for DeadlineBody {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let Some(sleep) = &mut self.sleep else {
            return Poll::Ready(None);
        };
        if sleep.as_mut().poll(cx).is_ready() {
            self.sleep = None;
            let mut trailers = http::HeaderMap::new();
            // Writing a status into a fresh map only fails for a message that is not valid
            // header text, and this one is.
            let _ = expired().add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.sleep = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.sleep.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_timeout_unit_is_understood() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout("9n"), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in ["", "S", "123456789S", "5s", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
