//! Server secrets on SQLite: written if absent and read back in one write transaction.

use rusqlite::params;

use super::SqliteStore;
use crate::storage::StoreResult;

impl SqliteStore {
    pub(crate) fn server_secret(
        &self,
        name: &str,
        drawn: &[u8],
        now_ns: i64,
    ) -> StoreResult<Vec<u8>> {
        self.write(|tx, _| {
            tx.prepare_cached(
                "INSERT INTO server_secrets (name, secret, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![name, drawn, now_ns])?;
            Ok(tx
                .prepare_cached("SELECT secret FROM server_secrets WHERE name = ?1")?
                .query_row([name], |row| row.get(0))?)
        })
    }
}
