//! Durable storage behind one interface: the user table, the committed event log, and the
//! in-memory state (read cache, event fan-out) that follows every commit.

mod cache;
mod encoding;
#[doc(hidden)]
pub mod fuzzing;
mod group_commit;
mod postgres;
mod published;
mod rules;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use crate::domain::{
    Actor, Etag, NewUser, PasswordHash, Role, User, UserEvent, UserId, UserPatch, UserStatus,
    ValidationError,
};
pub use postgres::PostgresStore;
pub(crate) use rules::now_ns;
pub use sqlite::SqliteStore;

/// How storage is opened and tuned.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, or
    /// `postgres://user:password@host:port/database` (also `postgresql://`).
    pub database_url: String,
    /// PostgreSQL: connections in the pool.
    pub pool_size: usize,
    /// PostgreSQL: how long connecting to one host may take (a multi-host URL tries each in
    /// turn, each for this long).
    pub connect_timeout: Duration,
    /// PostgreSQL: how long one statement may run before the database cancels it.
    pub statement_timeout: Duration,
    /// PostgreSQL: how long one storage operation (a read, a write's transaction, a health
    /// ping's query) may take, enforced here, not by the database (which may never hear the
    /// query): past it the call answers UNAVAILABLE and the connection is closed, not pooled.
    /// Also the TCP user timeout of every connection.
    pub operation_timeout: Duration,
    /// PostgreSQL: how long a session may sit in an open transaction without sending the next
    /// statement before the database ends it, releasing its locks (a replica cut off
    /// mid-transaction would otherwise hold the log's write lock).
    pub idle_in_transaction_timeout: Duration,
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
    pub const DEFAULT_POOL_SIZE: usize = 16;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(2);

    /// Whether the URL names PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(&self.database_url)
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://") || is_key_value(url)
}

