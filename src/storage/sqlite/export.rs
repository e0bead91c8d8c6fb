//! Exports on SQLite: one connection and one blocking thread per export, reading chunks in
//! one deferred transaction, so every chunk comes from the snapshot its first read took.

use rusqlite::ToSql;
use tokio::sync::{mpsc, oneshot};

use super::super::encoding::RawUser;
use super::super::export::{Exported, chunk_sql, start_after, step};
use super::super::rules::USER_COLUMN_COUNT;
use super::read::snapshot_revision;
use super::{SqliteStore, read_user};
use crate::domain::{PasswordHash, UserId};
use crate::storage::{StoreError, StoreResult};

type Parts = mpsc::Sender<StoreResult<Vec<Exported>>>;

impl SqliteStore {
    /// Runs an export to its end or until its consumer goes away: first the snapshot's
    /// revision and user count on `started`, then the chunks on `parts`.
    pub(crate) fn export_into(
        &self,
        after: Option<UserId>,
        started: oneshot::Sender<StoreResult<(i64, u64)>>,
        parts: Parts,
    ) {
        let mut conn = match self.readers.open() {
            Ok(conn) => conn,
            Err(err) => return drop(started.send(Err(err.into()))),
        };
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(err) => return drop(started.send(Err(err.into()))),
        };
        // The first read takes the snapshot: the revision and count describe what follows.
        let header = snapshot_revision(&tx)
            .and_then(|revision| {
                let total: i64 = tx
                    .prepare_cached("SELECT coalesce(sum(n), 0) FROM user_counts")?
                    .query_row([], |row| row.get(0))?;
                Ok((revision, u64::try_from(total).unwrap_or(0)))
            })
            .map_err(StoreError::from);
        let failed = header.is_err();
        if started.send(header).is_err() || failed {
            return;
        }
        let mut last = start_after(after);
        loop {
            let chunk = read_chunk(&tx, &last);
            let step = step(&chunk, &mut last);
            if (step.send && parts.blocking_send(chunk).is_err()) || step.last {
                return;
            }
        }
    }
}

fn read_chunk(tx: &rusqlite::Transaction<'_>, after: &[u8]) -> StoreResult<Vec<Exported>> {
    let mut statement = tx.prepare_cached(&chunk_sql("?1"))?;
    let rows = statement.query_map([&after as &dyn ToSql], |row| {
        Ok((read_user(row)?, row.get::<_, String>(USER_COLUMN_COUNT)?))
    })?;
    rows.map(|row| {
        let (raw, hash) = row?;
        Ok(Exported {
            user: RawUser::into_user(raw)?,
            password_hash: PasswordHash::from_phc(hash),
        })
    })
    .collect()
}
