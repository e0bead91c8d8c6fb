//! Exports on PostgreSQL: one connection taken out of the pool per export (closed when it
//! ends, whatever state it is in), reading chunks in one REPEATABLE READ READ ONLY
//! transaction, so every chunk comes from the snapshot of its first statement. Each
//! statement is bounded like any operation; a stall ends the export, which the client
//! resumes from its last token.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Object;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel;

use super::super::export::{Exported, chunk_sql, start_after, step};
use super::super::rules::USER_COLUMN_COUNT;
use super::{PostgresStore, pg_error, pool_error, read_user};
use crate::domain::{PasswordHash, UserId};
use crate::storage::{StoreError, StoreResult};

/// How long the export's transaction may wait for a consumer that is not reading before
/// the database ends it (the session's usual bound is for write transactions).
const CONSUMER_WAIT: Duration = Duration::from_secs(600);

type Parts = mpsc::Sender<StoreResult<Vec<Exported>>>;

impl PostgresStore {
    /// Runs an export to its end or until its consumer goes away: first the snapshot's
    /// revision and user count on `started`, then the chunks on `parts`.
    pub(crate) async fn export_into(
        &self,
        after: Option<UserId>,
        started: oneshot::Sender<StoreResult<(i64, u64)>>,
        parts: Parts,
    ) {
        let bound = self.operation_timeout;
        let object = match within(bound, async { self.pool.get().await.map_err(pool_error) }).await
        {
            Ok(object) => object,
            Err(err) => return drop(started.send(Err(err))),
        };
        let mut client = Object::take(object);
        let tx = within(bound, async {
            client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg_error)
        })
        .await;
        let tx = match tx {
            Ok(tx) => tx,
            Err(err) => return drop(started.send(Err(err))),
        };
        let header = within(bound, async {
            tx.batch_execute(&format!(
                "SET LOCAL idle_in_transaction_session_timeout = {}",
                CONSUMER_WAIT.as_millis()
            ))
            .await
            .map_err(pg_error)?;
            let row = tx
                .query_one(
                    "SELECT (SELECT head FROM log_head),
                            (SELECT coalesce(sum(n), 0)::bigint FROM user_counts)",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            Ok((
                row.get::<_, i64>(0),
                u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            ))
        })
        .await;
        let failed = header.is_err();
        if started.send(header).is_err() || failed {
            return;
        }
        let sql = chunk_sql("$1");
        let mut last = start_after(after);
        loop {
            let chunk = within(bound, async {
                let rows = tx.query(&sql, &[&last]).await.map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(Exported {
                            user: read_user(row)?.into_user()?,
                            password_hash: PasswordHash::from_phc(
                                row.try_get(USER_COLUMN_COUNT).map_err(pg_error)?,
                            ),
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()
            })
            .await;
            let step = step(&chunk, &mut last);
            if (step.send && parts.send(chunk).await.is_err()) || step.last {
                return;
            }
        }
    }
}

/// `work` within `bound`, UNAVAILABLE past it.
async fn within<T>(bound: Duration, work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    tokio::time::timeout(bound, work).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "the database did not answer an export's statement within {} ms",
            bound.as_millis()
        )))
    })
}
