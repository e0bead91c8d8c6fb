//! Durable storage behind one interface: the user table, the committed event log, and the
//! in-memory state (read cache, event fan-out) that follows every commit.

mod cache;
mod codec;
mod migrations;
mod sqlite;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::{
    Etag, NewUser, PasswordHash, Role, User, UserEvent, UserId, UserPatch, UserStatus,
    ValidationError,
};
pub use sqlite::SqliteStore;

/// Entry points for the fuzz targets in `fuzz/`: the codecs of what storage reads back.
#[doc(hidden)]
pub mod fuzzing {
    use crate::domain::User;

    /// A user snapshot as the event log stores it; what decodes encodes back to the same.
    pub fn decode_stored_user(bytes: &[u8]) -> Option<User> {
        let user = super::codec::decode_user(bytes).ok()?;
        let again = super::codec::decode_user(&super::codec::encode_user(&user))
            .expect("what storage wrote, it reads back");
        assert_eq!(again, user, "a stored user round-trips");
        Some(user)
    }

    /// A metadata map as the user table stores it.
    pub fn decode_stored_metadata(bytes: &[u8]) -> bool {
        super::codec::decode_metadata(bytes).is_ok()
    }
}

/// How storage is opened and tuned.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `sqlite://relative/path.db` or `sqlite:///absolute/path.db`.
    pub database_url: String,
    /// Users kept in the read cache; 0 turns it off.
    pub cache_capacity: usize,
    /// How many of the newest events the log keeps for watch resumption.
    pub event_retention: u64,
    /// Live events buffered per watcher before it falls back to reading the log.
    pub event_buffer: usize,
}

impl StorageSettings {
    /// Defaults, here once: the server's flags take theirs from these.
    pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/users.db";
    pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;
    pub const DEFAULT_EVENT_RETENTION: u64 = 1_000_000;
    pub const DEFAULT_EVENT_BUFFER: usize = 1024;
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            database_url: Self::DEFAULT_DATABASE_URL.into(),
            cache_capacity: Self::DEFAULT_CACHE_CAPACITY,
            event_retention: Self::DEFAULT_EVENT_RETENTION,
            event_buffer: Self::DEFAULT_EVENT_BUFFER,
        }
    }
}

/// What storage can refuse. Handlers never see driver errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} not found")]
    NotFound(UserId),
    #[error("{field} {value:?} is already taken")]
    AlreadyExists { field: &'static str, value: String },
    #[error("etag {expected} is stale: the user's current etag is {current}")]
    EtagMismatch { expected: i64, current: i64 },
    #[error(
        "revision {requested} is no longer retained: the oldest available revision is {oldest}"
    )]
    Compacted { requested: i64, oldest: i64 },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH")]
    UnsupportedUrl(String),
    #[error("storage failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub(crate) fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(err))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One item of a batch: its position in the caller's stream, and the user to create.
#[derive(Debug)]
pub struct BatchItem {
    pub position: usize,
    pub user: NewUser,
}

/// A user's unique name: username or email, compared without letter case.
#[derive(Debug, Clone)]
pub enum UserKey {
    Username(crate::domain::Username),
    Email(crate::domain::Email),
}

/// What an update did.
#[derive(Debug)]
pub enum Updated {
    /// The change committed as this event; `event.user` is the user after it.
    Changed(UserEvent),
    /// The patch asked for what the user already was: nothing was written, and the etag
    /// stays as it was.
    Unchanged(User),
}

impl Updated {
    pub fn into_user(self) -> User {
        match self {
            Updated::Changed(event) => event.user,
            Updated::Unchanged(user) => user,
        }
    }
}

/// Which users a listing shows, and where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// A position in the newest-first order: `(created_at_ns, id)` of the last user shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ns: i64,
    pub id: UserId,
}

