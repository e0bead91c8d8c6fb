//! The write path. Every write transaction first locks the log's counter row
//! (`SELECT ... FROM log_head FOR UPDATE`) and holds it until commit.
//!
//! Why the counter row and not a sequence: a sequence hands out numbers when they are asked
//! for, not when they commit, so revision 11 could become visible while 10 is still in flight
//! and commits later; a watcher or tail that had read up to 11 would never see 10. With the
//! row lock held to commit, the next writer can only read the head after this one committed,
//! so revisions are gap-free and appear in order, on every replica. The same row carries the
//! newest creation time, which keeps newest-first listings stable across replicas. The price
//! is that writes commit one at a time across the whole service (a batch is one write).
//!
//! The commit statement also sends `NOTIFY user_events`, delivered to every replica's tail
//! when (and only if) the transaction commits.

use std::collections::HashMap;

use deadpool_postgres::{Object, Transaction};
use futures_util::future::join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::super::encoding::{encode_metadata, encode_user};
use super::super::rules::Pending;
use super::{APPLY_WAIT, PostgresStore, pg_error, read::select_user};
use crate::domain::{Actor, Etag, NewUser, PasswordHash, User, UserEvent, UserId, UserPatch};
use crate::storage::writes::{Change, Written};
use crate::storage::{BatchItem, StoreError, StoreResult, Updated};

const INSERT_USER: &str = "INSERT INTO users (id, username, username_key, email, email_key,
        full_name, password_hash, role, status, metadata, created_at, updated_at, revision)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT DO NOTHING";

const UPDATE_USER: &str = "UPDATE users SET username = $2, username_key = $3, email = $4,
        email_key = $5, full_name = $6, role = $7, status = $8, metadata = $9,
        updated_at = $10, revision = $11, email_verified = $12
    WHERE id = $1";

/// Writes the transaction's events, applies its changes to the per-(status, role) counts
/// (once per transaction: one new row version of each count touched, not one per user), and
/// moves the head, in one statement.
const FINISH: &str = "WITH logged AS (
        INSERT INTO events (revision, event_id, kind, user_id, at, \"user\", actor, previous)
        SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::integer[], $4::bytea[],
                             $5::bigint[], $6::bytea[], $12::text[], $13::bytea[])
    ), counted AS (
        INSERT INTO user_counts (status, role, n)
        SELECT status, role, sum(delta)
        FROM unnest($9::integer[], $10::integer[], $11::bigint[]) AS change (status, role, delta)
        GROUP BY status, role
        ON CONFLICT (status, role) DO UPDATE SET n = user_counts.n + EXCLUDED.n
    ), moved AS (
        UPDATE log_head SET head = $7, last_created_at = $8 RETURNING head
    )
    SELECT pg_notify('user_events', head::text) FROM moved";

/// Gives rows the revisions they really got, once rows before them were skipped.
const MOVE_REVISIONS: &str = "UPDATE users SET revision = moved.revision
    FROM unnest($1::bytea[], $2::bigint[]) AS moved (id, revision)
    WHERE users.id = moved.id";

/// Which unique key `username`/`email` collide on, once an insert was skipped.
/// Which of a skipped insert's names is taken: the username when both are, as SQLite's
/// unique indexes (checked in the order they were made) name it.
const TAKEN: &str = "SELECT username_key = $1 AS username_taken FROM users
    WHERE username_key = $1 OR email_key = $2 ORDER BY username_taken DESC LIMIT 1";

fn unique_violation(err: tokio_postgres::Error, user: &User) -> StoreError {
    if let Some(db) = err.as_db_error()
        && *db.code() == SqlState::UNIQUE_VIOLATION
    {
        match db.constraint() {
            Some("users_username_key") => {
                return StoreError::taken("username", user.username.as_str());
            }
            Some("users_email_key") => return StoreError::taken("email", user.email.as_str()),
            _ => {}
        }
    }
    pg_error(err)
}

/// The values of a user row that a `User` does not hold as they are stored.
struct InsertRow {
    id: Vec<u8>,
    username: String,
    username_key: String,
    email: String,
    email_key: String,
    full_name: String,
    password_hash: String,
    role: i32,
    status: i32,
    metadata: Vec<u8>,
}

