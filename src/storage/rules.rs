//! What every backend does the same way: revisions and creation times handed out inside a
//! write, the etag check, how a patch changes a user, and the listing's query shape.

use uuid::Uuid;

use super::{ListQuery, StoreError, StoreResult};
use crate::domain::{
    Actor, Etag, EventKind, NewUser, User, UserEvent, UserId, UserPatch, UserStatus,
    ValidationError,
};

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// The columns of a user row, in the order both backends read them (a macro, so that
/// statements can be `concat!`ed at compile time rather than formatted on each call).
macro_rules! user_columns {
    () => {
        "id, username, email, full_name, role, status, metadata, created_at, updated_at, revision"
    };
}
pub(super) use user_columns;

pub(super) const USER_COLUMNS: &str = user_columns!();

/// Changes made inside an open write transaction, published only once it commits.
///
/// The transaction holds the log's write lock (SQLite's single writer; PostgreSQL's counter
/// row) from `head` being read until commit, so the revisions handed out here are the next
/// ones in commit order.
pub(super) struct Pending {
    pub head: i64,
    pub last_created_at_ns: i64,
    pub events: Vec<UserEvent>,
    /// How each (status, role) count changes when this transaction commits, for a backend
    /// that keeps the counts in its write path (PostgreSQL: one update of the counts per
    /// transaction; SQLite's triggers keep its own).
    pub counts: Vec<(i32, i32, i64)>,
    /// When the transaction began, for the commit time.
    pub began: std::time::Instant,
}

impl Pending {
    pub fn new(head: i64, last_created_at_ns: i64) -> Self {
        Self {
            head,
            last_created_at_ns,
            events: Vec::new(),
            counts: Vec::new(),
            began: std::time::Instant::now(),
        }
    }

    /// Counts `user` in (`delta` 1) or out (-1) of its status and role.
    pub fn count(&mut self, user: &User, delta: i64) {
        self.counts
            .push((user.status as i32, user.role as i32, delta));
    }

    pub fn next_revision(&self) -> i64 {
        self.head + 1 + self.events.len() as i64
    }

    /// The newest revision once this transaction commits.
    pub fn last_revision(&self) -> i64 {
        self.head + self.events.len() as i64
    }

    /// A creation time later than every earlier user's, so newest-first listings never
    /// place a new user behind a page token handed out before it existed.
    pub fn next_created_at(&mut self) -> i64 {
        self.last_created_at_ns = now_ns().max(self.last_created_at_ns + 1);
        self.last_created_at_ns
    }

    /// Records the event for `user`'s change by `actor`; the caller writes it to the log.
    pub fn record(&mut self, kind: EventKind, user: &User, actor: &Actor) -> &UserEvent {
        self.events.push(UserEvent {
            revision: user.revision,
            event_id: Uuid::now_v7(),
            kind,
            at_ns: now_ns(),
            user: user.clone(),
            actor: actor.clone(),
        });
        self.events.last().expect("just pushed")
    }

    /// Where a batch item starts, to undo it alone when it fails.
    pub fn mark(&self) -> (usize, i64) {
        (self.events.len(), self.last_created_at_ns)
    }

    pub fn undo_to(&mut self, (events, created): (usize, i64)) {
        self.events.truncate(events);
        self.last_created_at_ns = created;
    }

    /// The user `new` becomes, at the next revision.
    pub fn new_user(&mut self, new: &NewUser) -> User {
        let now = self.next_created_at();
        User {
            id: UserId::new(),
            username: new.username.clone(),
            email: new.email.clone(),
            full_name: new.full_name.clone(),
            role: new.role,
            status: UserStatus::Active,
            created_at_ns: now,
            updated_at_ns: now,
            metadata: new.metadata.clone(),
            revision: self.next_revision(),
        }
    }

    /// `stored` with `patch` applied at the next revision, or `None` when the patch asks for
    /// what the user already is (nothing is written then, and the etag stays).
    pub fn patched(&self, stored: &User, patch: UserPatch) -> StoreResult<Option<User>> {
        check_etag(stored, patch.etag)?;
        let mut user = stored.clone();
        if let Some(username) = patch.username {
            user.username = username;
        }
        if let Some(email) = patch.email {
            user.email = email;
        }
        if let Some(full_name) = patch.full_name {
            user.full_name = full_name;
        }
        if let Some(role) = patch.role {
            user.role = role;
        }
        if let Some(status) = patch.status {
            user.status = status;
        }
        if !patch.metadata.is_empty() {
            user.metadata =
                user.metadata
                    .merged(&patch.metadata)
                    .map_err(|violation| ValidationError {
                        violations: vec![violation],
                    })?;
        }
        if user == *stored {
            return Ok(None);
        }
        user.updated_at_ns = now_ns().max(user.updated_at_ns + 1);
        user.revision = self.next_revision();
        Ok(Some(user))
    }

    /// `stored` as its deletion records it, after the etag check.
    pub fn deleted(&self, mut stored: User, etag: Option<Etag>) -> StoreResult<User> {
        check_etag(&stored, etag)?;
        stored.revision = self.next_revision();
        Ok(stored)
    }
}

fn check_etag(user: &User, expected: Option<Etag>) -> StoreResult<()> {
    match expected {
        Some(etag) if etag != user.etag() => Err(StoreError::EtagMismatch {
            expected: etag.revision(),
            current: user.revision,
        }),
        _ => Ok(()),
    }
}

/// The page query: keyset pagination on the `(created_at, id)` indexes, so a page costs the
/// same wherever it starts and however many users there are. `param` names a placeholder in
/// the backend's syntax; it is called in the order the parameters appear: status, role,
/// created_at, id, limit (each only when the query uses it).
pub(super) fn list_sql(query: &ListQuery, mut param: impl FnMut(&str) -> String) -> String {
    let mut sql = format!("SELECT {USER_COLUMNS} FROM users WHERE 1 = 1");
    if query.status.is_some() {
        sql.push_str(&format!(" AND status = {}", param("status")));
    }
    if query.role.is_some() {
        sql.push_str(&format!(" AND role = {}", param("role")));
    }
    if query.after.is_some() {
        let created_at = param("created_at");
        let id = param("id");
        sql.push_str(&format!(" AND (created_at, id) < ({created_at}, {id})"));
    }
    // One more than asked tells whether another page follows.
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT {} + 1",
        param("limit")
    ));
    sql
}

/// Splits one more row than the page holds off into the cursor of the next page.
pub(super) fn into_page(mut users: Vec<User>, limit: usize, total: i64) -> super::Page {
    let next = if users.len() > limit {
        users.truncate(limit);
        users.last().map(|user| super::Cursor {
            created_at_ns: user.created_at_ns,
            id: user.id,
        })
    } else {
        None
    };
    super::Page {
        users,
        next,
        total: u64::try_from(total).unwrap_or(0),
    }
}
