//! Server secrets on PostgreSQL: written if absent, then read back, so two replicas starting
//! at once both read the one that committed first.

use super::{PostgresStore, pg_error};
use crate::storage::StoreResult;

impl PostgresStore {
    pub(crate) async fn server_secret(
        &self,
        name: &str,
        drawn: &[u8],
        now_ns: i64,
    ) -> StoreResult<Vec<u8>> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO server_secrets (name, secret, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &drawn, &now_ns],
            )
            .await
            .map_err(pg_error)?;
        client
            .query_one(
                "SELECT secret FROM server_secrets WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg_error)?
            .try_get(0)
            .map_err(pg_error)
    }
}
