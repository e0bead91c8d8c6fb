//! The read path. Users are read from the database, not from the tail-fed cache, so a read
//! that starts after any replica acknowledged a write sees it. Each read is one statement,
//! which PostgreSQL runs in one snapshot.

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::super::encoding::{RawUser, decode_event};
use super::super::filtered::{
    self, Counting, FilteredPage, FilteredQuery, Param, Scan, placeholders,
};
use super::super::rules::{
    SearchArm, SearchRead, USER_COLUMN_COUNT, into_page, list_sql, merge_search, search_sql,
    user_columns,
};
use super::{PostgresStore, pg_error, read_user, read_user_at};
use crate::domain::{PasswordHash, User, UserEvent, UserId};
use crate::storage::{ListQuery, Page, Search, SearchPage, StoreError, StoreResult, UserKey};

const SELECT_USER: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
/// The user with the head revision of the same snapshot.
const SELECT_USER_AND_HEAD: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", (SELECT head FROM log_head) FROM users WHERE id = $1"
);
const SELECT_CREDENTIALS: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE username_key = $1"
);
const SELECT_CREDENTIALS_BY_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE id = $1"
);
const SELECT_BY_USERNAME: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE username_key = $1"
);
const SELECT_BY_EMAIL: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE email_key = $1"
);

/// How long a read waits for this replica's tail to reach the fence before it reads the
/// database instead.
const FENCE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The user `id`, read by `client` (a pooled connection or an open transaction).
pub(super) async fn select_user(
    client: &impl GenericClient,
    id: UserId,
) -> StoreResult<Option<User>> {
    let statement = client.prepare_cached(SELECT_USER).await.map_err(pg_error)?;
    client
        .query_opt(&statement, &[&id.as_uuid().as_bytes().as_slice()])
        .await
        .map_err(pg_error)?
        .map(|row| read_user(&row).and_then(RawUser::into_user))
        .transpose()
}

/// A read-only transaction whose statements all read one snapshot (repeatable read).
async fn snapshot(client: &mut super::Lease) -> StoreResult<deadpool_postgres::Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)
}

/// Text compared byte-wise, as the username prefix index orders it.
const COLLATE: &str = " COLLATE \"C\"";

/// A filtered listing's parameters as the driver takes them.
fn param_values(params: &[Param]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|param| -> Box<dyn ToSql + Sync + Send> {
            match param {
                Param::Int4(value) => Box::new(*value),
                Param::Int8(value) => Box::new(*value),
                Param::Text(value) => Box::new(value.clone()),
                Param::Bytes(value) => Box::new(value.clone()),
            }
        })
        .collect()
}

fn arguments(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The users a filtered listing's statement reads.
async fn filtered_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[Param],
) -> StoreResult<Vec<User>> {
    let values = param_values(params);
    let statement = tx.prepare_cached(sql).await.map_err(pg_error)?;
    tx.query(&statement, &arguments(&values))
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| read_user(row)?.into_user())
        .collect()
}

/// The count of users matching the listing's filters, from the per-(status, role) counts.
fn count_sql(query: &ListQuery, status: &str, role: &str) -> String {
    let mut sql = String::from("SELECT coalesce(sum(n), 0)::bigint FROM user_counts WHERE true");
    if query.status.is_some() {
        sql.push_str(&format!(" AND status = {status}"));
    }
    if query.role.is_some() {
        sql.push_str(&format!(" AND role = {role}"));
    }
    sql
}

impl PostgresStore {
    /// The user as committed, reflecting every write acknowledged before this call began
    /// (on any replica): through the read fence, from the cache once this replica's tail has
    /// caught up with the database's head; otherwise from the database.
    pub(crate) async fn get(&self, id: UserId) -> StoreResult<Arc<User>> {
        let head = self.fence.head().await?;
        if self.published.applied(head, FENCE_WAIT).await
            && let Some(user) = self.published.cache.shared(&id)
        {
            return Ok(user);
        }
        self.load(id).await.map(Arc::new)
    }

    /// The user as this server's tail last applied them: what a call's caller is checked
    /// against.
    pub(crate) async fn current_user(&self, id: UserId) -> StoreResult<User> {
        if let Some(user) = self.published.cache.get(&id) {
            return Ok(user);
        }
        self.load(id).await
    }

