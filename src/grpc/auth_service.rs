//! AuthService.Login: a username and password for an access token.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::caller_of;
use super::convert::{timestamp, user_to_pb};
use crate::auth::hasher::PasswordHasher;
use crate::auth::policy::{Access, Denied, authorize};
use crate::auth::second_factor::SecondFactorKeys;
use crate::caller::{Authenticated, Caller};
use crate::client_address::ClientAddress;
use crate::domain::{
    FieldViolation, Password, User, UserId, UserStatus, Username, ValidationError, Violations,
};
use crate::domain::{PasswordHash, PasswordStrength};
use crate::error::ServiceError;
use crate::pb::{self, auth_service_server::AuthService};
use crate::storage::login_limits::{AttemptKind, Charge, LoginAllowance, LoginAttempt};
use crate::storage::sessions::{NewSession, RefreshDigest, Rotation, SessionId, TokenBasis};
use crate::storage::{Store, StoreError, now_ns};
use crate::tokens::Jwt;

/// Password guessing limits, tighter than the general rate limit and shared by every replica
/// through the database (`storage::login_limits`). Each (account, client address) gets
/// `per_minute` attempts a minute; each account from all addresses together, and each
/// address against all accounts together, ten times that. So one address that guesses wrong
/// locks out only itself, never the account's owner elsewhere, while many addresses against
/// one account are still slowed to ten addresses' worth, however many replicas they spread over.
/// Recovery codes are limited apart: `recoveries_per_hour` mails to one account, ten times it
/// asked for from one address.
pub struct LoginLimits {
    allowance: LoginAllowance,
    recovery: LoginAllowance,
}

impl LoginLimits {
    pub fn new(per_minute: NonZeroU32, recoveries_per_hour: NonZeroU32) -> Self {
        Self {
            allowance: LoginAllowance::per_minute(per_minute),
            recovery: LoginAllowance::per_hour(recoveries_per_hour),
        }
    }

    pub(super) fn attempt(&self, username: &Username, address: Option<IpAddr>) -> LoginAttempt {
        LoginAttempt {
            kind: AttemptKind::Login,
            account: username.key(),
            address,
            allowance: self.allowance,
        }
    }

    /// A recovery code sent to `username`'s owner, asked for from `address`.
    pub(super) fn recovery(&self, username: &Username, address: Option<IpAddr>) -> LoginAttempt {
        LoginAttempt {
            kind: AttemptKind::Recovery,
            account: username.key(),
            address,
            allowance: self.recovery,
        }
    }
}

pub struct AuthServiceImpl {
    store: Store,
    hasher: PasswordHasher,
    jwt: Arc<Jwt>,
    limits: Arc<LoginLimits>,
    /// Checked against when the username does not exist, so a miss costs a full hash too.
    decoy: PasswordHash,
    /// How long a session (and so its refresh tokens) lasts from Login.
    session_ttl: Duration,
    /// What a new password must pass.
    strength: PasswordStrength,
    /// Second factors' keys; `None`: second factors are off.
    second_factor: Option<SecondFactorKeys>,
    /// Ends WatchDeliveries streams when the server stops.
    shutdown: Option<crate::shutdown::Shutdown>,
    /// The service's signing keys, for RotateSigningKey.
    signing_keys: Option<crate::oidc::keys::KeyRing>,
}

impl AuthServiceImpl {
    pub fn new(
        store: Store,
        hasher: PasswordHasher,
        jwt: Arc<Jwt>,
        limits: Arc<LoginLimits>,
        decoy: PasswordHash,
        session_ttl: Duration,
        strength: PasswordStrength,
    ) -> Self {
        Self {
            store,
            hasher,
            jwt,
            limits,
            decoy,
            session_ttl,
            strength,
            second_factor: None,
            shutdown: None,
            signing_keys: None,
        }
    }

    /// RotateSigningKey rotates `ring`.
    pub fn with_signing_keys(mut self, ring: crate::oidc::keys::KeyRing) -> Self {
        self.signing_keys = Some(ring);
        self
    }

    pub(super) fn signing_keys(&self) -> Option<&crate::oidc::keys::KeyRing> {
        self.signing_keys.as_ref()
    }

