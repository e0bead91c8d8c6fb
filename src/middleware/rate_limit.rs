//! Third layer: tower_governor's rate limit, keyed by the authenticated principal, or by the
//! client IP for anonymous calls. A refusal is RESOURCE_EXHAUSTED with `retry-after`.
//! Health checks and reflection are never limited.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use tonic::Status;
use tower::{Layer, Service, ServiceExt};
use tower_governor::GovernorError;
use tower_governor::governor::{Governor, GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use super::{BoxFuture, Response, is_infrastructure, refusal_response, status_response};
use crate::auth::Caller;
use crate::client_address::{address_key, client_ip};

/// The rate limiter's key: `principal:<who>` for authenticated calls, `ip:<addr>` otherwise.
#[derive(Clone)]
pub struct CallerKey {
    trusted_proxies: Arc<[IpAddr]>,
}

impl KeyExtractor for CallerKey {
    type Key = String;

    fn extract<T>(&self, request: &http::Request<T>) -> Result<String, GovernorError> {
        let caller = request.extensions().get::<Caller>();
        caller_key(
            caller.unwrap_or(&Caller::Anonymous),
            request.extensions(),
            request.headers(),
            &self.trusted_proxies,
        )
        .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// Whom a limit counts a call against: `principal:<who>` for an authenticated caller,
/// `ip:<address>` (an IPv6 /64) otherwise.
pub fn caller_key(
    caller: &Caller,
    extensions: &http::Extensions,
    headers: &http::HeaderMap,
    trusted_proxies: &[IpAddr],
) -> Option<String> {
    if let Some(principal) = caller.principal() {
        return Some(format!("principal:{principal}"));
    }
    client_ip(extensions, headers, trusted_proxies).map(|ip| format!("ip:{}", address_key(ip)))
}

type Config = GovernorConfig<CallerKey, NoOpMiddleware>;

#[derive(Clone)]
pub struct RateLimitLayer {
    config: Option<Arc<Config>>,
}

impl RateLimitLayer {
    /// `per_second` calls per second sustained, bursts of `burst`; `per_second == 0` is off.
    pub fn new(per_second: u32, burst: u32, trusted_proxies: Vec<IpAddr>) -> Self {
        let config = (per_second > 0).then(|| {
            let period = Duration::from_nanos(1_000_000_000 / u64::from(per_second));
            let config = GovernorConfigBuilder::default()
                .key_extractor(CallerKey {
                    trusted_proxies: trusted_proxies.into(),
                })
                .period(period)
                .burst_size(burst.max(1))
                .finish()
                .expect("a non-zero period and burst make a valid rate limit");
            Arc::new(config)
        });
        Self { config }
    }

    /// Counts one call (a SyncUsers message, say) against `key`; refused with how long to wait.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        config
            .limiter()
            .check_key(&key.to_owned())
            .map_err(|not_until| {
                use governor::clock::{Clock, DefaultClock};
                not_until.wait_time_from(DefaultClock::default().now())
            })
    }

    /// Drops the state of keys that are back to a full burst, so the key map stays bounded.
    pub fn forget_idle_keys(&self) {
        if let Some(config) = &self.config {
            config.limiter().retain_recent();
            config.limiter().shrink_to_fit();
        }
    }
}

/// RESOURCE_EXHAUSTED, with `retry-after` in whole seconds (at least one: never tell a client
/// to retry at once).
pub(super) fn refused(wait: Duration) -> Response {
    let wait_time = wait.as_secs().max(1);
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

impl<S> Layer<S> for RateLimitLayer
where
    S: Clone,
{
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited = self
            .config
            .as_ref()
            .map(|config| Governor::new(inner.clone(), config).error_handler(refusal));
        RateLimit { limited, inner }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    limited: Option<Governor<CallerKey, NoOpMiddleware, S, tonic::body::Body>>,
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RateLimit<S>
where
    S: Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Anonymous calls were counted by address in authentication, before any signature.
        let anonymous = matches!(
            request.extensions().get::<Caller>(),
            None | Some(Caller::Anonymous)
        );
        match &self.limited {
            Some(limited) if !anonymous && !is_infrastructure(request.uri().path()) => {
                Box::pin(limited.clone().oneshot(request))
            }
            _ => Box::pin(self.inner.clone().oneshot(request)),
        }
    }
}
