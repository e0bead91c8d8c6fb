//! Inside the client's address and connection activity: which protocol a call speaks. gRPC
//! passes as it is; gRPC-Web goes through tonic-web's layer and Connect through `connect`,
//! both turned into gRPC for every layer inside, so every call that reaches a service passes
//! the same policies; CORS, when origins are named, applies to these browser protocols (and
//! answers preflights); the console's pages are served here. The protocol is
//! noted in the call's state for the access log. What is refused here does no work: an
//! HTTP/1.1 request in none of these protocols gets a plain refusal (an HTTP/2 one goes on, to
//! be refused as gRPC by the content-type layer), and Connect refuses what it cannot carry.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use http::{Method, StatusCode, Version, header};
use http_body::Frame;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt as _};
use tower_http::cors::CorsLayer;

use crate::call::{CallState, Protocol};
use crate::connect::{self, Kind, Methods};
use crate::console::{self, Console};
use crate::whole_body::{BodyLimits, ReadBody};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub struct ProtocolLayer {
    pub connect: Methods,
    /// `None`: the console is off.
    pub console: Option<Console>,
    /// The largest request message (`--max-message-bytes`), and how long it may take to
    /// arrive (`--request-body-timeout`).
    pub body: BodyLimits,
    /// CORS for browser protocols, when origins are named.
    pub cors: Option<CorsLayer>,
    /// Discovery, the JWKS, introspection and revocation.
    pub oidc: Arc<crate::oidc::endpoints::Endpoints>,
}

impl<S> Layer<S> for ProtocolLayer {
    type Service = Protocols<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Protocols {
            inner,
            web: Arc::new(self.clone()),
        }
    }
}

#[derive(Clone)]
pub struct Protocols<S> {
    inner: S,
    /// Behind one pointer: the stack is cloned for every call, and gRPC calls use none of it.
    web: Arc<ProtocolLayer>,
}

/// Where a request goes.
enum Route {
    Grpc,
    GrpcWeb(Protocol),
    Connect(Kind),
    /// A CORS preflight (OPTIONS), when CORS is on.
    Preflight,
    Console(Console),
    /// Discovery, the JWKS, introspection and revocation.
    Oidc,
    /// `/`, to the console.
    Home,
    Refuse(&'static str),
}

impl<S: Clone> Protocols<S> {
    /// `service`'s answer to a browser protocol's `request`, through CORS when it is on (gRPC
    /// needs none: no browser speaks it, so its calls skip this).
    fn browser<W, F>(&self, service: W, request: http::Request<Body>) -> ProtocolFuture<F, W::Error>
    where
        W: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
        W::Future: Send,
        W::Error: Send,
    {
        match &self.web.cors {
            Some(cors) => ProtocolFuture::boxed(cors.layer(service).oneshot(request)),
            None => ProtocolFuture::boxed(service.oneshot(request)),
        }
    }

    /// The inner service `poll_ready` readied, for a call that outlives this one; a clone
    /// takes its place, to be readied for the next call.
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }

    fn route<B>(&self, request: &http::Request<B>) -> Route {
        if crate::oidc::endpoints::Endpoints::serves(request.uri().path()) {
            return Route::Oidc;
        }
        let headers = request.headers();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map_or(&b""[..], |value| value.as_bytes());
        if let Some(rest) = content_type.strip_prefix(b"application/grpc") {
            return if rest.starts_with(b"-web-text") {
                Route::GrpcWeb(Protocol::GrpcWebText)
            } else if rest.starts_with(b"-web") {
                Route::GrpcWeb(Protocol::GrpcWeb)
            } else if request.version() == Version::HTTP_2 {
                Route::Grpc
            } else {
                Route::Refuse(
                    "gRPC needs HTTP/2; over HTTP/1.1 this port speaks gRPC-Web and Connect\n",
                )
            };
        }
        if let Some(kind) = Kind::of(headers) {
            return Route::Connect(kind);
        }
        if self.web.cors.is_some() && request.method() == Method::OPTIONS {
            return Route::Preflight;
        }
        let path = request.uri().path();
        if let Some(console) = self.web.console {
            if Console::serves(path) {
                return Route::Console(console);
            }
            if path == "/" && request.method() == Method::GET {
                return Route::Home;
            }
        }
        if request.version() == Version::HTTP_2 {
            return Route::Grpc;
        }
        Route::Refuse(
            "this port speaks gRPC, gRPC-Web and Connect (content-type application/json, \
             application/proto, application/connect+json or application/connect+proto)\n",
        )
    }
}

