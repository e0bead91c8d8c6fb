//! How a call ends, for the layers that report it (the trace span, the access log, the gRPC
//! metrics): the code from `grpc-status` in the trailers-only headers or in the trailers, or
//! CANCELLED when the client went away first; reported exactly once. `RequestWatchLayer`, outside
//! those layers, watches the request for a broken client stream and counts its messages into
//! the call's state (`call::CallState`, set by the outermost layer).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

use crate::call::{AnswerPart, CallState};
use crate::metrics::MessageCounter;

/// The code `read` finds in `part` of the answer, read once per call and kept in `state` when
/// there is one.
fn kept_code(
    state: Option<&CallState>,
    part: AnswerPart,
    read: impl FnOnce() -> Option<Code>,
) -> Option<Code> {
    match state {
        Some(state) => state.code(part, read),
        None => read(),
    }
}

/// Outside the reporting layers: marks the client gone in the call's state when its request
/// stream breaks (a reset, or the connection closing) before the call ends (bytes that break
/// the framing are the caller's fault, not its going: `whole_body::as_heard`), and bounds how
/// long a one-message request may stall (`--request-body-timeout`): past it the body fails
/// with DEADLINE_EXCEEDED, so a client that stops sending holds no call slot.
#[derive(Clone, Copy)]
pub struct RequestWatchLayer {
    pub body_timeout: Duration,
}

impl<S> Layer<S> for RequestWatchLayer {
    type Service = RequestWatch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestWatch {
            inner,
            body_timeout: self.body_timeout,
        }
    }
}

#[derive(Clone)]
pub struct RequestWatch<S> {
    inner: S,
    body_timeout: Duration,
}

