//! Second layer: turns the bearer token into a `Caller` for the handlers (and a principal for
//! the access log and the rate limiter). Bad tokens stop here with UNAUTHENTICATED; what an
//! authenticated caller may do is decided by `auth::policy` in the handlers.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service, ServiceExt};

use super::access_log::PrincipalSlot;
use super::rate_limit::{RateLimitLayer, caller_key, refused};
use super::{BoxFuture, Response, is_infrastructure, status_response};
use crate::auth::{Caller, TokenExpiry};
use lru::LruCache;
use std::net::IpAddr;

use crate::contract::tokens::{Claims, Jwt, TokenError};
use crate::domain::{Role, UserId};
use crate::storage::Store;

/// Calls that anyone may make without a token.
const OPEN_METHODS: [&str; 1] = ["/userservice.AuthService/Login"];

/// Tokens whose signature was already checked. Verifying a signature and parsing the claims
/// costs more than the rest of a cached GetUser; expiry is still checked on every call.
const VERIFIED_TOKENS: usize = 10_000;

/// What a verified token says, in the form authentication uses on every call.
struct Verified {
    exp: u64,
    role: Role,
    subject: Subject,
}

enum Subject {
    /// A stored user: their current role and status decide.
    User(UserId),
    Service(String),
}

impl Verified {
    fn new(claims: Claims, role: Role) -> Self {
        let subject = match UserId::parse("sub", &claims.sub) {
            Ok(id) => Subject::User(id),
            Err(_) => Subject::Service(claims.sub),
        };
        Self {
            exp: claims.exp,
            role,
            subject,
        }
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    jwt: Arc<Jwt>,
    store: Store,
    verified: Arc<Mutex<LruCache<String, Arc<Verified>>>>,
    /// Counts calls whose token is not already verified, per client address.
    rate: RateLimitLayer,
    trusted_proxies: Arc<[IpAddr]>,
}

impl AuthLayer {
    pub fn new(
        jwt: Arc<Jwt>,
        store: Store,
        rate: RateLimitLayer,
        trusted_proxies: Arc<[IpAddr]>,
    ) -> Self {
        let capacity = NonZeroUsize::new(VERIFIED_TOKENS).expect("non-zero");
        Self {
            jwt,
            store,
            verified: Arc::new(Mutex::new(LruCache::new(capacity))),
            rate,
            trusted_proxies,
        }
    }

    /// What a token already verified says: `None` when its signature has not been checked
    /// yet (the cache is looked at once a call).
    fn cached(&self, token: &str) -> Option<Result<Arc<Verified>, TokenError>> {
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let verified = cache.get(token)?.clone();
        if self.jwt.expired(verified.exp) {
            cache.pop(token);
            return Some(Err(TokenError::Expired));
        }
        Some(Ok(verified))
    }

    /// A call whose token is not already verified (none, malformed, new or bad) is counted
    /// against its client address first, so a flood of bad tokens is refused for the cost of
    /// a map lookup, before any signature is checked or any line but the access log's written.
    fn admit_unverified(
        &self,
        request: &http::Request<impl Sized>,
    ) -> Result<(), std::time::Duration> {
        let key = caller_key(
            &Caller::Anonymous,
            request.extensions(),
            request.headers(),
            &self.trusted_proxies,
        );
        match key {
            Some(key) => self.rate.check(&key),
            None => Ok(()),
        }
    }

    /// Checks a token's signature and claims, and keeps what it says for its next calls.
    fn verify(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        let (claims, role) = self.jwt.verify(token)?;
        let verified = Arc::new(Verified::new(claims, role));
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(token.to_owned(), verified.clone());
        Ok(verified)
    }
}

/// The token of an `authorization: Bearer <token>` value.
pub fn bearer(value: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated("the authorization metadata must be 'Bearer <token>'")
        })
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl AuthLayer {
    /// Who the `authorization` value names. A token whose subject is a stored user stands for
    /// that user as they are now: a suspended, inactive or deleted user's token stops working.
    /// `known` is what the cache of verified tokens said of it, if it held the token.
    async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        known: Option<Result<Arc<Verified>, TokenError>>,
    ) -> Result<(Caller, Option<TokenExpiry>), Status> {
        let Some(value) = authorization else {
            return Ok((Caller::Anonymous, None));
        };
        let token = bearer(value)?;
        let verified = known
            .unwrap_or_else(|| self.verify(token))
            .map_err(|err| Status::unauthenticated(err.to_string()))?;
        let claimed = match &verified.subject {
            Subject::User(id) => Caller::User {
                id: *id,
                role: verified.role,
            },
            Subject::Service(name) => Caller::Service {
                name: name.clone(),
                role: verified.role,
            },
        };
        let caller = crate::auth::current(&claimed, &self.store).await?;
        Ok((caller, Some(TokenExpiry(verified.exp))))
    }
}

impl<S, B> Service<http::Request<B>> for Auth<S>
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
        // Readiness is checked on the clone that serves each call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let path = request.uri().path();
        if is_infrastructure(path) {
            request.extensions_mut().insert(Caller::Anonymous);
            return Box::pin(inner.oneshot(request));
        }
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes().to_vec());
        let known = authorization
            .as_deref()
            .and_then(|value| bearer(value).ok())
            .and_then(|token| self.layer.cached(token));
        if known.is_none()
            && let Err(wait) = self.layer.admit_unverified(&request)
        {
            return Box::pin(std::future::ready(Ok(refused(wait))));
        }
        if OPEN_METHODS.contains(&path) {
            request.extensions_mut().insert(Caller::Anonymous);
            return Box::pin(inner.oneshot(request));
        }
        let layer = self.layer.clone();
        Box::pin(async move {
            let authenticated = layer.authenticate(authorization.as_deref(), known).await;
            let (caller, expiry) = match authenticated {
                Ok(found) => found,
                Err(status) => return Ok(status_response(status)),
            };
            if let Some(expiry) = expiry {
                request.extensions_mut().insert(expiry);
            }
            if let (Some(slot), Some(principal)) = (
                request.extensions().get::<PrincipalSlot>(),
                caller.principal(),
            ) {
                slot.set(principal);
            }
            request.extensions_mut().insert(caller);
            inner.oneshot(request).await
        })
    }
}
