//! Service keys on SQLite: writes through the single writer, reads from the read pool.

use rusqlite::{OptionalExtension, Row, params};

use super::super::service_keys::{Creation, KeyDigest, RawKey, key_columns, may_create, too_many};
use super::SqliteStore;
use crate::domain::{KeyId, ServiceKey};
use crate::storage::{StoreError, StoreResult};

fn raw(row: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey {
        id: row.get(0)?,
        name: row.get(1)?,
        role: row.get(2)?,
        created_at_ns: row.get(3)?,
        expires_at_ns: row.get(4)?,
        last_used_at_ns: row.get(5)?,
        digest: row.get(6)?,
    })
}

impl SqliteStore {
    pub(crate) fn create_key(&self, key: &ServiceKey, digest: KeyDigest) -> StoreResult<()> {
        self.write(|tx, _| {
            let count: i64 = tx
                .prepare_cached("SELECT count(*) FROM service_keys")?
                .query_row([], |row| row.get(0))?;
            let taken = tx
                .prepare_cached("SELECT 1 FROM service_keys WHERE name_key = ?1")?
                .query_row([key.name.key()], |_| Ok(()))
                .optional()?
                .is_some();
            match may_create(count, taken) {
                Creation::NameTaken => return Err(StoreError::taken("name", key.name.as_str())),
                Creation::TooMany => return Err(too_many()),
                Creation::Created => {}
            }
            tx.prepare_cached(
                "INSERT INTO service_keys (id, name, name_key, role, digest, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                key.id.as_bytes(),
                key.name.as_str(),
                key.name.key(),
                key.role as i64,
                digest.0,
                key.created_at_ns,
                key.expires_at_ns
            ])?;
            Ok(())
        })
    }

    pub(crate) fn list_keys(&self) -> StoreResult<Vec<ServiceKey>> {
        self.readers.with(|conn| {
            let mut statement = conn.prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                " FROM service_keys ORDER BY created_at, id"
            ))?;
            let rows = statement.query_map([], raw)?;
            let mut keys = Vec::new();
            for row in rows {
                keys.push(row?.into_key()?.0);
            }
            Ok(keys)
        })
    }

    pub(crate) fn key(&self, id: KeyId) -> StoreResult<Option<(ServiceKey, KeyDigest)>> {
        self.readers.with(|conn| {
            let found = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    key_columns!(),
                    " FROM service_keys WHERE id = ?1"
                ))?
                .query_row([id.as_bytes()], raw)
                .optional()?;
            found.map(RawKey::into_key).transpose()
        })
    }

    pub(crate) fn revoke_key(&self, id: KeyId) -> StoreResult<bool> {
        self.write(|tx, _| {
            let deleted = tx
                .prepare_cached("DELETE FROM service_keys WHERE id = ?1")?
                .execute([id.as_bytes()])?;
            Ok(deleted == 1)
        })
    }

    pub(crate) fn key_used(&self, id: KeyId, now_ns: i64) -> StoreResult<()> {
        self.write(|tx, _| {
            tx.prepare_cached(
                "UPDATE service_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
            )?
            .execute(params![id.as_bytes(), now_ns])?;
            Ok(())
        })
    }
}
