//! The Connect protocol (connectrpc.com/docs/protocol) on the gRPC port: unary calls with
//! JSON (`application/json`) or binary (`application/proto`) bodies, and server streams
//! (`application/connect+json`, `application/connect+proto`). Each call is turned into the
//! gRPC call it means and passed to the same stack and services as any gRPC call (access log,
//! authentication, rate limit, metrics); the gRPC answer is turned back into Connect's.
//!
//! Written here rather than taken from a crate: the Connect crates for Rust generate their own
//! message types and serve through their own router, not tonic's services and prost's types.
//! What it needs is small: prost-reflect transcodes JSON by the schema, and the rest is framing.
//!
//! The request body is read and transcoded when the service reads it, not before: a body that
//! is not valid JSON for the method's input is refused with INVALID_ARGUMENT by the service's
//! own decoding, after authentication and the rate limit, so it is logged and counted like a
//! gRPC call whose body does not decode, and nothing is parsed for a caller refused earlier.
//! (Over HTTP/1.1 the bytes are read first, see `whole_body`.) A request the protocol cannot
//! carry (a client stream, a unary content type for a stream) is refused here, before any work.

mod answer;
mod envelope;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, header};
use prost_reflect::{MessageDescriptor, MethodDescriptor};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::Service;

use crate::call::Protocol;
use crate::whole_body::{BodyLimits, ReadBody};

/// The message codec a Connect call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

/// A Connect request, as its content type tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub codec: Codec,
    /// Enveloped messages (a streaming call) rather than a bare message.
    pub streaming: bool,
}

impl Kind {
    /// The Connect kind of a request with this content type, when it is one.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.as_bytes();
        let essence = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let (codec, streaming) = match essence {
            b"application/json" => (Codec::Json, false),
            b"application/proto" => (Codec::Proto, false),
            b"application/connect+json" => (Codec::Json, true),
            b"application/connect+proto" => (Codec::Proto, true),
            _ => return None,
        };
        Some(Self { codec, streaming })
    }

    pub fn protocol(self) -> Protocol {
        match self.codec {
            Codec::Json => Protocol::ConnectJson,
            Codec::Proto => Protocol::ConnectProto,
        }
    }

    fn content_type(self) -> &'static str {
        match (self.codec, self.streaming) {
            (Codec::Json, false) => "application/json",
            (Codec::Proto, false) => "application/proto",
            (Codec::Json, true) => "application/connect+json",
            (Codec::Proto, true) => "application/connect+proto",
        }
    }
}

/// The methods Connect may call, by path (`/userservice.UserService/GetUser`), and the largest
/// request body read.
#[derive(Clone)]
pub struct Methods {
    by_path: Arc<HashMap<String, MethodDescriptor>>,
    body: BodyLimits,
}

impl Methods {
    /// Every method of the schema's services.
    pub fn of_schema(body: BodyLimits) -> Self {
        let by_path = crate::json::SCHEMA
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| {
                let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
                (path, method)
            })
            .collect();
        Self {
            by_path: Arc::new(by_path),
            body,
        }
    }
}

/// Connect calls of one kind, served through `inner`, the gRPC stack.
#[derive(Clone)]
pub struct Connect<S> {
    pub inner: S,
    pub methods: Methods,
    pub kind: Kind,
}

impl<S> Service<http::Request<Body>> for Connect<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The readied service answers this call; a clone waits to be readied for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        call(inner, &self.methods, self.kind, request)
    }
}

/// Serves one Connect call through `inner`, the gRPC stack, which must be ready.
fn call<S>(
    mut inner: S,
    methods: &Methods,
    kind: Kind,
    request: http::Request<Body>,
) -> BoxFuture<'static, Result<http::Response<Body>, S::Error>>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    let method = match admit(methods, kind, &request) {
        Ok(method) => method,
        Err(status) => return Box::pin(std::future::ready(Ok(refusal(&status, kind)))),
    };
    let limits = methods.body;
    Box::pin(async move {
        let (mut parts, mut body) = request.into_parts();
        if parts.version < http::Version::HTTP_2 {
            body = Body::new(ReadBody::read(body, limits.plus(envelope::HEADER_BYTES)).await);
        }
        let timeout = to_grpc_headers(&mut parts.headers);
        let message = match &method {
            Some(method) => envelope::RequestBody::new(body, kind, method.input(), limits),
            // Not a method of ours: the router answers UNIMPLEMENTED without reading.
            None => envelope::RequestBody::refused(Status::unimplemented("no such method")),
        };
        let message = match timeout {
            Ok(()) => message,
            Err(status) => envelope::RequestBody::refused(status),
        };
        let request = http::Request::from_parts(parts, Body::new(message));
        let response = inner.call(request).await?;
        let Some(method) = method else {
            let status = Status::from_header_map(response.headers())
                .unwrap_or_else(|| Status::unimplemented("no such method"));
            return Ok(refusal(&status, kind));
        };
        Ok(if kind.streaming {
            answer::stream(response, kind, method.output())
        } else {
            answer::unary(response, kind, &method.output()).await
        })
    })
}

