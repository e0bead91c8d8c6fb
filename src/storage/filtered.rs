//! Filtered listings: ListUsers with an AIP-160 `filter` or an `order_by`. Both backends plan
//! the same index range scan here, read rows in its order in chunks, and keep the users the
//! filter matches (`Scan`), so a page costs a bounded number of rows read whatever the
//! filter: every row when the plan serves the whole filter (index-backed), at most
//! `SCAN_BUDGET` rows otherwise. A chunk is at most `CHUNK_ROWS` rows, so a scan holds a
//! bounded number of users at once whatever their size; how many scans that no index serves
//! run at once is bounded by the facade (`--max-concurrent-scans`).

use std::sync::Arc;

use crate::domain::{Role, User, UserId, UserStatus};
use crate::filter::{Bound, Filter, Narrow};

use super::rules::USER_COLUMNS;

/// Rows one page may read when the filter is not index-backed; the page ends there (short,
/// with a token that goes on after the last row read).
pub const SCAN_BUDGET: usize = 10_000;

/// Rows one statement of a scan reads at most: with users at their largest (32 metadata
/// entries of 512 characters, about 18 KiB each) a chunk holds under 5 MiB.
pub const CHUNK_ROWS: usize = 256;

/// Matches counted at most for `total_count`, among the first `COUNT_SCAN` rows of the range.
pub const COUNT_LIMIT: u64 = 100;
pub const COUNT_SCAN: usize = 1_000;

/// The column a listing is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    CreatedAt,
    UpdatedAt,
    Username,
}

/// AIP-132 `order_by`: one field, ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub field: OrderField,
    pub descending: bool,
}

impl Order {
    /// Newest first, as ListUsers without `order_by`.
    pub const NEWEST: Order = Order {
        field: OrderField::CreatedAt,
        descending: true,
    };

    /// Where `user` stands in this order.
    pub fn key_of(&self, user: &User) -> OrderKey {
        match self.field {
            OrderField::CreatedAt => OrderKey::Time {
                ns: user.created_at_ns,
                id: user.id,
            },
            OrderField::UpdatedAt => OrderKey::Time {
                ns: user.updated_at_ns,
                id: user.id,
            },
            OrderField::Username => OrderKey::Name(user.username.key()),
        }
    }

    fn column(&self) -> &'static str {
        match self.field {
            OrderField::CreatedAt => "created_at",
            OrderField::UpdatedAt => "updated_at",
            OrderField::Username => "username_key",
        }
    }
}

/// A position in an order: the last user a page showed (or read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderKey {
    /// Creation or update time, then id (times can repeat).
    Time { ns: i64, id: UserId },
    /// Username key (unique).
    Name(String),
}

/// Which users a filtered listing shows, in what order, and where the previous page ended.
#[derive(Debug, Clone)]
pub struct FilteredQuery {
    pub order: Order,
    pub filter: Option<Arc<Filter>>,
    /// `status_filter` and `role_filter`, ANDed with the filter.
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
    pub after: Option<OrderKey>,
    pub limit: usize,
}

impl FilteredQuery {
    /// Whether the listing shows `user`.
    pub fn admits(&self, user: &User) -> bool {
        self.status.is_none_or(|status| user.status == status)
            && self.role.is_none_or(|role| user.role == role)
            && self
                .filter
                .as_ref()
                .is_none_or(|filter| filter.matches(user))
    }
}

#[derive(Debug)]
pub struct FilteredPage {
    pub users: Vec<User>,
    /// Set when more users may follow: the next page starts after it.
    pub next: Option<OrderKey>,
    /// Matches among the first `COUNT_SCAN` rows of the range, at most `COUNT_LIMIT`.
    pub total: u64,
}

/// A statement parameter, typed as the columns are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param {
    Int4(i32),
    Int8(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One end of the range on the order column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct End {
    value: Param,
    inclusive: bool,
}

/// What the indexes can do for a query: equality on status and role (the creation-time
/// indexes lead with them), and a range on the order column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    status: Option<UserStatus>,
    role: Option<Role>,
    low: Option<End>,
    high: Option<End>,
    /// Every row the range holds is a match: the plan serves the whole filter.
    pub index_backed: bool,
}

