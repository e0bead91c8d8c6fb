//! AuthService's account recovery and email verification: single-use codes sent through the
//! team's own mailer, which reads them from WatchDeliveries.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth_service::{AuthServiceImpl, target_user};
use super::caller_of;
use super::convert::{timestamp, user_to_pb};
use crate::auth::policy::{Access, authorize};
use crate::auth::second_factor::{normalized, random_code};
use crate::caller::Caller;
use crate::domain::{
    Actor, Email, FieldViolation, Password, Role, User, UserId, UserPatch, UserStatus, Username,
    ValidationError,
};
use crate::error::ServiceError;
use crate::pb;
use crate::storage::login_limits::Charge;
use crate::storage::one_time_codes::{CodeDigest, Delivery, IssuedCode, Purpose, Redeemed};
use crate::storage::{Store, UserKey, now_ns};

/// How long a recovery code works.
pub const RECOVERY_TTL: Duration = Duration::from_secs(15 * 60);
/// How long an email verification code works.
pub const VERIFICATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Characters of a code, without its dash: 10 of 32 letters and digits (50 bits).
const CODE_CHARS: usize = 10;
/// Deliveries read from storage at once by a watch.
const DELIVERY_BATCH: i64 = 100;
/// How often a caught-up WatchDeliveries looks for new deliveries.
const DELIVERY_POLL: Duration = Duration::from_millis(200);

const WRONG_CODE: &str = "the code is wrong, used or expired: ask for a new one";

/// A code's digest for `user`: the code as typed, any case, dashes and spaces ignored.
fn digest(user: UserId, code: &str) -> CodeDigest {
    let mut hasher = Sha256::new();
    hasher.update(user.as_uuid().as_bytes());
    for byte in normalized(code) {
        hasher.update([byte]);
    }
    CodeDigest(hasher.finalize().into())
}

/// A username or an email, as `login` fields take them.
fn parse_login(raw: String) -> Result<UserKey, FieldViolation> {
    let named = |mut violation: FieldViolation| {
        violation.field = "login".into();
        violation.description =
            format!("must be a username or an email: {}", violation.description);
        violation
    };
    if raw.contains('@') {
        Email::parse(raw).map(UserKey::Email).map_err(named)
    } else {
        Username::parse(raw).map(UserKey::Username).map_err(named)
    }
}

fn code_field(raw: &str) -> Result<(), ServiceError> {
    let chars = normalized(raw).count();
    if chars == CODE_CHARS && raw.is_ascii() {
        Ok(())
    } else {
        Err(ValidationError::single("code", "must be the code that was sent (xxxxx-xxxxx)").into())
    }
}

fn expires_at(ttl: Duration) -> i64 {
    now_ns().saturating_add(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX))
}

/// Resolves once the server begins to stop; never without a shutdown signal.
async fn stopping(shutdown: &mut Option<crate::shutdown::Shutdown>) {
    match shutdown {
        Some(shutdown) => shutdown.triggered().await,
        None => std::future::pending().await,
    }
}

/// A delivery stream's last word when the server stops.
fn stopped() -> Status {
    ServiceError::ShuttingDown(
        "the server is stopping: resume after the last revision handled".into(),
    )
    .into()
}

pub fn delivery_to_pb(delivery: Delivery) -> pb::Delivery {
    let purpose = match delivery.purpose {
        Purpose::Recovery => pb::DeliveryPurpose::Recovery,
        Purpose::Verification => pb::DeliveryPurpose::Verification,
        Purpose::SecondFactorEnabled => pb::DeliveryPurpose::SecondFactorEnabled,
        Purpose::SecondFactorDisabled => pb::DeliveryPurpose::SecondFactorDisabled,
        Purpose::PasswordRecovered => pb::DeliveryPurpose::PasswordRecovered,
    };
    pb::Delivery {
        revision: delivery.revision,
        purpose: purpose as i32,
        user_id: delivery.user.to_string(),
        username: delivery.username,
        email: delivery.email,
        code: delivery.code,
        expires_at: Some(timestamp(delivery.expires_at_ns)),
    }
}

/// How long a notice waits in the outbox for the mailer.
const NOTICE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Queues a notice (no code) to `user`'s email: the delivery's revision.
async fn queue_notice(store: &Store, user: &User, purpose: Purpose) -> Result<i64, ServiceError> {
    let notice = IssuedCode {
        user: user.id,
        purpose,
        digest: CodeDigest([0; 32]),
        email: user.email.as_str().to_owned(),
        username: user.username.as_str().to_owned(),
        code: String::new(),
        expires_at_ns: expires_at(NOTICE_TTL),
    };
    Ok(store.issue_code(notice).await?)
}

