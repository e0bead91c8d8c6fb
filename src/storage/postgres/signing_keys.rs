//! Signing keys on PostgreSQL: a rotation pass reads, decides (`signing_keys::plan`) on the
//! database's clock and writes in one transaction under a lock, so two replicas passing at
//! once add one key, not two.

use deadpool_postgres::GenericClient;

use super::super::signing_keys::{RotationPolicy, StoredKey, plan};
use super::{PostgresStore, pg_error};
use crate::storage::StoreResult;

/// The advisory lock a rotation pass holds ("skr").
const ROTATION_LOCK: i64 = 0x73_6b_72;

async fn read(client: &impl GenericClient) -> StoreResult<Vec<StoredKey>> {
    let rows = client
        .query(
            "SELECT kid, algorithm, public_jwk, sealed, created_at, activates_at
             FROM signing_keys ORDER BY activates_at, kid",
            &[],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| {
            Ok(StoredKey {
                kid: row.try_get(0).map_err(pg_error)?,
                algorithm: row.try_get(1).map_err(pg_error)?,
                public_jwk: row.try_get(2).map_err(pg_error)?,
                sealed: row.try_get(3).map_err(pg_error)?,
                created_at_ns: row.try_get(4).map_err(pg_error)?,
                activates_at_ns: row.try_get(5).map_err(pg_error)?,
            })
        })
        .collect()
}

impl PostgresStore {
    pub(crate) async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        read(&*self.client().await?).await
    }

    pub(crate) async fn advance_signing_keys(
        &self,
        policy: RotationPolicy,
        asked: bool,
        fresh: StoredKey,
    ) -> StoreResult<Vec<StoredKey>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROTATION_LOCK])
            .await
            .map_err(pg_error)?;
        // The database's clock decides, the same for every replica.
        let now_ns: i64 = tx
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000",
                &[],
            )
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)?;
        let plan = plan(&read(&tx).await?, now_ns, policy, asked);
        if let Some(activates_at) = plan.add_activating_at_ns {
            tx.execute(
                "INSERT INTO signing_keys
                 (kid, algorithm, public_jwk, sealed, created_at, activates_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &fresh.kid,
                    &fresh.algorithm,
                    &fresh.public_jwk,
                    &fresh.sealed,
                    &now_ns,
                    &activates_at,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        for kid in &plan.remove {
            tx.execute("DELETE FROM signing_keys WHERE kid = $1", &[kid])
                .await
                .map_err(pg_error)?;
        }
        let keys = read(&tx).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(keys)
    }
}
