//! AuthService.Login: a username and password for an access token.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::{Request, Response, Status};

use super::convert::{timestamp, user_to_pb};
use crate::auth::hasher::PasswordHasher;
use crate::client_address::{address_key, client_ip};
use crate::contract::tokens::Jwt;
use crate::domain::PasswordHash;
use crate::domain::{Password, UserStatus, Username, ValidationError, Violations};
use crate::error::ServiceError;
use crate::pb::{self, auth_service_server::AuthService};
use crate::storage::Store;

/// How many times an address's allowance one username gets from all addresses together.
pub const USERNAME_ALLOWANCE: u32 = 10;

/// Password guessing limits, tighter than the general rate limit. Each client address gets
/// `per_minute` attempts a minute, whatever usernames it tries; each username gets ten times
/// that from all addresses together. So one address that guesses wrong locks out only
/// itself, never the account's owner elsewhere, while many addresses against one account are
/// still slowed to ten addresses' worth.
pub struct LoginLimits {
    by_username: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpAddr>,
}

impl LoginLimits {
    /// `per_minute` attempts a minute sustained per address, in bursts of at most that many.
    pub fn new(per_minute: NonZeroU32, trusted_proxies: Vec<IpAddr>) -> Self {
        let per_username = per_minute
            .saturating_mul(NonZeroU32::new(USERNAME_ALLOWANCE).expect("a non-zero allowance"));
        Self {
            by_username: RateLimiter::keyed(Quota::per_minute(per_username)),
            by_address: RateLimiter::keyed(Quota::per_minute(per_minute)),
            trusted_proxies,
        }
    }

    fn check(&self, username: &str, address: Option<IpAddr>) -> Result<(), ServiceError> {
        let refused = |wait: std::time::Duration| {
            ServiceError::ResourceExhausted(format!(
                "too many login attempts: retry in {} s",
                wait.as_secs().max(1)
            ))
        };
        let now = DefaultClock::default().now();
        // The address first: an address past its allowance does not use up the username's.
        if let Some(address) = address {
            self.by_address
                .check_key(&address)
                .map_err(|not_until| refused(not_until.wait_time_from(now)))?;
        }
        self.by_username
            .check_key(&username.to_ascii_lowercase())
            .map_err(|not_until| refused(not_until.wait_time_from(now)))?;
        Ok(())
    }

    /// Forgets keys whose limit has fully recovered, so the maps stay bounded.
    pub fn forget_idle_keys(&self) {
        self.by_username.retain_recent();
        self.by_address.retain_recent();
        self.by_username.shrink_to_fit();
        self.by_address.shrink_to_fit();
    }
}

pub struct AuthServiceImpl {
    store: Store,
    hasher: PasswordHasher,
    jwt: Arc<Jwt>,
    limits: Arc<LoginLimits>,
    /// Checked against when the username does not exist, so a miss costs a full hash too.
    decoy: PasswordHash,
}

impl AuthServiceImpl {
    pub fn new(
        store: Store,
        hasher: PasswordHasher,
        jwt: Arc<Jwt>,
        limits: Arc<LoginLimits>,
        decoy: PasswordHash,
    ) -> Self {
        Self {
            store,
            hasher,
            jwt,
            limits,
            decoy,
        }
    }
}

const WRONG: &str = "the username or password is wrong";

#[tonic::async_trait]
impl AuthService for AuthServiceImpl {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let address = client_ip(request.extensions(), &headers, &self.limits.trusted_proxies)
            .map(address_key);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let username = violations.check(Username::parse(request.username));
        let password = violations.check(Password::parse(request.password));
        let (username, password) = violations
            .finish(|| Some((username?, password?)))
            .map_err(|invalid: ValidationError| ServiceError::from(invalid))?;
        self.limits.check(username.as_str(), address)?;

        let found = self
            .store
            .credentials(username.as_str().to_owned())
            .await
            .map_err(ServiceError::from)?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, self.decoy.clone()),
        };
        let matched = self
            .hasher
            .verify(password.clone(), hash.clone())
            .await
            .map_err(ServiceError::from)?;
        let user = match user {
            Some(user) if matched => user,
            _ => return Err(ServiceError::Unauthenticated(WRONG.into()).into()),
        };
        if user.status != UserStatus::Active {
            return Err(ServiceError::Unauthenticated(format!(
                "the account is {}",
                user.status.name()
            ))
            .into());
        }
        if self.hasher.is_weaker(&hash) {
            self.upgrade(&user, password, hash).await;
        }
        let (token, expires) = self
            .jwt
            .mint(&user.id.to_string(), user.role, None)
            .map_err(|err| ServiceError::FailedPrecondition(err.to_string()))?;
        tracing::info!(user_id = %user.id, "logged in");
        let expires_ns = i64::try_from(expires).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000;
        Ok(Response::new(pb::LoginResponse {
            access_token: token,
            expires_at: Some(timestamp(expires_ns)),
            user: Some(user_to_pb(user)),
        }))
    }
}

impl AuthServiceImpl {
    /// Rehashes a password whose stored hash is weaker than this server's settings, now that
    /// the login has the password, and stores it in place of the old one. A failure leaves the
    /// old hash (which still verifies) and does not fail the login.
    async fn upgrade(&self, user: &crate::domain::User, password: Password, old: PasswordHash) {
        let upgraded = match self.hasher.hash(password).await {
            Ok(new) => self.store.replace_password_hash(user.id, old, new).await,
            Err(err) => {
                tracing::warn!(user_id = %user.id, error = %err, "rehashing a weak password hash failed");
                return;
            }
        };
        match upgraded {
            Ok(true) => tracing::info!(user_id = %user.id, "upgraded a weak password hash"),
            // Changed meanwhile: what is stored now was not made from this password.
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(user_id = %user.id, error = %crate::error::chain(&err), "storing an upgraded password hash failed")
            }
        }
    }
}