impl InsertRow {
    fn of(user: &User, new: &NewUser) -> Self {
        Self {
            id: user.id.as_uuid().as_bytes().to_vec(),
            username: user.username.as_str().to_owned(),
            username_key: user.username.key(),
            email: user.email.as_str().to_owned(),
            email_key: user.email.key(),
            full_name: user.full_name.as_str().to_owned(),
            password_hash: new.password_hash.as_phc().to_owned(),
            role: user.role as i32,
            status: user.status as i32,
            metadata: encode_metadata(&user.metadata),
        }
    }

    /// `INSERT_USER`'s parameters.
    fn params<'a>(&'a self, user: &'a User) -> [&'a (dyn ToSql + Sync); 13] {
        [
            &self.id,
            &self.username,
            &self.username_key,
            &self.email,
            &self.email_key,
            &self.full_name,
            &self.password_hash,
            &self.role,
            &self.status,
            &self.metadata,
            &user.created_at_ns,
            &user.updated_at_ns,
            &user.revision,
        ]
    }
}

/// `UPDATE_USER`'s parameters for one user.
struct UpdateRow<'a> {
    user: &'a User,
    id: &'a [u8],
    username: &'a str,
    username_key: String,
    email: &'a str,
    email_key: String,
    full_name: &'a str,
    role: i32,
    status: i32,
    metadata: Vec<u8>,
}

impl<'a> UpdateRow<'a> {
    fn of(user: &'a User) -> Self {
        Self {
            user,
            id: user.id.as_uuid().as_bytes(),
            username: user.username.as_str(),
            username_key: user.username.key(),
            email: user.email.as_str(),
            email_key: user.email.key(),
            full_name: user.full_name.as_str(),
            role: user.role as i32,
            status: user.status as i32,
            metadata: encode_metadata(&user.metadata),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.id,
            &self.username,
            &self.username_key,
            &self.email,
            &self.email_key,
            &self.full_name,
            &self.role,
            &self.status,
            &self.metadata,
            &self.user.updated_at_ns,
            &self.user.revision,
            &self.user.email_verified,
        ]
    }
}

/// Inserts `items` as the next users, in order, and records an event for each one created;
/// returns each item's outcome. A taken username or email skips its row without aborting the
/// transaction (`ON CONFLICT DO NOTHING`), so the others go on.
///
/// The inserts are sent pipelined (all at once on the connection, answers read in order), so
/// a batch costs one round trip, not one per user. Each row is written with the revision it
/// gets if every earlier row succeeds; when some were skipped, one more statement moves the
/// later rows to their real, gap-free revisions before anything commits.
async fn insert_all(
    tx: &Transaction<'_>,
    pending: &mut Pending,
    items: &[&NewUser],
) -> StoreResult<Vec<StoreResult<()>>> {
    let insert = tx.prepare_cached(INSERT_USER).await.map_err(pg_error)?;
    let first_revision = pending.next_revision();
    let mut users = Vec::with_capacity(items.len());
    for (offset, new) in items.iter().enumerate() {
        let mut user = pending.new_user(new);
        user.revision = first_revision + offset as i64;
        users.push(user);
    }
    let rows: Vec<InsertRow> = users
        .iter()
        .zip(items)
        .map(|(user, new)| InsertRow::of(user, new))
        .collect();
    let params: Vec<[&(dyn ToSql + Sync); 13]> = users
        .iter()
        .zip(&rows)
        .map(|(user, row)| row.params(user))
        .collect();
    let inserted = join_all(params.iter().map(|params| tx.execute(&insert, params))).await;

    let taken = tx.prepare_cached(TAKEN).await.map_err(pg_error)?;
    let mut outcomes = Vec::with_capacity(items.len());
    let mut moved = (Vec::new(), Vec::new());
    for (((mut user, row), inserted), new) in users.into_iter().zip(&rows).zip(inserted).zip(items)
    {
        if inserted.map_err(pg_error)? == 0 {
            let found = tx
                .query_opt(&taken, &[&row.username_key, &row.email_key])
                .await
                .map_err(pg_error)?;
            outcomes.push(Err(match found.map(|found| found.get::<_, bool>(0)) {
                Some(true) => StoreError::taken("username", user.username.as_str()),
                Some(false) => StoreError::taken("email", user.email.as_str()),
                None => StoreError::Backend("an insert was skipped without a conflict".into()),
            }));
            continue;
        }
        let revision = pending.next_revision();
        if revision != user.revision {
            moved.0.push(row.id.clone());
            moved.1.push(revision);
            user.revision = revision;
        }
        pending.log_created(&user, &new.actor);
        outcomes.push(Ok(()));
    }
    if !moved.0.is_empty() {
        let statement = tx.prepare_cached(MOVE_REVISIONS).await.map_err(pg_error)?;
        tx.execute(&statement, &[&moved.0, &moved.1])
            .await
            .map_err(pg_error)?;
    }
    Ok(outcomes)
}

