//! The PostgreSQL backend: several servers (replicas) on one database behave as one service.
//!
//! Driver: tokio-postgres, pooled by deadpool-postgres. It is asynchronous (no blocking
//! threads per query), prepares each statement once per connection and reuses it, pipelines,
//! and hands out LISTEN/NOTIFY notifications from the connection, which the log tail needs.
//! Nothing touches a database at build time.
//!
//! - Writes take the log's counter row (`log_head`) for update inside their transaction and
//!   hold it to commit, so revisions follow commit order across every replica (`write`).
//! - A read of a user reflects every write any replica acknowledged before it began: it
//!   passes a read fence (the database's head, one query shared by the reads waiting for it)
//!   and is answered from the cache once the tail has applied that head (`fence`, `read`).
//!   Listings and lookups read the database.
//! - Every operation is bounded here, not only by the database (which may never see the
//!   query): connecting, each read, each write's transaction, the fence's and the tail's reads
//!   and the health ping. A connection whose operation ran past its bound is closed, never
//!   pooled (`Lease`). Sessions end an open transaction that goes quiet
//!   (`idle_in_transaction_session_timeout`), so a replica cut off mid-write cannot hold the
//!   log's lock, and TCP keepalives with a user timeout notice a dead peer.
//! - Each replica follows the committed log with one tail (`tail`), which feeds its read
//!   cache (used for the caller as they are now, on each call), its watchers and its head revision.

mod connect;
mod export;
mod fence;
mod login_limits;
mod one_time_codes;
mod read;
mod schema;
mod second_factors;
mod server_secrets;
mod service_keys;
mod sessions;
mod signing_keys;
mod tail;
mod write;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use super::encoding::{RawUser, decode_metadata};
use super::error::{StoreError, StoreResult};
use super::published::Published;
use super::settings::StorageSettings;

/// How long a write waits for this server's tail to apply it before answering anyway (the
/// write is committed either way; the wait makes this replica's cache and watchers reflect
/// it first).
const APPLY_WAIT: Duration = Duration::from_secs(1);

/// TCP keepalive probes on every connection: the first after this much silence...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);
/// ...then one this often, and the connection is dropped after this many go unanswered.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;

tokio::task_local! {
    /// When the storage operation running in this task must be done (`PostgresStore::bounded`).
    static OPERATION_ENDS: Instant;
}

/// When the operation running in this task must be done; `fallback` from now outside one.
fn operation_ends(fallback: Duration) -> Instant {
    OPERATION_ENDS
        .try_with(|ends| *ends)
        .unwrap_or_else(|_| Instant::now() + fallback)
}

/// A pooled connection held by one operation. Dropped in time, it goes back to the pool;
/// dropped at or past its operation's end (the operation was abandoned there, perhaps
/// mid-statement on a link that stopped answering), it is closed instead, so no later
/// operation inherits a stalled connection or an open transaction.
pub(super) struct Lease {
    object: Option<Object>,
    ends: Instant,
}

impl Lease {
    async fn checkout(pool: &Pool, ends: Instant) -> StoreResult<Self> {
        let object = pool.get().await.map_err(pool_error)?;
        Ok(Self {
            object: Some(object),
            ends,
        })
    }
}

impl Deref for Lease {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.object
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Object {
        self.object
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(object) = self.object.take()
            && Instant::now() >= self.ends
        {
            // Detached from the pool: dropping the client closes the connection.
            drop(Object::take(object));
        }
    }
}

