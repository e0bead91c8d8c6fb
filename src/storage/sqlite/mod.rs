//! The SQLite backend: one writer connection, a small pool of readers, WAL journaling, and
//! one server per database file.
//!
//! Durability: `journal_mode = WAL` with `synchronous = FULL` fsyncs the log on every
//! commit, so a write that was acknowledged survives `kill -9` and power loss alike. WAL lets
//! readers (ListUsers, cache misses, watch replay) run while a write commits.
//!
//! The event log, the cache and the watchers of a server follow its own writes only, so a
//! second server on the same file would serve stale users and hand out revisions the first
//! also hands out. An exclusive lock on `PATH.lock`, held for the life of the process (the
//! kernel releases it when the process dies, however it dies), keeps a second server out.

mod export;
mod login_limits;
mod one_time_codes;
mod read;
mod schema;
mod second_factors;
mod server_secrets;
mod service_keys;
mod sessions;
mod signing_keys;
mod write;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::encoding::{RawUser, decode_metadata};
use super::error::{StoreError, StoreResult};
use super::published::Published;
use super::settings::StorageSettings;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_IDLE_READERS: usize = 8;

/// `sqlite://data/users.db` is relative to the working directory,
/// `sqlite:///var/lib/users.db` is absolute.
pub fn path_from_url(url: &str) -> StoreResult<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .filter(|path| !path.is_empty() && !path.starts_with(":memory:"))
        .ok_or_else(|| StoreError::UnsupportedUrl(super::redacted(url)))?;
    Ok(PathBuf::from(path))
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::backend(err)
    }
}

fn read_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawUser> {
    let metadata: Vec<u8> = row.get(6)?;
    let metadata = decode_metadata(&metadata).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Blob, Box::new(err))
    })?;
    Ok(RawUser {
        id: row.get(0)?,
        username: row.get(1)?,
        email: row.get(2)?,
        full_name: row.get(3)?,
        role: row.get(4)?,
        status: row.get(5)?,
        metadata,
        created_at_ns: row.get(7)?,
        updated_at_ns: row.get(8)?,
        revision: row.get(9)?,
        email_verified: row.get(10)?,
    })
}

/// The exclusive lock that makes a server the only one on its database file.
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(database: &Path) -> StoreResult<Self> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::backend)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::from("another process"),
                    pid => format!("process {pid}"),
                };
                return Err(StoreError::InUse(format!(
                    "{} is in use by another server ({holder} holds the lock {}): one server \
                     per SQLite file; use PostgreSQL to run several",
                    database.display(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(StoreError::backend(err)),
        }
        // Who holds it, for the message a second server prints.
        file.set_len(0).map_err(StoreError::backend)?;
        file.rewind().map_err(StoreError::backend)?;
        write!(file, "{}", std::process::id()).map_err(StoreError::backend)?;
        Ok(Self { _file: file })
    }
}

struct Writer {
    conn: Option<Connection>,
    last_created_at_ns: i64,
}

/// Idle read-only connections, opened on demand.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn with<R>(&self, work: impl FnOnce(&mut Connection) -> StoreResult<R>) -> StoreResult<R> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = work(&mut conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    fn close(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

pub struct SqliteStore {
    writer: Mutex<Writer>,
    readers: ReadPool,
    published: Published,
    retention: i64,
    /// Held from open to close (or, if close never runs, to the end of the process).
    lock: Mutex<Option<FileLock>>,
}

impl SqliteStore {
    pub(super) fn open(path: &Path, settings: &StorageSettings) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        }
        let lock = FileLock::acquire(path)?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(
                format!("the database refused WAL journaling (journal_mode is {mode})").into(),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The savepoint each item of a group or batch runs under journals its pages; in memory,
        // not in a temporary file written (and unlinked) for every transaction. It is undo
        // data for an open transaction only: the WAL is what makes a commit durable.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        schema::migrate(&mut conn)?;

        let head = read::snapshot_revision(&conn)?;
        let oldest: Option<i64> =
            conn.query_row("SELECT min(revision) FROM events", [], |row| row.get(0))?;
        let last_created_at_ns: Option<i64> = conn
            .query_row(
                "SELECT created_at FROM users ORDER BY created_at DESC, id DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(Self {
            writer: Mutex::new(Writer {
                conn: Some(conn),
                last_created_at_ns: last_created_at_ns.unwrap_or(0),
            }),
            readers: ReadPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            },
            published: Published::new(
                head,
                oldest.unwrap_or(head + 1),
                settings.cache_capacity,
                settings.event_buffer,
            ),
            retention: super::rules::retention(settings.event_retention),
            lock: Mutex::new(Some(lock)),
        })
    }

    pub(super) fn published(&self) -> &Published {
        &self.published
    }

    /// Runs storage work on the blocking pool, off the async runtime.
    pub(super) async fn blocking<R: Send + 'static>(
        self: Arc<Self>,
        work: impl FnOnce(&SqliteStore) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        tokio::task::spawn_blocking(move || work(&self))
            .await
            .map_err(StoreError::backend)?
    }

    pub(super) fn close(&self) -> StoreResult<()> {
        self.readers.close();
        if let Some(conn) = self.writer().conn.take() {
            conn.pragma_update(None, "optimize", "")?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            conn.close().map_err(|(_, err)| StoreError::from(err))?;
        }
        // The writer is gone: another server may take the file now, even while tasks that
        // outlive this server still hold the store.
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_commits_with_a_full_fsync_in_wal_mode() {
        // kill -9 cannot tell a missing fsync from a done one (the kernel still holds the
        // pages), so the settings that make a commit durable are checked here directly.
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("sync.db"), &StorageSettings::default()).unwrap();
        let writer = store.writer();
        let conn = writer.conn.as_ref().unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(synchronous, 2, "synchronous = FULL");
    }

    #[test]
    fn a_second_store_on_the_same_file_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.db");
        let first = SqliteStore::open(&path, &StorageSettings::default()).unwrap();
        let second = SqliteStore::open(&path, &StorageSettings::default());
        let message = second.err().map(|err| err.to_string()).unwrap_or_default();
        let pid = std::process::id().to_string();
        assert!(
            message.contains("in use by another server") && message.contains(&pid),
            "{message:?}"
        );
        drop(first);
        SqliteStore::open(&path, &StorageSettings::default())
            .expect("the lock goes with the store that held it");
    }
}
