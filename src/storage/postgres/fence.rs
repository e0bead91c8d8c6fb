//! The read fence: how a replica answers GetUser from its tail-fed cache and still reflects
//! every write that any replica acknowledged before the read began.
//!
//! A read asks for the database's head revision, read after the read started, waits until
//! this replica's tail has applied that revision, and then reads its cache (the database on a
//! miss). Reads that arrive together share one head query: the fence task reads the head once
//! for everyone waiting when the query is sent, and whoever arrives while it is in flight
//! waits for the next one. Under load one small query serves many reads.

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{pg_error, pool_error};
use crate::storage::{StoreError, StoreResult};

/// Most reads one head query answers.
const MAX_WAITING: usize = 4096;

type Waiting = oneshot::Sender<StoreResult<i64>>;

pub(super) struct Fence {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Fence {
    pub fn start(pool: Pool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(read_heads(pool, waiting));
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

async fn read_heads(pool: Pool, mut queue: mpsc::UnboundedReceiver<Waiting>) {
    let mut waiting = Vec::with_capacity(64);
    while queue.recv_many(&mut waiting, MAX_WAITING).await > 0 {
        let head = read_head(&pool).await;
        for reply in waiting.drain(..) {
            let answer = match &head {
                Ok(head) => Ok(*head),
                Err(StoreError::Unavailable(reason)) => {
                    Err(StoreError::Unavailable(reason.clone()))
                }
                Err(err) => Err(StoreError::Backend(crate::error::chain(err).into())),
            };
            let _ = reply.send(answer);
        }
    }
}

async fn read_head(pool: &Pool) -> StoreResult<i64> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client
        .prepare_cached("SELECT head FROM log_head")
        .await
        .map_err(pg_error)?;
    let row = client.query_one(&statement, &[]).await.map_err(pg_error)?;
    Ok(row.get(0))
}