/// A call refused before its answer began, in the shape its kind expects.
fn refusal(status: &Status, kind: Kind) -> http::Response<Body> {
    if kind.streaming {
        answer::stream_refusal(status, kind)
    } else {
        answer::error_response(status, None)
    }
}

/// The method a request calls (`None`: not one of ours), when Connect can call it as the
/// request asks.
fn admit(
    methods: &Methods,
    kind: Kind,
    request: &http::Request<Body>,
) -> Result<Option<MethodDescriptor>, Status> {
    if request.method() != http::Method::POST {
        return Err(Status::unimplemented(format!(
            "Connect calls are POST requests, got {}",
            request.method()
        )));
    }
    let encoding = if kind.streaming {
        "connect-content-encoding"
    } else {
        "content-encoding"
    };
    if let Some(value) = request.headers().get(encoding)
        && value != "identity"
    {
        return Err(Status::unimplemented(format!(
            "{encoding} {} is not supported: send messages uncompressed (identity)",
            crate::text::quoted(&String::from_utf8_lossy(value.as_bytes()))
        )));
    }
    let Some(method) = methods.by_path.get(request.uri().path()) else {
        return Ok(None);
    };
    if method.is_client_streaming() {
        return Err(Status::unimplemented(format!(
            "{} streams requests from the client, which Connect over HTTP/1.1 and browsers \
             cannot: call it over gRPC (HTTP/2)",
            method.name()
        )));
    }
    if method.is_server_streaming() != kind.streaming {
        let expected = Kind {
            streaming: method.is_server_streaming(),
            ..kind
        };
        return Err(Status::invalid_argument(format!(
            "{} takes content-type {}",
            method.name(),
            expected.content_type()
        )));
    }
    Ok(Some(method.clone()))
}

/// The headers of the gRPC request a Connect request means: gRPC's content type, and the
/// deadline as `grpc-timeout`; the client's own `grpc-*` headers are dropped (a
/// `grpc-accept-encoding` would have the answer compressed, which Connect does not read).
fn to_grpc_headers(headers: &mut HeaderMap) -> Result<(), Status> {
    let timeout = headers.remove("connect-timeout-ms");
    let grpc: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("grpc-"))
        .cloned()
        .collect();
    for name in grpc {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove("connect-protocol-version");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", grpc_timeout(&timeout)?);
    }
    Ok(())
}

/// Connect's milliseconds (at most ten digits) as gRPC's timeout, whose value has at most
/// eight digits: milliseconds, or whole seconds rounded up past that.
fn grpc_timeout(value: &HeaderValue) -> Result<HeaderValue, Status> {
    let digits = value.as_bytes();
    let millis: u64 = std::str::from_utf8(digits)
        .ok()
        .filter(|text| (1..=10).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            Status::invalid_argument(
                "connect-timeout-ms must be a whole number of milliseconds, at most 10 digits",
            )
        })?;
    let timeout = if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", millis.div_ceil(1000))
    };
    Ok(HeaderValue::from_str(&timeout).expect("digits and a letter"))
}

/// The Connect name of a gRPC code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary Connect error with this code, as the protocol maps them.
fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as H;
    match code {
        Code::Ok => H::OK,
        Code::Cancelled => H::from_u16(499).expect("a valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => H::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => H::BAD_REQUEST,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => H::UNAUTHORIZED,
    }
}

/// Bytes of a message in JSON or protobuf, as the codec wants, from its protobuf bytes.
fn encode_output(
    codec: Codec,
    descriptor: &MessageDescriptor,
    protobuf: Bytes,
) -> Result<Bytes, Status> {
    match codec {
        Codec::Proto => Ok(protobuf),
        Codec::Json => crate::json::to_value(descriptor, &protobuf)
            .map(|value| Bytes::from(serde_json::to_vec(&value).expect("a JSON value writes")))
            .map_err(|err| {
                Status::internal(format!(
                    "the answer did not decode as {}: {err}",
                    descriptor.full_name()
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        headers
    }

    #[test]
    fn connect_requests_are_told_by_their_content_type() {
        let json = Kind {
            codec: Codec::Json,
            streaming: false,
        };
        assert_eq!(Kind::of(&headers("application/json")), Some(json));
        assert_eq!(
            Kind::of(&headers("application/json; charset=utf-8")),
            Some(json)
        );
        assert_eq!(
            Kind::of(&headers("application/connect+proto")),
            Some(Kind {
                codec: Codec::Proto,
                streaming: true
            })
        );
        for other in [
            "application/grpc",
            "application/grpc-web+proto",
            "text/plain",
        ] {
            assert_eq!(Kind::of(&headers(other)), None, "{other}");
        }
    }

    #[test]
    fn every_code_has_the_http_status_the_protocol_gives_it() {
        let expected = [
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, status) in expected {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn a_connect_timeout_becomes_a_grpc_timeout_in_milliseconds() {
        assert_eq!(
            grpc_timeout(&HeaderValue::from_static("2500")).unwrap(),
            "2500m"
        );
        for bad in ["", "-1", "1.5", "12345678901"] {
            let status = grpc_timeout(&HeaderValue::from_str(bad).unwrap()).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        }
    }
}
