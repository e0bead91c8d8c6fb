//! The SQLite backend: one writer connection, a small pool of readers, WAL journaling.
//!
//! Durability: `journal_mode = WAL` with `synchronous = FULL` fsyncs the log on every
//! commit, so a write that was acknowledged survives `kill -9` and power loss alike. WAL lets
//! readers (ListUsers, cache misses, watch replay) run while a write commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, Transaction, params};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::cache::{Change, UserCache};
use super::codec::{
    RawUser, decode_id, decode_metadata, decode_user, encode_metadata, encode_user,
};
use super::{
    BatchItem, Cursor, ListQuery, Page, StorageSettings, StoreError, StoreResult, Updated, UserKey,
    migrations,
};
use crate::domain::PasswordHash;
use crate::domain::{
    Etag, EventKind, NewUser, User, UserEvent, UserId, UserPatch, UserStatus, ValidationError,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_IDLE_READERS: usize = 8;
/// At most this many events beyond the retention window pile up before the log is pruned
/// (an eighth of the window when that is smaller), so pruning is an occasional batch.
const MAX_PRUNE_SLACK: i64 = 1024;

const USER_COLUMNS: &str =
    "id, username, email, full_name, role, status, metadata, created_at, updated_at, revision";

/// `sqlite://data/users.db` is relative to the working directory,
/// `sqlite:///var/lib/users.db` is absolute.
pub fn path_from_url(url: &str) -> StoreResult<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .filter(|path| !path.is_empty() && !path.starts_with(":memory:"))
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
    Ok(PathBuf::from(path))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::backend(err)
    }
}

/// Maps the unique indexes' violations to the field that is taken.
fn unique_violation(err: rusqlite::Error, username: &str, email: &str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &err
        && failure.code == rusqlite::ErrorCode::ConstraintViolation
    {
        if message.contains("users.username_key") {
            return StoreError::AlreadyExists {
                field: "username",
                value: username.to_owned(),
            };
        }
        if message.contains("users.email_key") {
            return StoreError::AlreadyExists {
                field: "email",
                value: email.to_owned(),
            };
        }
    }
    err.into()
}

fn read_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawUser> {
    let metadata: Vec<u8> = row.get(6)?;
    let metadata = decode_metadata(&metadata).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Blob, Box::new(err))
    })?;
    Ok(RawUser {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        full_name: row.get(3)?,
        role: row.get(4)?,
        status: row.get(5)?,
        metadata,
        created_at_ns: row.get(7)?,
        updated_at_ns: row.get(8)?,
        revision: row.get(9)?,
    })
}

fn select_user(conn: &Connection, id: UserId) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id.as_uuid().as_bytes()], read_user)
        .optional()?
        .map(RawUser::into_user)
        .transpose()
}