/// Issues a code for `user` and queues its delivery: the delivery's revision.
async fn issue(
    store: &Store,
    user: &User,
    purpose: Purpose,
    ttl: Duration,
) -> Result<i64, ServiceError> {
    let code = random_code(CODE_CHARS, CODE_CHARS / 2)
        .map_err(|err| ServiceError::Internal(Box::new(err)))?;
    let issued = IssuedCode {
        user: user.id,
        purpose,
        digest: digest(user.id, &code),
        email: user.email.as_str().to_owned(),
        username: user.username.as_str().to_owned(),
        code,
        expires_at_ns: expires_at(ttl),
    };
    Ok(store.issue_code(issued).await?)
}

impl AuthServiceImpl {
    /// Tells `user`'s owner, through the mailer's outbox, of a change to their account's
    /// sign-in. A failure is logged and does not undo the change.
    pub(super) async fn notify(&self, user: UserId, purpose: Purpose) {
        let queued = match self.store().get(user).await {
            Ok(found) => queue_notice(self.store(), &found, purpose).await,
            Err(err) => Err(err.into()),
        };
        match queued {
            Ok(revision) => tracing::info!(user_id = %user, revision, ?purpose, "queued a notice"),
            Err(err) => {
                tracing::error!(user_id = %user, ?purpose, error = %err, "queueing a notice to the owner failed")
            }
        }
    }

    /// The user `login` names and whether `code` is their pending one for `purpose`; a login
    /// that names no one gets the same refusal as a wrong code, after the same work (a code
    /// is presented for a user id no one has), so the time taken does not tell either.
    async fn redeemed(
        &self,
        login: UserKey,
        purpose: Purpose,
        code: &str,
    ) -> Result<(User, String), ServiceError> {
        let user = self.store().find(login).await?;
        let id = user
            .as_ref()
            .map_or_else(|| UserId::from_uuid(uuid::Uuid::nil()), |user| user.id);
        let redeemed = self
            .store()
            .redeem_code(id, purpose, digest(id, code))
            .await?;
        match (user, redeemed) {
            (Some(user), Redeemed::Accepted { email }) => Ok((user, email)),
            _ => Err(ServiceError::Unauthenticated(WRONG_CODE.into())),
        }
    }

