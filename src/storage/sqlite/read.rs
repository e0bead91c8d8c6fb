//! The read path: pooled read-only connections, each read in one snapshot.

use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::super::encoding::{RawUser, decode_event};
use super::super::filtered::{
    self, Counting, FilteredPage, FilteredQuery, Param, Scan, placeholders,
};
use super::super::rules::{
    SearchArm, SearchRead, USER_COLUMN_COUNT, USER_COLUMNS, into_page, list_sql, merge_search,
    search_sql,
};
use super::{SqliteStore, read_user};
use crate::domain::{PasswordHash, User, UserEvent, UserId};
use crate::storage::{ListQuery, Page, Search, SearchPage, StoreError, StoreResult, UserKey};

pub(super) fn select_user(conn: &Connection, id: UserId) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id.as_uuid().as_bytes()], read_user)
        .optional()?
        .map(RawUser::into_user)
        .transpose()
}

/// The revision of the newest committed event, as of this connection's snapshot.
pub(super) fn snapshot_revision(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?
        .query_row([], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

fn sqlite_list_sql(query: &ListQuery) -> String {
    list_sql(query, |name| format!(":{name}"))
}

impl SqliteStore {
    /// The user whose username's key (`Username::key`) is `key`, and their password hash,
    /// for login.
    pub(crate) fn credentials(&self, key: &str) -> StoreResult<Option<(User, PasswordHash)>> {
        self.credentials_by("username_key", &key)
    }

    /// The user with this id and their password hash.
    pub(crate) fn credentials_of(&self, id: UserId) -> StoreResult<Option<(User, PasswordHash)>> {
        self.credentials_by("id", id.as_uuid().as_bytes())
    }

    /// A user and their password hash, by a unique column.
    fn credentials_by(
        &self,
        column: &str,
        key: &dyn ToSql,
    ) -> StoreResult<Option<(User, PasswordHash)>> {
        self.readers.with(|conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS}, password_hash FROM users WHERE {column} = ?1"
                ))?
                .query_row([key], |row| {
                    Ok((read_user(row)?, row.get::<_, String>(USER_COLUMN_COUNT)?))
                })
                .optional()?;
            found
                .map(|(raw, hash)| Ok((raw.into_user()?, PasswordHash::from_phc(hash))))
                .transpose()
        })
    }

    /// The user with this username or email, by the unique index on its key.
    pub(crate) fn find(&self, key: &UserKey) -> StoreResult<Option<User>> {
        let (column, key) = key.column_and_key();
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = ?1");
        self.readers.with(|conn| {
            conn.prepare_cached(&sql)?
                .query_row([key], read_user)
                .optional()?
                .map(RawUser::into_user)
                .transpose()
        })
    }

    /// Reads a user from the database and keeps it in the cache when that is safe.
    pub(crate) fn load(&self, id: UserId) -> StoreResult<User> {
        let (user, snapshot) = self.readers.with(|conn| {
            let tx = conn.transaction()?;
            let user = select_user(&tx, id)?;
            let snapshot = snapshot_revision(&tx)?;
            Ok((user, snapshot))
        })?;
        let user = user.ok_or(StoreError::NotFound(id))?;
        self.published.cache.fill(&user, snapshot);
        Ok(user)
    }

    pub(crate) fn list(&self, query: ListQuery) -> StoreResult<Page> {
        let status = query.status.map(|status| status as i64);
        let role = query.role.map(|role| role as i64);
        let cursor = query.after.map(|cursor| {
            (
                cursor.created_at_ns,
                cursor.id.as_uuid().as_bytes().to_vec(),
            )
        });
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);

        let mut args: Vec<(&str, &dyn ToSql)> = vec![(":limit", &limit)];
        if let Some(status) = &status {
            args.push((":status", status));
        }
        if let Some(role) = &role {
            args.push((":role", role));
        }
        if let Some((created_at, id)) = &cursor {
            args.push((":created_at", created_at));
            args.push((":id", id));
        }
        let sql = sqlite_list_sql(&query);

        self.readers.with(|conn| {
            let tx = conn.transaction()?;
            let total: i64 = tx
                .prepare_cached(
                    "SELECT coalesce(sum(n), 0) FROM user_counts
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR role = ?2)",
                )?
                .query_row(params![status, role], |row| row.get(0))?;
            let users = tx
                .prepare_cached(&sql)?
                .query_map(args.as_slice(), read_user)?
                .map(|raw| raw.map_err(StoreError::from).and_then(RawUser::into_user))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(into_page(users, query.limit, total))
        })
    }

    /// A filtered listing's page and its capped count, in one snapshot.
    pub(crate) fn list_filtered(&self, query: &FilteredQuery) -> StoreResult<FilteredPage> {
        let rows = |tx: &rusqlite::Transaction<'_>, sql: &str, params: &[Param]| {
            tx.prepare_cached(sql)?
                .query_map(rusqlite::params_from_iter(params), read_user)?
                .map(|raw| raw.map_err(StoreError::from).and_then(RawUser::into_user))
                .collect::<StoreResult<Vec<_>>>()
        };
        self.readers.with(|conn| {
            let tx = conn.transaction()?;
            let mut scan = Scan::new(query);
            while let Some((sql, params, asked)) = scan.next_read("", placeholders("?")) {
                scan.take(rows(&tx, &sql, &params)?, asked);
            }
            let total = match filtered::counting(query, "", placeholders("?")) {
                Counting::InDatabase(sql, params) => tx
                    .prepare_cached(&sql)?
                    .query_row(rusqlite::params_from_iter(&params), |row| {
                        row.get::<_, i64>(0)
                    })?
                    .unsigned_abs(),
                Counting::Rows(sql, params) => filtered::count(query, &rows(&tx, &sql, &params)?),
            };
            Ok(scan.finish(total))
        })
    }

    pub(crate) fn events_from(&self, from: i64, limit: usize) -> StoreResult<Vec<UserEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.with(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT revision, event_id, kind, at, user, actor, previous FROM events
                 WHERE revision >= ?1 ORDER BY revision LIMIT ?2",
            )?;
            let rows = statement.query_map(params![from, limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })?;
            rows.map(|row| {
                let (revision, event_id, kind, at_ns, user, actor, previous) = row?;
                decode_event(
                    revision,
                    &event_id,
                    kind,
                    at_ns,
                    &user,
                    &actor,
                    previous.as_deref(),
                )
            })
            .collect()
        })
    }

    pub(crate) fn search(&self, search: &Search) -> StoreResult<SearchPage> {
        let status = search.status.map(|status| status as i64);
        let role = search.role.map(|role| role as i64);
        let (lo, _) = search.lower_bound();
        let hi = search.upper_bound();
        let mut args: Vec<(&str, &dyn ToSql)> = vec![(":lo", &lo), (":hi", &hi)];
        if let Some(status) = &status {
            args.push((":status", status));
        }
        if let Some(role) = &role {
            args.push((":role", role));
        }
        let mut count_args = args.clone();
        count_args[0] = (":lo", &search.prefix);
        let sql = |arm, read| search_sql(search, arm, read, "", |name| format!(":{name}"));
        self.readers.with(|conn| {
            let tx = conn.transaction()?;
            let mut pages = [Vec::new(), Vec::new()];
            let mut counted = [Vec::new(), Vec::new()];
            for (index, arm) in [SearchArm::Username, SearchArm::Email]
                .into_iter()
                .enumerate()
            {
                pages[index] = tx
                    .prepare_cached(&sql(arm, SearchRead::Page))?
                    .query_map(args.as_slice(), read_user)?
                    .map(|raw| raw.map_err(StoreError::from).and_then(RawUser::into_user))
                    .collect::<StoreResult<Vec<_>>>()?;
                counted[index] = tx
                    .prepare_cached(&sql(arm, SearchRead::Count))?
                    .query_map(count_args.as_slice(), |row| row.get::<_, Vec<u8>>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
            }
            let [by_username, by_email] = pages;
            Ok(merge_search(search, by_username, by_email, counted))
        })
    }

    /// Opens a fresh connection and reads through it, so a database file that went missing or
    /// became unreadable is noticed even while pooled connections still hold it open.
    pub(crate) fn ping(&self) -> StoreResult<()> {
        let conn = self.readers.open()?;
        conn.query_row("SELECT count(*) FROM user_counts", [], |row| {
            row.get::<_, i64>(0)
        })?;
        Ok(())
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Int4(value) => value.to_sql(),
            Param::Int8(value) => value.to_sql(),
            Param::Text(value) => value.to_sql(),
            Param::Bytes(value) => value.to_sql(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, UserStatus};
    use crate::storage::{Cursor, StorageSettings};

    /// SQLite's plan for `sql`, its steps joined by "; ". Unbound parameters are NULL, which is
    /// enough for a plan.
    fn query_plan(store: &SqliteStore, sql: &str) -> String {
        store
            .readers
            .with(|conn| {
                let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let mut rows = statement.raw_query();
                let mut details = Vec::new();
                while let Some(row) = rows.next()? {
                    details.push(row.get::<_, String>(3)?);
                }
                Ok(details)
            })
            .unwrap()
            .join("; ")
    }

    #[test]
    fn every_listing_reads_an_index_in_order_and_never_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("plan.db"), &StorageSettings::default()).unwrap();
        let cursor = Cursor {
            created_at_ns: 1,
            id: UserId::new(),
        };
        for status in [None, Some(UserStatus::Active)] {
            for role in [None, Some(Role::Admin)] {
                for after in [None, Some(cursor)] {
                    let query = ListQuery {
                        status,
                        role,
                        after,
                        limit: 10,
                    };
                    let plan = query_plan(&store, &sqlite_list_sql(&query));
                    assert!(plan.contains("USING INDEX"), "{query:?}: {plan}");
                    assert!(!plan.contains("TEMP B-TREE"), "{query:?} sorts: {plan}");
                }
            }
        }
    }

    #[test]
    fn every_index_backed_filter_reads_an_index_range_in_order_and_never_sorts() {
        use crate::filter::Filter;
        use crate::storage::filtered::{Order, OrderField, OrderKey, scan_sql_for_tests};
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("plan.db"), &StorageSettings::default()).unwrap();
        let order = |field, descending| Order { field, descending };
        let t = "\"2024-01-01T00:00:00Z\"";
        let cases = [
            ("", order(OrderField::CreatedAt, true)),
            ("", order(OrderField::CreatedAt, false)),
            ("status = ACTIVE", order(OrderField::CreatedAt, true)),
            (
                "role = ADMIN AND status = SUSPENDED",
                order(OrderField::CreatedAt, false),
            ),
            (
                &format!("role = ADMIN AND created_at >= {t}") as &str,
                order(OrderField::CreatedAt, true),
            ),
            ("", order(OrderField::UpdatedAt, true)),
            (
                &format!("updated_at < {t}"),
                order(OrderField::UpdatedAt, false),
            ),
            ("", order(OrderField::Username, false)),
            ("username = \"ann*\"", order(OrderField::Username, true)),
        ];
        for (filter, order) in cases {
            for after in [false, true] {
                let filter = Filter::parse(filter).unwrap().map(std::sync::Arc::new);
                let query = crate::storage::filtered::FilteredQuery {
                    order,
                    filter,
                    status: None,
                    role: None,
                    after: None,
                    limit: 10,
                };
                let key = match order.field {
                    OrderField::Username => OrderKey::Name("m".into()),
                    _ => OrderKey::Time {
                        ns: 5,
                        id: UserId::new(),
                    },
                };
                let (sql, backed) = scan_sql_for_tests(&query, after.then_some(&key));
                assert!(backed, "{sql}");
                let plan = query_plan(&store, &sql);
                assert!(plan.contains("USING INDEX"), "{sql}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
            }
        }
    }
}