/// Driver errors: lost connections, timeouts and a database that cannot take writes (a
/// standby, a lock held too long by a replica that went quiet) are `Unavailable`
/// (retryable); what the database refused is a backend failure.
pub(super) fn pg_error(err: tokio_postgres::Error) -> StoreError {
    match err.code() {
        Some(code) if *code == SqlState::QUERY_CANCELED => {
            StoreError::Unavailable("the database statement timed out".into())
        }
        Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => StoreError::Unavailable(
            "the database is a read-only standby: waiting for a primary".into(),
        ),
        Some(code)
            if *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT =>
        {
            StoreError::Unavailable(format!("the database ended the transaction: {err}"))
        }
        Some(code) if code.code().starts_with("08") || code.code().starts_with("57P") => {
            StoreError::Unavailable(format!("the database is unavailable: {err}"))
        }
        Some(_) => StoreError::backend(err),
        None if err.is_closed()
            || connect::timed_out(&err)
            || std::error::Error::source(&err)
                .is_some_and(|source| source.is::<std::io::Error>()) =>
        {
            StoreError::Unavailable(format!(
                "the database is unreachable: {}",
                crate::text::chain(&err)
            ))
        }
        None => StoreError::backend(err),
    }
}

fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => pg_error(err),
        deadpool_postgres::PoolError::Timeout(_) => {
            StoreError::Unavailable("no database connection became available in time".into())
        }
        other => StoreError::Unavailable(format!("the database is unreachable: {other}")),
    }
}

fn read_user(row: &tokio_postgres::Row) -> StoreResult<RawUser> {
    read_user_at(row, 0)
}

/// A user whose columns (`rules::USER_COLUMNS`) start at `offset`.
fn read_user_at(row: &tokio_postgres::Row, offset: usize) -> StoreResult<RawUser> {
    let metadata: &[u8] = row.try_get(offset + 6).map_err(pg_error)?;
    Ok(RawUser {
        id: row.try_get(offset).map_err(pg_error)?,
        username: row.try_get(offset + 1).map_err(pg_error)?,
        email: row.try_get(offset + 2).map_err(pg_error)?,
        full_name: row.try_get(offset + 3).map_err(pg_error)?,
        role: row.try_get::<_, i32>(offset + 4).map_err(pg_error)?.into(),
        status: row.try_get::<_, i32>(offset + 5).map_err(pg_error)?.into(),
        metadata: decode_metadata(metadata)?,
        created_at_ns: row.try_get(offset + 7).map_err(pg_error)?,
        updated_at_ns: row.try_get(offset + 8).map_err(pg_error)?,
        revision: row.try_get(offset + 9).map_err(pg_error)?,
        email_verified: row.try_get(offset + 10).map_err(pg_error)?,
    })
}

pub struct PostgresStore {
    pool: Pool,
    fence: fence::Fence,
    published: Arc<Published>,
    /// Wakes the tail at once after a local commit, without waiting for the notification.
    nudge: Arc<Notify>,
    stop: CancellationToken,
    /// How many of the newest events the log keeps.
    retention: i64,
    /// How long one operation may take (`StorageSettings::operation_timeout`).
    operation_timeout: Duration,
    idle_in_transaction_timeout: Duration,
    tail: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The driver's configuration from the URL (or libpq's key=value form), with this service's
/// bounds: connect timeout, keepalives and TCP user timeout, and the session settings that
/// bound what the database waits for.
pub(super) fn connection_config(settings: &StorageSettings) -> StoreResult<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = settings
        .database_url
        .parse()
        .map_err(|_| StoreError::UnsupportedUrl(super::redacted(&settings.database_url)))?;
    let options = format!(
        "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
        settings.statement_timeout.as_millis(),
        settings.operation_timeout.as_millis(),
        settings.idle_in_transaction_timeout.as_millis(),
    );
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {options}"),
        _ => options,
    };
    config
        .application_name("user-service")
        .connect_timeout(settings.connect_timeout)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(settings.operation_timeout)
        .options(options);
    Ok(config)
}

impl PostgresStore {
    pub(super) async fn open(settings: &StorageSettings) -> StoreResult<Self> {
        let config = connection_config(settings)?;
        let hosts = config.get_hosts().len().max(1);
        let manager = Manager::from_connect(
            config.clone(),
            connect::FirstWritable,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.operation_timeout))
            // A multi-host URL tries each host in turn, each for the connect timeout: a frozen
            // host first in the list must not use up the time the next one needs.
            .create_timeout(Some(
                settings.connect_timeout * u32::try_from(hosts).unwrap_or(u32::MAX)
                    + Duration::from_secs(1),
            ))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(StoreError::backend)?;