/// libpq's other form, `host=db user=app password=... dbname=users`, which the driver also
/// reads: no scheme, and a `key=` first.
fn is_key_value(setting: &str) -> bool {
    !setting.contains("://")
        && setting
            .split_whitespace()
            .next()
            .and_then(|first| first.split_once('='))
            .is_some_and(|(key, _)| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
}

/// The database setting with any password replaced, fit for logs and messages: a URL's
/// password (in its authority or its query), or a key=value form's `password`. What cannot
/// be read as either is not repeated at all.
pub fn redacted(url: &str) -> String {
    if is_key_value(url) {
        return redacted_key_value(url)
            .unwrap_or_else(|| "<a key=value database setting that could not be read>".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<a database setting that is neither a URL nor key=value pairs>".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => path.to_owned(),
    };
    format!("{scheme}://{authority}{path}")
}

/// `key=value` pairs as libpq reads them (a value may be single-quoted, with `\'` and `\\`
/// inside), written back with the password's value replaced; `None` when they do not parse.
fn redacted_key_value(setting: &str) -> Option<String> {
    let mut pairs = Vec::new();
    let mut chars = setting.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            value.push('\'');
            loop {
                let c = chars.next()?;
                value.push(c);
                match c {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if key.is_empty() {
            return None;
        }
        if key.eq_ignore_ascii_case("password") {
            value = "***".into();
        }
        pairs.push(format!("{key}={value}"));
    }
    Some(pairs.join(" "))
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            database_url: Self::DEFAULT_DATABASE_URL.into(),
            cache_capacity: Self::DEFAULT_CACHE_CAPACITY,
            event_retention: Self::DEFAULT_EVENT_RETENTION,
            event_buffer: Self::DEFAULT_EVENT_BUFFER,
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            idle_in_transaction_timeout: Self::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
        }
    }
}

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
    fn for_another_caller(&self) -> StoreError {
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

impl UserKey {
    /// The indexed column that holds this key, and the key as stored there.
    fn column_and_key(&self) -> (&'static str, String) {
        match self {
            UserKey::Username(username) => ("username_key", username.key()),
            UserKey::Email(email) => ("email_key", email.key()),
        }
    }
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

/// A prefix search over usernames and emails, in the order of the matching name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Lower-case, as the stored keys are; not empty.
    pub prefix: String,
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    /// The key (username or email key) of the last user shown.
    pub after: Option<String>,
    pub limit: usize,
}

impl Search {
    /// Matches counted at most, so a search costs the same however many users match.
    pub const COUNT_LIMIT: u64 = 100;

    /// The end of the prefix's key range, exclusive: every key that starts with the prefix
    /// sorts below it (byte order), and no other key at or above the prefix does.
    fn upper_bound(&self) -> String {
        format!("{}\u{10FFFF}", self.prefix)
    }

    /// Where the page starts: after the last key shown, or at the prefix.
    fn lower_bound(&self) -> (&str, bool) {
        match &self.after {
            Some(after) if after.as_str() >= self.prefix.as_str() => (after, false),
            _ => (&self.prefix, true),
        }
    }
}

/// One page of a search: each user with the key that matched.
#[derive(Debug)]
pub struct SearchPage {
    pub users: Vec<(String, User)>,
    /// Whether more users may follow: the next page starts after `resume_after`.
    pub more: bool,
    /// The last key this page decided on (shown or skipped as another user's second name).
    pub resume_after: Option<String>,
    /// Users that match, counted up to `Search::COUNT_LIMIT`.
    pub total: u64,
}

#[derive(Debug)]
pub struct Page {
    pub users: Vec<User>,
    /// Set when more users follow.
    pub next: Option<Cursor>,
    /// All users matching the filters, counted in the same snapshot as the page.
    pub total: u64,
}

/// Database connections by state.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    pub in_use: usize,
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// The storage. Handlers hold a `Store` and never know which backend it is.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Single creates, committed in groups.
    /// Single writes, committed in groups (`group_commit`).
    writes: tokio::sync::mpsc::UnboundedSender<group_commit::Queued>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

/// Runs SQLite work on the blocking pool; awaits PostgreSQL's within the operation bound.
macro_rules! on_backend {
    ($backend:expr, $store:ident => $sqlite:expr, $pg:expr) => {
        match $backend {
            Backend::Sqlite($store) => $store.clone().blocking(move |$store| $sqlite).await,
            Backend::Postgres($store) => $store.bounded($pg).await,
        }
    };
}

pub mod sessions;

impl Backend {
    async fn create_batch(
        &self,
        items: Vec<BatchItem>,
    ) -> StoreResult<Vec<(usize, StoreResult<UserEvent>)>> {
        on_backend!(self, s => s.create_batch(items), s.create_batch(items))
    }

    async fn change_group(
        &self,
        changes: Vec<group_commit::Change>,
    ) -> StoreResult<Vec<StoreResult<group_commit::Changed>>> {
        on_backend!(self, s => s.change_group(changes), s.change_group(changes))
    }
}

impl Store {
    /// Opens the database named by the settings, creating and migrating it as needed.
    pub async fn open(settings: &StorageSettings) -> StoreResult<Self> {
        let backend = if settings.is_postgres() {
            Backend::Postgres(Arc::new(PostgresStore::open(settings).await?))
        } else {
            let path = sqlite::path_from_url(&settings.database_url)?;
            let settings = settings.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, &settings))
                .await
                .map_err(StoreError::backend)??;
            Backend::Sqlite(Arc::new(store))
        };
        Ok(Self {
            writes: group_commit::start(backend.clone()),
            backend,
        })
    }

    /// A trace span for one storage operation (disabled unless traces are exported), named as
    /// OpenTelemetry's database conventions ask.
    fn span(&self, operation: &'static str) -> tracing::Span {
        let system = match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        };
        tracing::debug_span!(
            target: crate::telemetry::SPAN_TARGET,
            "storage",
            otel.name = operation,
            otel.kind = "client",
            db.system.name = system,
            db.operation.name = operation,
        )
    }

    fn published(&self) -> &published::Published {
        match &self.backend {
            Backend::Sqlite(store) => store.published(),
            Backend::Postgres(store) => store.published(),
        }
    }

    /// Queues one write for the next group commit and waits for its outcome.
    async fn write(&self, write: group_commit::Write) -> StoreResult<group_commit::Done> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writes
            .send(group_commit::Queued {
                write,
                reply,
                deadline: crate::call_deadline::current(),
            })
            .map_err(|_| StoreError::Backend("storage is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the group commit ended".into()))?
    }

    /// Each write returns the event it committed; `event.user` is the user after it. Single
    /// writes that arrive together commit together (`group_commit`).
    pub async fn create(&self, user: NewUser) -> StoreResult<UserEvent> {
        async {
            match self.write(group_commit::Write::Create(user)).await? {
                group_commit::Done::Created(event) => Ok(event),
                group_commit::Done::Changed(_) => Err(group_commit::mismatched()),
            }
        }
        .instrument(self.span("create_user"))
        .await
    }

    /// Creates each item in one transaction; an item that fails is reported beside its
    /// position and does not stop the others.
    pub async fn create_batch(
        &self,
        items: Vec<BatchItem>,
    ) -> StoreResult<Vec<(usize, StoreResult<UserEvent>)>> {
        async { self.backend.create_batch(items).await }
            .instrument(self.span("create_users"))
            .await
    }

    /// The user as committed: a read that starts after any server acknowledged a write to
    /// them reflects it.
    pub async fn get(&self, id: UserId) -> StoreResult<Arc<User>> {
        let span = self.span("get_user");
        if let Backend::Sqlite(store) = &self.backend
            && let Some(user) = span.in_scope(|| store.published().cache.shared(&id))
        {
            // One server per SQLite file: its cache has every commit.
            return Ok(user);
        }
        // Boxed: a database read's future is large, and every caller's future would carry
        // its size (GetUser's is moved on every call) even when the cache answers.
        Box::pin(
            async {
                match &self.backend {
                    Backend::Sqlite(store) => store.load(id).map(Arc::new),
                    Backend::Postgres(store) => store.bounded(store.get(id)).await,
                }
            }
            .instrument(span),
        )
        .await
    }

    /// The user as this server last applied the log: what a call's caller is checked
    /// against. On SQLite the same as `get`; on PostgreSQL it may trail another replica's
    /// write by as long as the log tail takes to apply it.
    pub async fn standing(&self, id: UserId) -> StoreResult<User> {
        async {
            match &self.backend {
                Backend::Sqlite(_) => self.get(id).await.map(Arc::unwrap_or_clone),
                Backend::Postgres(store) => store.bounded(store.standing(id)).await,
            }
        }
        .instrument(self.span("get_standing"))
        .await
    }

    /// `standing`'s answer when it needs no wait: the user as this server's cache holds them
    /// (`None` when the cache does not hold them, deleted users included).
    pub fn cached_standing(&self, id: UserId) -> Option<Arc<User>> {
        self.published().cache.shared(&id)
    }

    /// The user with this username or email, compared without letter case.
    pub async fn find(&self, key: UserKey) -> StoreResult<Option<User>> {
        async { on_backend!(&self.backend, s => s.find(&key), s.find(&key)) }
            .instrument(self.span("find_user"))
            .await
    }

    /// The user with this username, compared without letter case, and their password hash.
    pub async fn credentials(&self, username: String) -> StoreResult<Option<(User, PasswordHash)>> {
        async {
            on_backend!(&self.backend, s => s.credentials(&username), s.credentials(&username))
        }
        .instrument(self.span("get_credentials"))
        .await
    }

    /// Stores `new` in place of `old`, only if `old` is still the stored hash (a login that
    /// upgrades a weak hash must not undo a change made meanwhile): whether it did.
    pub async fn replace_password_hash(
        &self,
        id: UserId,
        old: PasswordHash,
        new: PasswordHash,
    ) -> StoreResult<bool> {
        async {
            on_backend!(
                &self.backend,
                s => s.replace_password_hash(id, &old, &new),
                s.replace_password_hash(id, &old, &new)
            )
        }
        .instrument(self.span("replace_password_hash"))
        .await
    }

    pub async fn update(&self, id: UserId, patch: UserPatch) -> StoreResult<Updated> {
        let change = group_commit::Change::Update(id, patch);
        async {
            match self.write(group_commit::Write::Change(change)).await? {
                group_commit::Done::Changed(group_commit::Changed::Updated(updated)) => Ok(updated),
                _ => Err(group_commit::mismatched()),
            }
        }
        .instrument(self.span("update_user"))
        .await
    }

    pub async fn delete(
        &self,
        id: UserId,
        etag: Option<Etag>,
        actor: Actor,
    ) -> StoreResult<UserEvent> {
        let change = group_commit::Change::Delete(id, etag, actor);
        async {
            match self.write(group_commit::Write::Change(change)).await? {
                group_commit::Done::Changed(group_commit::Changed::Deleted(event)) => Ok(event),
                _ => Err(group_commit::mismatched()),
            }
        }
        .instrument(self.span("delete_user"))
        .await
    }

    pub async fn list(&self, query: ListQuery) -> StoreResult<Page> {
        async { on_backend!(&self.backend, s => s.list(query), s.list(query)) }
            .instrument(self.span("list_users"))
            .await
    }

    /// Users whose username or email starts with a prefix, in the order of the matching key.
    pub async fn search(&self, search: Search) -> StoreResult<SearchPage> {
        async { on_backend!(&self.backend, s => s.search(&search), s.search(&search)) }
            .instrument(self.span("search_users"))
            .await
    }

    /// Up to `limit` events with `revision >= from`, oldest first.
    pub async fn events_from(&self, from: i64, limit: usize) -> StoreResult<Vec<UserEvent>> {
        async {
            on_backend!(&self.backend, s => s.events_from(from, limit), s.events_from(from, limit))
        }
        .instrument(self.span("read_events"))
        .await
    }

    /// Live events, in commit order, from the moment of subscribing.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<UserEvent>> {
        self.published().subscribe()
    }

    /// The revision of the newest change this server has applied (0 before the first).
    pub fn head_revision(&self) -> i64 {
        self.published().head()
    }

    /// The oldest revision the event log still holds (head + 1 when it is empty).
    pub fn oldest_revision(&self) -> i64 {
        self.published().oldest()
    }

    /// Turns false while the database cannot be reached (PostgreSQL's log tail lost its
    /// connection); SQLite's stays true.
    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.published().reachable()
    }

    /// Write transactions this server committed, and their time from begin to commit.
    pub fn commit_times(&self) -> crate::timing::Timings {
        self.published().commits.clone()
    }

    /// The connection pool's state (PostgreSQL); SQLite has no pool to report.
    pub fn connections(&self) -> Option<PoolState> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(store) => Some(store.pool_state()),
        }
    }

    /// Succeeds when the database answers a query within `limit` and can take writes.
    pub async fn ping(&self, limit: Duration) -> StoreResult<()> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone().blocking(|store| store.ping()).await,
            Backend::Postgres(store) => store.bounded_for(limit, store.ping()).await,
        }
    }

    /// SQLite: flushes the journal into the database file. Closes every connection.
    pub async fn close(&self) -> StoreResult<()> {
        on_backend!(&self.backend, s => s.close(), s.close())
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_database_password_never_reaches_a_log_line() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/users?sslmode=disable"),
            "postgres://app:***@db:5432/users?sslmode=disable"
        );
        assert_eq!(
            redacted("postgresql://db/users?user=app&password=s3cret"),
            "postgresql://db/users?user=app&password=***"
        );
        assert_eq!(
            redacted("postgres://app@db/users"),
            "postgres://app@db/users"
        );
        assert_eq!(redacted("sqlite://data/users.db"), "sqlite://data/users.db");
    }

    #[test]
    fn a_key_value_setting_keeps_its_keys_and_loses_its_password() {
        assert_eq!(
            redacted("host=db port=5432 user=app password=s3cret dbname=users"),
            "host=db port=5432 user=app password=*** dbname=users"
        );
        assert_eq!(
            redacted("host=db password='s3cret dbname=users"),
            "<a key=value database setting that could not be read>"
        );
        assert_eq!(
            redacted("host=db password='s3 cr\\'et' dbname=users"),
            "host=db password=*** dbname=users"
        );
    }

    #[test]
    fn every_refusal_of_a_database_setting_leaves_its_password_out() {
        for setting in [
            "postgres://app:s3cret@db:notaport/users",
            "postgresql://db/users?password=s3cret&port=x",
            "host=db password=s3cret dbname=users sslmode=nonsense",
            "host=db password='s3cret",
            "password=s3cret port=notanumber",
            "mysql://app:s3cret@db/users",
            "app:s3cret@db/users",
        ] {
            let settings = super::StorageSettings {
                database_url: setting.into(),
                ..Default::default()
            };
            let refused = if settings.is_postgres() {
                super::postgres::connection_config(&settings).err()
            } else {
                super::sqlite::path_from_url(setting).err()
            };
            let refused = refused.unwrap_or_else(|| panic!("{setting:?} is refused"));
            let text = crate::text::chain(&refused);
            assert!(
                !text.contains("s3cret"),
                "{setting:?} was refused as {text:?}"
            );
        }
    }
}
