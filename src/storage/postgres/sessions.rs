//! Sessions on PostgreSQL. A commit that ends sessions also sends `NOTIFY user_sessions`, which
//! every replica's tail turns into forgetting what it cached of them.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::super::encoding::stored_status;
use super::super::rules::password_expected;
use super::super::service_keys::key_known;
use super::super::sessions::{
    CHANNEL, Ended, Known, NewSession, PRUNED_PER_LOGIN, Presented, RefreshDigest, Rotation,
    RotationWrite, SessionId, TokenBasis, rotate, session_known,
};
use super::{PostgresStore, pg_error};
use crate::domain::{PasswordHash, UserId};
use crate::storage::{StoreError, StoreResult};

fn uuid_of(bytes: &[u8]) -> StoreResult<uuid::Uuid> {
    uuid::Uuid::from_slice(bytes).map_err(StoreError::backend)
}

async fn exec(tx: &Transaction<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    let statement = tx.prepare_cached(sql).await.map_err(pg_error)?;
    tx.execute(&statement, params).await.map_err(pg_error)
}

pub(super) async fn notify(tx: &Transaction<'_>, ended: Ended) -> StoreResult<()> {
    exec(
        tx,
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &ended.payload()],
    )
    .await?;
    Ok(())
}

async fn end_one(tx: &Transaction<'_>, id: SessionId) -> StoreResult<bool> {
    let id = id.as_bytes().as_slice();
    exec(
        tx,
        "DELETE FROM refresh_tokens WHERE session_id = $1",
        &[&id],
    )
    .await?;
    Ok(exec(tx, "DELETE FROM sessions WHERE id = $1", &[&id]).await? == 1)
}

async fn end_all(tx: &Transaction<'_>, user: UserId, cutoff_ns: i64) -> StoreResult<u64> {
    let user_bytes = user.as_uuid().as_bytes().as_slice();
    exec(
        tx,
        "INSERT INTO token_cutoffs (user_id, cutoff) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET cutoff = greatest(token_cutoffs.cutoff, EXCLUDED.cutoff)",
        &[&user_bytes, &cutoff_ns],
    )
    .await?;
    exec(
        tx,
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = $1)",
        &[&user_bytes],
    )
    .await?;
    let open = exec(
        tx,
        "DELETE FROM sessions WHERE user_id = $1 AND expires_at > $2",
        &[&user_bytes, &cutoff_ns],
    )
    .await?;
    exec(
        tx,
        "DELETE FROM sessions WHERE user_id = $1",
        &[&user_bytes],
    )
    .await?;
    notify(tx, Ended::User(user)).await?;
    Ok(open)
}

/// The refresh token with `digest`, its session and its user's status, as stored; `lock` ends
/// the query (`FOR UPDATE` or nothing).
async fn presented_token(
    client: &Transaction<'_>,
    digest: RefreshDigest,
    lock: &str,
) -> StoreResult<Option<Presented>> {
    let sql = format!(
        "SELECT t.session_id, t.used, s.user_id, s.expires_at, u.status
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
         LEFT JOIN users u ON u.id = s.user_id
         WHERE t.digest = $1{lock}"
    );
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let found = client
        .query_opt(&statement, &[&digest.0.as_slice()])
        .await
        .map_err(pg_error)?;
    found
        .map(|row| {
            Ok(Presented {
                session: uuid_of(row.try_get(0).map_err(pg_error)?)?,
                used: row.try_get(1).map_err(pg_error)?,
                user: UserId::from_uuid(uuid_of(row.try_get(2).map_err(pg_error)?)?),
                expires_at_ns: row.try_get(3).map_err(pg_error)?,
                user_status: stored_status(row.try_get(4).map_err(pg_error)?)?,
            })
        })
        .transpose()
}

impl PostgresStore {
    pub(crate) async fn refresh_token(
        &self,
        digest: RefreshDigest,
    ) -> StoreResult<Option<Presented>> {
        let mut client = self.client().await?;
        // A read-only transaction, so one statement helper serves this read and the rotation.
        let tx = client.transaction().await.map_err(pg_error)?;
        let found = presented_token(&tx, digest, "").await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(found)
    }

