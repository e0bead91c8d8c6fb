//! A bounded read cache that stays exactly consistent with what was committed.
//!
//! Every committed change is applied here once, in commit order (see `published`). A reader
//! that missed fills the cache only if the database snapshot it read already contains every
//! change applied so far; otherwise its value might be older than a change the cache has
//! already seen (a delete, say), and it is not kept. A fill may run ahead of the changes
//! applied so far; those changes then never put an older version back.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use crate::domain::{User, UserId};

pub(super) struct UserCache {
    inner: Option<Mutex<Inner>>,
}

struct Inner {
    users: LruCache<UserId, Arc<User>>,
    /// The newest revision whose change has been applied.
    applied: i64,
}

/// One committed change to a user.
pub(super) enum Change<'a> {
    Upsert(&'a User),
    Remove(UserId),
}

impl UserCache {
    pub fn new(capacity: usize, head_revision: i64) -> Self {
        Self {
            inner: NonZeroUsize::new(capacity).map(|capacity| {
                Mutex::new(Inner {
                    users: LruCache::new(capacity),
                    applied: head_revision,
                })
            }),
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Inner>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters: every entry is replaced whole. Keep serving.
        self.inner.as_ref().map(|inner| {
            inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
    }

    pub fn get(&self, id: &UserId) -> Option<User> {
        self.shared(id).map(|user| User::clone(&user))
    }

    /// The cached user without copying them out (a reference count, not an allocation).
    pub fn shared(&self, id: &UserId) -> Option<Arc<User>> {
        self.lock()?.users.get(id).cloned()
    }

    /// Applies the changes one commit made, up to `revision`.
    pub fn apply<'a>(&self, revision: i64, changes: impl IntoIterator<Item = Change<'a>>) {
        let Some(mut inner) = self.lock() else { return };
        for change in changes {
            match change {
                Change::Upsert(user) => {
                    // A fill from a newer snapshot may already hold a later version.
                    let newer = inner
                        .users
                        .peek(&user.id)
                        .is_some_and(|cached| cached.revision > user.revision);
                    if !newer {
                        inner.users.put(user.id, Arc::new(user.clone()));
                    }
                }
                Change::Remove(id) => {
                    inner.users.pop(&id);
                }
            }
        }
        inner.applied = inner.applied.max(revision);
    }

    /// Forgets every user, and takes `revision` as applied.
    pub fn clear(&self, revision: i64) {
        let Some(mut inner) = self.lock() else { return };
        inner.users.clear();
        inner.applied = inner.applied.max(revision);
    }

    /// Keeps `user`, read from a snapshot that contains every change up to `snapshot`.
    pub fn fill(&self, user: &User, snapshot: i64) {
        let Some(mut inner) = self.lock() else { return };
        if snapshot >= inner.applied {
            inner.users.put(user.id, Arc::new(user.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, FullName, Metadata, Role, UserStatus, Username};

    fn user(revision: i64) -> User {
        User {
            id: UserId::new(),
            username: Username::parse("ann".into()).unwrap(),
            email: Email::parse("ann@example.com".into()).unwrap(),
            full_name: FullName::parse("Ann".into()).unwrap(),
            role: Role::User,
            status: UserStatus::Active,
            created_at_ns: 1,
            updated_at_ns: 1,
            metadata: Metadata::default(),
            revision,
            email_verified: false,
        }
    }

    #[test]
    fn a_fill_from_a_snapshot_older_than_an_applied_delete_is_not_kept() {
        let cache = UserCache::new(10, 0);
        let stale = user(1);
        cache.apply(2, [Change::Remove(stale.id)]);
        cache.fill(&stale, 1);
        assert_eq!(cache.get(&stale.id), None, "a deleted user came back");
    }

    #[test]
    fn a_fill_from_a_current_snapshot_is_served() {
        let cache = UserCache::new(10, 5);
        let current = user(5);
        cache.fill(&current, 5);
        assert_eq!(cache.get(&current.id), Some(current));
    }

    #[test]
    fn a_cache_of_capacity_zero_keeps_nothing() {
        let cache = UserCache::new(0, 0);
        let u = user(1);
        cache.apply(1, [Change::Upsert(&u)]);
        assert_eq!(cache.get(&u.id), None);
    }
}
