//! Login limits on SQLite: every charge and refund goes through the single writer, so the
//! read and the write of a bucket can never interleave with another attempt's.

use rusqlite::{OptionalExtension, Transaction, params};

use super::super::login_limits::{
    Bucket, BucketKey, Charge, LoginAttempt, PRUNED_PER_ATTEMPT, charge, failures_of, refund,
};
use super::SqliteStore;
use crate::storage::StoreResult;

fn read(tx: &Transaction<'_>, key: &BucketKey) -> StoreResult<Option<Bucket>> {
    Ok(tx
        .prepare_cached(
            "SELECT full_at, failures FROM login_limits WHERE account = ?1 AND address = ?2",
        )?
        .query_row(params![key.account, key.address], |row| {
            Ok(Bucket {
                full_at_ns: row.get(0)?,
                failures: row.get(1)?,
            })
        })
        .optional()?)
}

fn store(tx: &Transaction<'_>, key: &BucketKey, bucket: Option<Bucket>) -> StoreResult<()> {
    match bucket {
        Some(bucket) => tx
            .prepare_cached(
                "INSERT INTO login_limits (account, address, full_at, failures)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, address)
                 DO UPDATE SET full_at = excluded.full_at, failures = excluded.failures",
            )?
            .execute(params![
                key.account,
                key.address,
                bucket.full_at_ns,
                bucket.failures
            ])?,
        None => tx
            .prepare_cached("DELETE FROM login_limits WHERE account = ?1 AND address = ?2")?
            .execute(params![key.account, key.address])?,
    };
    Ok(())
}

impl SqliteStore {
    pub(crate) fn charge_login(&self, attempt: &LoginAttempt, now_ns: i64) -> StoreResult<Charge> {
        self.write(|tx, _| {
            // Buckets that have refilled say nothing: a few go with each attempt.
            tx.prepare_cached(
                "DELETE FROM login_limits WHERE (account, address) IN
                    (SELECT account, address FROM login_limits WHERE full_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now_ns, PRUNED_PER_ATTEMPT])?;
            let buckets = attempt.buckets();
            let mut found = Vec::with_capacity(buckets.len());
            for (key, allowance) in &buckets {
                found.push((read(tx, key)?, *allowance));
            }
            let (decision, written) = charge(&found, now_ns);
            for ((key, _), bucket) in buckets.iter().zip(written.into_iter().flatten()) {
                store(tx, key, Some(bucket))?;
            }
            Ok(decision)
        })
    }

    pub(crate) fn refund_login(&self, attempt: &LoginAttempt, now_ns: i64) -> StoreResult<()> {
        self.write(|tx, _| {
            for (key, allowance) in attempt.buckets() {
                let bucket = read(tx, &key)?;
                store(tx, &key, refund(bucket, allowance, now_ns))?;
            }
            Ok(())
        })
    }

    pub(crate) fn clear_login_failures(&self, account: &str, now_ns: i64) -> StoreResult<u64> {
        self.write(|tx, _| {
            let whole = BucketKey {
                account: account.to_owned(),
                address: String::new(),
            };
            let failures = failures_of(read(tx, &whole)?, now_ns);
            tx.prepare_cached("DELETE FROM login_limits WHERE account = ?1")?
                .execute([account])?;
            Ok(failures)
        })
    }
}
