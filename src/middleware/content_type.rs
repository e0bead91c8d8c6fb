//! Inside the deadline: a call must say it is gRPC. tonic decodes whatever arrives; a request that
//! is not `application/grpc` (text, JSON, a browser's form) gets INVALID_ARGUMENT instead of
//! being read as protobuf.

use std::future::Ready;
use std::task::{Context, Poll};

use futures_util::future::Either;

use tonic::Status;
use tower::{Layer, Service};

use super::{Response, status_response};

#[derive(Clone, Copy, Default)]
pub struct ContentTypeLayer;

impl<S> Layer<S> for ContentTypeLayer {
    type Service = GrpcOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcOnly { inner }
    }
}

#[derive(Clone)]
pub struct GrpcOnly<S> {
    inner: S,
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value == "application/grpc"
                || value.starts_with("application/grpc+")
                || value.starts_with("application/grpc;")
        })
}

impl<S, B> Service<http::Request<B>> for GrpcOnly<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_grpc(request.headers()) {
            return Either::Right(self.inner.call(request));
        }
        let got = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map_or_else(
                || "none".to_owned(),
                |value| crate::text::quoted(&String::from_utf8_lossy(value.as_bytes())),
            );
        let status =
            Status::invalid_argument(format!("content-type must be application/grpc, got {got}"));
        Either::Left(std::future::ready(Ok(status_response(status))))
    }
}