    /// Reads the user with the head revision of the same snapshot, and keeps them in the cache
    /// when that is safe.
    async fn load(&self, id: UserId) -> StoreResult<User> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(SELECT_USER_AND_HEAD)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&statement, &[&id.as_uuid().as_bytes().as_slice()])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound(id))?;
        let user = read_user(&row)?.into_user()?;
        self.published.cache.fill(&user, row.get(USER_COLUMN_COUNT));
        Ok(user)
    }

    /// The user whose username's key (`Username::key`) is `key`, and their password hash,
    /// for login.
    pub(crate) async fn credentials(&self, key: &str) -> StoreResult<Option<(User, PasswordHash)>> {
        self.credentials_by(SELECT_CREDENTIALS, &key).await
    }

    /// The user with this id and their password hash.
    pub(crate) async fn credentials_of(
        &self,
        id: UserId,
    ) -> StoreResult<Option<(User, PasswordHash)>> {
        self.credentials_by(
            SELECT_CREDENTIALS_BY_ID,
            &id.as_uuid().as_bytes().as_slice(),
        )
        .await
    }

    /// A user and their password hash, by a statement of one key that selects both.
    async fn credentials_by(
        &self,
        sql: &str,
        key: &(dyn ToSql + Sync),
    ) -> StoreResult<Option<(User, PasswordHash)>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        let Some(row) = client
            .query_opt(&statement, &[key])
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let hash: String = row.try_get(USER_COLUMN_COUNT).map_err(pg_error)?;
        Ok(Some((
            read_user(&row)?.into_user()?,
            PasswordHash::from_phc(hash),
        )))
    }

    /// The user with this username or email, by the unique index on its key.
    pub(crate) async fn find(&self, key: &UserKey) -> StoreResult<Option<User>> {
        let (sql, key) = match key {
            UserKey::Username(username) => (SELECT_BY_USERNAME, username.key()),
            UserKey::Email(email) => (SELECT_BY_EMAIL, email.key()),
        };
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        client
            .query_opt(&statement, &[&key])
            .await
            .map_err(pg_error)?
            .map(|row| read_user(&row).and_then(RawUser::into_user))
            .transpose()
    }

    /// One page and the matching count, in one statement (one snapshot).
    pub(crate) async fn list(&self, query: ListQuery) -> StoreResult<Page> {
        let status = query.status.map(|status| status as i32);
        let role = query.role.map(|role| role as i32);
        let cursor = query.after.map(|cursor| {
            (
                cursor.created_at_ns,
                cursor.id.as_uuid().as_bytes().to_vec(),
            )
        });

        // The row limit is written into the statement, rounded up to a power of two: with a
        // parameter, PostgreSQL's generic plan assumes a large limit and may sort the whole
        // table instead of reading the newest-first index (10x slower at a million users).
        // Rounding keeps the prepared variants few; the extra rows are dropped below.
        let rows_wanted = (query.limit + 1).next_power_of_two();
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(4);
        let mut placeholders = std::collections::HashMap::new();
        let page = list_sql(&query, |name| {
            let value: &(dyn ToSql + Sync) = match name {
                "status" => status.as_ref().expect("used only with a status"),
                "role" => role.as_ref().expect("used only with a role"),
                "created_at" => &cursor.as_ref().expect("used only after a cursor").0,
                "id" => &cursor.as_ref().expect("used only after a cursor").1,
                // `LIMIT n + 1`: n + 1 is the number of rows read.
                _ => return (rows_wanted - 1).to_string(),
            };
            args.push(value);
            let placeholder = format!("${}", args.len());
            placeholders.insert(name.to_owned(), placeholder.clone());
            placeholder
        });
        let placeholder = |name: &str| placeholders.get(name).cloned().unwrap_or_default();
        let count = count_sql(&query, &placeholder("status"), &placeholder("role"));
        let sql = format!(
            "WITH page AS ({page}) SELECT ({count}), page.* FROM (SELECT) AS one
             LEFT JOIN page ON true ORDER BY page.created_at DESC, page.id DESC"
        );

        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = client.query(&statement, &args).await.map_err(pg_error)?;
        let total: i64 = rows.first().map_or(0, |row| row.get(0));
        let mut users = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row of an empty page carries only the count.
            if row
                .try_get::<_, Option<&[u8]>>(1)
                .map_err(pg_error)?
                .is_none()
            {
                continue;
            }
            if users.len() > query.limit {
                break;
            }
            users.push(read_user_at(row, 1)?.into_user()?);
        }
        Ok(into_page(users, query.limit, total))
    }

    /// A filtered listing's page and its capped count, in one snapshot (a repeatable-read,
    /// read-only transaction).
    pub(crate) async fn list_filtered(&self, query: &FilteredQuery) -> StoreResult<FilteredPage> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let mut scan = Scan::new(query);
        while let Some((sql, params, asked)) = scan.next_read(COLLATE, placeholders("$")) {
            scan.take(filtered_rows(&tx, &sql, &params).await?, asked);
        }
        let total = match filtered::counting(query, COLLATE, placeholders("$")) {
            Counting::InDatabase(sql, params) => {
                let statement = tx.prepare_cached(&sql).await.map_err(pg_error)?;
                let values = param_values(&params);
                let count: i64 = tx
                    .query_one(&statement, &arguments(&values))
                    .await
                    .map_err(pg_error)?
                    .get(0);
                count.unsigned_abs()
            }
            Counting::Rows(sql, params) => {
                filtered::count(query, &filtered_rows(&tx, &sql, &params).await?)
            }
        };
        tx.commit().await.map_err(pg_error)?;
        Ok(scan.finish(total))
    }

    /// Every statement runs in one snapshot (a repeatable-read, read-only transaction).
    pub(crate) async fn search(&self, search: &Search) -> StoreResult<SearchPage> {
        let status = search.status.map(|status| status as i32);
        let role = search.role.map(|role| role as i32);
        let (lo, _) = search.lower_bound();
        let hi = search.upper_bound();
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let mut pages = [Vec::new(), Vec::new()];
        let mut counted = [Vec::new(), Vec::new()];
        for (index, arm) in [SearchArm::Username, SearchArm::Email]
            .into_iter()
            .enumerate()
        {
            for read in [SearchRead::Page, SearchRead::Count] {
                let lo: &(dyn ToSql + Sync) = match read {
                    SearchRead::Page => &lo,
                    SearchRead::Count => &search.prefix,
                };
                let mut args: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(4);
                let sql = search_sql(search, arm, read, " COLLATE \"C\"", |name| {
                    args.push(match name {
                        "lo" => lo,
                        "hi" => &hi,
                        "status" => status.as_ref().expect("used only with a status"),
                        _ => role.as_ref().expect("used only with a role"),
                    });
                    format!("${}", args.len())
                });
                let statement = tx.prepare_cached(&sql).await.map_err(pg_error)?;
                let rows = tx.query(&statement, &args).await.map_err(pg_error)?;
                match read {
                    SearchRead::Page => {
                        pages[index] = rows
                            .iter()
                            .map(|row| read_user(row)?.into_user())
                            .collect::<StoreResult<Vec<_>>>()?;
                    }
                    SearchRead::Count => {
                        counted[index] = rows
                            .iter()
                            .map(|row| row.try_get::<_, Vec<u8>>(0).map_err(pg_error))
                            .collect::<StoreResult<Vec<_>>>()?;
                    }
                }
            }
        }
        tx.commit().await.map_err(pg_error)?;
        let [by_username, by_email] = pages;
        Ok(merge_search(search, by_username, by_email, counted))
    }

    pub(crate) async fn events_from(&self, from: i64, limit: usize) -> StoreResult<Vec<UserEvent>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(EVENTS_AFTER)
            .await
            .map_err(pg_error)?;
        events_after(&client, &statement, from - 1, limit).await
    }
}

/// Up to `$2` events with `revision > $1`, oldest first.
pub(super) const EVENTS_AFTER: &str =
    "SELECT revision, event_id, kind, at, \"user\", actor, previous FROM events
    WHERE revision > $1 ORDER BY revision LIMIT $2";

/// Runs `EVENTS_AFTER`, prepared by the caller once per connection: up to `limit` events
/// with `revision > after`, oldest first.
pub(super) async fn events_after(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    after: i64,
    limit: usize,
) -> StoreResult<Vec<UserEvent>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(statement, &[&after, &limit])
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| {
            decode_event(
                row.get(0),
                row.get(1),
                row.get::<_, i32>(2).into(),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
            )
        })
        .collect()
}