impl<S, ResBody> Service<http::Request<Body>> for Protocols<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + std::fmt::Display,
{
    type Response = http::Response<ProtocolBody<ResBody>>;
    type Error = S::Error;
    type Future = ProtocolFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let route = self.route(&request);
        let note = |protocol| {
            if let Some(state) = CallState::of(request.extensions()) {
                state.set_protocol(protocol);
            }
        };
        match route {
            Route::Grpc => ProtocolFuture::Grpc {
                future: self.inner.call(request),
            },
            Route::GrpcWeb(protocol) => {
                note(protocol);
                let inner = self.take_ready();
                if request.version() == Version::HTTP_2 {
                    let web = tonic_web::GrpcWebLayer::new().layer(inner);
                    return self.browser(web, request);
                }
                // Over HTTP/1.1 the body tonic-web decodes is read whole first: one message
                // and its frame header.
                let web = tonic_web::GrpcWebLayer::new().layer(ReadWhole {
                    inner,
                    limits: self.web.body.plus(5),
                });
                self.browser(web, request)
            }
            Route::Connect(kind) => {
                note(kind.protocol());
                let inner = self
                    .take_ready()
                    .map_response(|response| response.map(Body::new));
                let methods = self.web.connect.clone();
                self.browser(
                    connect::Connect {
                        inner,
                        methods,
                        kind,
                    },
                    request,
                )
            }
            Route::Preflight => {
                let refuse = tower::service_fn(|_: http::Request<Body>| {
                    std::future::ready(Ok::<_, S::Error>(console::plain(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "this port answers OPTIONS only as a CORS preflight\n",
                    )))
                });
                self.browser(refuse, request)
            }
            Route::Console(console) => {
                ProtocolFuture::answer(console.answer(request.method(), request.uri().path()))
            }
            Route::Oidc => {
                let oidc = self.web.oidc.clone();
                let answer = tower::service_fn(move |request: http::Request<Body>| {
                    let oidc = oidc.clone();
                    async move { Ok::<_, S::Error>(oidc.answer(request).await) }
                });
                self.browser(answer, request)
            }
            Route::Home => ProtocolFuture::answer(console::redirect("/console/")),
            Route::Refuse(why) => {
                ProtocolFuture::answer(console::plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, why))
            }
        }
    }
}

/// Reads a request's body whole before passing the call on: see `whole_body`.
#[derive(Clone)]
struct ReadWhole<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S> Service<http::Request<Body>> for ReadWhole<S>
where
    S: Service<http::Request<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limits = self.limits;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = Body::new(ReadBody::read(body, limits).await);
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

pin_project_lite::pin_project! {
    #[project = ProtocolFutureProjection]
    pub enum ProtocolFuture<F, E> {
        Grpc { #[pin] future: F },
        Other { future: BoxFuture<'static, Result<http::Response<Body>, E>> },
        Answer { response: Option<http::Response<Body>> },
    }
}

impl<F, E> ProtocolFuture<F, E> {
    fn boxed(
        future: impl Future<Output = Result<http::Response<Body>, E>> + Send + 'static,
    ) -> Self {
        Self::Other {
            future: Box::pin(future),
        }
    }

    fn answer(response: http::Response<Body>) -> Self {
        Self::Answer {
            response: Some(response),
        }
    }
}

impl<F, E, ResBody> Future for ProtocolFuture<F, E>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<ProtocolBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ProtocolFutureProjection::Grpc { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(|body| ProtocolBody::Grpc { body })))
            }
            ProtocolFutureProjection::Other { future } => {
                let response = ready!(future.as_mut().poll(cx))?;
                Poll::Ready(Ok(response.map(|body| ProtocolBody::Other { body })))
            }
            ProtocolFutureProjection::Answer { response } => Poll::Ready(Ok(response
                .take()
                .expect("a future is not polled after it is ready")
                .map(|body| ProtocolBody::Other { body }))),
        }
    }
}

pin_project_lite::pin_project! {
    /// A gRPC answer's own body, unboxed on the hot path, or any other protocol's.
    #[project = ProtocolBodyProjection]
    pub enum ProtocolBody<B> {
        Grpc { #[pin] body: B },
        Other { #[pin] body: Body },
    }
}

impl<B> http_body::Body for ProtocolBody<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        match self.project() {
            ProtocolBodyProjection::Grpc { body } => body.poll_frame(cx).map_err(Into::into),
            ProtocolBodyProjection::Other { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProtocolBody::Grpc { body } => body.is_end_stream(),
            ProtocolBody::Other { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ProtocolBody::Grpc { body } => body.size_hint(),
            ProtocolBody::Other { body } => body.size_hint(),
        }
    }
}

/// An empty answer (CORS answers a preflight request with one).
impl<B> Default for ProtocolBody<B> {
    fn default() -> Self {
        ProtocolBody::Other {
            body: Body::empty(),
        }
    }
}
