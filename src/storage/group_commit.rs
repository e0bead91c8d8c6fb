//! Group commit: single creates that arrive while a write is committing wait for it, then
//! commit together as one batch: one transaction, one fsync (SQLite) or one hold of the log's
//! lock (PostgreSQL) for the whole group, and still one revision, one event and one outcome
//! per create. A failing create (a taken name) fails alone; a failure of the whole write
//! reaches every create in the group.

use tokio::sync::{mpsc, oneshot};

use super::{Backend, BatchItem, StoreResult};
use crate::domain::{NewUser, UserEvent};

/// Most creates committed together.
const MAX_GROUP: usize = 256;

pub(super) struct Queued {
    pub user: NewUser,
    pub reply: oneshot::Sender<StoreResult<UserEvent>>,
}

/// Starts the task that commits queued creates in groups; it ends when the queue's last
/// sender is dropped.
pub(super) fn start(backend: Backend) -> mpsc::UnboundedSender<Queued> {
    let (queue, queued) = mpsc::unbounded_channel();
    tokio::spawn(commit_groups(backend, queued));
    queue
}

async fn commit_groups(backend: Backend, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queued.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut replies = Vec::with_capacity(group.len());
        let items = group
            .drain(..)
            .enumerate()
            .map(|(position, queued)| {
                replies.push(Some(queued.reply));
                BatchItem {
                    position,
                    user: queued.user,
                }
            })
            .collect();
        match backend.create_batch(items).await {
            Ok(outcomes) => {
                for (position, outcome) in outcomes {
                    if let Some(reply) = replies[position].take() {
                        // A caller that gave up does not stop the others.
                        let _ = reply.send(outcome);
                    }
                }
            }
            Err(err) => {
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(err.for_another_caller()));
                }
            }
        }
    }
}