    /// Streams end when `shutdown` begins.
    pub fn with_shutdown(mut self, shutdown: crate::shutdown::Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    pub(super) fn shutdown(&self) -> Option<&crate::shutdown::Shutdown> {
        self.shutdown.as_ref()
    }

    /// Turns second factors on with these keys.
    pub fn with_second_factor(mut self, keys: Option<SecondFactorKeys>) -> Self {
        self.second_factor = keys;
        self
    }

    pub(super) fn second_factor(&self) -> Option<&SecondFactorKeys> {
        self.second_factor.as_ref()
    }
}

const WRONG: &str = "the username or password is wrong";

/// A new refresh token, and the digest the database keeps of it.
fn new_refresh_token() -> Result<(String, RefreshDigest), ServiceError> {
    RefreshDigest::issue().map_err(|err| ServiceError::Internal(Box::new(err)))
}

/// The digest of a refresh token as a caller sent it.
fn parse_refresh_token(raw: &str) -> Result<RefreshDigest, ServiceError> {
    let invalid = |rule: &str| ServiceError::from(ValidationError::single("refresh_token", rule));
    if raw.is_empty() {
        return Err(invalid("must not be empty"));
    }
    RefreshDigest::of_token(raw)
        .ok_or_else(|| invalid("must be a refresh token as Login or Refresh returned it"))
}

/// A password field, its violations named after the request field.
fn password_field(field: &'static str, raw: String) -> Result<Password, FieldViolation> {
    Password::parse(raw).map_err(|mut violation| {
        violation.field = field.into();
        violation
    })
}

fn seconds(ns: i64) -> u64 {
    u64::try_from(ns / 1_000_000_000).unwrap_or(0)
}

#[tonic::async_trait]
impl AuthService for AuthServiceImpl {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let address = self.address_of(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let username = violations.check(Username::parse(request.username));
        let password = violations.check(Password::parse(request.password));
        let (username, password) = violations
            .finish(|| Some((username?, password?)))
            .map_err(|invalid: ValidationError| ServiceError::from(invalid))?;
        let attempt = self.limits.attempt(&username, address);
        self.charge(&attempt).await?;

        let found = self
            .store
            .credentials(&username)
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
        if !matched && self.hasher.is_weaker(&hash) {
            // A refusal costs what the server's own hash costs, whatever is stored: a cheaper
            // imported hash would answer in a tenth of the time and name the accounts that
            // hold one.
            self.hasher
                .verify(password.clone(), self.decoy.clone())
                .await
                .map_err(ServiceError::from)?;
        }
        let user = match user {
            Some(user) if matched => user,
            _ => return Err(ServiceError::Unauthenticated(WRONG.into()).into()),
        };
        if user.status != UserStatus::Active {
            self.refund(&attempt).await;
            return Err(ServiceError::Unauthenticated(format!(
                "the account is {}",
                user.status.name()
            ))
            .into());
        }
        // A wrong or missing code keeps the attempt counted: codes are guessed under the
        // same limits as passwords.
        self.second_factor_passes(&user, &request.second_factor_code, "second_factor_code")
            .await?;
        self.refund(&attempt).await;
        if self.hasher.is_weaker(&hash) {
            self.upgrade(&user, password, hash).await;
        }
        let login = self.start_session(user).await?;
        Ok(Response::new(login))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let presented = parse_refresh_token(&request.into_inner().refresh_token)?;
        // Before the token is used up: a refresh that could not be signed would leave the
        // caller only a used token, whose next use ends the session.
        if !self.jwt.can_sign() {
            return Err(
                ServiceError::FailedPrecondition(crate::tokens::CannotSign.to_string()).into(),
            );
        }
        let (token, next) = new_refresh_token()?;
        let rotation = self
            .store
            .rotate_refresh(presented, next)
            .await
            .map_err(ServiceError::from)?;
        let (session, user_id, ends_ns) = match rotation {
            Rotation::Rotated {
                session,
                user,
                expires_at_ns,
            } => (session, user, expires_at_ns),
            Rotation::Reused { session } => {
                tracing::warn!(%session, "a refresh token was used twice: its session ended");
                return Err(ServiceError::Unauthenticated(
                    "the refresh token was already used, so its session has ended: log in again"
                        .into(),
                )
                .into());
            }
            Rotation::Inactive { user, status } => {
                tracing::info!(user_id = %user, "refused a refresh: the user may not act");
                return Err(match status {
                    Some(status) => ServiceError::Unauthenticated(format!(
                        "the account is {}: the refresh token is kept, and works again if the account is made active",
                        status.name()
                    )),
                    None => crate::auth::gone(),
                }
                .into());
            }
            Rotation::Invalid => {
                return Err(ServiceError::Unauthenticated(
                    "the refresh token is not valid: it expired, its session ended, or it was never issued"
                        .into(),
                )
                .into());
            }
        };
        let user = match self.store.get(user_id).await {
            Ok(user) => user,
            Err(StoreError::NotFound(_)) => return Err(crate::auth::gone().into()),
            Err(err) => return Err(ServiceError::from(err).into()),
        };
        crate::auth::acting_as(&user)?;
        let (access_token, expires) = self.mint(&user, session, ends_ns)?;
        tracing::info!(user_id = %user.id, %session, "refreshed a session");
        Ok(Response::new(pb::LoginResponse {
            access_token,
            expires_at: Some(timestamp(expires)),
            user: Some(user_to_pb(&user)),
            refresh_token: token,
            // Whole seconds, as `expires_at` (a token's `exp`) is: rounded down, never late.
            refresh_expires_at: Some(timestamp(ends_ns - ends_ns.rem_euclid(1_000_000_000))),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        if caller_of(&request) == Caller::Anonymous {
            return Err(ServiceError::from(Denied::NeedsToken).into());
        }
        let Some(TokenBasis::Session(session)) =
            Authenticated::of(request.extensions()).and_then(|authenticated| authenticated.basis)
        else {
            return Err(ServiceError::FailedPrecondition(
                "the token was not issued by a session (Login or Refresh): there is no session to end"
                    .into(),
            )
            .into());
        };
        self.store
            .end_session(session)
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(%session, "logged out");
        Ok(Response::new(pb::LogoutResponse {}))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn end_sessions(
        &self,
        request: Request<pb::EndSessionsRequest>,
    ) -> Result<Response<pb::EndSessionsResponse>, Status> {
        let caller = caller_of(&request);
        let raw = request.into_inner().user_id;
        let target = target_user(&caller, &raw)?;
        authorize(&caller, &Access::EndSessions { target }, false).map_err(ServiceError::from)?;
        // An unknown user is NOT_FOUND, as everywhere else.
        self.store
            .get(target)
            .await
            .map_err(|err| ServiceError::from(err).naming(&raw))?;
        let ended = self
            .store
            .end_sessions(target)
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(user_id = %target, ended, "ended every session of a user");
        Ok(Response::new(pb::EndSessionsResponse {
            ended: i64::try_from(ended).unwrap_or(i64::MAX),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = caller_of(&request);
        let address = self.address_of(&request);
        let request = request.into_inner();
        let target = target_user(&caller, &request.user_id)?;
        authorize(&caller, &Access::SetPassword { target }, false).map_err(ServiceError::from)?;
        let own = caller.user_id() == Some(target);

        let mut violations = Violations::default();
        let current = if own {
            violations.check(password_field("current_password", request.current_password))
        } else {
            None
        };
        let new = violations.check(password_field("new_password", request.new_password));
        let (current, new) = violations
            .finish(|| Some((current, new?)))
            .map_err(|invalid: ValidationError| ServiceError::from(invalid))?;

        let (user, stored) = self
            .store
            .credentials_of(target)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(|| ServiceError::NotFound(crate::text::echo(&request.user_id)))?;
        self.strength
            .check(&new, user.username.as_str(), user.email.as_str())
            .map_err(|mut violation| {
                violation.field = "new_password".into();
                ServiceError::from(ValidationError::from(violation))
            })?;
        let expected = match current {
            Some(current) => {
                // Guessing the current password is limited like guessing it at Login.
                self.reauthenticate(&user, stored.clone(), current, address)
                    .await?;
                Some(stored)
            }
            None => None,
        };
        let hash = self.hasher.hash(new).await.map_err(ServiceError::from)?;
        let set = self
            .store
            .set_password(target, expected, hash)
            .await
            .map_err(|err| ServiceError::from(err).naming(&request.user_id))?;
        if !set {
            return Err(ServiceError::Aborted(
                "the password changed while this call checked the current one: try again".into(),
            )
            .into());
        }
        tracing::info!(user_id = %target, own, "changed a password; the user's sessions ended");
        let login = if own {
            Some(self.start_session(user).await?)
        } else {
            None
        };
        Ok(Response::new(pb::ChangePasswordResponse { login }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_service_key(
        &self,
        request: Request<pb::CreateServiceKeyRequest>,
    ) -> Result<Response<pb::CreateServiceKeyResponse>, Status> {
        self.create_key(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_service_keys(
        &self,
        request: Request<pb::ListServiceKeysRequest>,
    ) -> Result<Response<pb::ListServiceKeysResponse>, Status> {
        self.list_keys(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_service_key(
        &self,
        request: Request<pb::RevokeServiceKeyRequest>,
    ) -> Result<Response<pb::RevokeServiceKeyResponse>, Status> {
        self.revoke_key(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        self.rotate(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn start_recovery(
        &self,
        request: Request<pb::StartRecoveryRequest>,
    ) -> Result<Response<pb::StartRecoveryResponse>, Status> {
        self.start_recovery(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn complete_recovery(
        &self,
        request: Request<pb::CompleteRecoveryRequest>,
    ) -> Result<Response<pb::CompleteRecoveryResponse>, Status> {
        self.complete_recovery(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn start_email_verification(
        &self,
        request: Request<pb::StartEmailVerificationRequest>,
    ) -> Result<Response<pb::StartEmailVerificationResponse>, Status> {
        self.start_email_verification(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        self.verify_email(request).await
    }

    type WatchDeliveriesStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::Delivery, Status>>;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn watch_deliveries(
        &self,
        request: Request<pb::WatchDeliveriesRequest>,
    ) -> Result<Response<Self::WatchDeliveriesStream>, Status> {
        self.watch_deliveries(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        self.enroll_totp(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        self.confirm_totp(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        self.disable_totp(request).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn clear_login_failures(
        &self,
        request: Request<pb::ClearLoginFailuresRequest>,
    ) -> Result<Response<pb::ClearLoginFailuresResponse>, Status> {
        let caller = caller_of(&request);
        let cleared = self
            .clear_login_failures_of(&caller, &request.into_inner().user_id)
            .await?;
        Ok(Response::new(cleared))
    }
}

impl AuthServiceImpl {
    pub(super) async fn clear_login_failures_of(
        &self,
        caller: &Caller,
        raw: &str,
    ) -> Result<pb::ClearLoginFailuresResponse, ServiceError> {
        if *caller == Caller::Anonymous {
            return Err(Denied::NeedsToken.into());
        }
        authorize(caller, &Access::ClearLoginFailures, false)?;
        let target = UserId::parse_lookup("user_id", raw).map_err(ValidationError::from)?;
        let user = self
            .store
            .get(target)
            .await
            .map_err(|err| ServiceError::from(err).naming(raw))?;
        let failures = self
            .store
            .clear_login_failures(&user.username.key())
            .await?;
        tracing::info!(user_id = %target, failures, "cleared a user's login failures");
        Ok(pb::ClearLoginFailuresResponse {
            failures: i64::try_from(failures).unwrap_or(i64::MAX),
        })
    }
}

/// The user a sessions or password call is about: the one named, or the caller themselves
/// when none is.
pub(super) fn target_user(caller: &Caller, raw: &str) -> Result<UserId, ServiceError> {
    if *caller == Caller::Anonymous {
        return Err(Denied::NeedsToken.into());
    }
    if raw.is_empty() {
        return caller.user_id().ok_or_else(|| {
            ValidationError::single("user_id", "must name a user when the caller is a service")
                .into()
        });
    }
    UserId::parse_lookup("user_id", raw)
        .map_err(|violation| ValidationError::from(violation).into())
}

impl AuthServiceImpl {
    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub(super) fn strength(&self) -> &PasswordStrength {
        &self.strength
    }

    pub(super) fn limits(&self) -> &LoginLimits {
        &self.limits
    }

    /// The login limits, for work that outlives the call.
    pub(super) fn limits_handle(&self) -> Arc<LoginLimits> {
        self.limits.clone()
    }

    /// Checks a signed-in user's password again, for what a stolen access token alone must
    /// not do: charged to the login limits as a Login is, and given back when right.
    pub(super) async fn reauthenticate(
        &self,
        user: &User,
        stored: PasswordHash,
        password: Password,
        address: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let attempt = self.limits.attempt(&user.username, address);
        self.charge(&attempt).await?;
        if !self.hasher.verify(password, stored).await? {
            return Err(ServiceError::Unauthenticated(
                "the current password is wrong".into(),
            ));
        }
        self.refund(&attempt).await;
        Ok(())
    }

    /// Charges a password check to the login limits: refused past them, with the wait.
    pub(super) async fn charge(&self, attempt: &LoginAttempt) -> Result<(), ServiceError> {
        match self.store.charge_login(attempt).await? {
            Charge::Admitted => Ok(()),
            Charge::Refused { retry_after } => Err(ServiceError::TooMany {
                what: "too many login attempts",
                retry_after,
            }),
        }
    }

    /// Gives a right password's charge back. A failure leaves the attempt counted (the
    /// safe side) and does not fail the call.
    pub(super) async fn refund(&self, attempt: &LoginAttempt) {
        if let Err(err) = self.store.refund_login(attempt).await {
            tracing::warn!(error = %crate::text::chain(&err), "giving back a login attempt failed");
        }
    }

    pub(super) fn address_of<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        ClientAddress::key_of(request.extensions())
    }

    /// An access token of `session` for `user`, never outliving the session.
    fn mint(
        &self,
        user: &User,
        session: SessionId,
        ends_ns: i64,
    ) -> Result<(String, i64), ServiceError> {
        let (token, expires) = self
            .jwt
            .mint_for_session(
                &user.id.to_string(),
                user.role,
                &session.to_string(),
                seconds(ends_ns),
            )
            .map_err(|err| ServiceError::FailedPrecondition(err.to_string()))?;
        let expires_ns = i64::try_from(expires).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000;
        Ok((token, expires_ns))
    }

    /// Starts a session for `user`: its first access and refresh tokens.
    async fn start_session(&self, user: User) -> Result<pb::LoginResponse, ServiceError> {
        if !self.jwt.can_sign() {
            return Err(ServiceError::FailedPrecondition(
                crate::tokens::CannotSign.to_string(),
            ));
        }
        let (refresh_token, refresh) = new_refresh_token()?;
        let created_at_ns = now_ns();
        let ttl = i64::try_from(self.session_ttl.as_nanos()).unwrap_or(i64::MAX);
        let session = NewSession {
            id: SessionId::now_v7(),
            user: user.id,
            refresh,
            created_at_ns,
            expires_at_ns: created_at_ns.saturating_add(ttl),
        };
        let (id, ends_ns) = (session.id, session.expires_at_ns);
        self.store.start_session(session).await?;
        let (access_token, expires) = self.mint(&user, id, ends_ns)?;
        tracing::info!(user_id = %user.id, session = %id, "logged in");
        Ok(pb::LoginResponse {
            access_token,
            expires_at: Some(timestamp(expires)),
            user: Some(user_to_pb(&user)),
            refresh_token,
            // Whole seconds, as `expires_at` (a token's `exp`) is: rounded down, never late.
            refresh_expires_at: Some(timestamp(ends_ns - ends_ns.rem_euclid(1_000_000_000))),
        })
    }

    /// Rehashes a password whose stored hash is weaker than this server's settings, now that
    /// the login has the password, and stores it in place of the old one. A failure leaves the
    /// old hash (which still verifies) and does not fail the login.
    async fn upgrade(&self, user: &User, password: Password, old: PasswordHash) {
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
                tracing::warn!(user_id = %user.id, error = %crate::text::chain(&err), "storing an upgraded password hash failed")
            }
        }
    }
}
