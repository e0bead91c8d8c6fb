//! Sessions on SQLite: writes through the single writer, reads from the read pool.

use rusqlite::{OptionalExtension, Transaction, params};

use super::super::encoding::stored_status;
use super::super::rules::password_expected;
use super::super::service_keys::key_known;
use super::super::sessions::{
    Known, NewSession, PRUNED_PER_LOGIN, Presented, RefreshDigest, Rotation, RotationWrite,
    SessionId, TokenBasis, rotate, session_known,
};
use super::SqliteStore;
use crate::domain::{PasswordHash, UserId};
use crate::storage::{StoreError, StoreResult};

/// Ends every session of `user`, and tokens without a session issued before `cutoff_ns`:
/// how many sessions were still open then.
fn end_all(tx: &Transaction<'_>, user: UserId, cutoff_ns: i64) -> StoreResult<u64> {
    tx.prepare_cached(
        "INSERT INTO token_cutoffs (user_id, cutoff) VALUES (?1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET cutoff = max(cutoff, excluded.cutoff)",
    )?
    .execute(params![user.as_uuid().as_bytes(), cutoff_ns])?;
    let user = user.as_uuid().as_bytes();
    tx.prepare_cached(
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = ?1)",
    )?
    .execute([user])?;
    let open = tx
        .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND expires_at > ?2")?
        .execute(params![user, cutoff_ns])?;
    tx.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user])?;
    Ok(open as u64)
}

fn end_one(tx: &Transaction<'_>, id: SessionId) -> StoreResult<bool> {
    tx.prepare_cached("DELETE FROM refresh_tokens WHERE session_id = ?1")?
        .execute([id.as_bytes()])?;
    let ended = tx
        .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id.as_bytes()])?;
    Ok(ended == 1)
}

/// The refresh token with `digest`, its session and its user's status, as stored.
fn presented_token(
    conn: &rusqlite::Connection,
    digest: RefreshDigest,
) -> StoreResult<Option<Presented>> {
    let found = conn
        .prepare_cached(
            "SELECT t.session_id, t.used, s.user_id, s.expires_at, u.status
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
             LEFT JOIN users u ON u.id = s.user_id
             WHERE t.digest = ?1",
        )?
        .query_row([digest.0], |row| {
            Ok((
                row.get::<_, [u8; 16]>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, [u8; 16]>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, Option<i32>>(4)?,
            ))
        })
        .optional()?;
    found
        .map(|(session, used, user, expires_at_ns, status)| {
            Ok(Presented {
                session: SessionId::from_bytes(session),
                used,
                user: UserId::from_uuid(uuid::Uuid::from_bytes(user)),
                expires_at_ns,
                user_status: stored_status(status)?,
            })
        })
        .transpose()
}

impl SqliteStore {
    pub(crate) fn refresh_token(&self, digest: RefreshDigest) -> StoreResult<Option<Presented>> {
        self.readers.with(|conn| presented_token(conn, digest))
    }

