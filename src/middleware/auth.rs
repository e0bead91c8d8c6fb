//! Inside the load shedder: asks the `Authenticator` who the call comes from and passes the
//! answer on as `Authenticated` (the caller, and their token's expiry and basis) for the
//! handlers, and as the principal for
//! the access log. Bad tokens stop here with UNAUTHENTICATED; what an authenticated caller
//! may do is decided by `auth::policy` in the handlers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tower::{Layer, Service};

use super::rate_limit::refused;
use super::{Response, status_response};
use crate::auth::authenticator::{Authentication, Authenticator, Rejected};
use crate::call::CallState;
use crate::caller::Authenticated;

type Request = http::Request<tonic::body::Body>;

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

/// What becomes of a call once authentication has answered.
enum Admission {
    /// On to the handlers, with its caller.
    Pass(Request),
    /// Answered here.
    Refuse(Response),
}

/// The request as the handlers see it, with its caller; or the refusal that answers it.
fn admit(request: Request, authenticated: Result<Authenticated, Rejected>) -> Admission {
    let authenticated = match authenticated {
        Ok(authenticated) => authenticated,
        Err(Rejected::TooSoon(wait)) => return Admission::Refuse(refused(wait)),
        Err(Rejected::Denied(err)) => return Admission::Refuse(status_response(err.into())),
    };
    match CallState::of(request.extensions()) {
        Some(state) => state.set_authenticated(authenticated),
        // Without the outer layers (a service composed alone), handlers find the caller
        // anonymous.
        None => drop(authenticated),
    }
    Admission::Pass(request)
}

impl<S> Service<Request> for Auth<S>
where
    S: Service<Request, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AuthFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.authenticator.authenticate(&request) {
            Authentication::Now(authenticated) => match admit(request, authenticated) {
                Admission::Pass(request) => AuthFuture::Calling {
                    call: self.inner.call(request),
                },
                Admission::Refuse(refusal) => AuthFuture::Answered {
                    response: Some(refusal),
                },
            },
            Authentication::Later(authenticating) => {
                // The service made ready serves the call once its caller is known; a fresh
                // clone takes its place.
                let fresh = self.inner.clone();
                AuthFuture::Waiting {
                    authenticating,
                    request: Some(request),
                    ready: Some(std::mem::replace(&mut self.inner, fresh)),
                }
            }
        }
    }
}

type Authenticating = Pin<Box<dyn Future<Output = Result<Authenticated, Rejected>> + Send>>;

pin_project_lite::pin_project! {
    /// A call being authenticated, then handled; or refused.
    #[project = AuthState]
    pub enum AuthFuture<S: Service<Request>> {
        Waiting {
            authenticating: Authenticating,
            request: Option<Request>,
            ready: Option<S>,
        },
        Calling {
            #[pin]
            call: S::Future,
        },
        Answered {
            response: Option<Response>,
        },
    }
}

impl<S> Future for AuthFuture<S>
where
    S: Service<Request, Response = Response>,
{
    type Output = Result<Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                AuthState::Calling { call } => return call.poll(cx),
                AuthState::Answered { response } => match response.take() {
                    Some(response) => return Poll::Ready(Ok(response)),
                    None => panic!("AuthFuture polled after it completed"),
                },
                AuthState::Waiting {
                    authenticating,
                    request,
                    ready,
                } => {
                    let authenticated = ready!(authenticating.as_mut().poll(cx));
                    let (Some(request), Some(mut service)) = (request.take(), ready.take()) else {
                        panic!("AuthFuture polled after it completed");
                    };
                    let next = match admit(request, authenticated) {
                        Admission::Pass(request) => AuthFuture::Calling {
                            call: service.call(request),
                        },
                        Admission::Refuse(refusal) => AuthFuture::Answered {
                            response: Some(refusal),
                        },
                    };
                    self.set(next);
                }
            }
        }
    }
}
