//! What a server knows of the committed log: the read cache, the live event fan-out to
//! watchers, the head and oldest revisions. Both backends feed it every committed event once,
//! in revision order: SQLite's single writer right after each commit, PostgreSQL's log tail
//! (which follows every replica's writes) as it reads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{broadcast, watch};

use super::cache::{Change, UserCache};
use crate::domain::{EventKind, UserEvent};

pub(super) struct Published {
    pub cache: UserCache,
    /// Sessions' states and users' token cut-offs, as last read.
    pub sessions: super::sessions::SessionCache,
    events: broadcast::Sender<Arc<UserEvent>>,
    /// The newest applied revision; writers wait on it to see their own change applied.
    head: watch::Sender<i64>,
    oldest: AtomicI64,
    /// False while the database cannot be reached; watchers end when it turns false.
    reachable: watch::Sender<bool>,
    /// Write transactions committed here, and how long each took from begin to commit.
    pub commits: crate::timing::Timings,
}

impl Published {
    pub fn new(head: i64, oldest: i64, cache_capacity: usize, event_buffer: usize) -> Self {
        let (events, _) = broadcast::channel(event_buffer.max(1));
        Self {
            cache: UserCache::new(cache_capacity, head),
            sessions: Default::default(),
            events,
            head: watch::Sender::new(head),
            oldest: AtomicI64::new(oldest),
            reachable: watch::Sender::new(true),
            // 100 µs to 3.3 s.
            commits: crate::timing::Timings::new(std::time::Duration::from_micros(100), 16),
        }
    }

    /// Applies committed events, which must follow the head without a gap, to the cache, then
    /// hands them to watchers.
    pub fn apply(&self, events: Vec<UserEvent>) {
        let Some(last) = events.last() else { return };
        let head = last.revision;
        self.cache.apply(
            head,
            events.iter().map(|event| match event.kind {
                EventKind::Created | EventKind::Updated => Change::Upsert(&event.user),
                EventKind::Deleted => Change::Remove(event.user.id),
            }),
        );
        self.head.send_replace(head);
        for event in events {
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(Arc::new(event));
        }
    }

    /// The log was pruned past revisions this server never applied: nothing cached can be
    /// trusted any more, and watchers must re-read (and will find the gap).
    pub fn skip_to(&self, head: i64) {
        self.cache.clear(head);
        self.head.send_replace(head);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<UserEvent>> {
        self.events.subscribe()
    }

    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// Waits until revision `revision` has been applied here, or `limit` has passed.
    pub async fn applied(&self, revision: i64, limit: std::time::Duration) -> bool {
        if self.head() >= revision {
            return true;
        }
        let mut head = self.head.subscribe();
        tokio::time::timeout(limit, head.wait_for(|head| *head >= revision))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    pub fn oldest(&self) -> i64 {
        self.oldest.load(Ordering::Acquire)
    }

    /// Raises the oldest retained revision (pruning only ever moves it forward).
    pub fn set_oldest(&self, oldest: i64) {
        self.oldest.fetch_max(oldest, Ordering::AcqRel);
    }

    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.send_if_modified(|current| {
            let changed = *current != reachable;
            *current = reachable;
            changed
        });
    }
}