/// The revision of the newest committed event, as of this connection's snapshot.
fn snapshot_revision(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?
        .query_row([], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

fn check_etag(user: &User, expected: Option<Etag>) -> StoreResult<()> {
    match expected {
        Some(etag) if etag != user.etag() => Err(StoreError::EtagMismatch {
            expected: etag.revision(),
            current: user.revision,
        }),
        _ => Ok(()),
    }
}

/// The page query: keyset pagination on the `(created_at, id)` indexes, so a page costs the
/// same wherever it starts and however many users there are.
fn list_sql(query: &ListQuery) -> String {
    let mut sql = format!("SELECT {USER_COLUMNS} FROM users WHERE 1 = 1");
    if query.status.is_some() {
        sql.push_str(" AND status = :status");
    }
    if query.role.is_some() {
        sql.push_str(" AND role = :role");
    }
    if query.after.is_some() {
        sql.push_str(" AND (created_at, id) < (:created_at, :id)");
    }
    // One more than asked tells whether another page follows.
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT :limit + 1");
    sql
}

/// Writes every column of `user`: a new row with its password hash, or, without one, an
/// update of the existing row (whose hash stays). Unique violations name the taken field.
fn write_row(conn: &Connection, user: &User, new_hash: Option<&PasswordHash>) -> StoreResult<()> {
    let (username, email) = (user.username.as_str(), user.email.as_str());
    let full_name = user.full_name.as_str();
    let (username_key, email_key) = (user.username.key(), user.email.key());
    let (role, status) = (user.role as i64, user.status as i64);
    let metadata = encode_metadata(&user.metadata);
    let mut args: Vec<(&str, &dyn ToSql)> = vec![
        (":id", user.id.as_uuid().as_bytes()),
        (":username", &username),
        (":username_key", &username_key),
        (":email", &email),
        (":email_key", &email_key),
        (":full_name", &full_name),
        (":role", &role),
        (":status", &status),
        (":metadata", &metadata),
        (":updated_at", &user.updated_at_ns),
        (":revision", &user.revision),
    ];
    let hash;
    let sql = match new_hash {
        Some(new_hash) => {
            hash = new_hash.as_phc();
            args.push((":password_hash", &hash));
            args.push((":created_at", &user.created_at_ns));
            "INSERT INTO users (id, username, username_key, email, email_key, full_name,
                                password_hash, role, status, metadata, created_at, updated_at,
                                revision)
             VALUES (:id, :username, :username_key, :email, :email_key, :full_name,
                     :password_hash, :role, :status, :metadata, :created_at, :updated_at,
                     :revision)"
        }
        None => {
            "UPDATE users SET username = :username, username_key = :username_key,
                    email = :email, email_key = :email_key, full_name = :full_name,
                    role = :role, status = :status, metadata = :metadata,
                    updated_at = :updated_at, revision = :revision
             WHERE id = :id"
        }
    };
    conn.prepare_cached(sql)?
        .execute(args.as_slice())
        .map_err(|err| unique_violation(err, username, email))?;
    Ok(())
}

/// Changes made inside the open write transaction, published only once it commits.
struct Pending {
    head: i64,
    last_created_at_ns: i64,
    events: Vec<UserEvent>,
}

impl Pending {
    fn next_revision(&self) -> i64 {
        self.head + 1 + self.events.len() as i64
    }

    /// A creation time later than every earlier user's, so newest-first listings never
    /// place a new user behind a page token handed out before it existed.
    fn next_created_at(&mut self) -> i64 {
        self.last_created_at_ns = now_ns().max(self.last_created_at_ns + 1);
        self.last_created_at_ns
    }

    fn record(&mut self, tx: &Connection, kind: EventKind, user: &User) -> StoreResult<UserEvent> {
        let event = UserEvent {
            revision: user.revision,
            event_id: Uuid::now_v7(),
            kind,
            at_ns: now_ns(),
            user: user.clone(),
        };
        tx.prepare_cached(
            "INSERT INTO events (revision, event_id, kind, user_id, at, user)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            event.revision,
            event.event_id.as_bytes(),
            kind as i64,
            user.id.as_uuid().as_bytes(),
            event.at_ns,
            encode_user(user),
        ])?;
        self.events.push(event.clone());
        Ok(event)
    }
}

struct Writer {
    conn: Option<Connection>,
    last_created_at_ns: i64,
}

/// Idle read-only connections, opened on demand.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn with<R>(&self, work: impl FnOnce(&mut Connection) -> StoreResult<R>) -> StoreResult<R> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = work(&mut conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    fn close(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

pub struct SqliteStore {
    writer: Mutex<Writer>,
    readers: ReadPool,
    cache: UserCache,
    events: broadcast::Sender<Arc<UserEvent>>,
    head: AtomicI64,
    oldest: AtomicI64,
    retention: i64,
}

impl SqliteStore {
    pub(super) fn open(path: &Path, settings: &StorageSettings) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(
                format!("the database refused WAL journaling (journal_mode is {mode})").into(),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrations::run(&mut conn)?;

        let head = snapshot_revision(&conn)?;
        let oldest: Option<i64> =
            conn.query_row("SELECT min(revision) FROM events", [], |row| row.get(0))?;
        let last_created_at_ns: Option<i64> = conn
            .query_row(
                "SELECT created_at FROM users ORDER BY created_at DESC, id DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        let (events, _) = broadcast::channel(settings.event_buffer.max(1));
        Ok(Self {
            writer: Mutex::new(Writer {
                conn: Some(conn),
                last_created_at_ns: last_created_at_ns.unwrap_or(0),
            }),
            readers: ReadPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            },
            cache: UserCache::new(settings.cache_capacity, head),
            events,
            head: AtomicI64::new(head),
            oldest: AtomicI64::new(oldest.unwrap_or(head + 1)),
            retention: i64::try_from(settings.event_retention.max(1)).unwrap_or(i64::MAX),
        })
    }

