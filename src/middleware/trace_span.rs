//! The call's server span, named and described as OpenTelemetry's RPC conventions ask, child
//! of the caller's span when the call carries a W3C `traceparent`; ended with the call's gRPC
//! code. The span is disabled (and costs a flag test) unless traces are exported; the caller's
//! trace id is left on the call either way (`CallTrace`) when the access log is on, for its
//! lines.

use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::call_end::{EndFuture, Ending, OnEnd};
use crate::call::CallState;
use crate::telemetry::SPAN_TARGET;

/// The trace a call belongs to, when it belongs to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTrace(pub TraceId);

/// `trace_ids`: whether the caller's trace id is wanted on the call when no span is exported
/// (the access log writes it).
#[derive(Clone, Copy, Default)]
pub struct TraceSpanLayer {
    pub trace_ids: bool,
}

impl<S> Layer<S> for TraceSpanLayer {
    type Service = TraceSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceSpan {
            inner,
            trace_ids: self.trace_ids,
        }
    }
}

#[derive(Clone)]
pub struct TraceSpan<S> {
    inner: S,
    trace_ids: bool,
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The request's metadata, as the trace context propagator reads it.
struct Metadata<'a>(&'a http::HeaderMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The call's span, and its trace id (a valid one only; read without a span only when
/// `trace_ids`).
fn call_span<B>(request: &http::Request<B>, trace_ids: bool) -> (tracing::Span, Option<TraceId>) {
    let path = request.uri().path();
    // Fields are worked out only when the span is enabled.
    let name = || path.strip_prefix('/').unwrap_or(path);
    let part = |at: usize| name().split('/').nth(at).unwrap_or("");
    let span = tracing::debug_span!(
        target: SPAN_TARGET,
        "rpc",
        otel.name = name(),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = part(0),
        rpc.method = part(1),
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if span.is_disabled() && !trace_ids {
        return (span, None);
    }
    let has_parent = request.headers().contains_key(TRACEPARENT);
    let parent =
        has_parent.then(|| TraceContextPropagator::new().extract(&Metadata(request.headers())));
    if span.is_disabled() {
        // Not exported, but the caller's trace id still ties the log line to their trace.
        let trace_id = parent.map(|cx| cx.span().span_context().trace_id());
        return (span, trace_id.filter(|id| *id != TraceId::INVALID));
    }
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    (span, Some(trace_id).filter(|id| *id != TraceId::INVALID))
}

/// Whether OpenTelemetry counts this code as a server span's error: the server's fault, not
/// the caller's.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// Records the code on the span and ends it, unless the handler's future still holds it.
pub struct SpanEnd(tracing::Span);

impl OnEnd for SpanEnd {
    fn ended(&mut self, code: Code, _state: Option<&CallState>) {
        let span = std::mem::replace(&mut self.0, tracing::Span::none());
        if !span.is_disabled() {
            span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                span.record("otel.status_code", "error");
            }
        }
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for TraceSpan<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = http::Response<super::call_end::EndBody<ResBody, SpanEnd>>;
    type Error = S::Error;
    type Future = EndFuture<Instrumented<S::Future>, SpanEnd>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let (span, trace_id) = call_span(&request, self.trace_ids);
        if let Some(trace_id) = trace_id {
            request.extensions_mut().insert(CallTrace(trace_id));
        }
        if span.is_disabled() {
            return EndFuture::unwatched(self.inner.call(request).instrument(span));
        }
        let ending = Ending::new(SpanEnd(span.clone()), request.extensions());
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        EndFuture::new(response.instrument(span), ending)
    }
}
