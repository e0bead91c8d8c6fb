//! What every backend does the same way: revisions and creation times handed out inside a
//! write, the etag check, how a patch changes a user, and the listing's query shape.

use uuid::Uuid;

use super::error::{StoreError, StoreResult};
use super::query::ListQuery;
use crate::domain::{
    Actor, Etag, EventKind, NewUser, PasswordHash, User, UserEvent, UserId, UserPatch,
    ValidationError,
};

pub(crate) use crate::timing::now_ns;

/// The columns of a user row, in the order both backends read them (a macro, so that
/// statements can be `concat!`ed at compile time rather than formatted on each call).
macro_rules! user_columns {
    () => {
        "id, username, email, full_name, role, status, metadata, created_at, updated_at, revision, email_verified"
    };
}
pub(super) use user_columns;

pub(super) const USER_COLUMNS: &str = user_columns!();

/// How many columns `user_columns!` names: what a statement selects after them starts here.
pub(super) const USER_COLUMN_COUNT: usize = 11;

/// Changes made inside an open write transaction, published only once it commits.
///
/// The transaction holds the log's write lock (SQLite's single writer; PostgreSQL's counter
/// row) from `head` being read until commit, so the revisions handed out here are the next
/// ones in commit order.
pub(super) struct Pending {
    pub head: i64,
    pub last_created_at_ns: i64,
    pub events: Vec<UserEvent>,
    /// How each (status, role) count changes when this transaction commits: both backends
    /// write the sums once per transaction, from the events recorded here.
    counts: Vec<(i32, i32, i64)>,
    /// When the transaction began, for the commit time.
    pub began: std::time::Instant,
}

