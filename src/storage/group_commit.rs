//! Group commit: single writes that arrive while a write is committing wait for it, then
//! commit together: one transaction, one fsync (SQLite) or one hold of the log's lock
//! (PostgreSQL) for the creates of a group, and one more for its updates and deletes; still
//! one revision, one event and one outcome per write. A write that fails on its own (a taken
//! name, an unknown id, a stale etag) fails alone; a failure of the whole transaction reaches
//! every write in it.

use tokio::sync::{mpsc, oneshot};

use super::{Backend, BatchItem, StoreResult, UserEvent};
use crate::domain::{Actor, Etag, NewUser, UserId, UserPatch};

/// Most writes committed together.
const MAX_GROUP: usize = 256;

/// One write that can share a transaction with others.
pub(super) enum Write {
    Create(NewUser),
    Change(Change),
}

/// An update or a delete, as a group commits it.
pub(crate) enum Change {
    Update(UserId, UserPatch),
    Delete(UserId, Option<Etag>, Actor),
}

/// What a change did.
pub(crate) enum Changed {
    Updated(super::Updated),
    Deleted(UserEvent),
}

/// What a write did: a create's event, or a change's outcome.
pub(super) enum Done {
    Created(UserEvent),
    Changed(Changed),
}

/// A write answered as another kind: never made by `commit_groups`, which answers each write
/// with its own kind's outcome; an error rather than a panic all the same.
pub(super) fn mismatched() -> super::StoreError {
    super::StoreError::Backend("the group commit answered another kind of write".into())
}

pub(super) struct Queued {
    pub write: Write,
    pub reply: oneshot::Sender<StoreResult<Done>>,
}

/// Starts the task that commits queued writes in groups; it ends when the queue's last
/// sender is dropped.
pub(super) fn start(backend: Backend) -> mpsc::UnboundedSender<Queued> {
    let (queue, queued) = mpsc::unbounded_channel();
    tokio::spawn(commit_groups(backend, queued));
    queue
}

type Reply = oneshot::Sender<StoreResult<Done>>;

async fn commit_groups(backend: Backend, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queued.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (mut creates, mut create_replies) = (Vec::new(), Vec::new());
        let (mut changes, mut change_replies) = (Vec::new(), Vec::new());
        for Queued { write, reply } in group.drain(..) {
            match write {
                Write::Create(user) => {
                    creates.push(BatchItem {
                        position: creates.len(),
                        user,
                    });
                    create_replies.push(Some(reply));
                }
                Write::Change(change) => {
                    changes.push(change);
                    change_replies.push(reply);
                }
            }
        }
        if !creates.is_empty() {
            commit_creates(&backend, creates, create_replies).await;
        }
        if !changes.is_empty() {
            commit_changes(&backend, changes, change_replies).await;
        }
    }
}

async fn commit_creates(backend: &Backend, items: Vec<BatchItem>, mut replies: Vec<Option<Reply>>) {
    match backend.create_batch(items).await {
        Ok(outcomes) => {
            for (position, outcome) in outcomes {
                if let Some(reply) = replies[position].take() {
                    // A caller that gave up does not stop the others.
                    let _ = reply.send(outcome.map(Done::Created));
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

async fn commit_changes(backend: &Backend, changes: Vec<Change>, replies: Vec<Reply>) {
    match backend.change_group(changes).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome.map(Done::Changed));
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.for_another_caller()));
            }
        }
    }
}