/// Whether the indexes serve the whole of `query` (a page reads only its matches), or it
/// scans up to `SCAN_BUDGET` rows.
pub fn served_by_an_index(query: &FilteredQuery) -> bool {
    Plan::of(query).index_backed
}

/// The end of a prefix's range on a text key, exclusive (as `Search::upper_bound`).
fn past_prefix(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl Plan {
    pub(super) fn of(query: &FilteredQuery) -> Self {
        let by_time = query.order.field == OrderField::CreatedAt;
        let mut plan = Plan {
            status: None,
            role: None,
            low: None,
            high: None,
            index_backed: true,
        };
        // status_filter and role_filter: served only by the creation-time indexes.
        if let Some(status) = query.status {
            plan.index_backed &= by_time && plan.equal_status(status);
        }
        if let Some(role) = query.role {
            plan.index_backed &= by_time && plan.equal_role(role);
        }
        let narrowing = query
            .filter
            .as_ref()
            .map(|filter| filter.narrowing())
            .unwrap_or_default();
        for narrow in narrowing {
            let served = match narrow {
                Some(Narrow::Status(status)) => by_time && plan.equal_status(status),
                Some(Narrow::Role(role)) => by_time && plan.equal_role(role),
                Some(Narrow::CreatedAt(bound)) if by_time => plan.bound(bound.map(Param::Int8)),
                Some(Narrow::UpdatedAt(bound)) if query.order.field == OrderField::UpdatedAt => {
                    plan.bound(bound.map(Param::Int8))
                }
                Some(Narrow::Username(bound)) if query.order.field == OrderField::Username => {
                    plan.bound(bound.map(Param::Text))
                }
                _ => false,
            };
            plan.index_backed &= served;
        }
        plan
    }

    /// Takes `status` as the index's equality; false when another status already is.
    fn equal_status(&mut self, status: UserStatus) -> bool {
        *self.status.get_or_insert(status) == status
    }

    fn equal_role(&mut self, role: Role) -> bool {
        *self.role.get_or_insert(role) == role
    }

    /// Narrows the range by `bound`: whether the range now holds exactly its matches (true
    /// unless an end was already tighter, in which case the bound is still checked on rows).
    fn bound(&mut self, bound: Bound<Param>) -> bool {
        let (low, high) = match bound {
            Bound::Eq(value) => (Some((value.clone(), true)), Some((value, true))),
            Bound::Gt(value) => (Some((value, false)), None),
            Bound::Ge(value) => (Some((value, true)), None),
            Bound::Lt(value) => (None, Some((value, false))),
            Bound::Le(value) => (None, Some((value, true))),
            Bound::Prefix(Param::Text(prefix)) => (
                Some((Param::Text(prefix.clone()), true)),
                Some((Param::Text(past_prefix(&prefix)), false)),
            ),
            Bound::Prefix(_) => return false,
        };
        let mut exact = true;
        if let Some((value, inclusive)) = low {
            exact &= tighten(&mut self.low, End { value, inclusive }, |new, old| {
                new > old
            });
        }
        if let Some((value, inclusive)) = high {
            exact &= tighten(&mut self.high, End { value, inclusive }, |new, old| {
                new < old
            });
        }
        exact
    }
}

/// Puts `end` in `slot` when the slot is empty or `end` is tighter; whether `end` holds now.
fn tighten(slot: &mut Option<End>, end: End, tighter: impl Fn(&Param, &Param) -> bool) -> bool {
    match slot {
        None => {
            *slot = Some(end);
            true
        }
        Some(old) if old.value == end.value => {
            old.inclusive &= end.inclusive;
            true
        }
        Some(old) if tighter(&end.value, &old.value) => {
            *slot = Some(end);
            false
        }
        Some(_) => false,
    }
}

impl PartialOrd for Param {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Param::Int8(a), Param::Int8(b)) => a.partial_cmp(b),
            (Param::Text(a), Param::Text(b)) => a.as_bytes().partial_cmp(b.as_bytes()),
            _ => None,
        }
    }
}