/// Where a batch item began in a `Pending`, to undo it alone.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    events: usize,
    counts: usize,
    last_created_at_ns: i64,
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
    fn count(&mut self, user: &User, delta: i64) {
        self.counts
            .push((user.status as i32, user.role as i32, delta));
    }

    /// How each (status, role) count changes when the transaction commits, summed: the
    /// pairs whose count moves, each once.
    pub fn count_changes(&self) -> Vec<(i32, i32, i64)> {
        let mut sums: std::collections::BTreeMap<(i32, i32), i64> = Default::default();
        for &(status, role, delta) in &self.counts {
            *sums.entry((status, role)).or_default() += delta;
        }
        sums.into_iter()
            .filter(|&(_, delta)| delta != 0)
            .map(|((status, role), delta)| (status, role, delta))
            .collect()
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

    /// Records `user`'s creation by `actor`, and counts them in; the caller writes the event
    /// to the log.
    pub fn log_created(&mut self, user: &User, actor: &Actor) -> &UserEvent {
        self.count(user, 1);
        self.record(EventKind::Created, user, None, actor)
    }

    /// Records the change of `stored` into `user` by `actor`, moving the user between counts
    /// when their status or role changed.
    pub fn log_updated(&mut self, stored: &User, user: &User, actor: &Actor) -> &UserEvent {
        if (stored.status, stored.role) != (user.status, user.role) {
            self.count(stored, -1);
            self.count(user, 1);
        }
        self.record(EventKind::Updated, user, Some(stored), actor)
    }

    /// Records the deletion of `stored` (as `deleted` left them: `user`) by `actor`, and
    /// counts them out.
    pub fn log_deleted(&mut self, stored: &User, user: &User, actor: &Actor) -> &UserEvent {
        self.count(user, -1);
        self.record(EventKind::Deleted, user, Some(stored), actor)
    }

    fn record(
        &mut self,
        kind: EventKind,
        user: &User,
        previous: Option<&User>,
        actor: &Actor,
    ) -> &UserEvent {
        self.events.push(UserEvent {
            revision: user.revision,
            event_id: Uuid::now_v7(),
            kind,
            at_ns: now_ns(),
            user: user.clone(),
            actor: actor.clone(),
            previous: previous.map(|stored| Box::new(stored.clone())),
        });
        self.events.last().expect("just pushed")
    }

    /// Where a batch item starts, to undo it alone when it fails.
    pub fn mark(&self) -> Mark {
        Mark {
            events: self.events.len(),
            counts: self.counts.len(),
            last_created_at_ns: self.last_created_at_ns,
        }
    }

    /// Forgets what was recorded since `mark`: its events and its counts.
    pub fn undo_to(&mut self, mark: Mark) {
        self.events.truncate(mark.events);
        self.counts.truncate(mark.counts);
        self.last_created_at_ns = mark.last_created_at_ns;
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
            status: new.status,
            created_at_ns: now,
            updated_at_ns: now,
            metadata: new.metadata.clone(),
            revision: self.next_revision(),
            email_verified: false,
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
            user.metadata = user
                .metadata
                .merged(&patch.metadata)
                .map_err(ValidationError::from)?;
        }
        if let Some(verified) = patch.email_verified {
            user.email_verified = verified;
        }
        if user.email != stored.email {
            // A new address has not been shown to reach its owner.
            user.email_verified = false;
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

/// Whether a password change may go ahead: it names no expected hash (an admin's set), or
/// the one it names is still the stored one (a change by a user who proved the old password).
pub(super) fn password_expected(expected: Option<&PasswordHash>, stored: &str) -> bool {
    expected.is_none_or(|expected| expected.as_phc() == stored)
}

/// Which migrations a database at schema version `found` still needs, of the `known` this
/// server has (as indexes into its list); a schema newer than the server is refused with
/// what to do, so no server writes rows it does not understand.
pub(super) fn migrations_due(found: i64, known: usize) -> StoreResult<std::ops::Range<usize>> {
    let found = usize::try_from(found).map_err(|_| {
        StoreError::Backend(format!("the database schema version {found} is not a version").into())
    })?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    Ok(found..known)
}

/// At most this many events beyond the retention window pile up before the log is pruned.
const MAX_PRUNE_SLACK: i64 = 1024;

/// The oldest revision to keep once the log's head is `head`, when pruning is due: the log
/// holds more than `retention` events and enough beyond it (an eighth of the window, at most
/// `MAX_PRUNE_SLACK`) that a delete is worth its cost. `None` when it is not due.
pub(super) fn prune_log_from(head: i64, oldest: i64, retention: i64) -> Option<i64> {
    let keep_from = head - retention + 1;
    let slack = (retention / 8).clamp(1, MAX_PRUNE_SLACK);
    (keep_from - oldest >= slack).then_some(keep_from)
}

/// The events a log keeps (`--event-retention`), at least one.
pub(super) fn retention(events: u64) -> i64 {
    i64::try_from(events.max(1)).unwrap_or(i64::MAX)
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
    use crate::domain::{Email, FullName, Metadata, Role, UserStatus, Username};

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
            email_verified: false,
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

    /// One decision both backends make, with what it was given and what it must answer.
    enum Case {
        /// `migrations_due(found, known)`: the steps to run, or the refusal's `found`.
        Migrations(i64, usize, Result<std::ops::Range<usize>, Option<usize>>),
        /// `prune_log_from(head, oldest, retention)`.
        Prune(i64, i64, i64, Option<i64>),
        /// `password_expected(expected, stored)`.
        Password(Option<&'static str>, &'static str, bool),
        /// `sessions::rotate`: the token as read (used, seconds left, its user's status, `None`
        /// when deleted), and the outcome.
        Rotate(Option<(bool, i64, Option<UserStatus>)>, RotationIs),
        /// `sessions::session_known`: the session's seconds left (`None`: no row), open?
        Session(Option<i64>, bool),
        /// Counts after `Pending` logged these changes (with `undo` of the last one), as
        /// (status, role, delta) sums.
        Counts(&'static [Logged], &'static [(i32, i32, i64)]),
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum RotationIs {
        Unknown,
        ExpiredAndEnded,
        ReusedAndEnded,
        Rotated,
        RefusedAndKept,
    }

    #[derive(Debug, Clone, Copy)]
    enum Logged {
        Created(Role),
        Suspended(Role),
        Promoted(Role, Role),
        Renamed(Role),
        Deleted(Role),
        /// The previous change is undone (a batch item that failed at its savepoint).
        Undone,
    }

    const HASH: &str = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
    const OTHER_HASH: &str = "$2b$12$EXRkfkdmXn2gzds2SSitu.MW9.gAVqa9eLS1//RYtYCmB1eLHg.9q";
    const ACTIVE: i32 = UserStatus::Active as i32;
    const SUSPENDED: i32 = UserStatus::Suspended as i32;
    const USER: i32 = Role::User as i32;
    const ADMIN: i32 = Role::Admin as i32;

    const CASES: &[(&str, Case)] = &[
        (
            "a new database runs every step",
            Case::Migrations(0, 4, Ok(0..4)),
        ),
        (
            "a current database runs none",
            Case::Migrations(4, 4, Ok(4..4)),
        ),
        (
            "an older one runs the rest",
            Case::Migrations(2, 4, Ok(2..4)),
        ),
        (
            "a newer schema is refused",
            Case::Migrations(5, 4, Err(Some(5))),
        ),
        (
            "a negative version is refused",
            Case::Migrations(-1, 4, Err(None)),
        ),
        (
            "a log within its window is kept",
            Case::Prune(100, 1, 100, None),
        ),
        (
            "a log past its window by less than the slack waits",
            Case::Prune(105, 1, 100, None),
        ),
        (
            "a log past its window by the slack is pruned",
            Case::Prune(113, 1, 100, Some(14)),
        ),
        (
            "the slack is at most 1024",
            Case::Prune(200_000, 1, 100_000, Some(100_001)),
        ),
        (
            "a window of one keeps the head",
            Case::Prune(10, 9, 1, Some(10)),
        ),
        (
            "an admin's set needs no hash",
            Case::Password(None, HASH, true),
        ),
        (
            "a change naming the stored hash goes ahead",
            Case::Password(Some(HASH), HASH, true),
        ),
        (
            "a change naming an older hash does not",
            Case::Password(Some(OTHER_HASH), HASH, false),
        ),
        (
            "an unknown token is refused",
            Case::Rotate(None, RotationIs::Unknown),
        ),
        (
            "a current token rotates",
            Case::Rotate(
                Some((false, 60, Some(UserStatus::Active))),
                RotationIs::Rotated,
            ),
        ),
        (
            "a token used before ends its session",
            Case::Rotate(
                Some((true, 60, Some(UserStatus::Active))),
                RotationIs::ReusedAndEnded,
            ),
        ),
        (
            "an expired session's token ends it",
            Case::Rotate(
                Some((false, 0, Some(UserStatus::Active))),
                RotationIs::ExpiredAndEnded,
            ),
        ),
        (
            "expiry wins over reuse",
            Case::Rotate(
                Some((true, -5, Some(UserStatus::Active))),
                RotationIs::ExpiredAndEnded,
            ),
        ),
        (
            "a suspended user's current token is refused and not used up",
            Case::Rotate(
                Some((false, 60, Some(UserStatus::Suspended))),
                RotationIs::RefusedAndKept,
            ),
        ),
        (
            "a deleted user's current token is refused",
            Case::Rotate(Some((false, 60, None)), RotationIs::RefusedAndKept),
        ),
        (
            "a reused token ends its session whatever the user's status",
            Case::Rotate(
                Some((true, 60, Some(UserStatus::Suspended))),
                RotationIs::ReusedAndEnded,
            ),
        ),
        (
            "a session before its expiry is open",
            Case::Session(Some(1), true),
        ),
        (
            "a session at its expiry is not",
            Case::Session(Some(0), false),
        ),
        ("a session with no row is not", Case::Session(None, false)),
        (
            "a create counts in",
            Case::Counts(&[Logged::Created(Role::User)], &[(ACTIVE, USER, 1)]),
        ),
        (
            "a suspension moves between statuses",
            Case::Counts(
                &[Logged::Created(Role::User), Logged::Suspended(Role::User)],
                &[(SUSPENDED, USER, 1)],
            ),
        ),
        (
            "a promotion moves between roles",
            Case::Counts(
                &[Logged::Promoted(Role::User, Role::Admin)],
                &[(ACTIVE, USER, -1), (ACTIVE, ADMIN, 1)],
            ),
        ),
        (
            "a rename moves nothing",
            Case::Counts(&[Logged::Renamed(Role::User)], &[]),
        ),
        (
            "a delete counts out",
            Case::Counts(&[Logged::Deleted(Role::Admin)], &[(ACTIVE, ADMIN, -1)]),
        ),
        (
            "an undone item leaves no count",
            Case::Counts(
                &[
                    Logged::Created(Role::User),
                    Logged::Created(Role::Admin),
                    Logged::Undone,
                ],
                &[(ACTIVE, USER, 1)],
            ),
        ),
    ];

    fn with_role(role: Role) -> User {
        let mut user = user("counted", "counted@example.com");
        user.role = role;
        user
    }

    fn counts_after(logged: &[Logged]) -> Vec<(i32, i32, i64)> {
        let mut pending = Pending::new(0, 0);
        let mut marks = Vec::new();
        let actor = Actor::Anonymous;
        for change in logged {
            let mark = pending.mark();
            match *change {
                Logged::Created(role) => {
                    pending.log_created(&with_role(role), &actor);
                }
                Logged::Suspended(role) => {
                    let stored = with_role(role);
                    let mut user = stored.clone();
                    user.status = UserStatus::Suspended;
                    pending.log_updated(&stored, &user, &actor);
                }
                Logged::Promoted(from, to) => {
                    pending.log_updated(&with_role(from), &with_role(to), &actor);
                }
                Logged::Renamed(role) => {
                    let stored = with_role(role);
                    let mut user = stored.clone();
                    user.username = Username::parse("renamed".into()).unwrap();
                    pending.log_updated(&stored, &user, &actor);
                }
                Logged::Deleted(role) => {
                    pending.log_deleted(&with_role(role), &with_role(role), &actor);
                }
                Logged::Undone => {
                    pending.undo_to(marks.pop().expect("a change to undo"));
                    continue;
                }
            }
            marks.push(mark);
        }
        pending.count_changes()
    }

    #[test]
    fn the_storage_rules_decide_each_case_as_the_table_says() {
        use super::super::sessions::{Presented, Rotation, RotationWrite, rotate, session_known};
        const NOW: i64 = 1_000_000_000_000;
        const SECOND: i64 = 1_000_000_000;
        for (case, rule) in CASES {
            match rule {
                Case::Migrations(found, known, expected) => {
                    let due = migrations_due(*found, *known);
                    match (due, expected) {
                        (Ok(due), Ok(expected)) => assert_eq!(&due, expected, "{case}"),
                        (
                            Err(StoreError::SchemaTooNew { found, known: k }),
                            Err(Some(expected)),
                        ) => {
                            assert_eq!((found, k), (*expected, *known), "{case}")
                        }
                        (Err(StoreError::Backend(_)), Err(None)) => {}
                        (due, _) => panic!("{case}: {due:?}"),
                    }
                }
                Case::Prune(head, oldest, retention, expected) => {
                    assert_eq!(
                        prune_log_from(*head, *oldest, *retention),
                        *expected,
                        "{case}"
                    );
                }
                Case::Password(expected, stored, goes_ahead) => {
                    let expected = expected.map(|hash| PasswordHash::import(hash.into()).unwrap());
                    assert_eq!(
                        password_expected(expected.as_ref(), stored),
                        *goes_ahead,
                        "{case}"
                    );
                }
                Case::Rotate(found, expected) => {
                    let (session, user) = (uuid::Uuid::now_v7(), UserId::new());
                    let found = found.map(|(used, left, user_status)| Presented {
                        session,
                        used,
                        user,
                        expires_at_ns: NOW + left * SECOND,
                        user_status,
                    });
                    let outcome = match rotate(found, NOW) {
                        (Rotation::Invalid, RotationWrite::Nothing) => RotationIs::Unknown,
                        (Rotation::Invalid, RotationWrite::EndSession(id)) if id == session => {
                            RotationIs::ExpiredAndEnded
                        }
                        (Rotation::Reused { session: id }, RotationWrite::EndSession(ended))
                            if id == session && ended == session =>
                        {
                            RotationIs::ReusedAndEnded
                        }
                        (
                            Rotation::Rotated {
                                session: id,
                                user: who,
                                ..
                            },
                            RotationWrite::Rotate(rotated),
                        ) if id == session && who == user && rotated == session => {
                            RotationIs::Rotated
                        }
                        (Rotation::Inactive { user: who, .. }, RotationWrite::Nothing)
                            if who == user =>
                        {
                            RotationIs::RefusedAndKept
                        }
                        other => panic!("{case}: {other:?}"),
                    };
                    assert_eq!(outcome, *expected, "{case}");
                }
                Case::Session(left, open) => {
                    let user = UserId::new();
                    let (known, whose) = session_known(left.map(|left| (user, NOW + left)), NOW);
                    assert_eq!(
                        known,
                        super::super::sessions::Known::Session { open: *open },
                        "{case}"
                    );
                    assert_eq!(whose, left.map(|_| user), "{case}");
                }
                Case::Counts(logged, expected) => {
                    assert_eq!(counts_after(logged), expected.to_vec(), "{case}");
                }
            }
        }
    }
}
