//! Service keys on PostgreSQL. Creating one takes a transaction-scoped advisory lock, so two
//! replicas creating keys at once cannot both pass the name and count checks; revoking one
//! sends `NOTIFY user_sessions`, so every replica forgets it in the same commit's wake.

use tokio_postgres::Row;

use super::super::service_keys::{Creation, KeyDigest, RawKey, key_columns, may_create, too_many};
use super::super::sessions::Ended;
use super::sessions::notify;
use super::{PostgresStore, pg_error};
use crate::domain::{KeyId, ServiceKey};
use crate::storage::{StoreError, StoreResult};

/// The advisory lock key creations hold: "usk" in ASCII.
const CREATION_LOCK: i64 = 0x75_73_6b;

fn raw(row: &Row) -> StoreResult<RawKey> {
    Ok(RawKey {
        id: row.try_get(0).map_err(pg_error)?,
        name: row.try_get(1).map_err(pg_error)?,
        role: row.try_get(2).map_err(pg_error)?,
        created_at_ns: row.try_get(3).map_err(pg_error)?,
        expires_at_ns: row.try_get(4).map_err(pg_error)?,
        last_used_at_ns: row.try_get(5).map_err(pg_error)?,
        digest: row.try_get(6).map_err(pg_error)?,
    })
}

impl PostgresStore {
    pub(crate) async fn create_key(&self, key: &ServiceKey, digest: KeyDigest) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATION_LOCK])
            .await
            .map_err(pg_error)?;
        let count: i64 = tx
            .query_one("SELECT count(*) FROM service_keys", &[])
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        let taken = tx
            .query_opt(
                "SELECT 1 FROM service_keys WHERE name_key = $1",
                &[&key.name.key()],
            )
            .await
            .map_err(pg_error)?
            .is_some();
        match may_create(count, taken) {
            Creation::NameTaken => return Err(StoreError::taken("name", key.name.as_str())),
            Creation::TooMany => return Err(too_many()),
            Creation::Created => {}
        }
        tx.execute(
            "INSERT INTO service_keys (id, name, name_key, role, digest, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key.id.as_bytes().as_slice(),
                &key.name.as_str(),
                &key.name.key(),
                &(key.role as i64),
                &digest.0.as_slice(),
                &key.created_at_ns,
                &key.expires_at_ns,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    pub(crate) async fn list_keys(&self) -> StoreResult<Vec<ServiceKey>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                " FROM service_keys ORDER BY created_at, id"
            ))
            .await
            .map_err(pg_error)?;
        let rows = client.query(&statement, &[]).await.map_err(pg_error)?;
        rows.iter().map(|row| Ok(raw(row)?.into_key()?.0)).collect()
    }

    pub(crate) async fn key(&self, id: KeyId) -> StoreResult<Option<(ServiceKey, KeyDigest)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                " FROM service_keys WHERE id = $1"
            ))
            .await
            .map_err(pg_error)?;
        let found = client
            .query_opt(&statement, &[&id.as_bytes().as_slice()])
            .await
            .map_err(pg_error)?;
        found.map(|row| raw(&row)?.into_key()).transpose()
    }

    pub(crate) async fn revoke_key(&self, id: KeyId) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let deleted = tx
            .execute(
                "DELETE FROM service_keys WHERE id = $1",
                &[&id.as_bytes().as_slice()],
            )
            .await
            .map_err(pg_error)?;
        notify(&tx, Ended::Key(id)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(deleted == 1)
    }

    pub(crate) async fn key_used(&self, id: KeyId, now_ns: i64) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE service_keys SET last_used_at = greatest(last_used_at, $2) WHERE id = $1",
                &[&id.as_bytes().as_slice(), &now_ns],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}