#[derive(Debug)]
pub struct Page {
    pub users: Vec<User>,
    /// Set when more users follow.
    pub next: Option<Cursor>,
    /// All users matching the filters, counted in the same snapshot as the page.
    pub total: u64,
}

/// The storage backends. Handlers hold a `Store` and never know which backend it is.
#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<SqliteStore>),
}

macro_rules! on_backend {
    ($self:ident, $store:ident => $body:expr) => {
        match $self {
            Store::Sqlite($store) => $body,
        }
    };
}

impl Store {
    /// Opens the database named by the settings, creating and migrating it as needed.
    pub async fn open(settings: &StorageSettings) -> StoreResult<Self> {
        let path = sqlite::path_from_url(&settings.database_url)?;
        let settings = settings.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, &settings))
            .await
            .map_err(StoreError::backend)??;
        Ok(Store::Sqlite(Arc::new(store)))
    }

    /// Each write returns the event it committed; `event.user` is the user after it.
    pub async fn create(&self, user: NewUser) -> StoreResult<UserEvent> {
        on_backend!(self, s => s.clone().blocking(move |s| s.create(user)).await)
    }

    /// Creates each item in one transaction; an item that fails is reported beside its
    /// position and does not stop the others.
    pub async fn create_batch(
        &self,
        items: Vec<BatchItem>,
    ) -> StoreResult<Vec<(usize, StoreResult<UserEvent>)>> {
        on_backend!(self, s => s.clone().blocking(move |s| s.create_batch(items)).await)
    }

    pub async fn get(&self, id: UserId) -> StoreResult<User> {
        on_backend!(self, s => {
            if let Some(user) = s.cached(&id) {
                return Ok(user);
            }
            s.clone().blocking(move |s| s.load(id)).await
        })
    }

    /// The user with this username or email, compared without letter case.
    pub async fn find(&self, key: UserKey) -> StoreResult<Option<User>> {
        on_backend!(self, s => s.clone().blocking(move |s| s.find(&key)).await)
    }

    /// The user with this username, compared without letter case, and their password hash.
    pub async fn credentials(&self, username: String) -> StoreResult<Option<(User, PasswordHash)>> {
        on_backend!(self, s => s.clone().blocking(move |s| s.credentials(&username)).await)
    }

    pub async fn update(&self, id: UserId, patch: UserPatch) -> StoreResult<Updated> {
        on_backend!(self, s => s.clone().blocking(move |s| s.update(id, patch)).await)
    }

    pub async fn delete(&self, id: UserId, etag: Option<Etag>) -> StoreResult<UserEvent> {
        on_backend!(self, s => s.clone().blocking(move |s| s.delete(id, etag)).await)
    }

    pub async fn list(&self, query: ListQuery) -> StoreResult<Page> {
        on_backend!(self, s => s.clone().blocking(move |s| s.list(query)).await)
    }

    /// Up to `limit` events with `revision >= from`, oldest first.
    pub async fn events_from(&self, from: i64, limit: usize) -> StoreResult<Vec<UserEvent>> {
        on_backend!(self, s => s.clone().blocking(move |s| s.events_from(from, limit)).await)
    }

    /// Live events, in commit order, from the moment of subscribing.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<UserEvent>> {
        on_backend!(self, s => s.subscribe())
    }

    /// The revision of the newest committed change (0 before the first).
    pub fn head_revision(&self) -> i64 {
        on_backend!(self, s => s.head_revision())
    }

    /// The oldest revision the event log still holds (head + 1 when it is empty).
    pub fn oldest_revision(&self) -> i64 {
        on_backend!(self, s => s.oldest_revision())
    }

    /// Succeeds when the database answers a query.
    pub async fn ping(&self) -> StoreResult<()> {
        on_backend!(self, s => s.clone().blocking(|s| s.ping()).await)
    }

    /// Flushes the journal into the database file and closes every connection.
    pub async fn close(&self) -> StoreResult<()> {
        on_backend!(self, s => s.clone().blocking(|s| s.close()).await)
    }
}
