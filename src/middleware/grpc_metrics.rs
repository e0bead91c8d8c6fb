//! The gRPC server metrics of each call, in the Prometheus names grpc-go and
//! go-grpc-middleware use: started, handled by code, messages received and sent, handling
//! time; and the refusals layers further in answered themselves. The request-watch layer outside
//! counts the request's messages for it, so the request body is watched once.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tower::{Layer, Service};

use super::Refusal;
use super::call_end::{EndBody, EndFuture, Ending, OnEnd};
use crate::call::CallState;
use crate::metrics::{MessageCounter, MethodMetrics, Metrics};

/// `None` records nothing (no `--metrics-listen`).
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Option<Arc<Metrics>>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

/// Counts what a call sends and how it ends. A call to a path no service knows has no
/// method's metrics; only a refusal is counted for it.
pub struct Counted {
    metrics: Arc<Metrics>,
    method: Option<Arc<MethodMetrics>>,
    sent: MessageCounter,
    started: Instant,
}

impl OnEnd for Counted {
    fn answered(&mut self, extensions: &http::Extensions) {
        if let Some(Refusal(reason)) = extensions.get::<Refusal>() {
            self.metrics.refused(reason);
        }
    }

    fn sent(&mut self, data: &[u8]) {
        if let Some(method) = &self.method {
            method.sent(self.sent.feed(data));
        }
    }

    fn ended(&mut self, code: Code, _state: Option<&CallState>) {
        if let Some(method) = &self.method {
            method.handled(code, self.started.elapsed());
        }
    }
}

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for GrpcMetrics<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = http::Response<EndBody<ResBody, Counted>>;
    type Error = S::Error;
    type Future = EndFuture<S::Future, Counted>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(metrics) = &self.metrics else {
            return EndFuture::unwatched(self.inner.call(request));
        };
        let method = metrics.method(request.uri().path());
        if let Some(counted) = &method {
            counted.started();
            if let Some(state) = CallState::of(request.extensions()) {
                state.count_received(counted.clone());
            }
        }
        let counted = Counted {
            metrics: metrics.clone(),
            method,
            sent: MessageCounter::default(),
            started: Instant::now(),
        };
        let ending = Ending::new(counted, request.extensions());
        EndFuture::new(self.inner.call(request), ending)
    }
}
