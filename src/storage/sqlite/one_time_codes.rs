//! One-time codes and their deliveries on SQLite, through the single writer.

use rusqlite::{OptionalExtension, params};

use super::super::one_time_codes::{
    ATTEMPTS, CodeDigest, CodeWrite, Delivery, IssuedCode, Purpose, Redeemed, StoredCode, redeem,
};
use super::SqliteStore;
use crate::domain::UserId;
use crate::storage::StoreResult;
use crate::storage::encoding::corrupt;

/// Expired codes and deliveries removed by each issue, at most.
const PRUNED: i64 = 16;

impl SqliteStore {
    pub(crate) fn issue_code(&self, code: &IssuedCode, now_ns: i64) -> StoreResult<i64> {
        self.write(|tx, _| {
            tx.prepare_cached(
                "DELETE FROM deliveries WHERE revision IN
                    (SELECT revision FROM deliveries WHERE expires_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now_ns, PRUNED])?;
            tx.prepare_cached(
                "DELETE FROM one_time_codes WHERE (user_id, purpose) IN
                    (SELECT user_id, purpose FROM one_time_codes WHERE expires_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now_ns, PRUNED])?;
            let user = code.user.as_uuid().as_bytes();
            if code.purpose.has_code() {
                tx.prepare_cached(
                "INSERT INTO one_time_codes (user_id, purpose, digest, email, expires_at, attempts_left)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (user_id, purpose) DO UPDATE SET digest = excluded.digest,
                    email = excluded.email, expires_at = excluded.expires_at,
                    attempts_left = excluded.attempts_left",
            )?
            .execute(params![
                user,
                code.purpose as i64,
                code.digest.0,
                code.email,
                code.expires_at_ns,
                ATTEMPTS
            ])?;
            }
            tx.prepare_cached(
                "INSERT INTO deliveries (purpose, user_id, username, email, code, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                code.purpose as i64,
                user,
                code.username,
                code.email,
                code.code,
                code.expires_at_ns
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    pub(crate) fn redeem_code(
        &self,
        user: UserId,
        purpose: Purpose,
        presented: &CodeDigest,
        now_ns: i64,
    ) -> StoreResult<Redeemed> {
        self.write(|tx, _| {
            let id = user.as_uuid().as_bytes();
            let found = tx
                .prepare_cached(
                    "SELECT digest, email, expires_at, attempts_left FROM one_time_codes
                     WHERE user_id = ?1 AND purpose = ?2",
                )?
                .query_row(params![id, purpose as i64], |row| {
                    Ok(StoredCode {
                        digest: row.get(0)?,
                        email: row.get(1)?,
                        expires_at_ns: row.get(2)?,
                        attempts_left: row.get(3)?,
                    })
                })
                .optional()?;
            let (redeemed, write) = redeem(found, presented, now_ns);
            let sql = match write {
                CodeWrite::Nothing => return Ok(redeemed),
                CodeWrite::Delete => {
                    "DELETE FROM one_time_codes WHERE user_id = ?1 AND purpose = ?2"
                }
                CodeWrite::Decrement => {
                    "UPDATE one_time_codes SET attempts_left = attempts_left - 1
                     WHERE user_id = ?1 AND purpose = ?2"
                }
            };
            tx.prepare_cached(sql)?
                .execute(params![id, purpose as i64])?;
            Ok(redeemed)
        })
    }

    pub(crate) fn deliveries_after(
        &self,
        revision: i64,
        limit: i64,
        now_ns: i64,
    ) -> StoreResult<Vec<Delivery>> {
        self.readers.with(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT revision, purpose, user_id, username, email, code, expires_at
                 FROM deliveries WHERE revision > ?1 AND expires_at > ?3
                 ORDER BY revision LIMIT ?2",
            )?;
            let rows = statement.query_map(params![revision, limit, now_ns], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, [u8; 16]>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, i64>(6)?,
                ))
            })?;
            let mut deliveries = Vec::new();
            for row in rows {
                let (revision, purpose, user, username, email, code, expires_at_ns) = row?;
                deliveries.push(Delivery {
                    revision,
                    purpose: Purpose::from_i64(purpose)
                        .ok_or_else(|| corrupt("delivery purpose"))?,
                    user: UserId::from_uuid(uuid::Uuid::from_bytes(user)),
                    username,
                    email,
                    code,
                    expires_at_ns,
                });
            }
            Ok(deliveries)
        })
    }
}
