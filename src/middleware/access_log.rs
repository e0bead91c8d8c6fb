//! Outermost layer: one structured line per call with method, peer, principal, gRPC code,
//! duration and trace id; the gRPC server metrics (started, handled by code, messages received
//! and sent, handling time); and the call's server span, which continues the caller's trace
//! (W3C `traceparent`) when traces are exported. The code comes from `grpc-status`
//! (trailers-only headers, or the trailers); a call whose client went away before it ended is
//! CANCELLED, whatever the handler answered.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::Refusal;
use crate::caller::{Caller, Principal};
use crate::client_address::peer_addr;
use crate::metrics::{MessageCounter, MethodMetrics, Metrics};
use crate::telemetry::{ACCESS_TARGET, SPAN_TARGET};

/// What is learnt about a call after it started: the principal, which the auth layer further
/// in leaves here, and whether the client went away.
#[derive(Default)]
struct CallState {
    caller: OnceLock<Caller>,
    client_gone: AtomicBool,
}

/// Where the auth layer, further in, leaves the caller's principal for the log line.
#[derive(Clone, Default)]
pub struct PrincipalSlot(Arc<CallState>);

impl PrincipalSlot {
    pub fn set(&self, caller: &Caller) {
        let _ = self.0.caller.set(caller.clone());
    }
}

/// The request body, watched for the error that means the client's stream broke (a reset, or
/// the connection closing) before the call ended.
struct WatchedRequest {
    inner: tonic::body::Body,
    state: PrincipalSlot,
    /// Counts the messages received, when metrics are on.
    received: Option<(MessageCounter, Arc<MethodMetrics>)>,
}

impl Body for WatchedRequest {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = <tonic::body::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => self.state.0.client_gone.store(true, Ordering::Relaxed),
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((counter, metrics))) =
                    (frame.data_ref(), self.received.as_mut())
                {
                    metrics.received(counter.feed(data));
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `enabled: false` writes no line (for operators who log elsewhere); `metrics: None` records
/// none. With neither, the call passes through at the cost of two tests.
#[derive(Clone)]
pub struct AccessLogLayer {
    pub enabled: bool,
    pub metrics: Option<Arc<Metrics>>,
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            enabled: self.enabled,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    enabled: bool,
    metrics: Option<Arc<Metrics>>,
}

/// Header names looked up on every call, made once (a name given as a string is parsed at
/// each lookup).
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

fn grpc_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// The peer address in a log line, `-` when unknown; formatted only when written.
struct PeerOf(Option<std::net::SocketAddr>);

impl std::fmt::Display for PeerOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            // The usual peer, written digit by digit into one piece: the standard formatting
            // of an address showed in the profile of every logged call.
            Some(std::net::SocketAddr::V4(peer)) => {
                let mut text = [0u8; "255.255.255.255:65535".len()];
                let mut len = 0;
                let mut put = |bytes: &[u8]| {
                    text[len..len + bytes.len()].copy_from_slice(bytes);
                    len += bytes.len();
                };
                let mut digits = itoa::Buffer::new();
                for (at, octet) in peer.ip().octets().into_iter().enumerate() {
                    if at > 0 {
                        put(b".");
                    }
                    put(digits.format(octet).as_bytes());
                }
                put(b":");
                put(digits.format(peer.port()).as_bytes());
                f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| std::fmt::Error)?)
            }
            Some(peer) => peer.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The caller in a log line, `-` when anonymous.
struct PrincipalOf<'a>(Option<Principal<'a>>);

impl std::fmt::Display for PrincipalOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(principal) => principal.fmt(f),
            None => f.write_str("-"),
        }
    }
}

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

