//! Versioned schema migrations for PostgreSQL, applied at start-up under an advisory lock so
//! that replicas starting together never race, and recorded in `schema_version`.

use std::time::Duration;

use tokio_postgres::Client;

use super::super::rules::migrations_due;
use super::pg_error;
use crate::storage::StoreResult;

/// How long opening the database may take when it migrates: building an index on a large
/// table takes longer than any one call may, and a replica starting beside another waits for
/// its migration.
pub(super) const MIGRATION_TIME: Duration = Duration::from_secs(300);

/// The advisory lock key that serialises migrations (any fixed number no other lock uses).
const MIGRATION_LOCK: i64 = 0x7573_6572_0001;

/// Each entry moves the schema from version `index` to `index + 1`. Never edit a shipped
/// entry: append a new one. The tables match SQLite's column for column; the codec and the
/// rules in `storage` are shared.
const MIGRATIONS: &[&str] = &[
    // 1: users, the event log with its head (the counter row writers lock, see `write`),
    //    and per-(status, role) counts, which each write transaction updates once (`write`;
    //    a per-row trigger would leave a dead row version per user written until vacuum).
    r#"
    CREATE TABLE users (
        id            bytea   NOT NULL PRIMARY KEY,
        username      text    NOT NULL,
        username_key  text    NOT NULL,
        email         text    NOT NULL,
        email_key     text    NOT NULL,
        full_name     text    NOT NULL,
        password_hash text    NOT NULL,
        role          integer NOT NULL,
        status        integer NOT NULL,
        metadata      bytea   NOT NULL,
        created_at    bigint  NOT NULL,
        updated_at    bigint  NOT NULL,
        revision      bigint  NOT NULL
    );

    CREATE UNIQUE INDEX users_username_key ON users (username_key);
    CREATE UNIQUE INDEX users_email_key ON users (email_key);
    CREATE INDEX users_newest ON users (created_at DESC, id DESC);
    CREATE INDEX users_status_newest ON users (status, created_at DESC, id DESC);
    CREATE INDEX users_role_newest ON users (role, created_at DESC, id DESC);
    CREATE INDEX users_status_role_newest ON users (status, role, created_at DESC, id DESC);

    CREATE TABLE user_counts (
        status integer NOT NULL,
        role   integer NOT NULL,
        n      bigint  NOT NULL,
        PRIMARY KEY (status, role)
    );

    CREATE TABLE events (
        revision bigint  NOT NULL PRIMARY KEY,
        event_id bytea   NOT NULL,
        kind     integer NOT NULL,
        user_id  bytea   NOT NULL,
        at       bigint  NOT NULL,
        "user"   bytea   NOT NULL
    );

    CREATE TABLE log_head (
        one             boolean NOT NULL PRIMARY KEY DEFAULT true CHECK (one),
        head            bigint  NOT NULL,
        last_created_at bigint  NOT NULL
    );
    INSERT INTO log_head (head, last_created_at) VALUES (0, 0);
    "#,
    // 2: sessions, their refresh tokens (SHA-256 digests), and per-user cut-offs for tokens
    //    without a session. A session that is not here is not open.
    r#"
    CREATE TABLE sessions (
        id         bytea  NOT NULL PRIMARY KEY,
        user_id    bytea  NOT NULL,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions (user_id);
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);

    CREATE TABLE refresh_tokens (
        digest     bytea   NOT NULL PRIMARY KEY,
        session_id bytea   NOT NULL,
        used       boolean NOT NULL
    );
    CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

    CREATE TABLE token_cutoffs (
        user_id bytea  NOT NULL PRIMARY KEY,
        cutoff  bigint NOT NULL
    );
    "#,
    // 3: who made each change (`Actor`'s stored form; empty for events logged before).
    r#"
    ALTER TABLE events ADD COLUMN actor text NOT NULL DEFAULT '';
    "#,
    // 4: byte-ordered key indexes for prefix searches, whatever the database's collation.
    r#"
    CREATE INDEX users_username_prefix ON users (username_key COLLATE "C");
    CREATE INDEX users_email_prefix ON users (email_key COLLATE "C");
    "#,
    // 5: login limits every replica shares (`login_limits`): a bucket per (account, address),
    // either side empty for "any".
    r#"
    CREATE TABLE login_limits (
        account  text   NOT NULL,
        address  text   NOT NULL,
        full_at  bigint NOT NULL,
        failures bigint NOT NULL,
        PRIMARY KEY (account, address)
    );
    CREATE INDEX login_limits_by_refill ON login_limits (full_at);
    "#,
    // 6: service keys (`service_keys`): the secret's digest, never the secret.
    r#"
    CREATE TABLE service_keys (
        id           bytea  NOT NULL PRIMARY KEY,
        name         text   NOT NULL,
        name_key     text   NOT NULL UNIQUE,
        role         bigint NOT NULL,
        digest       bytea  NOT NULL,
        created_at   bigint NOT NULL,
        expires_at   bigint,
        last_used_at bigint
    );
    "#,
    // 7: second factors (`second_factors`): sealed TOTP secrets and recovery code digests.
    r#"
    CREATE TABLE second_factors (
        user_id   bytea   NOT NULL PRIMARY KEY,
        sealed    bytea   NOT NULL,
        confirmed boolean NOT NULL,
        last_step bigint  NOT NULL
    );
    CREATE TABLE recovery_codes (
        user_id bytea NOT NULL,
        digest  bytea NOT NULL,
        PRIMARY KEY (user_id, digest)
    );
    "#,
    // 8: verified emails, and the codes that prove them or recover an account
    // (`one_time_codes`), with the outbox the team's mailer reads (`deliveries`).
    r#"
    ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;
    CREATE TABLE one_time_codes (
        user_id       bytea   NOT NULL,
        purpose       integer NOT NULL,
        digest        bytea   NOT NULL,
        email         text    NOT NULL,
        expires_at    bigint  NOT NULL,
        attempts_left integer NOT NULL,
        PRIMARY KEY (user_id, purpose)
    );
    CREATE TABLE deliveries (
        revision   bigserial NOT NULL PRIMARY KEY,
        purpose    integer   NOT NULL,
        user_id    bytea     NOT NULL,
        username   text      NOT NULL,
        email      text      NOT NULL,
        code       text      NOT NULL,
        expires_at bigint    NOT NULL
    );
    CREATE INDEX deliveries_by_expiry ON deliveries (expires_at);
    "#,
    // 9: each update's and deletion's event keeps the user as they were before.
    r#"
    ALTER TABLE events ADD COLUMN previous bytea;
    "#,
    // 10: listings ordered by update time (`filtered`).
    r#"
    CREATE INDEX users_updated ON users (updated_at DESC, id DESC);
    "#,
    // 11: secrets the server makes for itself, one per name, the same for every replica
    // (`server_secrets`).
    r#"
    CREATE TABLE server_secrets (
        name       text   NOT NULL PRIMARY KEY,
        secret     bytea  NOT NULL,
        created_at bigint NOT NULL
    );
    "#,
    // 12: signing keys (`signing_keys`): public JWKs, private keys sealed under the
    // key-encryption key, and the instant each starts signing.
    r#"
    CREATE TABLE signing_keys (
        kid          text   NOT NULL PRIMARY KEY,
        algorithm    text   NOT NULL,
        public_jwk   text   NOT NULL,
        sealed       bytea  NOT NULL,
        created_at   bigint NOT NULL,
        activates_at bigint NOT NULL
    );
    "#,
];

/// Brings the database to the newest schema in one transaction, holding the migration lock.
pub(super) async fn migrate(client: &mut Client) -> StoreResult<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}",
        ms = MIGRATION_TIME.as_millis()
    ))
    .await
    .map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .await
        .map_err(pg_error)?;
    let found: i32 = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(pg_error)?
        .map_or(0, |row| row.get(0));
    let due = migrations_due(i64::from(found), MIGRATIONS.len())?;
    let migrating = !due.is_empty();
    for index in due {
        tx.batch_execute(MIGRATIONS[index])
            .await
            .map_err(pg_error)?;
        tracing::info!(version = index + 1, "applied database migration");
    }
    if migrating {
        let version = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        tx.execute("DELETE FROM schema_version", &[])
            .await
            .map_err(pg_error)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}