const DELETE_USER: &str = "DELETE FROM users WHERE id = $1";

/// A row write a change group sends once its changes are decided.
enum RowWrite {
    Updated(User),
    Deleted(UserId),
}

/// Decides one update of a change group against the users as the group left them so far.
fn decide_update(
    pending: &mut Pending,
    current: &mut HashMap<UserId, Option<User>>,
    writes: &mut Vec<RowWrite>,
    id: UserId,
    patch: UserPatch,
) -> StoreResult<Written> {
    let Some(Some(stored)) = current.get(&id) else {
        return Err(StoreError::NotFound(id));
    };
    let actor = patch.actor.clone();
    let Some(user) = pending.patched(stored, patch)? else {
        return Ok(Written::Updated(Updated::Unchanged(stored.clone())));
    };
    let event = pending.log_updated(stored, &user, &actor).clone();
    writes.push(RowWrite::Updated(user.clone()));
    current.insert(id, Some(user));
    Ok(Written::Updated(Updated::Changed(event)))
}

/// Decides one delete of a change group.
fn decide_delete(
    pending: &mut Pending,
    current: &mut HashMap<UserId, Option<User>>,
    writes: &mut Vec<RowWrite>,
    id: UserId,
    etag: Option<Etag>,
    actor: Actor,
) -> StoreResult<Written> {
    let Some(Some(stored)) = current.get(&id) else {
        return Err(StoreError::NotFound(id));
    };
    let user = pending.deleted(stored.clone(), etag)?;
    let event = pending.log_deleted(stored, &user, &actor).clone();
    writes.push(RowWrite::Deleted(id));
    current.insert(id, None);
    Ok(Written::Deleted(event))
}