/// One statement of a scan: rows of the plan's range in the query's order, after `after`
/// (the page's start, or the last row already read), at most `rows` of them. `collate` makes
/// text comparisons byte-wise (PostgreSQL's `COLLATE "C"`, which its username index uses).
/// `param` names the next positional placeholder in the backend's syntax.
pub(super) fn scan_sql(
    query: &FilteredQuery,
    plan: &Plan,
    after: Option<&OrderKey>,
    rows: usize,
    collate: &str,
    columns: &str,
    mut param: impl FnMut() -> String,
) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let mut bind = |value: Param| {
        params.push(value);
        param()
    };
    let column = match query.order.field {
        OrderField::Username => format!("{}{collate}", query.order.column()),
        _ => query.order.column().to_owned(),
    };
    let mut sql = format!("SELECT {columns} FROM users WHERE true");
    if let Some(status) = plan.status {
        sql.push_str(&format!(
            " AND status = {}",
            bind(Param::Int4(status as i32))
        ));
    }
    if let Some(role) = plan.role {
        sql.push_str(&format!(" AND role = {}", bind(Param::Int4(role as i32))));
    }
    if let Some(low) = &plan.low {
        let op = if low.inclusive { ">=" } else { ">" };
        sql.push_str(&format!(" AND {column} {op} {}", bind(low.value.clone())));
    }
    if let Some(high) = &plan.high {
        let op = if high.inclusive { "<=" } else { "<" };
        sql.push_str(&format!(" AND {column} {op} {}", bind(high.value.clone())));
    }
    let (past, direction) = if query.order.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    match after {
        Some(OrderKey::Time { ns, id }) => {
            let ns = bind(Param::Int8(*ns));
            let id = bind(Param::Bytes(id.as_uuid().as_bytes().to_vec()));
            sql.push_str(&format!(" AND ({column}, id) {past} ({ns}, {id})"));
        }
        Some(OrderKey::Name(name)) => {
            sql.push_str(&format!(
                " AND {column} {past} {}",
                bind(Param::Text(name.clone()))
            ));
        }
        None => {}
    }
    let tie = match query.order.field {
        OrderField::Username => String::new(),
        _ => format!(", id {direction}"),
    };
    sql.push_str(&format!(" ORDER BY {column} {direction}{tie} LIMIT {rows}"));
    (sql, params)
}

/// The statement of a page's first chunk, and whether the plan is index-backed.
#[cfg(test)]
pub(super) fn scan_sql_for_tests(
    query: &FilteredQuery,
    after: Option<&OrderKey>,
) -> (String, bool) {
    let plan = Plan::of(query);
    let (sql, _) = scan_sql(query, &plan, after, 11, "", USER_COLUMNS, placeholders("?"));
    (sql, plan.index_backed)
}

/// A page being read: rows come in chunks in the query's order, the matches are kept.
pub(super) struct Scan<'q> {
    query: &'q FilteredQuery,
    plan: Plan,
    users: Vec<User>,
    /// Rows read so far.
    read: usize,
    /// The last row read: the next chunk starts after it.
    last_read: Option<OrderKey>,
    /// Rows the next chunk asks for.
    chunk: usize,
    /// Where the next page starts, once the page is decided; `None` inside means the end.
    decided: Option<Option<OrderKey>>,
}

impl<'q> Scan<'q> {
    pub(super) fn new(query: &'q FilteredQuery) -> Self {
        let plan = Plan::of(query);
        // An index-backed page needs one more row than it shows; another reads ahead more.
        let chunk = if plan.index_backed {
            query.limit + 1
        } else {
            (query.limit + 1).max(256)
        };
        Scan {
            query,
            plan,
            users: Vec::with_capacity(query.limit),
            read: 0,
            last_read: query.after.clone(),
            chunk: chunk.next_power_of_two().min(CHUNK_ROWS),
            decided: None,
        }
    }

    /// The next statement to run, or `None` once the page is decided.
    pub(super) fn next_read(
        &self,
        collate: &str,
        param: impl FnMut() -> String,
    ) -> Option<(String, Vec<Param>, usize)> {
        if self.decided.is_some() {
            return None;
        }
        let (sql, params) = scan_sql(
            self.query,
            &self.plan,
            self.last_read.as_ref(),
            self.chunk,
            collate,
            USER_COLUMNS,
            param,
        );
        Some((sql, params, self.chunk))
    }