    /// Runs storage work on the blocking pool, off the async runtime.
    pub(super) async fn blocking<R: Send + 'static>(
        self: Arc<Self>,
        work: impl FnOnce(&SqliteStore) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        tokio::task::spawn_blocking(move || work(&self))
            .await
            .map_err(StoreError::backend)?
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic mid-write drops its transaction, which rolls back: the state is intact.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` in one write transaction; once it commits, publishes its events to the
    /// cache and to watchers, in order, before the next write can start.
    fn write<R>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>, &mut Pending) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut writer = self.writer();
        let Writer {
            conn,
            last_created_at_ns,
        } = &mut *writer;
        let conn = conn
            .as_mut()
            .ok_or_else(|| StoreError::Backend("storage is closed".into()))?;
        let mut pending = Pending {
            head: self.head.load(Ordering::Acquire),
            last_created_at_ns: *last_created_at_ns,
            events: Vec::new(),
        };
        let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let result = work(&mut tx, &mut pending)?;
        tx.commit()?;

        *last_created_at_ns = pending.last_created_at_ns;
        if let Some(last) = pending.events.last() {
            let head = last.revision;
            self.cache.apply(
                head,
                pending.events.iter().map(|event| match event.kind {
                    EventKind::Created | EventKind::Updated => Change::Upsert(&event.user),
                    EventKind::Deleted => Change::Remove(event.user.id),
                }),
            );
            self.head.store(head, Ordering::Release);
            for event in pending.events {
                // No receivers is fine: nobody is watching.
                let _ = self.events.send(Arc::new(event));
            }
            self.prune(conn, head);
        }
        Ok(result)
    }

    /// Drops events that fell out of the retention window. A failure only delays pruning.
    fn prune(&self, conn: &Connection, head: i64) {
        let keep_from = head - self.retention + 1;
        let slack = (self.retention / 8).clamp(1, MAX_PRUNE_SLACK);
        if keep_from - self.oldest.load(Ordering::Acquire) < slack {
            return;
        }
        match conn.execute("DELETE FROM events WHERE revision < ?1", [keep_from]) {
            Ok(removed) => {
                self.oldest.store(keep_from, Ordering::Release);
                tracing::debug!(removed, oldest = keep_from, "pruned the event log");
            }
            Err(err) => tracing::warn!(error = %err, "pruning the event log failed"),
        }
    }

    fn insert(tx: &Connection, pending: &mut Pending, new: NewUser) -> StoreResult<UserEvent> {
        let now = pending.next_created_at();
        let user = User {
            id: UserId::new(),
            username: new.username,
            email: new.email,
            full_name: new.full_name,
            role: new.role,
            status: UserStatus::Active,
            created_at_ns: now,
            updated_at_ns: now,
            metadata: new.metadata,
            revision: pending.next_revision(),
        };
        write_row(tx, &user, Some(&new.password_hash))?;
        pending.record(tx, EventKind::Created, &user)
    }

    pub(super) fn create(&self, new: NewUser) -> StoreResult<UserEvent> {
        self.write(|tx, pending| Self::insert(tx, pending, new))
    }

    pub(super) fn create_batch(
        &self,
        items: Vec<BatchItem>,
    ) -> StoreResult<Vec<(usize, StoreResult<UserEvent>)>> {
        self.write(|tx, pending| {
            let mut outcomes = Vec::with_capacity(items.len());
            for item in items {
                let savepoint = tx.savepoint()?;
                let events_before = pending.events.len();
                let created_before = pending.last_created_at_ns;
                let outcome = Self::insert(&savepoint, pending, item.user);
                match outcome {
                    Ok(_) => savepoint.commit()?,
                    Err(_) => {
                        drop(savepoint); // rolls back this item only
                        pending.events.truncate(events_before);
                        pending.last_created_at_ns = created_before;
                    }
                }
                match outcome {
                    Err(StoreError::Backend(err)) => return Err(StoreError::Backend(err)),
                    outcome => outcomes.push((item.position, outcome)),
                }
            }
            Ok(outcomes)
        })
    }

    pub(super) fn update(&self, id: UserId, patch: UserPatch) -> StoreResult<Updated> {
        self.write(|tx, pending| {
            let stored = select_user(tx, id)?.ok_or(StoreError::NotFound(id))?;
            check_etag(&stored, patch.etag)?;
            let mut user = stored.clone();
            if let Some(username) = patch.username {
                user.username = username;
            }
            if let Some(email) = patch.email {
                user.email = email;
            }
            if let Some(full_name) = patch.full_name {
                user.full_name = full_name;
            }
            if let Some(role) = patch.role {
                user.role = role;
            }
            if let Some(status) = patch.status {
                user.status = status;
            }
            if !patch.metadata.is_empty() {
                user.metadata =
                    user.metadata
                        .merged(&patch.metadata)
                        .map_err(|violation| ValidationError {
                            violations: vec![violation],
                        })?;
            }
            if user == stored {
                return Ok(Updated::Unchanged(stored));
            }
            user.updated_at_ns = now_ns().max(user.updated_at_ns + 1);
            user.revision = pending.next_revision();
            write_row(tx, &user, None)?;
            pending
                .record(tx, EventKind::Updated, &user)
                .map(Updated::Changed)
        })
    }

    pub(super) fn delete(&self, id: UserId, etag: Option<Etag>) -> StoreResult<UserEvent> {
        self.write(|tx, pending| {
            let mut user = select_user(tx, id)?.ok_or(StoreError::NotFound(id))?;
            check_etag(&user, etag)?;
            tx.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([id.as_uuid().as_bytes()])?;
            user.revision = pending.next_revision();
            pending.record(tx, EventKind::Deleted, &user)
        })
    }

    /// The user with this username (any letter case) and their password hash, for login.
    pub(super) fn credentials(&self, username: &str) -> StoreResult<Option<(User, PasswordHash)>> {
        let key = username.to_ascii_lowercase();
        self.readers.with(|conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username_key = ?1"
                ))?
                .query_row([key], |row| {
                    Ok((read_user(row)?, row.get::<_, String>(10)?))
                })
                .optional()?;
            found
                .map(|(raw, hash)| Ok((raw.into_user()?, PasswordHash::from_phc(hash))))
                .transpose()
        })
    }

    /// The user with this username or email, by the unique index on its key.
    pub(super) fn find(&self, key: &UserKey) -> StoreResult<Option<User>> {
        let (sql, key) = match key {
            UserKey::Username(username) => (
                format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = ?1"),
                username.key(),
            ),
            UserKey::Email(email) => (
                format!("SELECT {USER_COLUMNS} FROM users WHERE email_key = ?1"),
                email.key(),
            ),
        };
        self.readers.with(|conn| {
            conn.prepare_cached(&sql)?
                .query_row([key], read_user)
                .optional()?
                .map(RawUser::into_user)
                .transpose()
        })
    }

    pub(super) fn cached(&self, id: &UserId) -> Option<User> {
        self.cache.get(id)
    }

    /// Reads a user from the database and keeps it in the cache when that is safe.
    pub(super) fn load(&self, id: UserId) -> StoreResult<User> {
        let (user, snapshot) = self.readers.with(|conn| {
            let tx = conn.transaction()?;
            let user = select_user(&tx, id)?;
            let snapshot = snapshot_revision(&tx)?;
            Ok((user, snapshot))
        })?;
        let user = user.ok_or(StoreError::NotFound(id))?;
        self.cache.fill(&user, snapshot);
        Ok(user)
    }

    pub(super) fn list(&self, query: ListQuery) -> StoreResult<Page> {
        let status = query.status.map(|status| status as i64);
        let role = query.role.map(|role| role as i64);
        let cursor = query.after.map(|cursor| {
            (
                cursor.created_at_ns,
                cursor.id.as_uuid().as_bytes().to_vec(),
            )
        });
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);

        let mut args: Vec<(&str, &dyn ToSql)> = vec![(":limit", &limit)];
        if let Some(status) = &status {
            args.push((":status", status));
        }
        if let Some(role) = &role {
            args.push((":role", role));
        }
        if let Some((created_at, id)) = &cursor {
            args.push((":created_at", created_at));
            args.push((":id", id));
        }
        let sql = list_sql(&query);

        self.readers.with(|conn| {
            let tx = conn.transaction()?;
            let total: i64 = tx
                .prepare_cached(
                    "SELECT coalesce(sum(n), 0) FROM user_counts
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR role = ?2)",
                )?
                .query_row(params![status, role], |row| row.get(0))?;
            let mut users = tx
                .prepare_cached(&sql)?
                .query_map(args.as_slice(), read_user)?
                .map(|raw| raw.map_err(StoreError::from).and_then(RawUser::into_user))
                .collect::<StoreResult<Vec<_>>>()?;
            let next = if users.len() > query.limit {
                users.truncate(query.limit);
                users.last().map(|user| Cursor {
                    created_at_ns: user.created_at_ns,
                    id: user.id,
                })
            } else {
                None
            };
            Ok(Page {
                users,
                next,
                total: u64::try_from(total).unwrap_or(0),
            })
        })
    }

    pub(super) fn events_from(&self, from: i64, limit: usize) -> StoreResult<Vec<UserEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.with(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT revision, event_id, kind, at, user FROM events
                 WHERE revision >= ?1 ORDER BY revision LIMIT ?2",
            )?;
            let rows = statement.query_map(params![from, limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                ))
            })?;
            rows.map(|row| {
                let (revision, event_id, kind, at_ns, user) = row?;
                Ok(UserEvent {
                    revision,
                    event_id: decode_id(&event_id).map(|id| *id.as_uuid())?,
                    kind: EventKind::from_i64(kind).ok_or_else(|| {
                        StoreError::Backend(
                            format!("event {revision} has unknown kind {kind}").into(),
                        )
                    })?,
                    at_ns,
                    user: decode_user(&user)?,
                })
            })
            .collect()
        })
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<UserEvent>> {
        self.events.subscribe()
    }

    pub(super) fn head_revision(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    pub(super) fn oldest_revision(&self) -> i64 {
        self.oldest.load(Ordering::Acquire)
    }

    /// Opens a fresh connection and reads through it, so a database file that went missing or
    /// became unreadable is noticed even while pooled connections still hold it open.
    pub(super) fn ping(&self) -> StoreResult<()> {
        let conn = self.readers.open()?;
        conn.query_row("SELECT count(*) FROM user_counts", [], |row| {
            row.get::<_, i64>(0)
        })?;
        Ok(())
    }

    pub(super) fn close(&self) -> StoreResult<()> {
        self.readers.close();
        if let Some(conn) = self.writer().conn.take() {
            conn.pragma_update(None, "optimize", "")?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            conn.close().map_err(|(_, err)| StoreError::from(err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn the_writer_commits_with_a_full_fsync_in_wal_mode() {
        // kill -9 cannot tell a missing fsync from a done one (the kernel still holds the
        // pages), so the settings that make a commit durable are checked here directly.
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("sync.db"), &StorageSettings::default()).unwrap();
        let writer = store.writer();
        let conn = writer.conn.as_ref().unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(synchronous, 2, "synchronous = FULL");
    }

    #[test]
    fn every_listing_reads_an_index_in_order_and_never_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("plan.db"), &StorageSettings::default()).unwrap();
        let cursor = Cursor {
            created_at_ns: 1,
            id: UserId::new(),
        };
        for status in [None, Some(UserStatus::Active)] {
            for role in [None, Some(Role::Admin)] {
                for after in [None, Some(cursor)] {
                    let query = ListQuery {
                        status,
                        role,
                        after,
                        limit: 10,
                    };
                    let plan: Vec<String> = store
                        .readers
                        .with(|conn| {
                            let mut statement =
                                conn.prepare(&format!("EXPLAIN QUERY PLAN {}", list_sql(&query)))?;
                            // Unbound parameters are NULL, which is enough for a plan.
                            let mut rows = statement.raw_query();
                            let mut details = Vec::new();
                            while let Some(row) = rows.next()? {
                                details.push(row.get::<_, String>(3)?);
                            }
                            Ok(details)
                        })
                        .unwrap();
                    let plan = plan.join("; ");
                    assert!(plan.contains("USING INDEX"), "{query:?}: {plan}");
                    assert!(!plan.contains("TEMP B-TREE"), "{query:?} sorts: {plan}");
                }
            }
        }
    }
}
