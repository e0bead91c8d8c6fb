//! Durable storage behind one interface: the user table, the committed event log, and the
//! in-memory state (read cache, event fan-out) that follows every commit.

mod backend;
mod cache;
mod encoding;
mod error;
pub mod export;
pub mod filtered;
#[doc(hidden)]
pub mod fuzzing;
mod group_commit;
pub mod login_limits;
pub mod one_time_codes;
mod postgres;
mod published;
mod query;
mod rules;
pub mod second_factors;
pub mod server_secrets;
pub mod service_keys;
pub mod sessions;
mod settings;
pub mod signing_keys;
mod sqlite;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use crate::domain::{
    Actor, Etag, KeyId, NewUser, PasswordHash, ServiceKey, User, UserEvent, UserId, UserPatch,
    Username,
};
pub use postgres::PostgresStore;
pub(crate) use rules::now_ns;
pub use sqlite::SqliteStore;

pub use backend::PoolState;
use backend::{Backend, on_backend};
pub use error::{StoreError, StoreResult};
use login_limits::{Charge, LoginAttempt};
use one_time_codes::{CodeDigest, Delivery, IssuedCode, Purpose, Redeemed};
pub use query::{Cursor, ListQuery, Page, Search, SearchPage, UserKey};
use second_factors::SecondFactor;
use service_keys::KeyDigest;
use sessions::{Ended, NewSession, RefreshDigest, Rotation, SessionCache, SessionId, TokenBasis};
pub use settings::{StorageSettings, redacted};
pub use writes::{BatchItem, Updated};
use writes::{Change, Written};

/// The storage. Handlers hold a `Store` and never know which backend it is.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Single creates, committed in groups.
    /// Single writes, committed in groups (`group_commit`).
    writes: tokio::sync::mpsc::UnboundedSender<group_commit::Queued>,
    /// When this server last recorded each service key's use.
    key_uses: Arc<std::sync::Mutex<std::collections::HashMap<KeyId, i64>>>,
    /// Places for filtered listings that no index serves, and how long one waits for a place.
    scans: Arc<tokio::sync::Semaphore>,
    scan_wait: Duration,
}