    pub(super) async fn start_recovery(
        &self,
        request: Request<pb::StartRecoveryRequest>,
    ) -> Result<Response<pb::StartRecoveryResponse>, Status> {
        let address = self.address_of(&request);
        let login = parse_login(request.into_inner().login)
            .map_err(|violation| ServiceError::from(ValidationError::from(violation)))?;
        // The answer never waits on whether the user exists, nor on the limits: the lookup,
        // the limits and the code come after it, so every request is answered alike.
        let store = self.store().clone();
        let limits = self.limits_handle();
        tokio::spawn(async move {
            let user = match store.find(login).await {
                Ok(Some(user)) if user.status == UserStatus::Active => user,
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(error = %crate::text::chain(&err), "looking up a recovery's user failed");
                    return;
                }
            };
            match store
                .charge_login(&limits.recovery(&user.username, address))
                .await
            {
                Ok(Charge::Admitted) => {}
                Ok(Charge::Refused { retry_after }) => {
                    tracing::info!(user_id = %user.id, ?retry_after, "sent no recovery code: past the limit for this account or address");
                    return;
                }
                Err(err) => {
                    tracing::warn!(user_id = %user.id, error = %crate::text::chain(&err), "charging a recovery to its limits failed: sent no code");
                    return;
                }
            }
            match issue(&store, &user, Purpose::Recovery, RECOVERY_TTL).await {
                Ok(revision) => {
                    tracing::info!(user_id = %user.id, revision, "queued a recovery code")
                }
                Err(err) => {
                    tracing::warn!(user_id = %user.id, error = %err, "queueing a recovery code failed")
                }
            }
        });
        Ok(Response::new(pb::StartRecoveryResponse {}))
    }

    pub(super) async fn complete_recovery(
        &self,
        request: Request<pb::CompleteRecoveryRequest>,
    ) -> Result<Response<pb::CompleteRecoveryResponse>, Status> {
        let request = request.into_inner();
        let login_text = request.login.clone();
        let login = parse_login(request.login)
            .map_err(|violation| ServiceError::from(ValidationError::from(violation)))?;
        code_field(&request.code)?;
        let new = Password::parse(request.new_password).map_err(|mut violation| {
            violation.field = "new_password".into();
            ServiceError::from(ValidationError::from(violation))
        })?;
        // Checked against what the caller typed before anything is looked up, so a refusal
        // says nothing of who exists.
        self.strength()
            .check(&new, &login_text, &login_text)
            .map_err(|mut violation| {
                violation.field = "new_password".into();
                ServiceError::from(ValidationError::from(violation))
            })?;
        let (user, _) = self
            .redeemed(login, Purpose::Recovery, &request.code)
            .await?;
        if user.status != UserStatus::Active {
            return Err(ServiceError::Unauthenticated(WRONG_CODE.into()).into());
        }
        let hash = self.hasher().hash(new).await.map_err(ServiceError::from)?;
        self.store()
            .set_password(user.id, None, hash)
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(user_id = %user.id, "recovered an account: a new password, every session ended");
        self.notify(user.id, Purpose::PasswordRecovered).await;
        // Recovery leaves a second factor in place (email alone must not remove it); the
        // owner is told, so one they did not set up is taken to an administrator.
        let second_factor_enabled = self
            .store()
            .second_factor(user.id)
            .await
            .map_err(ServiceError::from)?
            .is_some_and(|factor| factor.confirmed);
        Ok(Response::new(pb::CompleteRecoveryResponse {
            second_factor_enabled,
        }))
    }

    pub(super) async fn start_email_verification(
        &self,
        request: Request<pb::StartEmailVerificationRequest>,
    ) -> Result<Response<pb::StartEmailVerificationResponse>, Status> {
        let caller = caller_of(&request);
        let raw = request.into_inner().user_id;
        let target = target_user(&caller, &raw)?;
        authorize(&caller, &Access::VerifyEmail { target }, false).map_err(ServiceError::from)?;
        let user = self
            .store()
            .get(target)
            .await
            .map_err(|err| ServiceError::from(err).naming(&raw))?;
        if user.email_verified {
            return Err(ServiceError::FailedPrecondition(
                "the user's email is already verified".into(),
            )
            .into());
        }
        let expires = expires_at(VERIFICATION_TTL);
        let revision = issue(self.store(), &user, Purpose::Verification, VERIFICATION_TTL).await?;
        tracing::info!(user_id = %user.id, revision, "queued an email verification code");
        Ok(Response::new(pb::StartEmailVerificationResponse {
            expires_at: Some(timestamp(expires)),
        }))
    }

    pub(super) async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let request = request.into_inner();
        let login = parse_login(request.login)
            .map_err(|violation| ServiceError::from(ValidationError::from(violation)))?;
        code_field(&request.code)?;
        let (user, email) = self
            .redeemed(login, Purpose::Verification, &request.code)
            .await?;
        if user.email.as_str() != email {
            return Err(ServiceError::FailedPrecondition(
                "the user's email changed since the code was sent: ask for a new one".into(),
            )
            .into());
        }
        let patch = UserPatch {
            email_verified: Some(true),
            actor: Actor::User(user.id),
            ..UserPatch::default()
        };
        let verified = self
            .store()
            .update(user.id, patch)
            .await
            .map_err(ServiceError::from)?
            .into_user();
        tracing::info!(user_id = %user.id, "verified an email");
        Ok(Response::new(pb::VerifyEmailResponse {
            user: Some(user_to_pb(&verified)),
        }))
    }

    pub(super) async fn watch_deliveries(
        &self,
        request: Request<pb::WatchDeliveriesRequest>,
    ) -> Result<Response<ReceiverStream<Result<pb::Delivery, Status>>>, Status> {
        let caller = caller_of(&request);
        match caller {
            Caller::Service {
                role: Role::Admin, ..
            }
            | Caller::Key {
                role: Role::Admin, ..
            } => {}
            Caller::Anonymous => {
                return Err(ServiceError::from(crate::auth::policy::Denied::NeedsToken).into());
            }
            _ => {
                return Err(ServiceError::PermissionDenied(
                    "only a service with admin rights (a service token or an admin service key) reads deliveries"
                        .into(),
                )
                .into());
            }
        }
        let mut after = request.into_inner().after_revision.max(0);
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let store = self.store().clone();
        let mut shutdown = self.shutdown().cloned();
        let task = async move {
            loop {
                let batch = match store.deliveries_after(after, DELIVERY_BATCH).await {
                    Ok(batch) => batch,
                    Err(err) => {
                        let _ = sender.try_send(Err(ServiceError::from(err).into()));
                        return;
                    }
                };
                let caught_up = batch.len() < DELIVERY_BATCH as usize;
                for delivery in batch {
                    after = delivery.revision;
                    // A reader that stops reading holds this send; shutdown does not wait on it.
                    tokio::select! {
                        sent = sender.send(Ok(delivery_to_pb(delivery))) => {
                            if sent.is_err() {
                                return;
                            }
                        }
                        () = stopping(&mut shutdown) => {
                            let _ = sender.try_send(Err(stopped()));
                            return;
                        }
                    }
                }
                if caught_up {
                    tokio::select! {
                        () = tokio::time::sleep(DELIVERY_POLL) => {}
                        () = sender.closed() => return,
                        () = stopping(&mut shutdown) => {
                            let _ = sender.try_send(Err(stopped()));
                            return;
                        }
                    }
                }
            }
        };
        match self.shutdown() {
            Some(shutdown) => shutdown.spawn(task),
            None => {
                tokio::spawn(task);
            }
        }
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
