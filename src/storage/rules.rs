//! What every backend does the same way: revisions and creation times handed out inside a
//! write, the etag check, how a patch changes a user, and the listing's query shape.

use uuid::Uuid;

use super::error::{StoreError, StoreResult};
use super::query::ListQuery;
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

/// Which name a search's statement scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SearchArm {
    Username,
    Email,
}

/// What a search's statement reads from its arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SearchRead {
    /// Users in key order from where the page starts, one more than the page holds.
    Page,
    /// Ids of matches, up to `Search::COUNT_LIMIT`.
    Count,
}

/// One range scan of a key index: a search reads both arms and merges them (`merge_search`),
/// so a page costs the same however many users there are or match. `collate` makes the
/// comparisons and the order byte-wise (PostgreSQL's `COLLATE "C"`, which its prefix indexes
/// use; SQLite compares bytes already). `param` names a placeholder, once per name used:
/// lo, hi, status, role.
pub(super) fn search_sql(
    search: &super::Search,
    arm: SearchArm,
    read: SearchRead,
    collate: &str,
    mut param: impl FnMut(&str) -> String,
) -> String {
    let key = match arm {
        SearchArm::Username => format!("username_key{collate}"),
        SearchArm::Email => format!("email_key{collate}"),
    };
    let (lo, hi) = (param("lo"), param("hi"));
    let from = match read {
        SearchRead::Page if !search.lower_bound().1 => ">",
        _ => ">=",
    };
    let mut filters = String::new();
    if search.status.is_some() {
        filters.push_str(&format!(" AND status = {}", param("status")));
    }
    if search.role.is_some() {
        filters.push_str(&format!(" AND role = {}", param("role")));
    }
    let (columns, rows) = match read {
        SearchRead::Page => (USER_COLUMNS, search.limit as u64 + 1),
        SearchRead::Count => ("id", super::Search::COUNT_LIMIT),
    };
    format!(
        "SELECT {columns} FROM users WHERE {key} {from} {lo} AND {key} < {hi}{filters}
         ORDER BY {key} LIMIT {rows}"
    )
}

/// A search's page from its two arms, each in key order and at most `limit + 1` long. A user
/// is listed once, at the smaller of their names that match; the page ends where either arm's
/// rows end while it may hold more, so it can be short (its token goes on from there), but
/// never skips or repeats a user. `counted` are the ids each arm's count read.
pub(super) fn merge_search(
    search: &super::Search,
    by_username: Vec<User>,
    by_email: Vec<User>,
    counted: [Vec<Vec<u8>>; 2],
) -> super::SearchPage {
    let rows = search.limit + 1;
    let matches = |key: &str| key.starts_with(&search.prefix);
    // Where the rows read stop being complete: past the last row of an arm that was full.
    let frontier = [&by_username, &by_email]
        .into_iter()
        .zip([SearchArm::Username, SearchArm::Email])
        .filter(|(rows_read, _)| rows_read.len() == rows)
        .filter_map(|(rows_read, arm)| rows_read.last().map(|user| arm_key(user, arm)))
        .min();
    let mut merged: Vec<(String, User)> = by_username
        .into_iter()
        .map(|user| (arm_key(&user, SearchArm::Username), user))
        .chain(
            by_email
                .into_iter()
                .map(|user| (arm_key(&user, SearchArm::Email), user)),
        )
        .filter(|(key, _)| frontier.as_ref().is_none_or(|frontier| key <= frontier))
        .collect();
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let mut users = Vec::with_capacity(search.limit);
    let mut more = frontier.is_some();
    let mut last_seen = None;
    for (key, user) in merged {
        let (username, email) = (user.username.key(), user.email.key());
        // Listed at the smaller matching name: skipped here when the other one is smaller.
        let other = if key == username { email } else { username };
        if matches(&other) && other < key {
            last_seen = Some(key);
            continue;
        }
        if users.len() == search.limit {
            more = true;
            break;
        }
        last_seen = Some(key.clone());
        users.push((key, user));
    }
    let [username_ids, email_ids] = counted;
    let capped = username_ids.len() as u64 >= super::Search::COUNT_LIMIT
        || email_ids.len() as u64 >= super::Search::COUNT_LIMIT;
    let total = if capped {
        super::Search::COUNT_LIMIT
    } else {
        let mut ids = username_ids;
        ids.extend(email_ids);
        ids.sort_unstable();
        ids.dedup();
        ids.len() as u64
    };
    super::SearchPage {
        users,
        more,
        resume_after: last_seen,
        total,
    }
}

fn arm_key(user: &User, arm: SearchArm) -> String {
    match arm {
        SearchArm::Username => user.username.key(),
        SearchArm::Email => user.email.key(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, FullName, Metadata, Role, Username};

    fn user(username: &str, email: &str) -> User {
        User {
            id: UserId::new(),
            username: Username::parse(username.into()).unwrap(),
            email: Email::parse(email.into()).unwrap(),
            full_name: FullName::parse("A Name".into()).unwrap(),
            role: Role::User,
            status: UserStatus::Active,
            created_at_ns: 1,
            updated_at_ns: 1,
            metadata: Metadata::default(),
            revision: 1,
        }
    }

    /// What one arm's page statement reads, done in memory.
    fn arm_rows(users: &[User], search: &super::super::Search, arm: SearchArm) -> Vec<User> {
        let (lo, inclusive) = search.lower_bound();
        let mut rows: Vec<User> = users
            .iter()
            .filter(|user| {
                let key = arm_key(user, arm);
                key.starts_with(&search.prefix)
                    && if inclusive {
                        key.as_str() >= lo
                    } else {
                        key.as_str() > lo
                    }
            })
            .cloned()
            .collect();
        rows.sort_by_key(|user| arm_key(user, arm));
        rows.truncate(search.limit + 1);
        rows
    }

    #[test]
    fn search_pages_show_each_match_once_in_order_of_its_smaller_matching_name() {
        let users = vec![
            user("ann_lee", "ann@example.com"),
            user("annabel", "bel@example.com"),
            user("zed", "announce@example.com"),
            user("anton", "t@example.com"),
            user("bob", "bob@example.com"),
            user("annika", "annika@example.com"),
            user("xan", "annx@example.com"),
        ];
        // By "ann@example.com", "annabel", "annika", "announce@example.com", "annx@example.com".
        let expected = ["ann_lee", "annabel", "annika", "zed", "xan"];
        for limit in 1..=6 {
            let mut shown = Vec::new();
            let mut after = None;
            for _ in 0..20 {
                let search = super::super::Search {
                    prefix: "ann".into(),
                    status: None,
                    role: None,
                    after: after.clone(),
                    limit,
                };
                let page = merge_search(
                    &search,
                    arm_rows(&users, &search, SearchArm::Username),
                    arm_rows(&users, &search, SearchArm::Email),
                    [Vec::new(), Vec::new()],
                );
                assert!(page.users.len() <= limit);
                shown.extend(page.users.iter().map(|(_, user)| user.username.key()));
                if !page.more {
                    break;
                }
                after = page.resume_after;
            }
            assert_eq!(shown, expected, "pages of {limit}");
        }
    }
}
