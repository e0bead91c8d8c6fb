//! AuthService's RotateSigningKey: an admin starts a rotation of the service's signing keys.

use tonic::{Request, Response, Status};

use super::auth_service::AuthServiceImpl;
use super::caller_of;
use super::convert::timestamp;
use super::service_keys::allowed;
use crate::error::ServiceError;
use crate::oidc::keys::RingError;
use crate::pb;

impl AuthServiceImpl {
    pub(super) async fn rotate(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let caller = caller_of(&request);
        allowed(&caller)?;
        let ring = self.signing_keys().ok_or_else(|| {
            ServiceError::FailedPrecondition("this server holds no signing keys".into())
        })?;
        let keys = ring
            .pass(self.store(), true)
            .await
            .map_err(|err| match err {
                RingError::Store(err) => ServiceError::from(err),
                other => ServiceError::Internal(Box::new(other)),
            })?;
        tracing::info!(caller = ?caller, "signing key rotation started");
        Ok(Response::new(pb::RotateSigningKeyResponse {
            keys: keys
                .into_iter()
                .map(|key| pb::SigningKey {
                    kid: key.kid,
                    algorithm: key.algorithm,
                    state: key.state.into(),
                    created_at: Some(timestamp(key.created_at_ns)),
                    activates_at: Some(timestamp(key.activates_at_ns)),
                })
                .collect(),
        }))
    }
}
