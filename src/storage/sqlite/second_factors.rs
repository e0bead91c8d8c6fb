//! Second factors on SQLite: decisions read and write through the single writer, so two
//! logins with one code cannot both see it unused.

use rusqlite::{OptionalExtension, Transaction, params};

use super::super::second_factors::{SecondFactor, accepts_step, may_confirm, may_enroll};
use super::SqliteStore;
use crate::domain::UserId;
use crate::storage::StoreResult;

fn read(conn: &rusqlite::Connection, user: UserId) -> StoreResult<Option<SecondFactor>> {
    Ok(conn
        .prepare_cached(
            "SELECT sealed, confirmed, last_step FROM second_factors WHERE user_id = ?1",
        )?
        .query_row([user.as_uuid().as_bytes()], |row| {
            Ok(SecondFactor {
                sealed: row.get(0)?,
                confirmed: row.get(1)?,
                last_step: row.get(2)?,
            })
        })
        .optional()?)
}

fn remove(tx: &Transaction<'_>, user: UserId) -> StoreResult<bool> {
    let id = user.as_uuid().as_bytes();
    tx.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
        .execute([id])?;
    let removed = tx
        .prepare_cached("DELETE FROM second_factors WHERE user_id = ?1")?
        .execute([id])?;
    Ok(removed == 1)
}

impl SqliteStore {
    pub(crate) fn second_factor(&self, user: UserId) -> StoreResult<Option<SecondFactor>> {
        self.readers.with(|conn| read(conn, user))
    }

    pub(crate) fn begin_enrollment(&self, user: UserId, sealed: &[u8]) -> StoreResult<bool> {
        self.write(|tx, _| {
            if !may_enroll(read(tx, user)?.as_ref()) {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO second_factors (user_id, sealed, confirmed, last_step)
                 VALUES (?1, ?2, 0, 0)
                 ON CONFLICT (user_id) DO UPDATE SET sealed = excluded.sealed",
            )?
            .execute(params![user.as_uuid().as_bytes(), sealed])?;
            Ok(true)
        })
    }

    pub(crate) fn confirm_enrollment(
        &self,
        user: UserId,
        step: i64,
        recovery: &[[u8; 32]],
    ) -> StoreResult<bool> {
        self.write(|tx, _| {
            if !may_confirm(read(tx, user)?.as_ref()) {
                return Ok(false);
            }
            let id = user.as_uuid().as_bytes();
            tx.prepare_cached(
                "UPDATE second_factors SET confirmed = 1, last_step = ?2 WHERE user_id = ?1",
            )?
            .execute(params![id, step])?;
            tx.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
                .execute([id])?;
            for digest in recovery {
                tx.prepare_cached("INSERT INTO recovery_codes (user_id, digest) VALUES (?1, ?2)")?
                    .execute(params![id, digest])?;
            }
            Ok(true)
        })
    }

    pub(crate) fn use_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        self.write(|tx, _| {
            if !accepts_step(read(tx, user)?.as_ref(), step) {
                return Ok(false);
            }
            tx.prepare_cached("UPDATE second_factors SET last_step = ?2 WHERE user_id = ?1")?
                .execute(params![user.as_uuid().as_bytes(), step])?;
            Ok(true)
        })
    }

    pub(crate) fn use_recovery_code(&self, user: UserId, digest: &[u8; 32]) -> StoreResult<bool> {
        self.write(|tx, _| {
            let used = tx
                .prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1 AND digest = ?2")?
                .execute(params![user.as_uuid().as_bytes(), digest])?;
            Ok(used == 1)
        })
    }

    pub(crate) fn remove_second_factor(&self, user: UserId) -> StoreResult<bool> {
        self.write(|tx, _| remove(tx, user))
    }
}
