//! Versioned schema migrations, applied in order at start-up and recorded in `user_version`.

use rusqlite::Connection;

use super::super::rules::migrations_due;
use crate::storage::StoreResult;

/// Each entry moves the schema from version `index` to `index + 1`. Never edit a shipped
/// entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: users, the event log, and per-(status, role) counts kept by triggers.
    r#"
    CREATE TABLE users (
        id            BLOB    NOT NULL PRIMARY KEY,
        username      TEXT    NOT NULL,
        username_key  TEXT    NOT NULL,
        email         TEXT    NOT NULL,
        email_key     TEXT    NOT NULL,
        full_name     TEXT    NOT NULL,
        password_hash TEXT    NOT NULL,
        role          INTEGER NOT NULL,
        status        INTEGER NOT NULL,
        metadata      BLOB    NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        revision      INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE UNIQUE INDEX users_username_key ON users (username_key);
    CREATE UNIQUE INDEX users_email_key ON users (email_key);
    CREATE INDEX users_newest ON users (created_at DESC, id DESC);
    CREATE INDEX users_status_newest ON users (status, created_at DESC, id DESC);
    CREATE INDEX users_role_newest ON users (role, created_at DESC, id DESC);
    CREATE INDEX users_status_role_newest ON users (status, role, created_at DESC, id DESC);

    CREATE TABLE user_counts (
        status INTEGER NOT NULL,
        role   INTEGER NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (status, role)
    ) STRICT, WITHOUT ROWID;

    CREATE TRIGGER users_counted_on_insert AFTER INSERT ON users BEGIN
        INSERT INTO user_counts (status, role, n) VALUES (NEW.status, NEW.role, 1)
            ON CONFLICT (status, role) DO UPDATE SET n = n + 1;
    END;

    CREATE TRIGGER users_counted_on_delete AFTER DELETE ON users BEGIN
        UPDATE user_counts SET n = n - 1 WHERE status = OLD.status AND role = OLD.role;
    END;

    CREATE TRIGGER users_counted_on_update AFTER UPDATE OF status, role ON users
    WHEN OLD.status != NEW.status OR OLD.role != NEW.role BEGIN
        UPDATE user_counts SET n = n - 1 WHERE status = OLD.status AND role = OLD.role;
        INSERT INTO user_counts (status, role, n) VALUES (NEW.status, NEW.role, 1)
            ON CONFLICT (status, role) DO UPDATE SET n = n + 1;
    END;

    CREATE TABLE events (
        revision INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id BLOB    NOT NULL,
        kind     INTEGER NOT NULL,
        user_id  BLOB    NOT NULL,
        at       INTEGER NOT NULL,
        user     BLOB    NOT NULL
    ) STRICT;
    "#,
    // 2: sessions, their refresh tokens (SHA-256 digests), and per-user cut-offs for tokens
    //    without a session. A session that is not here is not open.
    r#"
    CREATE TABLE sessions (
        id         BLOB    NOT NULL PRIMARY KEY,
        user_id    BLOB    NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX sessions_by_user ON sessions (user_id);
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);

    CREATE TABLE refresh_tokens (
        digest     BLOB    NOT NULL PRIMARY KEY,
        session_id BLOB    NOT NULL,
        used       INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

    CREATE TABLE token_cutoffs (
        user_id BLOB    NOT NULL PRIMARY KEY,
        cutoff  INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 3: who made each change (`Actor`'s stored form; empty for events logged before).
    r#"
    ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
    "#,
    // 4: the write path keeps the per-(status, role) counts, as on PostgreSQL (one decision,
    // `Pending`'s, for both backends), so the triggers that kept them go.
    r#"
    DROP TRIGGER users_counted_on_insert;
    DROP TRIGGER users_counted_on_delete;
    DROP TRIGGER users_counted_on_update;
    "#,
    // 5: login limits every replica shares (`login_limits`): a bucket per (account, address),
    // either side empty for "any".
    r#"
    CREATE TABLE login_limits (
        account  TEXT    NOT NULL,
        address  TEXT    NOT NULL,
        full_at  INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        PRIMARY KEY (account, address)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX login_limits_by_refill ON login_limits (full_at);
    "#,
    // 6: service keys (`service_keys`): the secret's digest, never the secret.
    r#"
    CREATE TABLE service_keys (
        id           BLOB    NOT NULL PRIMARY KEY,
        name         TEXT    NOT NULL,
        name_key     TEXT    NOT NULL UNIQUE,
        role         INTEGER NOT NULL,
        digest       BLOB    NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        last_used_at INTEGER
    ) STRICT, WITHOUT ROWID;
    "#,
    // 7: second factors (`second_factors`): sealed TOTP secrets and recovery code digests.
    r#"
    CREATE TABLE second_factors (
        user_id   BLOB    NOT NULL PRIMARY KEY,
        sealed    BLOB    NOT NULL,
        confirmed INTEGER NOT NULL,
        last_step INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE recovery_codes (
        user_id BLOB NOT NULL,
        digest  BLOB NOT NULL,
        PRIMARY KEY (user_id, digest)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 8: verified emails, and the codes that prove them or recover an account
    // (`one_time_codes`), with the outbox the team's mailer reads (`deliveries`).
    r#"
    ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE one_time_codes (
        user_id       BLOB    NOT NULL,
        purpose       INTEGER NOT NULL,
        digest        BLOB    NOT NULL,
        email         TEXT    NOT NULL,
        expires_at    INTEGER NOT NULL,
        attempts_left INTEGER NOT NULL,
        PRIMARY KEY (user_id, purpose)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE deliveries (
        revision   INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        purpose    INTEGER NOT NULL,
        user_id    BLOB    NOT NULL,
        username   TEXT    NOT NULL,
        email      TEXT    NOT NULL,
        code       TEXT    NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);
    "#,
    // 9: each update's and deletion's event keeps the user as they were before.
    r#"
    ALTER TABLE events ADD COLUMN previous BLOB;
    "#,
    // 10: listings ordered by update time (`filtered`).
    r#"
    CREATE INDEX users_updated ON users (updated_at DESC, id DESC);
    "#,
    // 11: secrets the server makes for itself, one per name, the same for every replica
    // (`server_secrets`).
    r#"
    CREATE TABLE server_secrets (
        name       TEXT    NOT NULL PRIMARY KEY,
        secret     BLOB    NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 12: signing keys (`signing_keys`): public JWKs, private keys sealed under the
    // key-encryption key, and the instant each starts signing.
    r#"
    CREATE TABLE signing_keys (
        kid          TEXT    NOT NULL PRIMARY KEY,
        algorithm    TEXT    NOT NULL,
        public_jwk   TEXT    NOT NULL,
        sealed       BLOB    NOT NULL,
        created_at   INTEGER NOT NULL,
        activates_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
];

/// Brings the database to the newest schema; each step commits on its own.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for index in migrations_due(found, MIGRATIONS.len())? {
        let sql = MIGRATIONS[index];
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied database migration");
    }
    Ok(())
}
