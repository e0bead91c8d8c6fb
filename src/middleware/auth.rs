//! Inside the load shedder: asks the `Authenticator` who the call comes from and passes the
//! answer on as a `Caller` (and a `TokenExpiry`) for the handlers, and as the principal for
//! the access log. Bad tokens stop here with UNAUTHENTICATED; what an authenticated caller
//! may do is decided by `auth::policy` in the handlers.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::access_log::PrincipalSlot;
use super::rate_limit::refused;
use super::{BoxFuture, Response, status_response};
use crate::auth::authenticator::{Authenticator, Rejected};

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> Service<http::Request<tonic::body::Body>> for Auth<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let authenticated = self.authenticator.authenticate(&request);
        // The service made ready is the one that serves the call, once its caller is known;
        // a fresh clone takes its place.
        let inner = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, inner);
        Box::pin(async move {
            let authenticated = match authenticated.await {
                Ok(authenticated) => authenticated,
                Err(Rejected::TooSoon(wait)) => return Ok(refused(wait)),
                Err(Rejected::Denied(err)) => return Ok(status_response(err.into())),
            };
            if let Some(expiry) = authenticated.expiry {
                request.extensions_mut().insert(expiry);
            }
            if let Some(slot) = request.extensions().get::<PrincipalSlot>() {
                slot.set(&authenticated.caller);
            }
            request.extensions_mut().insert(authenticated.caller);
            ready.call(request).await
        })
    }
}
