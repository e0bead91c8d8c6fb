//! One structured line per call: method, protocol (unless gRPC), peer, principal, gRPC code, duration and the
//! caller's trace id. Reads the caller from the call's state, where the auth layer further
//! in leaves it, and the trace id the trace-span layer outside leaves.

use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tower::{Layer, Service};

use super::call_end::{EndBody, EndFuture, Ending, OnEnd};
use super::trace_span::CallTrace;
use crate::call::{CallState, Protocol};
use crate::caller::{Caller, Principal};
use crate::client_address::ClientAddress;
use crate::telemetry::ACCESS_TARGET;

/// `enabled: false` writes no line (for operators who log elsewhere).
#[derive(Clone, Copy, Default)]
pub struct AccessLogLayer {
    pub enabled: bool,
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    enabled: bool,
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

/// What the line says, gathered as the call goes; written when it ends.
pub struct Line {
    uri: http::Uri,
    peer: Option<std::net::SocketAddr>,
    trace_id: Option<CallTrace>,
    started: Instant,
}

impl OnEnd for Line {
    fn ended(&mut self, code: Code, state: Option<&CallState>) {
        let peer = tracing::field::display(PeerOf(self.peer));
        let caller = state.and_then(CallState::caller);
        let principal = tracing::field::display(PrincipalOf(caller.and_then(Caller::principal)));
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let method = self.uri.path();
        // Written for the other protocols only: most calls are gRPC, and a field costs each
        // line its formatting.
        let protocol = state
            .map(CallState::protocol)
            .filter(|protocol| *protocol != Protocol::Grpc)
            .map(Protocol::as_str);
        let trace_id = self.trace_id.map(|trace| tracing::field::display(trace.0));
        match code {
            Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss => {
                tracing::warn!(target: ACCESS_TARGET, method, protocol, peer, principal, code = ?code, micros, trace_id, "call");
            }
            _ => {
                tracing::info!(target: ACCESS_TARGET, method, protocol, peer, principal, code = ?code, micros, trace_id, "call");
            }
        }
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for AccessLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = http::Response<EndBody<ResBody, Line>>;
    type Error = S::Error;
    type Future = EndFuture<S::Future, Line>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.enabled {
            return EndFuture::unwatched(self.inner.call(request));
        }
        let extensions = request.extensions();
        let line = Line {
            uri: request.uri().clone(),
            peer: ClientAddress::peer_of(extensions),
            trace_id: extensions.get::<CallTrace>().copied(),
            started: Instant::now(),
        };
        let ending = Ending::new(line, extensions);
        EndFuture::new(self.inner.call(request), ending)
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
