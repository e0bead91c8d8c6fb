//! AuthService's TOTP second factor: enrolling, confirming and disabling it, and checking a
//! code at Login.

use tonic::{Request, Response, Status};

use super::auth_service::{AuthServiceImpl, target_user};
use super::caller_of;
use crate::auth::policy::{Access, Denied, authorize};
use crate::auth::second_factor::{CodeKind, SecondFactorKeys, kind_of, step_of};
use crate::caller::Caller;
use crate::domain::{Password, User, UserId, ValidationError};
use crate::error::ServiceError;
use crate::pb;
use crate::storage::now_ns;
use crate::storage::one_time_codes::Purpose;

const WRONG_CODE: &str = "the second-factor code is wrong";

fn now_secs() -> u64 {
    u64::try_from(now_ns() / 1_000_000_000).unwrap_or(0)
}

fn malformed(field: &str) -> ServiceError {
    ValidationError::single(
        field,
        "must be the 6 digits the authenticator app shows, or a recovery code (xxxx-xxxx-xxxx)",
    )
    .into()
}

/// The user a caller enrolls: only a stored user, for themselves.
fn enrolling_user(caller: &Caller) -> Result<UserId, ServiceError> {
    match caller {
        Caller::Anonymous => Err(Denied::NeedsToken.into()),
        Caller::User { id, .. } => Ok(*id),
        Caller::Service { .. } | Caller::Key { .. } => Err(ServiceError::FailedPrecondition(
            "a second factor belongs to a user: log in as the user to enroll one".into(),
        )),
    }
}

impl AuthServiceImpl {
    fn second_factor_keys(&self) -> Result<&SecondFactorKeys, ServiceError> {
        self.second_factor().ok_or_else(|| {
            ServiceError::FailedPrecondition(
                "this server has no second-factor key (--second-factor-key-file), so second factors are off"
                    .into(),
            )
        })
    }

    /// Passes when `user` has no confirmed second factor, or `code` is one of theirs not used
    /// before (a TOTP code's step after the last accepted one, or an unused recovery code).
    pub(super) async fn second_factor_passes(
        &self,
        user: &User,
        code: &str,
        field: &'static str,
    ) -> Result<(), ServiceError> {
        let Some(factor) = self.store().second_factor(user.id).await? else {
            return Ok(());
        };
        if !factor.confirmed {
            return Ok(());
        }
        let keys = self.second_factor_keys()?;
        if code.is_empty() {
            return Err(ServiceError::FailedPrecondition(
                "the account has a second factor: send second_factor_code, a code from the authenticator app or a recovery code"
                    .into(),
            ));
        }
        let accepted = match kind_of(code) {
            CodeKind::Totp => {
                let totp = keys.open(user.id, &factor.sealed).ok_or_else(|| {
                    ServiceError::FailedPrecondition(
                        "the account's second-factor secret does not open with this server's second-factor key"
                            .into(),
                    )
                })?;
                let Some(step) = step_of(&totp, code, now_secs()) else {
                    return Err(ServiceError::Unauthenticated(WRONG_CODE.into()));
                };
                if !self.store().use_step(user.id, step).await? {
                    return Err(ServiceError::Unauthenticated(
                        "the second-factor code was already used: wait for the next one".into(),
                    ));
                }
                true
            }
            CodeKind::Recovery => {
                let digest = keys.recovery_digest(user.id, code);
                self.store().use_recovery_code(user.id, digest).await?
            }
            CodeKind::Malformed => return Err(malformed(field)),
        };
        if accepted {
            Ok(())
        } else {
            Err(ServiceError::Unauthenticated(WRONG_CODE.into()))
        }
    }