/// The methods whose requests are streams of messages, which may rightly pause between
/// them; every other request is one message, bounded by `--request-body-timeout`.
const CLIENT_STREAMS: [&str; 4] = [
    "/userservice.UserService/BatchCreateUsers",
    "/userservice.UserService/SyncUsers",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A one-message request's time to arrive, armed only when its body first has to wait (a
/// whole body is usually there at once, so most calls never make a timer).
struct BodyBound {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Service<http::Request<tonic::body::Body>> for RequestWatch<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(state) = CallState::of(request.extensions()).cloned() else {
            return self.inner.call(request);
        };
        let bound = (!CLIENT_STREAMS.contains(&request.uri().path())).then_some(BodyBound {
            timeout: self.body_timeout,
            sleep: None,
        });
        let (parts, body) = request.into_parts();
        let body = tonic::body::Body::new(WatchedRequest {
            inner: body,
            state,
            counter: MessageCounter::default(),
            bound,
        });
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

/// The request body, watched for the error that means the client's stream broke, and its
/// messages counted when the metrics layer asked.
struct WatchedRequest {
    inner: tonic::body::Body,
    state: Arc<CallState>,
    counter: MessageCounter,
    /// `None` for a stream of messages, and once the body has ended.
    bound: Option<BodyBound>,
}

impl Body for WatchedRequest {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                Poll::Ready(Some(Err(crate::whole_body::as_heard(error))))
            }
            polled => polled,
        };
        match &polled {
            Poll::Pending => {
                if let Some(bound) = &mut self.bound {
                    let timeout = bound.timeout;
                    let sleep = bound
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        self.bound = None;
                        return Poll::Ready(Some(Err(crate::whole_body::too_slow(timeout))));
                    }
                }
            }
            Poll::Ready(None) => self.bound = None,
            Poll::Ready(Some(Err(error))) => {
                if crate::whole_body::connection_ended(error) {
                    self.state.mark_client_gone();
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let this = &mut *self;
                    let counter = &mut this.counter;
                    this.state.received(|| counter.feed(data));
                }
            }
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

/// What a reporting layer does as the call goes: when its answer starts, as its messages go
/// out, and once, when it ends.
pub trait OnEnd {
    /// The answer's head is ready.
    fn answered(&mut self, _extensions: &http::Extensions) {}
    /// A data frame of the answer went out.
    fn sent(&mut self, _data: &[u8]) {}
    /// The call ended with `code`; `state` is the call's, when the outermost layer set one.
    fn ended(&mut self, code: Code, state: Option<&CallState>);
}

/// Header name looked up on every call, made once.
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

fn grpc_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// The code of a trailers-only answer, from its headers: only such an answer, whose body is
/// empty, carries its code there, so any other costs a test, not a lookup.
pub(super) fn trailers_only_code<B: Body>(response: &http::Response<B>) -> Option<Code> {
    if !response.body().is_end_stream() {
        return None;
    }
    grpc_code(response.headers())
}

/// One call's ending, reported exactly once: when its answer ends, or when it is dropped
/// unfinished (the client went away before or while it was sent).
pub struct Ending<O: OnEnd> {
    observer: O,
    state: Option<Arc<CallState>>,
    /// The code of a trailers-only answer, from its headers.
    code: Option<Code>,
    done: bool,
}

impl<O: OnEnd> Ending<O> {
    /// Watches the call whose request carried `extensions`.
    pub fn new(observer: O, extensions: &http::Extensions) -> Self {
        Self {
            observer,
            state: CallState::of(extensions).cloned(),
            code: None,
            done: false,
        }
    }

    fn finish(&mut self, code: Option<Code>) {
        if self.done {
            return;
        }
        self.done = true;
        // No status at all means the answer was abandoned: the client went away.
        let gone = self.state.as_ref().is_some_and(|state| state.client_gone());
        let code = if gone {
            Code::Cancelled
        } else {
            code.or(self.code).unwrap_or(Code::Cancelled)
        };
        self.observer.ended(code, self.state.as_deref());
    }
}

impl<O: OnEnd> Drop for Ending<O> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

pin_project_lite::pin_project! {
    /// The call until its answer starts; the ending then moves into the answer's body.
    /// Dropped unanswered, the call ended CANCELLED.
    pub struct EndFuture<F, O: OnEnd> {
        #[pin]
        inner: F,
        ending: Option<Ending<O>>,
    }
}

impl<F, O: OnEnd> EndFuture<F, O> {
    pub fn new(inner: F, ending: Ending<O>) -> Self {
        Self {
            inner,
            ending: Some(ending),
        }
    }

    /// A call this layer does not report on (it is off): the wrappers pass everything
    /// through at the cost of a test.
    pub fn unwatched(inner: F) -> Self {
        Self {
            inner,
            ending: None,
        }
    }
}

impl<F, O, ResBody, E> Future for EndFuture<F, O>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body,
    O: OnEnd,
{
    type Output = Result<http::Response<EndBody<ResBody, O>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let mut ending = this.ending.take();
        match result {
            Ok(response) => {
                if let Some(ending) = &mut ending {
                    ending.observer.answered(response.extensions());
                    ending.code = kept_code(ending.state.as_deref(), AnswerPart::Head, || {
                        trailers_only_code(&response)
                    });
                }
                Poll::Ready(Ok(response.map(|inner| EndBody { inner, ending })))
            }
            Err(err) => {
                if let Some(mut ending) = ending {
                    ending.finish(Some(Code::Internal));
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

/// The answer's body, watched for the trailers that carry the gRPC status.
pub struct EndBody<B, O: OnEnd> {
    inner: B,
    ending: Option<Ending<O>>,
}

impl<B, O: OnEnd> EndBody<B, O> {
    fn finish(&mut self, code: Option<Code>) {
        if let Some(ending) = &mut self.ending {
            ending.finish(code);
        }
    }
}

impl<B, O> Body for EndBody<B, O>
where
    B: Body + Unpin,
    B::Data: bytes::Buf,
    O: OnEnd + Unpin,
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
                // A layer that is off reads nothing of the answer.
                if let Some(ending) = &mut self.ending {
                    if let Some(data) = frame.data_ref() {
                        ending.observer.sent(bytes::Buf::chunk(data));
                    }
                    if let Some(trailers) = frame.trailers_ref() {
                        let state = ending.state.as_deref();
                        let code = kept_code(state, AnswerPart::Trailers, || grpc_code(trailers));
                        if code.is_some() {
                            ending.finish(code);
                        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_streams_of_messages_are_the_schemas_client_streaming_methods() {
        let ours: Vec<String> = crate::json::SCHEMA
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .filter(|method| method.is_client_streaming())
            .map(|method| format!("/{}/{}", method.parent_service().full_name(), method.name()))
            .collect();
        let listed: Vec<&str> = super::CLIENT_STREAMS
            .iter()
            .copied()
            .filter(|path| path.starts_with("/userservice."))
            .collect();
        assert_eq!(ours, listed);
    }
}