        let operation_timeout = settings.operation_timeout;
        let ends = Instant::now() + operation_timeout.max(schema::MIGRATION_TIME);
        let opening = async {
            let mut client = Lease::checkout(&pool, ends).await?;
            schema::migrate(&mut client).await?;
            let row = client
                .query_one(
                    "SELECT head, (SELECT min(revision) FROM events) FROM log_head",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            Ok::<_, StoreError>((row.get::<_, i64>(0), row.get::<_, Option<i64>>(1)))
        };
        let (head, oldest) = tokio::time::timeout_at(ends, opening)
            .await
            .map_err(|_| StoreError::Unavailable("the database did not answer in time".into()))??;

        let published = Arc::new(Published::new(
            head,
            oldest.unwrap_or(head + 1),
            settings.cache_capacity,
            settings.event_buffer,
        ));
        let nudge = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let retention = super::rules::retention(settings.event_retention);
        let tail = tokio::spawn(
            tail::Tail {
                config,
                pool: pool.clone(),
                published: published.clone(),
                nudge: nudge.clone(),
                stop: stop.clone(),
                retention,
                operation_timeout,
            }
            .follow(),
        );
        Ok(Self {
            fence: fence::Fence::start(pool.clone(), operation_timeout),
            pool,
            published,
            nudge,
            stop,
            retention,
            operation_timeout,
            idle_in_transaction_timeout: settings.idle_in_transaction_timeout,
            tail: std::sync::Mutex::new(Some(tail)),
        })
    }

    pub(super) fn published(&self) -> &Published {
        &self.published
    }

    /// A pooled connection for the operation running in this task.
    async fn client(&self) -> StoreResult<Lease> {
        Lease::checkout(&self.pool, operation_ends(self.operation_timeout)).await
    }

    /// Runs one storage operation within the operation bound, or the caller's deadline when
    /// that comes first (`call_deadline`). Past it the operation is abandoned and answers
    /// UNAVAILABLE, and the connection it held is closed (`Lease`).
    pub(super) async fn bounded<T>(
        &self,
        operation: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.bounded_for(self.operation_timeout, operation).await
    }

    /// `bounded`, with a bound of its own (the health ping's).
    pub(super) async fn bounded_for<T>(
        &self,
        limit: Duration,
        operation: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let own = started + limit;
        let (ends, why) = match crate::call_deadline::current() {
            Some(deadline) if deadline < own => (deadline, "before the call's deadline"),
            _ => (own, "within the operation bound"),
        };
        OPERATION_ENDS
            .scope(ends, async {
                tokio::time::timeout_at(ends, operation)
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(format!(
                            "the database did not answer {why} ({} ms)",
                            (ends - started).as_millis()
                        )))
                    })
            })
            .await
    }

    pub(super) fn pool_state(&self) -> super::PoolState {
        let status = self.pool.status();
        super::PoolState {
            in_use: status.size.saturating_sub(status.available),
            idle: status.available,
            waiting: status.waiting,
        }
    }

    /// Succeeds when the log tail is connected and a pooled connection answers from a
    /// database that takes writes (a primary, not a standby).
    pub(super) async fn ping(&self) -> StoreResult<()> {
        if !*self.published.reachable().borrow() {
            return Err(StoreError::Unavailable(
                "the log tail has lost its database connection".into(),
            ));
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT pg_is_in_recovery()")
            .await
            .map_err(pg_error)?;
        let standby: bool = client
            .query_one(&statement, &[])
            .await
            .map_err(pg_error)?
            .get(0);
        if standby {
            return Err(StoreError::Unavailable(
                "the database is a read-only standby: waiting for a primary".into(),
            ));
        }
        Ok(())
    }

    pub(super) async fn close(&self) -> StoreResult<()> {
        self.stop.cancel();
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tail) = tail {
            let _ = tail.await;
        }
        self.pool.close();
        Ok(())
    }
}
