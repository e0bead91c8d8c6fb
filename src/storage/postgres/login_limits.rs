//! Login limits on PostgreSQL: an attempt's bucket rows are created when missing and locked,
//! in one order, for the rest of its transaction, so attempts at one account through any
//! number of replicas are charged one after another (and never wait on each other in a cycle).

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::super::login_limits::{
    Bucket, BucketKey, Charge, LoginAllowance, LoginAttempt, PRUNED_PER_ATTEMPT, charge,
    failures_of, refund,
};
use super::{PostgresStore, pg_error};
use crate::storage::StoreResult;

async fn exec(tx: &Transaction<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    let statement = tx.prepare_cached(sql).await.map_err(pg_error)?;
    tx.execute(&statement, params).await.map_err(pg_error)
}

/// Reads each bucket with its row locked to commit. A missing row is created (empty, already
/// refilled) so that there is one to lock; the upsert that does so locks an existing row in
/// the same statement, so a row pruned meanwhile cannot slip between a check and a lock.
async fn lock(
    tx: &Transaction<'_>,
    buckets: &[(BucketKey, LoginAllowance)],
) -> StoreResult<Vec<(Option<Bucket>, LoginAllowance)>> {
    let upsert = tx
        .prepare_cached(
            "INSERT INTO login_limits (account, address, full_at, failures) VALUES ($1, $2, 0, 0)
             ON CONFLICT (account, address) DO UPDATE SET full_at = login_limits.full_at
             RETURNING full_at, failures",
        )
        .await
        .map_err(pg_error)?;
    let mut found = Vec::with_capacity(buckets.len());
    for (key, allowance) in buckets {
        let row = tx
            .query_one(&upsert, &[&key.account, &key.address])
            .await
            .map_err(pg_error)?;
        let bucket = Bucket {
            full_at_ns: row.try_get(0).map_err(pg_error)?,
            failures: row.try_get(1).map_err(pg_error)?,
        };
        found.push((Some(bucket), *allowance));
    }
    Ok(found)
}

async fn store(tx: &Transaction<'_>, key: &BucketKey, bucket: Bucket) -> StoreResult<()> {
    exec(
        tx,
        "UPDATE login_limits SET full_at = $3, failures = $4 WHERE account = $1 AND address = $2",
        &[
            &key.account,
            &key.address,
            &bucket.full_at_ns,
            &bucket.failures,
        ],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    pub(crate) async fn charge_login(
        &self,
        attempt: &LoginAttempt,
        now_ns: i64,
    ) -> StoreResult<Charge> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let buckets = attempt.buckets();
        let found = lock(&tx, &buckets).await?;
        let (decision, written) = charge(&found, now_ns);
        for ((key, _), bucket) in buckets.iter().zip(written.into_iter().flatten()) {
            store(&tx, key, bucket).await?;
        }
        // Buckets that have refilled say nothing: a few go with each attempt. Last, and
        // skipping rows other attempts hold, so this transaction waits on no one while it
        // holds rows someone may be waiting for.
        exec(
            &tx,
            "DELETE FROM login_limits WHERE (account, address) IN
                (SELECT account, address FROM login_limits WHERE full_at <= $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&now_ns, &PRUNED_PER_ATTEMPT],
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(decision)
    }

    pub(crate) async fn refund_login(
        &self,
        attempt: &LoginAttempt,
        now_ns: i64,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let buckets = attempt.buckets();
        let found = lock(&tx, &buckets).await?;
        for ((key, allowance), (bucket, _)) in buckets.iter().zip(found) {
            // A bucket with nothing to give back is left refilled, for the pruning to take.
            let refunded = refund(bucket, *allowance, now_ns).unwrap_or(Bucket {
                full_at_ns: now_ns,
                failures: 0,
            });
            store(&tx, key, refunded).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    pub(crate) async fn clear_login_failures(
        &self,
        account: &str,
        now_ns: i64,
    ) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let whole = BucketKey {
            account: account.to_owned(),
            address: String::new(),
        };
        let statement = tx
            .prepare_cached(
                "SELECT full_at, failures FROM login_limits
                 WHERE account = $1 AND address = $2 FOR UPDATE",
            )
            .await
            .map_err(pg_error)?;
        let found = tx
            .query_opt(&statement, &[&whole.account, &whole.address])
            .await
            .map_err(pg_error)?
            .map(|row| -> StoreResult<Bucket> {
                Ok(Bucket {
                    full_at_ns: row.try_get(0).map_err(pg_error)?,
                    failures: row.try_get(1).map_err(pg_error)?,
                })
            })
            .transpose()?;
        exec(
            &tx,
            "DELETE FROM login_limits WHERE account = $1",
            &[&account],
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(failures_of(found, now_ns))
    }
}
