//! The read fence: how a replica answers GetUser from its tail-fed cache and still reflects
//! every write that any replica acknowledged before the read began.
//!
//! A read asks for the database's head revision, read after the read started, waits until
//! this replica's tail has applied that revision, and then reads its cache (the database on a
//! miss). Reads that arrive together share one head query: the fence task reads the head once
//! for everyone waiting when the query is sent, and whoever arrives while it is in flight
//! waits for the next one. Under load one small query serves many reads.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Lease, pg_error};
use crate::storage::{StoreError, StoreResult};

/// Most reads one head query answers.
const MAX_WAITING: usize = 4096;

type Waiting = oneshot::Sender<StoreResult<i64>>;

pub(super) struct Fence {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Fence {
    /// Each head query gets `limit`; past it, everyone waiting on it hears UNAVAILABLE.
    pub fn start(pool: Pool, limit: Duration) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(read_heads(pool, limit, waiting));
        Self { queue }
    }

    /// The database's head revision, read after this call began.
    pub async fn head(&self) -> StoreResult<i64> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(reply)
            .map_err(|_| StoreError::Backend("storage is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the read fence ended".into()))?
    }
}

async fn read_heads(pool: Pool, limit: Duration, mut queue: mpsc::UnboundedReceiver<Waiting>) {
    let mut waiting = Vec::with_capacity(64);
    while queue.recv_many(&mut waiting, MAX_WAITING).await > 0 {
        let ends = Instant::now() + limit;
        let head = tokio::time::timeout_at(ends, read_head(&pool, ends))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "the database did not answer the read fence within {} ms",
                    limit.as_millis()
                )))
            });
        for reply in waiting.drain(..) {
            let answer = match &head {
                Ok(head) => Ok(*head),
                Err(StoreError::Unavailable(reason)) => {
                    Err(StoreError::Unavailable(reason.clone()))
                }
                Err(err) => Err(StoreError::Backend(crate::text::chain(err).into())),
            };
            let _ = reply.send(answer);
        }
    }
}

async fn read_head(pool: &Pool, ends: Instant) -> StoreResult<i64> {
    let client = Lease::checkout(pool, ends).await?;
    let statement = client
        .prepare_cached("SELECT head FROM log_head")
        .await
        .map_err(pg_error)?;
    let row = client.query_one(&statement, &[]).await.map_err(pg_error)?;
    Ok(row.get(0))
}