/// The call's server span, named and described as OpenTelemetry's RPC conventions ask, child
/// of the caller's span when the call carries a `traceparent`; and the trace id for the log
/// line. The span is disabled (and costs a flag test) unless traces are exported.
fn call_span(request: &http::Request<tonic::body::Body>) -> (tracing::Span, Option<TraceId>) {
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

/// One call in flight; logs exactly once, when the response ends, or when it is dropped
/// unfinished (the client went away before or while it was sent).
struct CallRecord {
    uri: http::Uri,
    peer: Option<std::net::SocketAddr>,
    principal: PrincipalSlot,
    started: Instant,
    code: Option<Code>,
    logged: bool,
    /// Whether to write the line (the record may exist for the metrics alone).
    log: bool,
    metrics: Option<Arc<MethodMetrics>>,
    /// The server span, ended with the call.
    span: tracing::Span,
    trace_id: Option<TraceId>,
}

impl CallRecord {
    fn finish(&mut self, code: Option<Code>) {
        if self.logged {
            return;
        }
        self.logged = true;
        // No status at all means the response was abandoned: the client went away.
        let code = if self.principal.0.client_gone.load(Ordering::Relaxed) {
            Code::Cancelled
        } else {
            code.or(self.code).unwrap_or(Code::Cancelled)
        };
        if let Some(metrics) = &self.metrics {
            metrics.handled(code, self.started.elapsed());
        }
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        if !span.is_disabled() {
            span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                span.record("otel.status_code", "error");
            }
        }
        // The span ends here, unless the handler's future still holds it.
        drop(span);
        if !self.log {
            return;
        }
        let peer = tracing::field::display(PeerOf(self.peer));
        let principal = self.principal.0.caller.get().and_then(Caller::principal);
        let principal = tracing::field::display(PrincipalOf(principal));
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let method = self.uri.path();
        let trace_id = self.trace_id.map(tracing::field::display);
        match code {
            Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss => {
                tracing::warn!(target: ACCESS_TARGET, method, peer, principal, code = ?code, micros, trace_id, "call");
            }
            _ => {
                tracing::info!(target: ACCESS_TARGET, method, peer, principal, code = ?code, micros, trace_id, "call");
            }
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The response body, watched for the trailers that carry the gRPC status.
pub struct LoggedBody<B> {
    inner: B,
    record: Option<CallRecord>,
    sent: MessageCounter,
}

impl<B> LoggedBody<B> {
    fn finish(&mut self, code: Option<Code>) {
        if let Some(record) = &mut self.record {
            record.finish(code);
        }
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    self.finish(Some(code));
                }
                if let Some(data) = frame.data_ref() {
                    let this = &mut *self;
                    if let Some(metrics) = this.record.as_ref().and_then(|r| r.metrics.as_ref()) {
                        metrics.sent(this.sent.feed(data.chunk()));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Some(Code::Internal)),
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for AccessLog<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    ResBody: Body + Unpin,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = LoggedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let metrics = self
            .metrics
            .as_ref()
            .and_then(|metrics| metrics.method(request.uri().path()));
        let (span, trace_id) = call_span(&request);
        if !self.enabled && metrics.is_none() && span.is_disabled() {
            return LoggedCall {
                inner: self.inner.call(request).instrument(span),
                record: None,
                metrics: None,
            };
        }
        if let Some(metrics) = &metrics {
            metrics.started();
        }
        let principal = PrincipalSlot::default();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(principal.clone());
        let request = http::Request::from_parts(
            parts,
            tonic::body::Body::new(WatchedRequest {
                inner: body,
                state: principal.clone(),
                received: metrics
                    .clone()
                    .map(|metrics| (MessageCounter::default(), metrics)),
            }),
        );
        let record = CallRecord {
            uri: request.uri().clone(),
            peer: peer_addr(request.extensions()),
            principal,
            started: Instant::now(),
            code: None,
            logged: false,
            log: self.enabled,
            metrics,
            span: span.clone(),
            trace_id,
        };
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        LoggedCall {
            inner: response.instrument(span),
            record: Some(record),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The call until its answer starts; its record then moves into the answer's body, which
    /// logs the call when it ends. Dropped unanswered (the client went away), the record logs
    /// the call as CANCELLED.
    pub struct LoggedCall<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        record: Option<CallRecord>,
        metrics: Option<Arc<Metrics>>,
    }
}

impl<F, ResBody, E> Future for LoggedCall<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<LoggedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let mut record = this.record.take();
        match result {
            Ok(response) => {
                if let Some(record) = &mut record {
                    if let (Some(metrics), Some(Refusal(reason))) = (
                        this.metrics.as_ref(),
                        response.extensions().get::<Refusal>(),
                    ) {
                        metrics.refused(reason);
                    }
                    record.code = grpc_code(response.headers());
                }
                Poll::Ready(Ok(response.map(|inner| LoggedBody {
                    inner,
                    record,
                    sent: MessageCounter::default(),
                })))
            }
            Err(err) => {
                if let Some(mut record) = record {
                    record.finish(Some(Code::Internal));
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PeerOf;

    #[test]
    fn a_peer_is_written_as_the_standard_library_writes_its_address() {
        for peer in [
            "0.0.0.0:0",
            "127.0.0.1:50100",
            "255.255.255.255:65535",
            "[::1]:443",
        ] {
            let addr: std::net::SocketAddr = peer.parse().unwrap();
            assert_eq!(PeerOf(Some(addr)).to_string(), addr.to_string());
        }
        assert_eq!(PeerOf(None).to_string(), "-");
    }
}