    pub(crate) async fn start_session(&self, session: &NewSession) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let user = session.user.as_uuid().as_bytes().as_slice();
        let id = session.id.as_bytes().as_slice();
        // Expired sessions go as new ones come, a few at a time (deleted users' too).
        exec(
            &tx,
            "WITH expired AS (
                DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at <= $1
                    ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING id)
             DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM expired)",
            &[&session.created_at_ns, &PRUNED_PER_LOGIN],
        )
        .await?;
        exec(
            &tx,
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[&id, &user, &session.created_at_ns, &session.expires_at_ns],
        )
        .await?;
        exec(
            &tx,
            "INSERT INTO refresh_tokens (digest, session_id, used) VALUES ($1, $2, false)",
            &[&session.refresh.0.as_slice(), &id],
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    pub(crate) async fn rotate_refresh(
        &self,
        presented: RefreshDigest,
        next: RefreshDigest,
        now_ns: i64,
    ) -> StoreResult<Rotation> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The token's row stays locked to commit: of two calls with one token, the second
        // reads it used.
        let found = presented_token(&tx, presented, " FOR UPDATE OF t").await?;
        let (rotation, write) = rotate(found, now_ns);
        match write {
            RotationWrite::Nothing => return Ok(rotation),
            RotationWrite::EndSession(session) => {
                end_one(&tx, session).await?;
                notify(&tx, Ended::Session(session)).await?;
            }
            RotationWrite::Rotate(session) => {
                exec(
                    &tx,
                    "UPDATE refresh_tokens SET used = true WHERE digest = $1",
                    &[&presented.0.as_slice()],
                )
                .await?;
                exec(
                    &tx,
                    "INSERT INTO refresh_tokens (digest, session_id, used) VALUES ($1, $2, false)",
                    &[&next.0.as_slice(), &session.as_bytes().as_slice()],
                )
                .await?;
            }
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(rotation)
    }

    pub(crate) async fn end_session(&self, id: SessionId) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let ended = end_one(&tx, id).await?;
        notify(&tx, Ended::Session(id)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(ended)
    }

    pub(crate) async fn end_sessions(&self, user: UserId, cutoff_ns: i64) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let open = end_all(&tx, user, cutoff_ns).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(open)
    }

    pub(crate) async fn set_password(
        &self,
        user: UserId,
        expected: Option<&PasswordHash>,
        new: &PasswordHash,
        cutoff_ns: i64,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let id = user.as_uuid().as_bytes().as_slice();
        let statement = tx
            .prepare_cached("SELECT password_hash FROM users WHERE id = $1 FOR UPDATE")
            .await
            .map_err(pg_error)?;
        let stored: String = tx
            .query_opt(&statement, &[&id])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound(user))?
            .try_get(0)
            .map_err(pg_error)?;
        if !password_expected(expected, &stored) {
            return Ok(false);
        }
        exec(
            &tx,
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            &[&new.as_phc(), &id],
        )
        .await?;
        end_all(&tx, user, cutoff_ns).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub(crate) async fn session_basis(
        &self,
        basis: &TokenBasis,
        now_ns: i64,
    ) -> StoreResult<(Known, Option<UserId>)> {
        let client = self.client().await?;
        match basis {
            TokenBasis::Session(id) => {
                let statement = client
                    .prepare_cached("SELECT user_id, expires_at FROM sessions WHERE id = $1")
                    .await
                    .map_err(pg_error)?;
                let found = client
                    .query_opt(&statement, &[&id.as_bytes().as_slice()])
                    .await
                    .map_err(pg_error)?;
                let found = match found {
                    Some(row) => Some((
                        UserId::from_uuid(uuid_of(row.try_get(0).map_err(pg_error)?)?),
                        row.try_get::<_, i64>(1).map_err(pg_error)?,
                    )),
                    None => None,
                };
                Ok(session_known(found, now_ns))
            }
            TokenBasis::IssuedAt { user, .. } => {
                let statement = client
                    .prepare_cached("SELECT cutoff FROM token_cutoffs WHERE user_id = $1")
                    .await
                    .map_err(pg_error)?;
                let cutoff = client
                    .query_opt(&statement, &[&user.as_uuid().as_bytes().as_slice()])
                    .await
                    .map_err(pg_error)?
                    .map(|row| row.try_get::<_, i64>(0))
                    .transpose()
                    .map_err(pg_error)?;
                Ok((Known::Cutoff(cutoff), Some(*user)))
            }
            TokenBasis::Key(id) => {
                let statement = client
                    .prepare_cached("SELECT expires_at FROM service_keys WHERE id = $1")
                    .await
                    .map_err(pg_error)?;
                let found = client
                    .query_opt(&statement, &[&id.as_bytes().as_slice()])
                    .await
                    .map_err(pg_error)?
                    .map(|row| row.try_get::<_, Option<i64>>(0))
                    .transpose()
                    .map_err(pg_error)?;
                Ok((key_known(found, now_ns), None))
            }
        }
    }
}
