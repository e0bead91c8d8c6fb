//! Authentication as one component: from a call's `authorization` metadata to the `Caller` it
//! stands for now. A signature is checked once per token (the verified tokens are cached;
//! expiry is checked on every call); a call whose token is not verified yet is first counted
//! against its client address, so a flood of bad tokens costs a map lookup each; and a token
//! whose subject is a stored user stands for that user as they are now, while its session is
//! open (or, without one, while it was issued after the user's sessions last ended).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;

use super::keys;
use crate::caller::{Authenticated, Caller, TokenExpiry};
use crate::domain::{KeyId, Role, ServiceKey, UserId};
use crate::error::ServiceError;
use crate::rate::{CallerKey, RateLimiter};
use crate::storage::sessions::{SessionId, TokenBasis};
use crate::storage::{Store, now_ns};
use crate::tokens::{Claims, Jwt, TokenError};

/// Calls that anyone may make without a token.
const OPEN_METHODS: [&str; 5] = [
    "/userservice.AuthService/Login",
    "/userservice.AuthService/Refresh",
    "/userservice.AuthService/StartRecovery",
    "/userservice.AuthService/CompleteRecovery",
    "/userservice.AuthService/VerifyEmail",
];

/// Tokens whose signature was already checked. Verifying a signature and parsing the claims
/// costs more than the rest of a cached GetUser.
const VERIFIED_TOKENS: usize = 10_000;

/// What a verified token says, in the form authentication uses on every call.
struct Verified {
    exp: u64,
    /// A service key's expiry, exact to the nanosecond (`exp` allows a JWT's leeway).
    until_ns: Option<i64>,
    role: Role,
    subject: Subject,
    /// What a user's token rests on beyond the user as they are now: its session open, or, without
    /// one, to be issued after the user's sessions last ended. `None` for a service.
    basis: Option<TokenBasis>,
}

enum Subject {
    /// A stored user: their current role and status decide.
    User(UserId),
    /// Shared with every `Caller` made from the token, so a call copies no name.
    Service(Arc<str>),
    /// A service key, by its id.
    Key(KeyId),
}

impl Verified {
    fn new(claims: Claims, role: Role) -> Result<Self, TokenError> {
        let (subject, basis) = match UserId::parse("sub", &claims.sub) {
            Ok(id) => {
                let basis = match &claims.sid {
                    Some(sid) => TokenBasis::Session(
                        SessionId::parse_str(sid).map_err(|_| TokenError::Malformed)?,
                    ),
                    None => TokenBasis::IssuedAt {
                        user: id,
                        iat: claims.iat,
                    },
                };
                (Subject::User(id), Some(basis))
            }
            Err(_) => (Subject::Service(claims.sub.into()), None),
        };
        Ok(Self {
            exp: claims.exp,
            until_ns: None,
            role,
            subject,
            basis,
        })
    }

    /// What a service key stands for: its role, until it expires or is revoked.
    fn key(key: &ServiceKey) -> Self {
        // Streams end when the key expires: at its expiry's second, rounded up.
        let exp = key.expires_at_ns.map_or(TokenExpiry::NEVER.0, |ns| {
            u64::try_from(ns.div_euclid(1_000_000_000) + 1).unwrap_or(0)
        });
        Self {
            exp,
            until_ns: key.expires_at_ns,
            role: key.role,
            subject: Subject::Key(key.id),
            basis: Some(TokenBasis::Key(key.id)),
        }
    }

    #[inline]
    fn expired(&self, jwt: &Jwt) -> bool {
        jwt.expired(self.exp) || self.until_ns.is_some_and(|until| until <= now_ns())
    }

    fn claimed(&self) -> Caller {
        match &self.subject {
            Subject::User(id) => Caller::User {
                id: *id,
                role: self.role,
            },
            Subject::Service(name) => Caller::Service {
                name: name.clone(),
                role: self.role,
            },
            Subject::Key(id) => Caller::Key {
                id: *id,
                role: self.role,
            },
        }
    }
}

/// Hashes a token by its length and its last 32 bytes (the signature's, which differ from
/// token to token), with foldhash; keys are still compared whole. Only tokens whose signature
/// checked out are kept, so no one can choose keys that collide.
#[derive(Clone, Default)]
struct TailHash(foldhash::fast::RandomState);

impl BuildHasher for TailHash {
    type Hasher = Tail<foldhash::fast::FoldHasher<'static>>;

    fn build_hasher(&self) -> Self::Hasher {
        Tail(self.0.build_hasher())
    }
}

struct Tail<H>(H);

impl<H: Hasher> Hasher for Tail<H> {
    fn write(&mut self, bytes: &[u8]) {
        const TAIL: usize = 32;
        self.0.write(&bytes[bytes.len().saturating_sub(TAIL)..]);
    }

