//! Signing keys on SQLite: a rotation pass reads, decides (`signing_keys::plan`) and writes in
//! one write transaction.

use rusqlite::{Connection, params};

use super::super::signing_keys::{RotationPolicy, StoredKey, plan};
use super::SqliteStore;
use crate::storage::StoreResult;

fn read(conn: &Connection) -> StoreResult<Vec<StoredKey>> {
    let mut statement = conn.prepare_cached(
        "SELECT kid, algorithm, public_jwk, sealed, created_at, activates_at
         FROM signing_keys ORDER BY activates_at, kid",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(StoredKey {
            kid: row.get(0)?,
            algorithm: row.get(1)?,
            public_jwk: row.get(2)?,
            sealed: row.get(3)?,
            created_at_ns: row.get(4)?,
            activates_at_ns: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl SqliteStore {
    pub(crate) fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.readers.with(|conn| read(conn))
    }

    pub(crate) fn advance_signing_keys(
        &self,
        policy: RotationPolicy,
        asked: bool,
        fresh: StoredKey,
        now_ns: i64,
    ) -> StoreResult<Vec<StoredKey>> {
        self.write(|tx, _| {
            let plan = plan(&read(tx)?, now_ns, policy, asked);
            if let Some(activates_at) = plan.add_activating_at_ns {
                tx.prepare_cached(
                    "INSERT INTO signing_keys
                     (kid, algorithm, public_jwk, sealed, created_at, activates_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    fresh.kid,
                    fresh.algorithm,
                    fresh.public_jwk,
                    fresh.sealed,
                    now_ns,
                    activates_at
                ])?;
            }
            for kid in &plan.remove {
                tx.prepare_cached("DELETE FROM signing_keys WHERE kid = ?1")?
                    .execute([kid])?;
            }
            read(tx)
        })
    }
}
