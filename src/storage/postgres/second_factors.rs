//! Second factors on PostgreSQL: a decision holds the user's row locked to its commit, so two
//! logins with one code on two replicas cannot both see it unused.

use deadpool_postgres::Transaction;

use super::super::second_factors::{SecondFactor, accepts_step, may_confirm, may_enroll};
use super::{PostgresStore, pg_error};
use crate::domain::UserId;
use crate::storage::StoreResult;

const SELECT: &str = "SELECT sealed, confirmed, last_step FROM second_factors WHERE user_id = $1";

fn factor(row: &tokio_postgres::Row) -> StoreResult<SecondFactor> {
    Ok(SecondFactor {
        sealed: row.try_get(0).map_err(pg_error)?,
        confirmed: row.try_get(1).map_err(pg_error)?,
        last_step: row.try_get(2).map_err(pg_error)?,
    })
}

/// The user's factor with its row locked to commit.
async fn locked(tx: &Transaction<'_>, user: UserId) -> StoreResult<Option<SecondFactor>> {
    let statement = tx
        .prepare_cached(&format!("{SELECT} FOR UPDATE"))
        .await
        .map_err(pg_error)?;
    tx.query_opt(&statement, &[&user.as_uuid().as_bytes().as_slice()])
        .await
        .map_err(pg_error)?
        .map(|row| factor(&row))
        .transpose()
}

impl PostgresStore {
    pub(crate) async fn second_factor(&self, user: UserId) -> StoreResult<Option<SecondFactor>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(SELECT).await.map_err(pg_error)?;
        client
            .query_opt(&statement, &[&user.as_uuid().as_bytes().as_slice()])
            .await
            .map_err(pg_error)?
            .map(|row| factor(&row))
            .transpose()
    }

    pub(crate) async fn begin_enrollment(&self, user: UserId, sealed: &[u8]) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let id = user.as_uuid().as_bytes().as_slice();
        // A first enrollment has no row to lock: the insert's conflict check orders two.
        tx.execute(
            "INSERT INTO second_factors (user_id, sealed, confirmed, last_step)
             VALUES ($1, $2, false, 0) ON CONFLICT (user_id) DO NOTHING",
            &[&id, &sealed],
        )
        .await
        .map_err(pg_error)?;
        let found = locked(&tx, user).await?;
        if found.as_ref().is_some_and(|factor| factor.sealed == sealed) {
            tx.commit().await.map_err(pg_error)?;
            return Ok(true);
        }
        if !may_enroll(found.as_ref()) {
            return Ok(false);
        }
        tx.execute(
            "UPDATE second_factors SET sealed = $2 WHERE user_id = $1",
            &[&id, &sealed],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub(crate) async fn confirm_enrollment(
        &self,
        user: UserId,
        step: i64,
        recovery: &[[u8; 32]],
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if !may_confirm(locked(&tx, user).await?.as_ref()) {
            return Ok(false);
        }
        let id = user.as_uuid().as_bytes().as_slice();
        tx.execute(
            "UPDATE second_factors SET confirmed = true, last_step = $2 WHERE user_id = $1",
            &[&id, &step],
        )
        .await
        .map_err(pg_error)?;
        tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        for digest in recovery {
            tx.execute(
                "INSERT INTO recovery_codes (user_id, digest) VALUES ($1, $2)",
                &[&id, &digest.as_slice()],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub(crate) async fn use_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if !accepts_step(locked(&tx, user).await?.as_ref(), step) {
            return Ok(false);
        }
        tx.execute(
            "UPDATE second_factors SET last_step = $2 WHERE user_id = $1",
            &[&user.as_uuid().as_bytes().as_slice(), &step],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    pub(crate) async fn use_recovery_code(
        &self,
        user: UserId,
        digest: &[u8; 32],
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let used = client
            .execute(
                "DELETE FROM recovery_codes WHERE user_id = $1 AND digest = $2",
                &[&user.as_uuid().as_bytes().as_slice(), &digest.as_slice()],
            )
            .await
            .map_err(pg_error)?;
        Ok(used == 1)
    }

    pub(crate) async fn remove_second_factor(&self, user: UserId) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let id = user.as_uuid().as_bytes().as_slice();
        tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        let removed = tx
            .execute("DELETE FROM second_factors WHERE user_id = $1", &[&id])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(removed == 1)
    }
}
