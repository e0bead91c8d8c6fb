//! The log tail: how one replica follows every replica's commits.
//!
//! One dedicated connection (outside the pool) LISTENs on `user_events` (and on
//! `user_sessions`, whose notifications say which sessions ended: see `storage::sessions`). A notification, a
//! local commit, or a periodic tick wakes it; it then reads the `events` table from the last
//! revision it applied, so a lost notification or a reconnect loses nothing: the table is the
//! data, the notification only says "look". What it reads it applies, in revision order, to
//! this replica's cache, watchers and head (`Published`).
//!
//! The tail also prunes the log past the retention window, on one replica at a time (a
//! transaction-scoped advisory lock), and keeps the oldest retained revision current.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::super::published::Published;
use super::super::rules::prune_log_from;
use super::super::sessions::{self, Ended};
use super::read::{EVENTS_AFTER, events_after};
use super::{Lease, pg_error};
use crate::storage::{StoreError, StoreResult};

/// Events read per query while catching up.
const READ_BATCH: usize = 1000;
/// A safety net: the tail reads the log this often even without a notification.
const TICK: Duration = Duration::from_secs(1);
/// Connecting and subscribing, or one catch-up, that takes longer than this counts as a lost
/// connection: with the tick, a link that went silent is noticed within `TICK + READ_LIMIT`.
const READ_LIMIT: Duration = Duration::from_millis(1500);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// The advisory lock key that lets one replica at a time prune the log.
const PRUNE_LOCK: i64 = 0x7573_6572_0002;
pub(super) struct Tail {
    pub config: tokio_postgres::Config,
    pub pool: Pool,
    pub published: Arc<Published>,
    pub nudge: Arc<Notify>,
    pub stop: CancellationToken,
    pub retention: i64,
    /// The bound of each pruning transaction.
    pub operation_timeout: Duration,
}

impl Tail {
    /// Follows the log until stopped, reconnecting with backoff whenever the connection drops.
    pub async fn follow(self) {
        let mut delay = RECONNECT_MIN;
        loop {
            match self.session().await {
                Ok(()) => return,
                Err(err) => {
                    if *self.published.reachable().borrow() {
                        tracing::error!(error = %crate::text::chain(&err), "lost the database: the log tail reconnects");
                    }
                    self.published.set_reachable(false);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => return,
            }
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// One connection's life: LISTEN, catch up, then catch up again on every wake-up.
    async fn session(&self) -> StoreResult<()> {
        let (client, mut connection) = super::connect::first_writable(&self.config)
            .await
            .map_err(pg_error)?;
        let silent = || StoreError::Unavailable("the log tail's connection went silent".into());
        let (wake, mut woken) = mpsc::unbounded_channel::<()>();
        let published = self.published.clone();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(note)))
                        if note.channel() == sessions::CHANNEL =>
                    {
                        match Ended::parse(note.payload()) {
                            Some(ended) => published.sessions.forget(ended),
                            None => published.sessions.clear(),
                        }
                    }
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        if wake.send(()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    // The client sees the connection's end as errors on its next query.
                    Some(Err(_)) | None => return,
                }
            }
        });
        let _driver = AbortOnDrop(driver);
        let subscribe = async {
            client
                .batch_execute(&format!("LISTEN user_events; LISTEN {}", sessions::CHANNEL))
                .await
                .map_err(pg_error)?;
            // Prepared once for the connection's life: every wake-up runs it.
            client.prepare(EVENTS_AFTER).await.map_err(pg_error)
        };
        let read = tokio::time::timeout(READ_LIMIT, subscribe)
            .await
            .map_err(|_| silent())??;
        // Sessions that ended while no connection listened were never announced here.
        self.published.sessions.clear();
        // Only after LISTEN: whatever commits from here on wakes us, and the catch-up below
        // reads everything before.
        let mut first = true;
        loop {
            tokio::time::timeout(READ_LIMIT, self.catch_up(&client, &read))
                .await
                .map_err(|_| silent())??;
            if first {
                if !*self.published.reachable().borrow() {
                    tracing::info!(
                        head = self.published.head(),
                        "the database is back: the log tail follows again"
                    );
                }
                self.published.set_reachable(true);
                first = false;
            }
            maintain(
                &self.pool,
                &self.published,
                self.retention,
                self.operation_timeout,
            )
            .await;
            tokio::select! {
                woke = woken.recv() => {
                    if woke.is_none() {
                        return Err(StoreError::Unavailable("the notification connection closed".into()));
                    }
                    while woken.try_recv().is_ok() {}
                }
                () = self.nudge.notified() => {}
                () = tokio::time::sleep(TICK) => {}
                () = self.stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Applies every committed event after this replica's head.
    async fn catch_up(
        &self,
        client: &tokio_postgres::Client,
        read: &tokio_postgres::Statement,
    ) -> StoreResult<()> {
        loop {
            let head = self.published.head();
            let events = events_after(client, read, head, READ_BATCH).await?;
            let Some(first) = events.first() else {
                return Ok(());
            };
            if first.revision != head + 1 {
                // Pruned before this replica read them: what it cached may be stale.
                tracing::warn!(
                    head,
                    next = first.revision,
                    "the event log was pruned past this replica's head: clearing its cache"
                );
                self.published.skip_to(first.revision - 1);
                self.published.set_oldest(first.revision);
            }
            let full = events.len() == READ_BATCH;
            self.published.apply(events);
            if !full {
                return Ok(());
            }
        }
    }
}

/// Prunes the log once it holds more than the retention window (and some slack), one replica
/// at a time (an advisory lock), and reads back the oldest retained revision. Writers run it
/// after their commit (so a pruned revision is refused as soon as the write that pushed it out
/// is acknowledged, as on SQLite); the tail runs it to learn of other replicas' pruning.
pub(super) async fn maintain(pool: &Pool, published: &Published, retention: i64, limit: Duration) {
    let Some(keep_from) = prune_log_from(published.head(), published.oldest(), retention) else {
        return;
    };
    let ends = Instant::now() + limit;
    let pruned = tokio::time::timeout_at(ends, prune(pool, keep_from, ends))
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("pruning timed out".into())));
    match pruned {
        Ok(oldest) => published.set_oldest(oldest),
        Err(err) => tracing::warn!(error = %err, "pruning the event log failed"),
    }
}

async fn prune(pool: &Pool, keep_from: i64, ends: Instant) -> StoreResult<i64> {
    let mut client = Lease::checkout(pool, ends).await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    // Waits for a replica (or this one's tail) that is pruning now; the delete then finds
    // little or nothing left, and the oldest revision read after it is the pruned one.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])
        .await
        .map_err(pg_error)?;
    let removed = tx
        .execute("DELETE FROM events WHERE revision < $1", &[&keep_from])
        .await
        .map_err(pg_error)?;
    let oldest: Option<i64> = tx
        .query_one("SELECT min(revision) FROM events", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    tx.commit().await.map_err(pg_error)?;
    if removed > 0 {
        tracing::debug!(removed, oldest = keep_from, "pruned the event log");
    }
    Ok(oldest.unwrap_or(keep_from))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
