//! One-time codes and their deliveries on PostgreSQL. Deliveries are numbered by a sequence
//! under a transaction-scoped advisory lock, so they commit in revision order and a mailer
//! reading after revision N never misses a later-committing N - 1.

use super::super::one_time_codes::{
    ATTEMPTS, CodeDigest, CodeWrite, Delivery, IssuedCode, Purpose, Redeemed, StoredCode, redeem,
};
use super::{PostgresStore, pg_error};
use crate::domain::UserId;
use crate::storage::encoding::corrupt;
use crate::storage::{StoreError, StoreResult};

/// Expired codes and deliveries removed by each issue, at most.
const PRUNED: i64 = 16;
/// The advisory lock deliveries are written under: "dlv" in ASCII.
const DELIVERY_LOCK: i64 = 0x64_6c_76;

impl PostgresStore {
    pub(crate) async fn issue_code(&self, code: &IssuedCode, now_ns: i64) -> StoreResult<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DELIVERY_LOCK])
            .await
            .map_err(pg_error)?;
        tx.execute(
            "DELETE FROM deliveries WHERE revision IN
                (SELECT revision FROM deliveries WHERE expires_at <= $1 LIMIT $2)",
            &[&now_ns, &PRUNED],
        )
        .await
        .map_err(pg_error)?;
        tx.execute(
            "DELETE FROM one_time_codes WHERE (user_id, purpose) IN
                (SELECT user_id, purpose FROM one_time_codes WHERE expires_at <= $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&now_ns, &PRUNED],
        )
        .await
        .map_err(pg_error)?;
        let user = code.user.as_uuid().as_bytes().as_slice();
        let purpose = code.purpose as i32;
        let attempts = i32::try_from(ATTEMPTS).unwrap_or(i32::MAX);
        if code.purpose.has_code() {
            tx.execute(
            "INSERT INTO one_time_codes (user_id, purpose, digest, email, expires_at, attempts_left)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id, purpose) DO UPDATE SET digest = EXCLUDED.digest,
                email = EXCLUDED.email, expires_at = EXCLUDED.expires_at,
                attempts_left = EXCLUDED.attempts_left",
            &[
                &user,
                &purpose,
                &code.digest.0.as_slice(),
                &code.email,
                &code.expires_at_ns,
                &attempts,
            ],
        )
        .await
        .map_err(pg_error)?;
        }
        let revision: i64 = tx
            .query_one(
                "INSERT INTO deliveries (purpose, user_id, username, email, code, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING revision",
                &[
                    &purpose,
                    &user,
                    &code.username,
                    &code.email,
                    &code.code,
                    &code.expires_at_ns,
                ],
            )
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(revision)
    }

    pub(crate) async fn redeem_code(
        &self,
        user: UserId,
        purpose: Purpose,
        presented: &CodeDigest,
        now_ns: i64,
    ) -> StoreResult<Redeemed> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let id = user.as_uuid().as_bytes().as_slice();
        let purpose = purpose as i32;
        let found = tx
            .query_opt(
                "SELECT digest, email, expires_at, attempts_left FROM one_time_codes
                 WHERE user_id = $1 AND purpose = $2 FOR UPDATE",
                &[&id, &purpose],
            )
            .await
            .map_err(pg_error)?
            .map(|row| -> StoreResult<StoredCode> {
                Ok(StoredCode {
                    digest: row.try_get(0).map_err(pg_error)?,
                    email: row.try_get(1).map_err(pg_error)?,
                    expires_at_ns: row.try_get(2).map_err(pg_error)?,
                    attempts_left: i64::from(row.try_get::<_, i32>(3).map_err(pg_error)?),
                })
            })
            .transpose()?;
        let (redeemed, write) = redeem(found, presented, now_ns);
        let sql = match write {
            CodeWrite::Nothing => return Ok(redeemed),
            CodeWrite::Delete => "DELETE FROM one_time_codes WHERE user_id = $1 AND purpose = $2",
            CodeWrite::Decrement => {
                "UPDATE one_time_codes SET attempts_left = attempts_left - 1
                 WHERE user_id = $1 AND purpose = $2"
            }
        };
        tx.execute(sql, &[&id, &purpose]).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(redeemed)
    }

    pub(crate) async fn deliveries_after(
        &self,
        revision: i64,
        limit: i64,
        now_ns: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT revision, purpose, user_id, username, email, code, expires_at
                 FROM deliveries WHERE revision > $1 AND expires_at > $3
                 ORDER BY revision LIMIT $2",
                &[&revision, &limit, &now_ns],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                let purpose: i32 = row.try_get(1).map_err(pg_error)?;
                let user: &[u8] = row.try_get(2).map_err(pg_error)?;
                Ok(Delivery {
                    revision: row.try_get(0).map_err(pg_error)?,
                    purpose: Purpose::from_i64(i64::from(purpose))
                        .ok_or_else(|| corrupt("delivery purpose"))?,
                    user: UserId::from_uuid(
                        uuid::Uuid::from_slice(user).map_err(StoreError::backend)?,
                    ),
                    username: row.try_get(3).map_err(pg_error)?,
                    email: row.try_get(4).map_err(pg_error)?,
                    code: row.try_get(5).map_err(pg_error)?,
                    expires_at_ns: row.try_get(6).map_err(pg_error)?,
                })
            })
            .collect()
    }
}