    /// Takes the rows a statement of `asked` rows returned.
    pub(super) fn take(&mut self, rows: Vec<User>, asked: usize) {
        let complete = rows.len() < asked;
        let count = rows.len();
        for (index, user) in rows.into_iter().enumerate() {
            self.read += 1;
            let key = self.query.order.key_of(&user);
            if self.query.admits(&user) {
                if self.users.len() == self.query.limit {
                    // A match past the page: the next page starts after the last one shown.
                    self.decided =
                        Some(self.users.last().map(|user| self.query.order.key_of(user)));
                    return;
                }
                self.users.push(user);
            }
            self.last_read = Some(key);
            if self.read >= SCAN_BUDGET && !(complete && index + 1 == count) {
                // The budget is spent: a short page, going on after the last row read.
                self.decided = Some(self.last_read.clone());
                return;
            }
        }
        if complete {
            self.decided = Some(None);
            return;
        }
        self.chunk = (self.chunk * 4)
            .min(CHUNK_ROWS)
            .min(SCAN_BUDGET - self.read)
            .max(1);
    }

    pub(super) fn finish(self, total: u64) -> FilteredPage {
        FilteredPage {
            users: self.users,
            next: self.decided.flatten(),
            total,
        }
    }
}

/// How a filtered listing's `total` is counted.
pub(super) enum Counting {
    /// Every row of the range matches (index-backed): the statement answers the count, up to
    /// `COUNT_LIMIT`, from the index alone.
    InDatabase(String, Vec<Param>),
    /// The statement reads the first `COUNT_SCAN` rows of the range; `count` keeps the matches.
    Rows(String, Vec<Param>),
}

pub(super) fn counting(
    query: &FilteredQuery,
    collate: &str,
    param: impl FnMut() -> String,
) -> Counting {
    let plan = Plan::of(query);
    if plan.index_backed {
        let limit = COUNT_LIMIT as usize;
        let (sql, params) = scan_sql(query, &plan, None, limit, collate, "1", param);
        Counting::InDatabase(format!("SELECT count(*) FROM ({sql}) AS counted"), params)
    } else {
        let (sql, params) = scan_sql(query, &plan, None, COUNT_SCAN, collate, USER_COLUMNS, param);
        Counting::Rows(sql, params)
    }
}

/// Matches among the rows a count statement read, at most `COUNT_LIMIT`.
pub(super) fn count(query: &FilteredQuery, rows: &[User]) -> u64 {
    (rows.iter().filter(|user| query.admits(user)).count() as u64).min(COUNT_LIMIT)
}

