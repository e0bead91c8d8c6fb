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
//! - Each replica follows the committed log with one tail (`tail`), which feeds its read
//!   cache (used for the caller's standing on each call), its watchers and its head revision.

mod fence;
mod read;
mod schema;
mod sessions;
mod tail;
mod write;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use super::codec::{RawUser, decode_metadata};
use super::published::Published;
use super::{StorageSettings, StoreError, StoreResult};

/// How long a write waits for this server's tail to apply it before answering anyway (the
/// write is committed either way; the wait makes this replica's cache and watchers reflect
/// it first).
const APPLY_WAIT: Duration = Duration::from_secs(1);

/// Driver errors: lost connections and timeouts are `Unavailable` (retryable); what the
/// database refused is a backend failure.
pub(super) fn pg_error(err: tokio_postgres::Error) -> StoreError {
    match err.code() {
        Some(code) if *code == SqlState::QUERY_CANCELED => {
            StoreError::Unavailable("the database statement timed out".into())
        }
        Some(code) if code.code().starts_with("08") || code.code().starts_with("57P") => {
            StoreError::Unavailable(format!("the database is unavailable: {err}"))
        }
        Some(_) => StoreError::backend(err),
        None if err.is_closed()
            || std::error::Error::source(&err)
                .is_some_and(|source| source.is::<std::io::Error>()) =>
        {
            StoreError::Unavailable(format!(
                "the database is unreachable: {}",
                crate::error::chain(&err)
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
    tail: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PostgresStore {
    pub(super) async fn open(settings: &StorageSettings) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = settings
            .database_url
            .parse()
            .map_err(|_| StoreError::UnsupportedUrl(super::redacted(&settings.database_url)))?;
        config
            .application_name("user-service")
            .connect_timeout(settings.connect_timeout)
            .options(format!(
                "-c statement_timeout={}",
                settings.statement_timeout.as_millis()
            ));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(StoreError::backend)?;

        let mut client = pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client).await?;
        let row = client
            .query_one(
                "SELECT head, (SELECT min(revision) FROM events) FROM log_head",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let head: i64 = row.get(0);
        let oldest: Option<i64> = row.get(1);
        drop(client);

        let published = Arc::new(Published::new(
            head,
            oldest.unwrap_or(head + 1),
            settings.cache_capacity,
            settings.event_buffer,
        ));
        let nudge = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let retention = i64::try_from(settings.event_retention.max(1)).unwrap_or(i64::MAX);
        let tail = tokio::spawn(
            tail::Tail {
                config,
                pool: pool.clone(),
                published: published.clone(),
                nudge: nudge.clone(),
                stop: stop.clone(),
                retention,
            }
            .follow(),
        );
        Ok(Self {
            fence: fence::Fence::start(pool.clone()),
            pool,
            published,
            nudge,
            stop,
            retention,
            tail: std::sync::Mutex::new(Some(tail)),
        })
    }

    pub(super) fn published(&self) -> &Published {
        &self.published
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    pub(super) fn pool_state(&self) -> super::PoolState {
        let status = self.pool.status();
        super::PoolState {
            in_use: status.size.saturating_sub(status.available),
            idle: status.available,
            waiting: status.waiting,
        }
    }

    /// Succeeds when a pooled connection answers and the log tail is connected.
    pub(super) async fn ping(&self) -> StoreResult<()> {
        if !*self.published.reachable().borrow() {
            return Err(StoreError::Unavailable(
                "the log tail has lost its database connection".into(),
            ));
        }
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(pg_error)?;
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
