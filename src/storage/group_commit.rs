//! Group commit: single writes that arrive while a write is committing wait for it, then
//! commit together: one transaction, one fsync (SQLite) or one hold of the log's lock
//! (PostgreSQL) for the creates of a group, and one more for its updates and deletes; still
//! one revision, one event and one outcome per write. A write that fails on its own (a taken
//! name, an unknown id, a stale etag) fails alone; a failure of the whole transaction reaches
//! every write in it.
//!
//! A write whose caller has gone (cancelled, or past its deadline) before its group's
//! transaction begins is dropped, never committed; the transaction gets the time its
//! soonest caller has left (`call_deadline`), so none commits after its caller was told it
//! failed.

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::backend::Backend;
use super::error::StoreResult;
use super::writes::{BatchItem, Change, Written};
use crate::domain::NewUser;

/// Most writes committed together.
const MAX_GROUP: usize = 256;

/// One write that can share a transaction with others.
pub(super) enum Write {
    Create(NewUser),
    Change(Change),
}

/// A write answered as another kind: never made by `commit_groups`, which answers each write
/// with its own kind's outcome; an error rather than a panic all the same.
pub(super) fn mismatched() -> super::StoreError {
    super::StoreError::Backend("the group commit answered another kind of write".into())
}

pub(super) struct Queued {
    pub write: Write,
    pub reply: oneshot::Sender<StoreResult<Written>>,
    /// The caller's deadline, if it set one.
    pub deadline: Option<Instant>,
}

/// Starts the task that commits queued writes in groups; it ends when the queue's last
/// sender is dropped.
pub(super) fn start(backend: Backend) -> mpsc::UnboundedSender<Queued> {
    let (queue, queued) = mpsc::unbounded_channel();
    tokio::spawn(commit_groups(backend, queued));
    queue
}

type Reply = oneshot::Sender<StoreResult<Written>>;

/// The writes whose callers still wait (the others are dropped; one past its deadline hears
/// why), and the soonest deadline among them.
fn still_wanted(group: Vec<Queued>) -> (Vec<Queued>, Option<Instant>) {
    let now = Instant::now();
    let mut soonest: Option<Instant> = None;
    let mut wanted = Vec::with_capacity(group.len());
    for queued in group {
        if queued.reply.is_closed() {
            continue;
        }
        if let Some(deadline) = queued.deadline {
            if deadline <= now {
                let _ = queued.reply.send(Err(super::StoreError::Unavailable(
                    "the call's deadline passed before its write began: nothing was written".into(),
                )));
                continue;
            }
            soonest = Some(soonest.map_or(deadline, |soonest| soonest.min(deadline)));
        }
        wanted.push(queued);
    }
    (wanted, soonest)
}

async fn commit_groups(backend: Backend, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queued.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (creates, changes): (Vec<Queued>, Vec<Queued>) = group
            .drain(..)
            .partition(|queued| matches!(queued.write, Write::Create(_)));
        // Creates commit first, then changes: each set is judged when its turn comes.
        let (creates, deadline) = still_wanted(creates);
        if !creates.is_empty() {
            crate::call_deadline::scope(deadline, commit_creates(&backend, creates)).await;
        }
        let (changes, deadline) = still_wanted(changes);
        if !changes.is_empty() {
            crate::call_deadline::scope(deadline, commit_changes(&backend, changes)).await;
        }
    }
}

async fn commit_creates(backend: &Backend, queued: Vec<Queued>) {
    let mut items = Vec::with_capacity(queued.len());
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(queued.len());
    for Queued { write, reply, .. } in queued {
        if let Write::Create(user) = write {
            items.push(BatchItem {
                position: items.len(),
                user,
            });
            replies.push(Some(reply));
        }
    }
    match backend.create_batch(items).await {
        Ok(outcomes) => {
            for (position, outcome) in outcomes {
                if let Some(reply) = replies[position].take() {
                    // A caller that gave up does not stop the others.
                    let _ = reply.send(outcome.map(Written::Created));
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

async fn commit_changes(backend: &Backend, queued: Vec<Queued>) {
    let mut changes = Vec::with_capacity(queued.len());
    let mut replies = Vec::with_capacity(queued.len());
    for Queued { write, reply, .. } in queued {
        if let Write::Change(change) = write {
            changes.push(change);
            replies.push(reply);
        }
    }
    match backend.change_group(changes).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.for_another_caller()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{Actor, UserId};

    fn queued(deadline: Option<Instant>) -> (Queued, oneshot::Receiver<StoreResult<Written>>) {
        let (reply, answer) = oneshot::channel();
        let write = Write::Change(Change::Delete(UserId::new(), None, Actor::Anonymous));
        (
            Queued {
                write,
                reply,
                deadline,
            },
            answer,
        )
    }

    #[tokio::test]
    async fn writes_whose_callers_are_gone_are_dropped_before_their_transaction() {
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let later = now + Duration::from_secs(5);
        let (waiting, _waiting_answer) = queued(None);
        let (soonest, _soonest_answer) = queued(Some(soon));
        let (patient, _patient_answer) = queued(Some(later));
        let (cancelled, cancelled_answer) = queued(Some(later));
        drop(cancelled_answer);
        let (expired, expired_answer) = queued(Some(now - Duration::from_millis(1)));

        let (wanted, deadline) = still_wanted(vec![waiting, soonest, cancelled, expired, patient]);

        assert_eq!(
            wanted.len(),
            3,
            "the cancelled and the expired writes are dropped"
        );
        assert_eq!(
            deadline,
            Some(soon),
            "the group gets its soonest caller's time"
        );
        match expired_answer.await {
            Ok(Err(crate::storage::StoreError::Unavailable(reason))) => {
                assert!(reason.contains("nothing was written"), "{reason}")
            }
            _ => panic!("the expired write's caller hears it was not written"),
        }
    }
}
