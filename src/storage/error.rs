//! What storage can refuse, in its own terms; the service maps it to gRPC codes.

use crate::domain::{UserId, ValidationError};

/// What storage can refuse. Handlers never see driver errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} not found")]
    NotFound(UserId),
    #[error("{field} {} is already taken", crate::text::quoted(value))]
    AlreadyExists { field: &'static str, value: String },
    #[error("etag {expected} is stale: the user's current etag is {current}")]
    EtagMismatch { expected: i64, current: i64 },
    #[error(
        "revision {requested} is no longer retained: the oldest available revision is {oldest}"
    )]
    Compacted { requested: i64, oldest: i64 },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(
        "unsupported database URL {0:?}: use sqlite://PATH, postgres://USER:PASSWORD@HOST:PORT/DATABASE or libpq's key=value form (host=HOST user=USER dbname=DATABASE)"
    )]
    UnsupportedUrl(String),
    #[error(
        "the database schema is version {found}, newer than this server knows ({known}): run a newer server"
    )]
    SchemaTooNew { found: usize, known: usize },
    /// Another server holds the SQLite file.
    #[error("{0}")]
    InUse(String),
    /// A table holds as many rows as it may (service keys).
    #[error("{0}")]
    Full(String),
    /// The database cannot be reached now; the call may be retried.
    #[error("{0}")]
    Unavailable(String),
    #[error("storage failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub(crate) fn taken(field: &'static str, value: &str) -> Self {
        Self::AlreadyExists {
            field,
            value: value.to_owned(),
        }
    }

    /// What each caller that shared a failed operation (a group commit, a read fence) gets:
    /// the same kind when it is retryable, otherwise a backend failure with the cause's text.
    pub(super) fn for_another_caller(&self) -> StoreError {
        match self {
            StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
            other => StoreError::Backend(crate::text::chain(other).into()),
        }
    }

    pub(crate) fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(err))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
