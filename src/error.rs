//! The one service error, and its mapping to gRPC status codes.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::ValidationError;
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// INVALID_ARGUMENT, with a `BadRequest` detail listing each field violation.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// NOT_FOUND: the id, as the caller wrote it, names no user.
    #[error("user {0} not found")]
    NotFound(String),
    /// NOT_FOUND: no service key has this id.
    #[error("service key {0} not found")]
    NoSuchKey(crate::domain::KeyId),
    /// ALREADY_EXISTS.
    #[error("{field} {} is already taken", crate::text::quoted(value))]
    AlreadyExists { field: &'static str, value: String },
    /// UNAUTHENTICATED: no usable credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// PERMISSION_DENIED: the caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// FAILED_PRECONDITION: the server is not set up for this call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// RESOURCE_EXHAUSTED: too many attempts; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// RESOURCE_EXHAUSTED, with `retry-after` (whole seconds, at least one) as the rate
    /// limiter sends it: too many of these attempts (logins, sign-ups) for now.
    #[error("{what}: retry in {} s", retry_after_secs(*.retry_after))]
    TooMany {
        what: &'static str,
        retry_after: std::time::Duration,
    },
    /// ABORTED: a conditional write found the user changed since the caller read it.
    #[error(
        "etag \"{expected}\" does not match the user's current etag \"{current}\": read the user again and retry"
    )]
    EtagMismatch { expected: i64, current: i64 },
    /// ABORTED: a concurrent change got in first; the call may be retried as it is.
    #[error("{0}")]
    Aborted(String),
    /// OUT_OF_RANGE: a watch asked to resume before the oldest retained event.
    #[error(
        "start_revision {requested} is no longer retained: the oldest available revision is {oldest}"
    )]
    Compacted { requested: i64, oldest: i64 },
    /// UNAVAILABLE: the server is shutting down; retry against another instance or later.
    #[error("the server is shutting down{0}")]
    ShuttingDown(String),
    /// UNAVAILABLE: the database cannot be reached now; retry later or on another replica.
    #[error("{0}")]
    Unavailable(String),
    /// INTERNAL, with an opaque message; the cause is logged.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ServiceError {
    /// A NOT_FOUND names the id as the caller wrote it (which need not be a UUID), as a message
    /// may repeat it (`text::echo`).
    pub fn naming(self, raw_id: &str) -> Self {
        match self {
            ServiceError::NotFound(_) => ServiceError::NotFound(crate::text::echo(raw_id)),
            other => other,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ServiceError::Invalid(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) | ServiceError::NoSuchKey(_) => Code::NotFound,
            ServiceError::AlreadyExists { .. } => Code::AlreadyExists,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::ResourceExhausted(_) | ServiceError::TooMany { .. } => {
                Code::ResourceExhausted
            }
            ServiceError::EtagMismatch { .. } | ServiceError::Aborted(_) => Code::Aborted,
            ServiceError::Compacted { .. } => Code::OutOfRange,
            ServiceError::ShuttingDown(_) | ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => ServiceError::NotFound(id.to_string()),
            StoreError::AlreadyExists { field, value } => {
                ServiceError::AlreadyExists { field, value }
            }
            StoreError::EtagMismatch { expected, current } => {
                ServiceError::EtagMismatch { expected, current }
            }
            StoreError::Compacted { requested, oldest } => {
                ServiceError::Compacted { requested, oldest }
            }
            StoreError::Invalid(violations) => ServiceError::Invalid(violations),
            StoreError::Unavailable(reason) => ServiceError::Unavailable(reason),
            StoreError::Full(reason) => ServiceError::ResourceExhausted(reason),
            StoreError::UnsupportedUrl(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::InUse(_)
            | StoreError::Backend(_) => ServiceError::Internal(Box::new(err)),
        }
    }
}

use crate::text::chain;

/// A wait in whole seconds, at least one: a client is never told to retry at once. Every
/// `retry-after` the server sends is this.
pub(crate) fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs().max(1)
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        match &err {
            ServiceError::Invalid(invalid) => {
                let violations: Vec<_> = invalid
                    .violations
                    .iter()
                    .map(|v| tonic_types::FieldViolation::new(&v.field, &v.description))
                    .collect();
                Status::with_error_details(
                    code,
                    err.to_string(),
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ServiceError::Internal(cause) => {
                tracing::error!(error = %chain(cause.as_ref()), "request failed");
                Status::new(code, err.to_string())
            }
            ServiceError::TooMany { retry_after, .. } => {
                let mut status = Status::new(code, err.to_string());
                status
                    .metadata_mut()
                    .insert("retry-after", retry_after_secs(*retry_after).into());
                status
            }
            ServiceError::NotFound(_)
            | ServiceError::NoSuchKey(_)
            | ServiceError::AlreadyExists { .. }
            | ServiceError::Unauthenticated(_)
            | ServiceError::PermissionDenied(_)
            | ServiceError::FailedPrecondition(_)
            | ServiceError::ResourceExhausted(_)
            | ServiceError::EtagMismatch { .. }
            | ServiceError::Aborted(_)
            | ServiceError::Compacted { .. }
            | ServiceError::ShuttingDown(_)
            | ServiceError::Unavailable(_) => Status::new(code, err.to_string()),
        }
    }
}