/// Positional placeholders `{prefix}1`, `{prefix}2`, ... in the order they are asked for.
pub(super) fn placeholders(prefix: &'static str) -> impl FnMut() -> String {
    let mut count = 0;
    move || {
        count += 1;
        format!("{prefix}{count}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn query(filter: &str, order: Order) -> FilteredQuery {
        FilteredQuery {
            order,
            filter: Filter::parse(filter).unwrap().map(Arc::new),
            status: None,
            role: None,
            after: None,
            limit: 10,
        }
    }

    const BY_NAME: Order = Order {
        field: OrderField::Username,
        descending: false,
    };
    const BY_UPDATE: Order = Order {
        field: OrderField::UpdatedAt,
        descending: true,
    };

    #[test]
    fn a_filter_is_index_backed_when_the_order_s_index_serves_every_conjunct() {
        let t = "\"2024-01-01T00:00:00Z\"";
        for (filter, order, backed) in [
            ("", Order::NEWEST, true),
            ("status = ACTIVE", Order::NEWEST, true),
            ("status = ACTIVE AND role = ADMIN", Order::NEWEST, true),
            (
                &format!("role = ADMIN created_at >= {t}") as &str,
                Order::NEWEST,
                true,
            ),
            (
                &format!("created_at > {t} AND created_at < {t}"),
                Order::NEWEST,
                true,
            ),
            ("username = \"ann*\"", BY_NAME, true),
            ("username > a username <= m", BY_NAME, true),
            (&format!("updated_at < {t}"), BY_UPDATE, true),
            // Served by no index of that order: read and checked, within the budget.
            ("username = \"ann*\"", Order::NEWEST, false),
            ("status = ACTIVE", BY_NAME, false),
            (
                "status = ACTIVE AND status = SUSPENDED",
                Order::NEWEST,
                false,
            ),
            ("status != ACTIVE", Order::NEWEST, false),
            ("status = ACTIVE OR role = ADMIN", Order::NEWEST, false),
            ("email = \"ann*\"", BY_NAME, false),
            ("metadata.team = core", Order::NEWEST, false),
            ("username > a username > b", BY_NAME, false),
        ] {
            assert_eq!(
                Plan::of(&query(filter, order)).index_backed,
                backed,
                "{filter} by {order:?}"
            );
        }
        let mut legacy = query("", BY_NAME);
        legacy.status = Some(UserStatus::Active);
        assert!(
            !Plan::of(&legacy).index_backed,
            "status_filter with another order"
        );
    }

    #[test]
    fn the_statement_reads_the_range_after_the_last_key_in_order() {
        let mut q = query("status = ACTIVE AND username = \"an*\"", BY_NAME);
        q.after = Some(OrderKey::Name("ann".into()));
        let (sql, params) = scan_sql(
            &q,
            &Plan::of(&q),
            q.after.as_ref(),
            11,
            "",
            USER_COLUMNS,
            placeholders("?"),
        );
        assert!(
            sql.ends_with(
                "WHERE true AND username_key >= ?1 AND username_key < ?2 AND username_key > ?3 ORDER BY username_key ASC LIMIT 11"
            ),
            "{sql}"
        );
        assert_eq!(
            params,
            [
                Param::Text("an".into()),
                Param::Text("an\u{10FFFF}".into()),
                Param::Text("ann".into())
            ]
        );
    }

    fn user(n: i64) -> User {
        use crate::domain::{Email, FullName, Metadata, Username};
        User {
            id: UserId::new(),
            username: Username::parse(format!("user{n}")).unwrap(),
            email: Email::parse(format!("user{n}@example.com")).unwrap(),
            full_name: FullName::parse("U".into()).unwrap(),
            role: Role::User,
            status: if n % 2 == 0 {
                UserStatus::Active
            } else {
                UserStatus::Suspended
            },
            created_at_ns: 1_000 - n,
            updated_at_ns: 1_000 - n,
            metadata: Metadata::default(),
            revision: 1,
            email_verified: false,
        }
    }

    #[test]
    fn a_page_ends_after_its_last_match_or_where_the_budget_ran_out() {
        // Every other row matches: ten matches in twenty rows, the eleventh decides.
        let q = query("status = SUSPENDED", BY_NAME);
        let mut scan = Scan::new(&q);
        let rows: Vec<User> = (0..30).map(user).collect();
        let asked = rows.len() + 1;
        scan.take(rows.clone(), asked);
        let page = scan.finish(0);
        assert_eq!(page.users.len(), 10);
        assert_eq!(
            page.next,
            Some(q.order.key_of(&rows[19])),
            "after the last shown"
        );

        // No match at all within the budget: empty, going on after the last row read.
        let q = query("metadata:none", Order::NEWEST);
        let mut scan = Scan::new(&q);
        let mut read = 0;
        while let Some((_, _, asked)) = scan.next_read("", placeholders("?")) {
            assert!(asked <= CHUNK_ROWS, "a chunk of {asked} rows");
            let rows: Vec<User> = (read..read + asked as i64).map(user).collect();
            read += asked as i64;
            let last = q.order.key_of(rows.last().unwrap());
            scan.take(rows, asked);
            if scan.decided.is_some() {
                assert_eq!(scan.decided.clone().flatten(), Some(last));
            }
        }
        assert_eq!(read as usize, SCAN_BUDGET, "reads stop at the budget");
        let page = scan.finish(0);
        assert!(page.users.is_empty() && page.next.is_some());
    }
}
