//! The write path: one transaction at a time through the single writer connection.

use std::sync::MutexGuard;

use rusqlite::{Connection, ToSql, Transaction, params};

use super::super::encoding::{encode_metadata, encode_user};
use super::super::rules::{Pending, prune_log_from};
use super::read::select_user;
use super::{SqliteStore, Writer};
use crate::domain::{NewUser, PasswordHash, User, UserEvent, UserId};
use crate::storage::writes::{Change, Written};
use crate::storage::{BatchItem, StoreError, StoreResult, Updated};

/// Maps the unique indexes' violations to the field that is taken.
fn unique_violation(err: rusqlite::Error, username: &str, email: &str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &err
        && failure.code == rusqlite::ErrorCode::ConstraintViolation
    {
        if message.contains("users.username_key") {
            return StoreError::taken("username", username);
        }
        if message.contains("users.email_key") {
            return StoreError::taken("email", email);
        }
    }
    err.into()
}

/// Writes every column of `user`: a new row with its password hash, or, without one, an
/// update of the existing row (whose hash stays). Unique violations name the taken field.
fn write_row(conn: &Connection, user: &User, new_hash: Option<&PasswordHash>) -> StoreResult<()> {
    let (username, email) = (user.username.as_str(), user.email.as_str());
    let full_name = user.full_name.as_str();
    let (username_key, email_key) = (user.username.key(), user.email.key());
    let (role, status) = (user.role as i64, user.status as i64);
    let metadata = encode_metadata(&user.metadata);
    let mut args: Vec<(&str, &dyn ToSql)> = vec![
        (":id", user.id.as_uuid().as_bytes()),
        (":username", &username),
        (":username_key", &username_key),
        (":email", &email),
        (":email_key", &email_key),
        (":full_name", &full_name),
        (":role", &role),
        (":status", &status),
        (":metadata", &metadata),
        (":updated_at", &user.updated_at_ns),
        (":revision", &user.revision),
        (":email_verified", &user.email_verified),
    ];
    let hash;
    let sql = match new_hash {
        Some(new_hash) => {
            hash = new_hash.as_phc();
            args.push((":password_hash", &hash));
            args.push((":created_at", &user.created_at_ns));
            "INSERT INTO users (id, username, username_key, email, email_key, full_name,
                                password_hash, role, status, metadata, created_at, updated_at,
                                revision, email_verified)
             VALUES (:id, :username, :username_key, :email, :email_key, :full_name,
                     :password_hash, :role, :status, :metadata, :created_at, :updated_at,
                     :revision, :email_verified)"
        }
        None => {
            "UPDATE users SET username = :username, username_key = :username_key,
                    email = :email, email_key = :email_key, full_name = :full_name,
                    role = :role, status = :status, metadata = :metadata,
                    updated_at = :updated_at, revision = :revision,
                    email_verified = :email_verified
             WHERE id = :id"
        }
    };
    conn.prepare_cached(sql)?
        .execute(args.as_slice())
        .map_err(|err| unique_violation(err, username, email))?;
    Ok(())
}

/// Writes a recorded event to the log table.
fn log(tx: &Connection, event: &UserEvent) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO events (revision, event_id, kind, user_id, at, user, actor, previous)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        event.revision,
        event.event_id.as_bytes(),
        event.kind as i64,
        event.user.id.as_uuid().as_bytes(),
        event.at_ns,
        encode_user(&event.user),
        event.actor.encode(),
        event.previous.as_deref().map(encode_user),
    ])?;
    Ok(())
}

fn insert(tx: &Connection, pending: &mut Pending, new: &NewUser) -> StoreResult<()> {
    let user = pending.new_user(new);
    write_row(tx, &user, Some(&new.password_hash))?;
    log(tx, pending.log_created(&user, &new.actor))
}

/// One update or delete, inside the group's transaction.
fn apply(tx: &Connection, pending: &mut Pending, change: Change) -> StoreResult<Written> {
    match change {
        Change::Update(id, patch) => {
            let stored = select_user(tx, id)?.ok_or(StoreError::NotFound(id))?;
            let actor = patch.actor.clone();
            let Some(user) = pending.patched(&stored, patch)? else {
                return Ok(Written::Updated(Updated::Unchanged(stored)));
            };
            write_row(tx, &user, None)?;
            let event = pending.log_updated(&stored, &user, &actor);
            log(tx, event)?;
            Ok(Written::Updated(Updated::Changed(event.clone())))
        }
        Change::Delete(id, etag, actor) => {
            let stored = select_user(tx, id)?.ok_or(StoreError::NotFound(id))?;
            let user = pending.deleted(stored.clone(), etag)?;
            tx.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([id.as_uuid().as_bytes()])?;
            let event = pending.log_deleted(&stored, &user, &actor);
            log(tx, event)?;
            Ok(Written::Deleted(event.clone()))
        }
    }
}

