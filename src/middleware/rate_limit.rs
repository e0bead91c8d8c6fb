//! Inside authentication: tower_governor's rate limit, keyed by the authenticated caller
//! (`rate::CallerKey`). A refusal is RESOURCE_EXHAUSTED with `retry-after`. Anonymous calls
//! pass: authentication already counted them by address, before any signature check.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use governor::middleware::NoOpMiddleware;
use tonic::Status;
use tower::{Layer, Service};
use tower_governor::GovernorError;
use tower_governor::governor::Governor;

use super::{Response, refusal_response, status_response};
use crate::caller::{Authenticated, Caller};
use crate::rate::{Config, KeyOfCall};

/// The limit's configuration: the limiter `rate::RateLimiter` shares with the rest of the
/// server. Where the limit is off, `startup` leaves the layer out.
#[derive(Clone)]
pub struct RateLimitLayer {
    config: Arc<Config>,
}

impl RateLimitLayer {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }
}

/// RESOURCE_EXHAUSTED, with `retry-after` in whole seconds (at least one: never tell a client
/// to retry at once).
pub(super) fn refused(wait: Duration) -> Response {
    let wait_time = crate::error::retry_after_secs(wait);
    let mut response = refusal_response(
        Status::resource_exhausted(format!("rate limit exceeded: retry after {wait_time} s")),
        "rate_limit",
    );
    response
        .headers_mut()
        .insert("retry-after", http::HeaderValue::from(wait_time));
    response
}

fn refusal(error: GovernorError) -> Response {
    match error {
        GovernorError::TooManyRequests { wait_time, headers } => {
            let mut response = refused(Duration::from_secs(wait_time));
            if let Some(headers) = headers {
                let retry_after = response.headers_mut().remove("retry-after");
                response.headers_mut().extend(headers);
                if let Some(ours) = retry_after {
                    response.headers_mut().insert("retry-after", ours);
                }
            }
            response
        }
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => {
            tracing::error!(?error, "the rate limiter could not key a call");
            status_response(Status::internal("internal error"))
        }
    }
}

impl<S: Clone> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited = Governor::new(inner.clone(), &self.config).error_handler(refusal);
        RateLimit { limited, inner }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    limited: Governor<KeyOfCall, NoOpMiddleware, S, tonic::body::Body>,
    inner: S,
}

impl<S> Service<http::Request<tonic::body::Body>> for RateLimit<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<tower_governor::ResponseFuture<S::Future, tonic::body::Body>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A call takes either path, so both must be ready.
        if self.limited.poll_ready(cx)?.is_pending() {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let anonymous = *Authenticated::caller_of(request.extensions()) == Caller::Anonymous;
        if anonymous {
            Either::Right(self.inner.call(request))
        } else {
            Either::Left(self.limited.call(request))
        }
    }
}