    pub(crate) fn start_session(&self, session: &NewSession) -> StoreResult<()> {
        self.write(|tx, _| {
            let user = session.user.as_uuid().as_bytes();
            // Expired sessions go as new ones come, a few at a time (deleted users' too).
            tx.prepare_cached(
                "DELETE FROM refresh_tokens WHERE session_id IN
                    (SELECT id FROM sessions WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
            )?
            .execute(params![session.created_at_ns, PRUNED_PER_LOGIN])?;
            tx.prepare_cached(
                "DELETE FROM sessions WHERE id IN
                    (SELECT id FROM sessions WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
            )?
            .execute(params![session.created_at_ns, PRUNED_PER_LOGIN])?;
            tx.prepare_cached(
                "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                session.id.as_bytes(),
                user,
                session.created_at_ns,
                session.expires_at_ns
            ])?;
            tx.prepare_cached(
                "INSERT INTO refresh_tokens (digest, session_id, used) VALUES (?1, ?2, 0)",
            )?
            .execute(params![session.refresh.0, session.id.as_bytes()])?;
            Ok(())
        })
    }

    pub(crate) fn rotate_refresh(
        &self,
        presented: RefreshDigest,
        next: RefreshDigest,
        now_ns: i64,
    ) -> StoreResult<Rotation> {
        self.write(|tx, _| {
            let found = presented_token(tx, presented)?;
            let (rotation, write) = rotate(found, now_ns);
            match write {
                RotationWrite::Nothing => {}
                RotationWrite::EndSession(session) => {
                    end_one(tx, session)?;
                }
                RotationWrite::Rotate(session) => {
                    tx.prepare_cached("UPDATE refresh_tokens SET used = 1 WHERE digest = ?1")?
                        .execute([presented.0])?;
                    tx.prepare_cached(
                        "INSERT INTO refresh_tokens (digest, session_id, used) VALUES (?1, ?2, 0)",
                    )?
                    .execute(params![next.0, session.as_bytes()])?;
                }
            }
            Ok(rotation)
        })
    }

    pub(crate) fn end_session(&self, id: SessionId) -> StoreResult<bool> {
        self.write(|tx, _| end_one(tx, id))
    }

    pub(crate) fn end_sessions(&self, user: UserId, cutoff_ns: i64) -> StoreResult<u64> {
        self.write(|tx, _| end_all(tx, user, cutoff_ns))
    }

    pub(crate) fn set_password(
        &self,
        user: UserId,
        expected: Option<&PasswordHash>,
        new: &PasswordHash,
        cutoff_ns: i64,
    ) -> StoreResult<bool> {
        self.write(|tx, _| {
            let stored: Option<String> = tx
                .prepare_cached("SELECT password_hash FROM users WHERE id = ?1")?
                .query_row([user.as_uuid().as_bytes()], |row| row.get(0))
                .optional()?;
            let stored = stored.ok_or(StoreError::NotFound(user))?;
            if !password_expected(expected, &stored) {
                return Ok(false);
            }
            tx.prepare_cached("UPDATE users SET password_hash = ?1 WHERE id = ?2")?
                .execute(params![new.as_phc(), user.as_uuid().as_bytes()])?;
            end_all(tx, user, cutoff_ns)?;
            Ok(true)
        })
    }

    /// What the database says of a token's basis at `now_ns`, and the session's user.
    pub(crate) fn session_basis(
        &self,
        basis: &TokenBasis,
        now_ns: i64,
    ) -> StoreResult<(Known, Option<UserId>)> {
        self.readers.with(|conn| match basis {
            TokenBasis::Session(id) => {
                let found = conn
                    .prepare_cached("SELECT user_id, expires_at FROM sessions WHERE id = ?1")?
                    .query_row([id.as_bytes()], |row| {
                        Ok((row.get::<_, [u8; 16]>(0)?, row.get::<_, i64>(1)?))
                    })
                    .optional()?;
                let found = found.map(|(user, expires_at)| {
                    (UserId::from_uuid(uuid::Uuid::from_bytes(user)), expires_at)
                });
                Ok(session_known(found, now_ns))
            }
            TokenBasis::IssuedAt { user, .. } => {
                let cutoff = conn
                    .prepare_cached("SELECT cutoff FROM token_cutoffs WHERE user_id = ?1")?
                    .query_row([user.as_uuid().as_bytes()], |row| row.get::<_, i64>(0))
                    .optional()?;
                Ok((Known::Cutoff(cutoff), Some(*user)))
            }
            TokenBasis::Key(id) => {
                let found = conn
                    .prepare_cached("SELECT expires_at FROM service_keys WHERE id = ?1")?
                    .query_row([id.as_bytes()], |row| row.get::<_, Option<i64>>(0))
                    .optional()?;
                Ok((key_known(found, now_ns), None))
            }
        })
    }
}
