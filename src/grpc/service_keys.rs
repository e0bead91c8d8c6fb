//! AuthService's service keys: created, listed and revoked by admins.

use tonic::{Request, Response, Status};

use super::auth_service::AuthServiceImpl;
use super::caller_of;
use super::convert::timestamp;
use crate::auth::keys;
use crate::auth::policy::{Access, Denied, authorize};
use crate::caller::Caller;
use crate::domain::{
    FieldViolation, KeyId, KeyName, Role, ServiceKey, ValidationError, Violations,
};
use crate::error::ServiceError;
use crate::pb;
use crate::storage::now_ns;

/// Admins alone manage keys (service keys and signing keys); a caller without a token is
/// told it needs one.
pub(super) fn allowed(caller: &Caller) -> Result<(), ServiceError> {
    if *caller == Caller::Anonymous {
        return Err(Denied::NeedsToken.into());
    }
    authorize(caller, &Access::ManageKeys, false).map_err(ServiceError::from)
}

pub fn key_to_pb(key: &ServiceKey) -> pb::ServiceKey {
    pb::ServiceKey {
        id: key.id.to_string(),
        name: key.name.as_str().to_owned(),
        role: key.role as i32,
        created_at: Some(timestamp(key.created_at_ns)),
        expires_at: key.expires_at_ns.map(timestamp),
        last_used_at: key.last_used_at_ns.map(timestamp),
    }
}

/// An expiry as asked: in the future, and within what nanoseconds since the epoch hold.
fn parse_expiry(
    raw: Option<prost_types::Timestamp>,
    now_ns: i64,
) -> Result<Option<i64>, FieldViolation> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let invalid = |rule: &str| FieldViolation::new("expires_at", rule);
    let ns = Some(i64::from(raw.nanos))
        .filter(|nanos| (0..1_000_000_000).contains(nanos))
        .and_then(|nanos| raw.seconds.checked_mul(1_000_000_000)?.checked_add(nanos))
        .ok_or_else(|| invalid("must be a valid time before the year 2262"))?;
    if ns <= now_ns {
        return Err(invalid("must be in the future"));
    }
    Ok(Some(ns))
}

impl AuthServiceImpl {
    pub(super) async fn create_key(
        &self,
        request: Request<pb::CreateServiceKeyRequest>,
    ) -> Result<Response<pb::CreateServiceKeyResponse>, Status> {
        allowed(&caller_of(&request))?;
        let request = request.into_inner();
        let now = now_ns();
        let mut violations = Violations::default();
        let name = violations.check(KeyName::parse(request.name));
        let role = violations.check(Role::parse("role", request.role));
        let expires = violations.check(parse_expiry(request.expires_at, now));
        let (name, role, expires_at_ns) = violations
            .finish(|| Some((name?, role?, expires?)))
            .map_err(|invalid: ValidationError| ServiceError::from(invalid))?;
        let key = ServiceKey {
            id: KeyId::now_v7(),
            name,
            role,
            created_at_ns: now,
            expires_at_ns,
            last_used_at_ns: None,
        };
        let (secret, digest) =
            keys::issue(key.id).map_err(|err| ServiceError::Internal(Box::new(err)))?;
        self.store()
            .create_key(key.clone(), digest)
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(key_id = %key.id, name = key.name.as_str(), role = key.role.name(), "created a service key");
        Ok(Response::new(pb::CreateServiceKeyResponse {
            key: Some(key_to_pb(&key)),
            secret,
        }))
    }

    pub(super) async fn list_keys(
        &self,
        request: Request<pb::ListServiceKeysRequest>,
    ) -> Result<Response<pb::ListServiceKeysResponse>, Status> {
        allowed(&caller_of(&request))?;
        let keys = self.store().list_keys().await.map_err(ServiceError::from)?;
        Ok(Response::new(pb::ListServiceKeysResponse {
            keys: keys.iter().map(key_to_pb).collect(),
        }))
    }

    pub(super) async fn revoke_key(
        &self,
        request: Request<pb::RevokeServiceKeyRequest>,
    ) -> Result<Response<pb::RevokeServiceKeyResponse>, Status> {
        allowed(&caller_of(&request))?;
        let raw = request.into_inner().key_id;
        let id = KeyId::try_parse(&raw).map_err(|_| {
            ServiceError::from(ValidationError::single(
                "key_id",
                "must be a key's id as CreateServiceKey or ListServiceKeys gave it",
            ))
        })?;
        let revoked = self
            .store()
            .revoke_key(id)
            .await
            .map_err(ServiceError::from)?;
        if !revoked {
            return Err(ServiceError::NoSuchKey(id).into());
        }
        tracing::info!(key_id = %id, "revoked a service key");
        Ok(Response::new(pb::RevokeServiceKeyResponse {}))
    }
}