impl SqliteStore {
    pub(super) fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic mid-write drops its transaction, which rolls back: the state is intact.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` in one write transaction; once it commits, publishes its events to the
    /// cache and to watchers, in order, before the next write can start.
    pub(super) fn write<R>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>, &mut Pending) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut writer = self.writer();
        let Writer {
            conn,
            last_created_at_ns,
        } = &mut *writer;
        let conn = conn
            .as_mut()
            .ok_or_else(|| StoreError::Backend("storage is closed".into()))?;
        let mut pending = Pending::new(self.published.head(), *last_created_at_ns);
        let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let result = work(&mut tx, &mut pending)?;
        for (status, role, delta) in pending.count_changes() {
            tx.prepare_cached(
                "INSERT INTO user_counts (status, role, n) VALUES (?1, ?2, ?3)
                 ON CONFLICT (status, role) DO UPDATE SET n = n + excluded.n",
            )?
            .execute(params![status, role, delta])?;
        }
        tx.commit()?;
        self.published.commits.record(pending.began.elapsed());

        *last_created_at_ns = pending.last_created_at_ns;
        let head = pending.last_revision();
        if !pending.events.is_empty() {
            self.published.apply(pending.events);
            self.prune(conn, head);
        }
        Ok(result)
    }

    /// Drops events that fell out of the retention window. A failure only delays pruning.
    fn prune(&self, conn: &Connection, head: i64) {
        let Some(keep_from) = prune_log_from(head, self.published.oldest(), self.retention) else {
            return;
        };
        match conn.execute("DELETE FROM events WHERE revision < ?1", [keep_from]) {
            Ok(removed) => {
                self.published.set_oldest(keep_from);
                tracing::debug!(removed, oldest = keep_from, "pruned the event log");
            }
            Err(err) => tracing::warn!(error = %err, "pruning the event log failed"),
        }
    }

    pub(crate) fn create_batch(
        &self,
        items: Vec<BatchItem>,
    ) -> StoreResult<Vec<(usize, StoreResult<UserEvent>)>> {
        self.write(|tx, pending| {
            let mut outcomes = Vec::with_capacity(items.len());
            for item in items {
                let savepoint = tx.savepoint()?;
                let mark = pending.mark();
                match insert(&savepoint, pending, &item.user) {
                    Ok(()) => {
                        savepoint.commit()?;
                        let event = pending.events.last().cloned().expect("one event");
                        outcomes.push((item.position, Ok(event)));
                    }
                    Err(StoreError::Backend(err)) => return Err(StoreError::Backend(err)),
                    Err(err) => {
                        drop(savepoint); // rolls back this item only
                        pending.undo_to(mark);
                        outcomes.push((item.position, Err(err)));
                    }
                }
            }
            Ok(outcomes)
        })
    }

    /// Applies each change in one transaction, in order; a change that fails (a taken name
    /// included) is undone alone (its savepoint) and does not stop the others.
    pub(crate) fn change_group(
        &self,
        changes: Vec<Change>,
    ) -> StoreResult<Vec<StoreResult<Written>>> {
        self.write(|tx, pending| {
            let mut outcomes = Vec::with_capacity(changes.len());
            for change in changes {
                let savepoint = tx.savepoint()?;
                let mark = pending.mark();
                match apply(&savepoint, pending, change) {
                    Ok(changed) => {
                        savepoint.commit()?;
                        outcomes.push(Ok(changed));
                    }
                    Err(StoreError::Backend(err)) => return Err(StoreError::Backend(err)),
                    Err(err) => {
                        drop(savepoint); // rolls back this change only
                        pending.undo_to(mark);
                        outcomes.push(Err(err));
                    }
                }
            }
            Ok(outcomes)
        })
    }

    /// Stores `new` in place of `old` (only if `old` is still the stored hash). Not a change
    /// anyone watches: no event, no revision.
    pub(crate) fn replace_password_hash(
        &self,
        id: UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> StoreResult<bool> {
        self.write(|tx, _| {
            let replaced = tx
                .prepare_cached(
                    "UPDATE users SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3",
                )?
                .execute(params![new.as_phc(), id.as_uuid().as_bytes(), old.as_phc()])?;
            Ok(replaced == 1)
        })
    }
}