impl PostgresStore {
    /// Opens a write transaction holding the log's counter row. Its statements get only the
    /// time the operation has left (the caller's remaining time, when that is sooner), so the
    /// database itself ends a transaction that would otherwise commit after its caller was
    /// told it failed.
    async fn begin<'a>(&self, client: &'a mut Object) -> StoreResult<(Transaction<'a>, Pending)> {
        let left = super::operation_ends(self.operation_timeout)
            .saturating_duration_since(tokio::time::Instant::now());
        let tx = client.transaction().await.map_err(pg_error)?;
        let statement = tx
            .prepare_cached("SELECT head, last_created_at FROM log_head FOR UPDATE")
            .await
            .map_err(pg_error)?;
        // A quiet gap in the transaction gets no longer than a statement: a commit held up
        // on a silent link and delivered after the caller's deadline finds its session ended.
        let left = left.as_millis().max(1);
        let idle = left.min(self.idle_in_transaction_timeout.as_millis().max(1));
        let limit = format!(
            "SET LOCAL statement_timeout = {left}; SET LOCAL idle_in_transaction_session_timeout = {idle}"
        );
        // Sent together: one round trip.
        let (limited, row) =
            futures_util::future::join(tx.batch_execute(&limit), tx.query_one(&statement, &[]))
                .await;
        limited.map_err(pg_error)?;
        let row = row.map_err(pg_error)?;
        Ok((tx, Pending::new(row.get(0), row.get(1))))
    }

    /// Logs the pending events, moves the head and commits.
    async fn commit(&self, tx: Transaction<'_>, pending: &Pending) -> StoreResult<()> {
        if pending.events.is_empty() {
            return tx.rollback().await.map_err(pg_error);
        }
        let mut columns = (
            Vec::with_capacity(pending.events.len()),
            Vec::with_capacity(pending.events.len()),
            Vec::with_capacity(pending.events.len()),
            Vec::with_capacity(pending.events.len()),
            Vec::with_capacity(pending.events.len()),
            Vec::with_capacity(pending.events.len()),
            Vec::with_capacity(pending.events.len()),
            Vec::with_capacity(pending.events.len()),
        );
        for event in &pending.events {
            columns.7.push(event.previous.as_deref().map(encode_user));
            columns.6.push(event.actor.encode());
            columns.0.push(event.revision);
            columns.1.push(event.event_id.as_bytes().to_vec());
            columns.2.push(event.kind as i32);
            columns.3.push(event.user.id.as_uuid().as_bytes().to_vec());
            columns.4.push(event.at_ns);
            columns.5.push(encode_user(&event.user));
        }
        let changes = pending.count_changes();
        let counts = (
            changes.iter().map(|change| change.0).collect::<Vec<_>>(),
            changes.iter().map(|change| change.1).collect::<Vec<_>>(),
            changes.iter().map(|change| change.2).collect::<Vec<_>>(),
        );
        let statement = tx.prepare_cached(FINISH).await.map_err(pg_error)?;
        tx.execute(
            &statement,
            &[
                &columns.0,
                &columns.1,
                &columns.2,
                &columns.3,
                &columns.4,
                &columns.5,
                &pending.last_revision(),
                &pending.last_created_at_ns,
                &counts.0,
                &counts.1,
                &counts.2,
                &columns.6,
                &columns.7,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        self.published.commits.record(pending.began.elapsed());
        Ok(())
    }

    /// After a commit, with the connection back in the pool: waits (briefly) until this
    /// server's tail has applied the write, so its cache and watchers reflect it before the
    /// caller hears of it; then prunes the log if it is due.
    async fn settle(&self, pending: &Pending) {
        if pending.events.is_empty() {
            return;
        }
        self.nudge.notify_one();
        if !self
            .published
            .applied(pending.last_revision(), APPLY_WAIT)
            .await
        {
            tracing::warn!(
                revision = pending.last_revision(),
                "the log tail has not applied a committed write yet"
            );
        }
        super::tail::maintain(
            &self.pool,
            &self.published,
            self.retention,
            self.operation_timeout,
        )
        .await;
    }

    pub(crate) async fn create_batch(
        &self,
        items: Vec<BatchItem>,
    ) -> StoreResult<Vec<(usize, StoreResult<UserEvent>)>> {
        let mut client = self.client().await?;
        let (tx, mut pending) = self.begin(&mut client).await?;
        let news: Vec<&NewUser> = items.iter().map(|item| &item.user).collect();
        let outcomes = insert_all(&tx, &mut pending, &news).await?;
        self.commit(tx, &pending).await?;
        drop(client);
        self.settle(&pending).await;
        let mut events = pending.events.iter();
        Ok(items
            .iter()
            .zip(outcomes)
            .map(|(item, outcome)| {
                let outcome = outcome.map(|()| events.next().cloned().expect("an event each"));
                (item.position, outcome)
            })
            .collect())
    }

    pub(crate) async fn update(&self, id: UserId, patch: UserPatch) -> StoreResult<Updated> {
        let mut client = self.client().await?;
        let (tx, mut pending) = self.begin(&mut client).await?;
        let stored = select_user(&tx, id)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let actor = patch.actor.clone();
        let Some(user) = pending.patched(&stored, patch)? else {
            tx.rollback().await.map_err(pg_error)?;
            return Ok(Updated::Unchanged(stored));
        };
        let statement = tx.prepare_cached(UPDATE_USER).await.map_err(pg_error)?;
        let row = UpdateRow::of(&user);
        tx.execute(&statement, &row.params())
            .await
            .map_err(|err| unique_violation(err, &user))?;
        pending.log_updated(&stored, &user, &actor);
        self.commit(tx, &pending).await?;
        drop(client);
        self.settle(&pending).await;
        Ok(Updated::Changed(pending.events.swap_remove(0)))
    }

    /// Applies a group of changes, each with its own outcome, in the order given. A rename
    /// (username or email) could meet a unique index, which would abort the whole
    /// transaction; each one commits on its own after the group, where the index judges it
    /// as it writes. The others share one transaction (`apply_changes`).
    pub(crate) async fn change_group(
        &self,
        changes: Vec<Change>,
    ) -> StoreResult<Vec<StoreResult<Written>>> {
        let (renames, others): (Vec<_>, Vec<_>) =
            changes.into_iter().enumerate().partition(|(_, change)| {
                matches!(change, Change::Update(_, patch)
                    if patch.username.is_some() || patch.email.is_some())
            });
        let (positions, others): (Vec<usize>, Vec<Change>) = others.into_iter().unzip();
        let mut outcomes: Vec<(usize, StoreResult<Written>)> = if others.is_empty() {
            Vec::new()
        } else {
            positions
                .into_iter()
                .zip(self.apply_changes(others).await?)
                .collect()
        };
        for (position, rename) in renames {
            if let Change::Update(id, patch) = rename {
                outcomes.push((position, self.update(id, patch).await.map(Written::Updated)));
            }
        }
        outcomes.sort_unstable_by_key(|(position, _)| *position);
        Ok(outcomes.into_iter().map(|(_, outcome)| outcome).collect())
    }

    /// Applies each change in one transaction, in order: the users are read at once, the
    /// changes decided in memory (a change that fails fails alone, before it writes anything),
    /// then the writes sent pipelined. No rename comes here, so no write can meet a unique
    /// index: nothing else writes users while the log's row is held.
    async fn apply_changes(&self, changes: Vec<Change>) -> StoreResult<Vec<StoreResult<Written>>> {
        let mut client = self.client().await?;
        let (tx, mut pending) = self.begin(&mut client).await?;
        let mut ids: Vec<UserId> = changes
            .iter()
            .map(|change| match change {
                Change::Update(id, _) | Change::Delete(id, _, _) => *id,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let read = join_all(ids.iter().map(|id| select_user(&tx, *id))).await;
        let mut current: HashMap<UserId, Option<User>> = HashMap::with_capacity(ids.len());
        for (id, user) in ids.into_iter().zip(read) {
            current.insert(id, user?);
        }
        let mut writes = Vec::with_capacity(changes.len());
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            let outcome = match change {
                Change::Update(id, patch) => {
                    decide_update(&mut pending, &mut current, &mut writes, id, patch)
                }
                Change::Delete(id, etag, actor) => {
                    decide_delete(&mut pending, &mut current, &mut writes, id, etag, actor)
                }
            };
            outcomes.push(outcome);
        }
        let update = tx.prepare_cached(UPDATE_USER).await.map_err(pg_error)?;
        let delete = tx.prepare_cached(DELETE_USER).await.map_err(pg_error)?;
        let sent = join_all(writes.iter().map(|write| async {
            match write {
                RowWrite::Updated(user) => {
                    let row = UpdateRow::of(user);
                    tx.execute(&update, &row.params()).await
                }
                RowWrite::Deleted(id) => {
                    tx.execute(&delete, &[&id.as_uuid().as_bytes().as_slice()])
                        .await
                }
            }
        }))
        .await;
        for result in sent {
            result.map_err(pg_error)?;
        }
        self.commit(tx, &pending).await?;
        drop(client);
        self.settle(&pending).await;
        Ok(outcomes)
    }

    pub(crate) async fn replace_password_hash(
        &self,
        id: UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
            )
            .await
            .map_err(pg_error)?;
        let replaced = client
            .execute(
                &statement,
                &[
                    &new.as_phc(),
                    &id.as_uuid().as_bytes().as_slice(),
                    &old.as_phc(),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(replaced == 1)
    }
}