    fn write_usize(&mut self, length: usize) {
        self.0.write_usize(length);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// What a call's token claims before anything is read from the database.
enum Claim {
    /// No token, or a call anyone may make.
    Anonymous,
    /// A token whose signature (or key) was checked.
    Verified(Arc<Verified>),
    /// A service key's secret not checked yet: that needs its row.
    Key(Box<[u8]>),
}

/// Authentication's answer: at once, or once the caller as they are now is read.
pub enum Authentication {
    Now(Result<Authenticated, Rejected>),
    Later(Pin<Box<dyn Future<Output = Result<Authenticated, Rejected>> + Send>>),
}

/// Why a call is not let through.
#[derive(Debug)]
pub enum Rejected {
    /// Too many calls with unverified tokens from this address: retry after this long.
    TooSoon(Duration),
    /// UNAUTHENTICATED (a bad or expired token, a user who may no longer act), or the store
    /// could not say who the user is now.
    Denied(ServiceError),
}

pub struct Authenticator {
    jwt: Arc<Jwt>,
    store: Store,
    /// Keyed by the token's bytes, so a known token is found without checking its text
    /// again, and hashed by their tail (`TailHash`): the standard SipHash of a whole token
    /// showed in the profile of every call.
    verified: Mutex<LruCache<Box<[u8]>, Arc<Verified>, TailHash>>,
    limiter: RateLimiter,
}

impl Authenticator {
    pub fn new(jwt: Arc<Jwt>, store: Store, limiter: RateLimiter) -> Self {
        let capacity = NonZeroUsize::new(VERIFIED_TOKENS).expect("non-zero");
        Self {
            jwt,
            store,
            verified: Mutex::new(LruCache::with_hasher(capacity, Default::default())),
            limiter,
        }
    }

    /// Who `request` comes from: decided at once when the cache holds the caller as they are now
    /// (almost every call), else a future that reads it and borrows nothing from the request.
    pub fn authenticate<B>(self: &Arc<Self>, request: &http::Request<B>) -> Authentication {
        let open = OPEN_METHODS.contains(&request.uri().path());
        self.authenticate_parts(
            request.headers().get(http::header::AUTHORIZATION),
            open,
            request.extensions(),
        )
    }

    /// Who a bearer credential stands for now, judged as a call bearing it would be, its
    /// unverified tokens counted against the client address in `extensions` (introspection
    /// judges tokens and its own callers this way).
    pub fn authenticate_bearer(
        self: &Arc<Self>,
        authorization: &http::HeaderValue,
        extensions: &http::Extensions,
    ) -> Authentication {
        self.authenticate_parts(Some(authorization), false, extensions)
    }

    /// `authenticate`, from the parts of a request it reads: its `authorization`, whether its
    /// method is open to anyone, and its extensions (the client address).
    #[inline]
    fn authenticate_parts(
        self: &Arc<Self>,
        authorization: Option<&http::HeaderValue>,
        open: bool,
        extensions: &http::Extensions,
    ) -> Authentication {
        let verified = match self.claimed(authorization, open, extensions) {
            Ok(Claim::Verified(verified)) => verified,
            Ok(Claim::Anonymous) => {
                return Authentication::Now(Ok(Authenticated {
                    caller: Caller::Anonymous,
                    expiry: None,
                    basis: None,
                }));
            }
            Ok(Claim::Key(token)) => {
                let this = self.clone();
                return Authentication::Later(Box::pin(async move {
                    let verified = this.verify_key(&token).await?;
                    this.standing(verified).await
                }));
            }
            Err(rejected) => return Authentication::Now(Err(rejected)),
        };
        let claimed = verified.claimed();
        let expiry = Some(TokenExpiry(verified.exp));
        let basis = verified.basis;
        if let Some(now) = super::current_now(&claimed, basis, &self.store) {
            return Authentication::Now(
                now.map(|caller| self.noted(caller, expiry, basis))
                    .map_err(Rejected::Denied),
            );
        }
        let this = self.clone();
        Authentication::Later(Box::pin(async move { this.standing(verified).await }))
    }

    /// The caller a verified token stands for now, read from the database where the caches
    /// do not know.
    async fn standing(&self, verified: Arc<Verified>) -> Result<Authenticated, Rejected> {
        let claimed = verified.claimed();
        let (expiry, basis) = (Some(TokenExpiry(verified.exp)), verified.basis);
        let caller = super::current(&claimed, basis, &self.store)
            .await
            .map_err(Rejected::Denied)?;
        Ok(self.noted(caller, expiry, basis))
    }

    /// An authenticated caller; a service key's use is recorded on the way.
    #[inline]
    fn noted(
        &self,
        caller: Caller,
        expiry: Option<TokenExpiry>,
        basis: Option<TokenBasis>,
    ) -> Authenticated {
        if let Caller::Key { id, .. } = caller {
            self.store.key_used(id);
        }
        Authenticated {
            caller,
            expiry,
            basis,
        }
    }

    /// What the request's token says, checked; `None` for a call that goes on anonymous.
    fn claimed(
        &self,
        authorization: Option<&http::HeaderValue>,
        open: bool,
        extensions: &http::Extensions,
    ) -> Result<Claim, Rejected> {
        let token = authorization.map(|value| bearer(value.as_bytes()));
        let known = match &token {
            Some(Ok(token)) => self.cached(token),
            _ => None,
        };
        if known.is_none() {
            self.admit_unverified(extensions)
                .map_err(Rejected::TooSoon)?;
        }
        if open {
            return Ok(Claim::Anonymous);
        }
        let Some(token) = token else {
            return Ok(Claim::Anonymous);
        };
        let token = token.map_err(Rejected::Denied)?;
        if known.is_none() && keys::is_key(token) {
            return Ok(Claim::Key(token.into()));
        }
        let verified = known
            .unwrap_or_else(|| self.verify(token))
            .map_err(|err| Rejected::Denied(ServiceError::Unauthenticated(err.to_string())))?;
        Ok(Claim::Verified(verified))
    }

    /// Checks a service key's secret against its stored digest, and keeps what it stands for
    /// for its next calls.
    async fn verify_key(&self, token: &[u8]) -> Result<Arc<Verified>, Rejected> {
        let invalid = || {
            Rejected::Denied(ServiceError::Unauthenticated(
                "the service key is not valid: it was revoked, or never issued".into(),
            ))
        };
        let (id, presented) = keys::parse(token).ok_or_else(invalid)?;
        let (key, stored) = self
            .store
            .key(id)
            .await
            .map_err(|err| Rejected::Denied(err.into()))?
            .ok_or_else(invalid)?;
        if !keys::same(&stored, &presented) {
            return Err(invalid());
        }
        if !key.works_at(now_ns()) {
            return Err(Rejected::Denied(ServiceError::Unauthenticated(
                "the service key has expired".into(),
            )));
        }
        let verified = Arc::new(Verified::key(&key));
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(token.into(), verified.clone());
        Ok(verified)
    }

    /// What a token already verified says: `None` when its signature has not been checked
    /// yet.
    fn cached(&self, token: &[u8]) -> Option<Result<Arc<Verified>, TokenError>> {
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let verified = cache.get(token)?.clone();
        if verified.expired(&self.jwt) {
            cache.pop(token);
            return Some(Err(TokenError::Expired));
        }
        Some(Ok(verified))
    }

    /// Counts a call whose token is not verified yet (none, malformed, new or bad) against
    /// its client address.
    fn admit_unverified(&self, extensions: &http::Extensions) -> Result<(), Duration> {
        let key = CallerKey::of(&Caller::Anonymous, extensions);
        match key {
            Some(key) => self.limiter.check(&key),
            None => Ok(()),
        }
    }

    /// Checks a token's signature and claims, and keeps what it says for its next calls.
    fn verify(&self, token: &[u8]) -> Result<Arc<Verified>, TokenError> {
        let text = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
        let (claims, role) = self.jwt.verify(text)?;
        let verified = Arc::new(Verified::new(claims, role)?);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(token.into(), verified.clone());
        Ok(verified)
    }
}

/// The token of an `authorization: Bearer <token>` value, as bytes: its text is checked
/// when its signature is.
pub fn bearer(value: &[u8]) -> Result<&[u8], ServiceError> {
    const SCHEME: &[u8] = b"bearer ";
    value
        .split_at_checked(SCHEME.len())
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(SCHEME))
        .map(|(_, token)| token.trim_ascii())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ServiceError::Unauthenticated(
                "the authorization metadata must be 'Bearer <token>'".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn a_token_is_hashed_by_its_length_and_tail_and_found_by_its_bytes() {
        use std::hash::BuildHasher as _;
        let hashes = super::TailHash::default();
        let token = b"header.payload-one.0123456789abcdef0123456789abcdef";
        let boxed: Box<[u8]> = token[..].into();
        assert_eq!(hashes.hash_one(&boxed), hashes.hash_one(&token[..]));
        // The same tail after other bytes of the same length: the same hash, other keys.
        let other = b"header.payload-two.0123456789abcdef0123456789abcdef";
        assert_eq!(hashes.hash_one(&token[..]), hashes.hash_one(&other[..]));
        let mut cache = lru::LruCache::with_hasher(
            std::num::NonZeroUsize::new(4).unwrap(),
            super::TailHash::default(),
        );
        cache.put(boxed, 1);
        assert_eq!(cache.get(&token[..]), Some(&1));
        assert_eq!(cache.get(&other[..]), None);
    }

    #[test]
    fn a_bearer_token_is_read_from_its_scheme_in_any_case() {
        for (value, token) in [
            (&b"Bearer abc.def"[..], Some(&b"abc.def"[..])),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER  abc ", Some(b"abc")),
            (b"Bearer ", None),
            (b"Bearer", None),
            (b"Basic abc", None),
            (b"Bearerabc", None),
            (b"Bearer\tabc", None),
            (b"", None),
        ] {
            assert_eq!(
                bearer(value).ok(),
                token,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
