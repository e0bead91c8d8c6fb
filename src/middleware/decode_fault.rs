//! Inside the content type: a request tonic could not read (an undecodable
//! body, or one over the size limit) is answered as the caller's fault, INVALID_ARGUMENT or
//! RESOURCE_EXHAUSTED (`codec::as_caller_fault`), not as tonic's INTERNAL or OUT_OF_RANGE, so
//! the access log outside records a client error, not a server failure. tonic answers those
//! with a trailers-only response, whose status is in the headers; a streaming handler that
//! meets one mid-stream maps it itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tower::{Layer, Service};

use super::Response;
use super::call_end::trailers_only_code;

const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

#[derive(Clone, Copy, Default)]
pub struct DecodeFaultLayer;

impl<S> Layer<S> for DecodeFaultLayer {
    type Service = DecodeFault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeFault { inner }
    }
}

#[derive(Clone)]
pub struct DecodeFault<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for DecodeFault<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DecodeFaultFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        DecodeFaultFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct DecodeFaultFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, E> Future for DecodeFaultFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(reworded(response)))
    }
}

/// The response, with tonic's status for an unreadable request replaced by the caller's.
fn reworded(mut response: Response) -> Response {
    let code = match trailers_only_code(&response) {
        Some(code @ (tonic::Code::Internal | tonic::Code::OutOfRange)) => code,
        _ => return response,
    };
    let Ok(status) = tonic::Status::from_header_map(response.headers()).ok_or(()) else {
        return response;
    };
    if let Some(fault) = crate::codec::as_caller_fault(code, status.message()) {
        let headers = response.headers_mut();
        headers.remove(GRPC_MESSAGE);
        // A fresh status's headers are valid header text.
        let _ = fault.add_header(headers);
    }
    response
}