    pub(super) async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let id = enrolling_user(&caller_of(&request))?;
        let address = self.address_of(&request);
        let keys = self.second_factor_keys()?;
        let password =
            Password::parse(request.into_inner().current_password).map_err(|mut violation| {
                violation.field = "current_password".into();
                violation.description = format!(
                    "must be your password, to turn on a second factor: {}",
                    violation.description
                );
                ServiceError::from(ValidationError::from(violation))
            })?;
        let (user, stored) = self
            .store()
            .credentials_of(id)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(crate::auth::gone)?;
        // A stolen access token alone cannot put a factor on the account and lock its owner out.
        self.reauthenticate(&user, stored, password, address)
            .await?;
        let enrollment = keys
            .enroll(id, user.username.as_str())
            .map_err(|err| ServiceError::Internal(Box::new(err)))?;
        if !self
            .store()
            .begin_enrollment(id, enrollment.sealed)
            .await
            .map_err(ServiceError::from)?
        {
            return Err(ServiceError::FailedPrecondition(
                "a second factor is already on: disable it first (DisableTotp)".into(),
            )
            .into());
        }
        tracing::info!(user_id = %id, "began enrolling a second factor");
        Ok(Response::new(pb::EnrollTotpResponse {
            secret: enrollment.base32,
            otpauth_uri: enrollment.uri,
            qr_code_svg: enrollment.qr_code_svg,
        }))
    }

    pub(super) async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let id = enrolling_user(&caller_of(&request))?;
        let code = request.into_inner().code;
        if kind_of(&code) != CodeKind::Totp {
            return Err(ServiceError::from(ValidationError::single(
                "code",
                "must be the 6 digits the authenticator app shows",
            ))
            .into());
        }
        let keys = self.second_factor_keys()?;
        let nothing_pending = || {
            ServiceError::FailedPrecondition(
                "no second factor is waiting to be confirmed: call EnrollTotp first".into(),
            )
        };
        let factor = self
            .store()
            .second_factor(id)
            .await
            .map_err(ServiceError::from)?
            .filter(|factor| !factor.confirmed)
            .ok_or_else(nothing_pending)?;
        let totp = keys.open(id, &factor.sealed).ok_or_else(nothing_pending)?;
        let step = step_of(&totp, &code, now_secs()).ok_or_else(|| {
            ServiceError::from(ValidationError::single(
                "code",
                "does not match the secret EnrollTotp gave: check the device's clock, and use the newest enrollment",
            ))
        })?;
        let (codes, digests) = keys
            .recovery_codes(id)
            .map_err(|err| ServiceError::Internal(Box::new(err)))?;
        if !self
            .store()
            .confirm_enrollment(id, step, digests)
            .await
            .map_err(ServiceError::from)?
        {
            return Err(nothing_pending().into());
        }
        tracing::info!(user_id = %id, "confirmed a second factor");
        self.notify(id, Purpose::SecondFactorEnabled).await;
        Ok(Response::new(pb::ConfirmTotpResponse {
            recovery_codes: codes,
        }))
    }

    pub(super) async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        let caller = caller_of(&request);
        let address = self.address_of(&request);
        let request = request.into_inner();
        let target = target_user(&caller, &request.user_id)?;
        authorize(&caller, &Access::DisableSecondFactor { target }, false)
            .map_err(ServiceError::from)?;
        if caller.user_id() == Some(target) {
            // One's own needs a code: a stolen session alone cannot turn the factor off.
            let user = self.store().get(target).await.map_err(ServiceError::from)?;
            if request.code.is_empty() {
                return Err(ServiceError::from(ValidationError::single(
                    "code",
                    "must be a code from the authenticator app or a recovery code, to turn off your own second factor",
                ))
                .into());
            }
            // Guessed under the same limits as at Login; a right code gives its charge back.
            let attempt = self.limits().attempt(&user.username, address);
            self.charge(&attempt).await?;
            self.second_factor_passes(&user, &request.code, "code")
                .await?;
            self.refund(&attempt).await;
        }
        if !self
            .store()
            .remove_second_factor(target)
            .await
            .map_err(ServiceError::from)?
        {
            return Err(ServiceError::FailedPrecondition(
                "the user has no second factor to disable".into(),
            )
            .into());
        }
        tracing::info!(user_id = %target, "disabled a second factor");
        self.notify(target, Purpose::SecondFactorDisabled).await;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }
}