/// A service key's last use is written at most this often by each server.
const KEY_USE_EVERY_NS: i64 = 60_000_000_000;

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
            key_uses: Arc::default(),
            scans: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_scans.max(1),
            )),
            scan_wait: settings.operation_timeout,
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
    async fn write(&self, write: group_commit::Write) -> StoreResult<Written> {
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
                Written::Created(event) => Ok(event),
                Written::Updated(_) | Written::Deleted(_) => Err(group_commit::mismatched()),
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
                    // On the blocking pool, as every SQLite read: a read may wait out the
                    // busy timeout, which must not hold a runtime worker.
                    Backend::Sqlite(store) => store
                        .clone()
                        .blocking(move |store| store.load(id))
                        .await
                        .map(Arc::new),
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
    pub async fn current_user(&self, id: UserId) -> StoreResult<User> {
        async {
            match &self.backend {
                Backend::Sqlite(_) => self.get(id).await.map(Arc::unwrap_or_clone),
                Backend::Postgres(store) => store.bounded(store.current_user(id)).await,
            }
        }
        .instrument(self.span("get_current_user"))
        .await
    }

    /// `current_user`'s answer when it needs no wait: the user as this server's cache holds them
    /// (`None` when the cache does not hold them, deleted users included).
    pub fn cached_user(&self, id: UserId) -> Option<Arc<User>> {
        self.published().cache.shared(&id)
    }

    /// The user with this username or email, compared without letter case.
    pub async fn find(&self, key: UserKey) -> StoreResult<Option<User>> {
        async { on_backend!(&self.backend, s => s.find(&key), s.find(&key)) }
            .instrument(self.span("find_user"))
            .await
    }

    /// The user with this username, compared without letter case, and their password hash.
    pub async fn credentials(
        &self,
        username: &Username,
    ) -> StoreResult<Option<(User, PasswordHash)>> {
        let key = username.key();
        async { on_backend!(&self.backend, s => s.credentials(&key), s.credentials(&key)) }
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
        let change = Change::Update(id, patch);
        async {
            match self.write(group_commit::Write::Change(change)).await? {
                Written::Updated(updated) => Ok(updated),
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
        let change = Change::Delete(id, etag, actor);
        async {
            match self.write(group_commit::Write::Change(change)).await? {
                Written::Deleted(event) => Ok(event),
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

    /// A page of a filtered or ordered listing (`filtered`).
    pub async fn list_filtered(
        &self,
        query: filtered::FilteredQuery,
    ) -> StoreResult<filtered::FilteredPage> {
        async {
            let _place = if filtered::served_by_an_index(&query) {
                None
            } else {
                Some(self.scan_place().await?)
            };
            on_backend!(&self.backend, s => s.list_filtered(&query), s.list_filtered(&query))
        }
        .instrument(self.span("list_users"))
        .await
    }

    /// A place among the scans that no index serves, waiting up to the call's deadline or
    /// the operation bound, whichever comes first.
    async fn scan_place(&self) -> StoreResult<tokio::sync::OwnedSemaphorePermit> {
        let mut wait = self.scan_wait;
        if let Some(deadline) = crate::call_deadline::current() {
            wait = wait.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        }
        match tokio::time::timeout(wait, self.scans.clone().acquire_owned()).await {
            Ok(Ok(place)) => Ok(place),
            Ok(Err(_)) => Err(StoreError::Unavailable("storage is closed".into())),
            Err(_) => Err(StoreError::Unavailable(
                "too many filtered listings that no index serves are running \
                 (--max-concurrent-scans): retry, or narrow the filter with a condition an index \
                 serves (status, role, or a range on the order_by field)"
                    .into(),
            )),
        }
    }

    /// Users whose username or email starts with a prefix, in the order of the matching key.
    pub async fn search(&self, search: Search) -> StoreResult<SearchPage> {
        async { on_backend!(&self.backend, s => s.search(&search), s.search(&search)) }
            .instrument(self.span("search_users"))
            .await
    }

    /// Every user as of one snapshot, after `after` in id order: the snapshot's revision and
    /// user count at once, the users in parts as the consumer reads them.
    pub async fn export(&self, after: Option<UserId>) -> StoreResult<export::Export> {
        let (started, header) = tokio::sync::oneshot::channel();
        let (parts, receiver) = tokio::sync::mpsc::channel(export::READ_AHEAD);
        let span = self.span("export_users");
        match &self.backend {
            Backend::Sqlite(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    span.in_scope(|| store.export_into(after, started, parts));
                });
            }
            Backend::Postgres(store) => {
                let store = store.clone();
                tokio::spawn(
                    async move { store.export_into(after, started, parts).await }.instrument(span),
                );
            }
        }
        let (revision, total) = header
            .await
            .map_err(|_| StoreError::Backend("the export ended before it began".into()))??;
        Ok(export::Export {
            revision,
            total,
            parts: receiver,
        })
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

/// One-time codes and the mailer's outbox (`one_time_codes`).
impl Store {
    /// Stores a code in place of the user's pending one for its purpose, and queues its
    /// delivery: the delivery's revision.
    pub async fn issue_code(&self, code: IssuedCode) -> StoreResult<i64> {
        let now = now_ns();
        async {
            on_backend!(&self.backend, s => s.issue_code(&code, now), s.issue_code(&code, now))
        }
        .instrument(self.span("issue_code"))
        .await
    }

    /// Presents a code: used up when right, one attempt fewer when wrong.
    pub async fn redeem_code(
        &self,
        user: UserId,
        purpose: Purpose,
        presented: CodeDigest,
    ) -> StoreResult<Redeemed> {
        let now = now_ns();
        async {
            on_backend!(
                &self.backend,
                s => s.redeem_code(user, purpose, &presented, now),
                s.redeem_code(user, purpose, &presented, now)
            )
        }
        .instrument(self.span("redeem_code"))
        .await
    }

    /// Deliveries after `revision` that have not expired, oldest first, at most `limit`.
    pub async fn deliveries_after(&self, revision: i64, limit: i64) -> StoreResult<Vec<Delivery>> {
        let now = now_ns();
        async {
            on_backend!(
                &self.backend,
                s => s.deliveries_after(revision, limit, now),
                s.deliveries_after(revision, limit, now)
            )
        }
        .instrument(self.span("read_deliveries"))
        .await
    }
}

/// Second factors (`second_factors`).
impl Store {
    /// The user's second factor, pending or confirmed.
    pub async fn second_factor(&self, user: UserId) -> StoreResult<Option<SecondFactor>> {
        async { on_backend!(&self.backend, s => s.second_factor(user), s.second_factor(user)) }
            .instrument(self.span("get_second_factor"))
            .await
    }

    /// Stores a pending secret in place of a pending one; `false` when one is confirmed.
    pub async fn begin_enrollment(&self, user: UserId, sealed: Vec<u8>) -> StoreResult<bool> {
        async {
            on_backend!(
                &self.backend,
                s => s.begin_enrollment(user, &sealed),
                s.begin_enrollment(user, &sealed)
            )
        }
        .instrument(self.span("begin_second_factor"))
        .await
    }

    /// Confirms the pending secret with the step of its first code, and stores the recovery
    /// codes' digests in place of any earlier ones; `false` when nothing was pending.
    pub async fn confirm_enrollment(
        &self,
        user: UserId,
        step: i64,
        recovery: Vec<[u8; 32]>,
    ) -> StoreResult<bool> {
        async {
            on_backend!(
                &self.backend,
                s => s.confirm_enrollment(user, step, &recovery),
                s.confirm_enrollment(user, step, &recovery)
            )
        }
        .instrument(self.span("confirm_second_factor"))
        .await
    }

    /// Accepts a code's step once: `false` for a step at or before the last accepted one.
    pub async fn use_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        async { on_backend!(&self.backend, s => s.use_step(user, step), s.use_step(user, step)) }
            .instrument(self.span("use_second_factor_code"))
            .await
    }

    /// Uses up a recovery code: `false` when the user has none with this digest.
    pub async fn use_recovery_code(&self, user: UserId, digest: [u8; 32]) -> StoreResult<bool> {
        async {
            on_backend!(
                &self.backend,
                s => s.use_recovery_code(user, &digest),
                s.use_recovery_code(user, &digest)
            )
        }
        .instrument(self.span("use_recovery_code"))
        .await
    }

    /// Removes the user's second factor and recovery codes: whether there was one.
    pub async fn remove_second_factor(&self, user: UserId) -> StoreResult<bool> {
        async {
            on_backend!(
                &self.backend,
                s => s.remove_second_factor(user),
                s.remove_second_factor(user)
            )
        }
        .instrument(self.span("remove_second_factor"))
        .await
    }
}

/// Service keys (`service_keys`).
impl Store {
    /// Stores a new key with its secret's digest; a taken name is `AlreadyExists`.
    pub async fn create_key(&self, key: ServiceKey, digest: KeyDigest) -> StoreResult<()> {
        async {
            on_backend!(
                &self.backend,
                s => s.create_key(&key, digest),
                s.create_key(&key, digest)
            )
        }
        .instrument(self.span("create_service_key"))
        .await
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> StoreResult<Vec<ServiceKey>> {
        async { on_backend!(&self.backend, s => s.list_keys(), s.list_keys()) }
            .instrument(self.span("list_service_keys"))
            .await
    }

    /// A key and its secret's digest.
    pub async fn key(&self, id: KeyId) -> StoreResult<Option<(ServiceKey, KeyDigest)>> {
        async { on_backend!(&self.backend, s => s.key(id), s.key(id)) }
            .instrument(self.span("get_service_key"))
            .await
    }

    /// Deletes a key: whether it existed. Tokens resting on it stop working here now and on
    /// other replicas when they hear of the commit.
    pub async fn revoke_key(&self, id: KeyId) -> StoreResult<bool> {
        let revoked = async { on_backend!(&self.backend, s => s.revoke_key(id), s.revoke_key(id)) }
            .instrument(self.span("revoke_service_key"))
            .await?;
        self.sessions().forget(Ended::Key(id));
        self.key_uses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        Ok(revoked)
    }

    /// Notes that a key was used now: written in the background, at most once a minute per
    /// key from this server, so a call never waits for it.
    pub fn key_used(&self, id: KeyId) {
        let now = now_ns();
        {
            let mut uses = self.key_uses.lock().unwrap_or_else(|p| p.into_inner());
            let last = uses.entry(id).or_insert(i64::MIN);
            if now.saturating_sub(*last) < KEY_USE_EVERY_NS {
                return;
            }
            *last = now;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let written = async {
                on_backend!(&store.backend, s => s.key_used(id, now), s.key_used(id, now))
            }
            .instrument(store.span("record_service_key_use"))
            .await;
            if let Err(err) = written {
                tracing::warn!(key_id = %id, error = %crate::text::chain(&err), "recording a service key's use failed");
            }
        });
    }
}

/// Secrets the server makes for itself (`server_secrets`).
impl Store {
    /// The secret named `name`, the same on every replica: `drawn` when this is the first
    /// time any replica asks, else the one written then.
    pub async fn server_secret(
        &self,
        name: &'static str,
        drawn: [u8; server_secrets::SECRET_BYTES],
    ) -> StoreResult<Vec<u8>> {
        let now = now_ns();
        async {
            on_backend!(
                &self.backend,
                s => s.server_secret(name, &drawn, now),
                s.server_secret(name, &drawn, now)
            )
        }
        .instrument(self.span("server_secret"))
        .await
    }
}

/// Signing keys (`signing_keys`).
impl Store {
    /// Every key not yet removed, by the instant each starts signing.
    pub async fn signing_keys(&self) -> StoreResult<Vec<signing_keys::StoredKey>> {
        async { on_backend!(&self.backend, s => s.signing_keys(), s.signing_keys()) }
            .instrument(self.span("signing_keys"))
            .await
    }

    /// One rotation pass (`signing_keys::plan`), `fresh` added if a key is due (its instants
    /// set here), and every key after it.
    pub async fn advance_signing_keys(
        &self,
        policy: signing_keys::RotationPolicy,
        asked: bool,
        fresh: signing_keys::StoredKey,
    ) -> StoreResult<Vec<signing_keys::StoredKey>> {
        let now = now_ns();
        async {
            on_backend!(
                &self.backend,
                s => s.advance_signing_keys(policy, asked, fresh, now),
                s.advance_signing_keys(policy, asked, fresh)
            )
        }
        .instrument(self.span("advance_signing_keys"))
        .await
    }
}

/// Login limits every replica shares (`login_limits`).
impl Store {
    /// Charges a login attempt to its buckets before its password is checked.
    pub async fn charge_login(&self, attempt: &LoginAttempt) -> StoreResult<Charge> {
        let (attempt, now) = (attempt.clone(), now_ns());
        async {
            on_backend!(
                &self.backend,
                s => s.charge_login(&attempt, now),
                s.charge_login(&attempt, now)
            )
        }
        .instrument(self.span("charge_login"))
        .await
    }

    /// Gives an admitted attempt's charge back: its password was right.
    pub async fn refund_login(&self, attempt: &LoginAttempt) -> StoreResult<()> {
        let (attempt, now) = (attempt.clone(), now_ns());
        async {
            on_backend!(
                &self.backend,
                s => s.refund_login(&attempt, now),
                s.refund_login(&attempt, now)
            )
        }
        .instrument(self.span("refund_login"))
        .await
    }

    /// Forgets every login failure counted against an account (by its username key), from
    /// every address: how many the account-wide limit held.
    pub async fn clear_login_failures(&self, account: &str) -> StoreResult<u64> {
        let (account, now) = (account.to_owned(), now_ns());
        async {
            on_backend!(
                &self.backend,
                s => s.clear_login_failures(&account, now),
                s.clear_login_failures(&account, now)
            )
        }
        .instrument(self.span("clear_login_failures"))
        .await
    }
}

/// Sessions: refresh tokens, their rotation, and the ends of sessions.
impl Store {
    fn sessions(&self) -> &SessionCache {
        &self.published().sessions
    }

    /// The refresh token with `digest` as stored (its session, whether it was used, its
    /// user's status), without using it: what introspection reads.
    pub async fn refresh_token(
        &self,
        digest: RefreshDigest,
    ) -> StoreResult<Option<sessions::Presented>> {
        async { on_backend!(&self.backend, s => s.refresh_token(digest), s.refresh_token(digest)) }
            .instrument(self.span("read_refresh_token"))
            .await
    }

    /// Starts a session with its first refresh token.
    pub async fn start_session(&self, session: NewSession) -> StoreResult<()> {
        async {
            on_backend!(&self.backend, s => s.start_session(&session), s.start_session(&session))
        }
        .instrument(self.span("start_session"))
        .await
    }

    /// Uses up a refresh token and stores `next` in its place, or ends the session when the
    /// token was used before.
    pub async fn rotate_refresh(
        &self,
        presented: RefreshDigest,
        next: RefreshDigest,
    ) -> StoreResult<Rotation> {
        let now = now_ns();
        let rotation = async {
            on_backend!(
                &self.backend,
                s => s.rotate_refresh(presented, next, now),
                s.rotate_refresh(presented, next, now)
            )
        }
        .instrument(self.span("rotate_refresh_token"))
        .await?;
        if let Rotation::Reused { session } = rotation {
            self.sessions().forget(Ended::Session(session));
        }
        Ok(rotation)
    }

    /// Ends one session: whether it was open.
    pub async fn end_session(&self, id: SessionId) -> StoreResult<bool> {
        let ended = async { on_backend!(&self.backend, s => s.end_session(id), s.end_session(id)) }
            .instrument(self.span("end_session"))
            .await?;
        self.sessions().forget(Ended::Session(id));
        Ok(ended)
    }

    /// Ends every session of `user`, and their tokens without a session issued until now:
    /// how many sessions were open.
    pub async fn end_sessions(&self, user: UserId) -> StoreResult<u64> {
        let cutoff = now_ns();
        let ended = async {
            on_backend!(&self.backend, s => s.end_sessions(user, cutoff), s.end_sessions(user, cutoff))
        }
        .instrument(self.span("end_sessions"))
        .await?;
        self.sessions().forget(Ended::User(user));
        Ok(ended)
    }

    /// Stores a new password hash and ends every session and token the user had. With
    /// `expected`, only if that is still the stored hash (`false` otherwise: it changed since
    /// the caller checked the current password).
    pub async fn set_password(
        &self,
        user: UserId,
        expected: Option<PasswordHash>,
        new: PasswordHash,
    ) -> StoreResult<bool> {
        let cutoff = now_ns();
        let set = async {
            on_backend!(
                &self.backend,
                s => s.set_password(user, expected.as_ref(), &new, cutoff),
                s.set_password(user, expected.as_ref(), &new, cutoff)
            )
        }
        .instrument(self.span("set_password"))
        .await?;
        if set {
            self.sessions().forget(Ended::User(user));
        }
        Ok(set)
    }

    /// The user with this id and their password hash.
    pub async fn credentials_of(&self, id: UserId) -> StoreResult<Option<(User, PasswordHash)>> {
        async { on_backend!(&self.backend, s => s.credentials_of(id), s.credentials_of(id)) }
            .instrument(self.span("get_credentials"))
            .await
    }

    /// Whether a token with this basis still works, when this server already knows.
    pub fn session_holds_now(&self, basis: &TokenBasis) -> Option<bool> {
        self.sessions().get(basis).map(|known| basis.holds(known))
    }

    /// Whether a token with this basis still works, read from the database when this
    /// server does not know yet.
    pub async fn session_holds(&self, basis: TokenBasis) -> StoreResult<bool> {
        if let Some(holds) = self.session_holds_now(&basis) {
            return Ok(holds);
        }
        let generation = self.sessions().generation();
        let now = now_ns();
        let (known, user) = async {
            on_backend!(
                &self.backend,
                s => s.session_basis(&basis, now),
                s.session_basis(&basis, now)
            )
        }
        .instrument(self.span("get_session"))
        .await?;
        self.sessions().fill(&basis, user, known, generation);
        Ok(basis.holds(known))
    }
}
