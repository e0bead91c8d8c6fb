//! How storage is opened and tuned, and how its setting is shown without its password.

use std::time::Duration;

/// How storage is opened and tuned.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, or
    /// `postgres://user:password@host:port/database` (also `postgresql://`).
    pub database_url: String,
    /// PostgreSQL: connections in the pool.
    pub pool_size: usize,
    /// PostgreSQL: how long connecting to one host may take (a multi-host URL tries each in
    /// turn, each for this long).
    pub connect_timeout: Duration,
    /// PostgreSQL: how long one statement may run before the database cancels it.
    pub statement_timeout: Duration,
    /// PostgreSQL: how long one storage operation (a read, a write's transaction, a health
    /// ping's query) may take, enforced here, not by the database (which may never hear the
    /// query): past it the call answers UNAVAILABLE and the connection is closed, not pooled.
    /// Also the TCP user timeout of every connection.
    pub operation_timeout: Duration,
    /// PostgreSQL: how long a session may sit in an open transaction without sending the next
    /// statement before the database ends it, releasing its locks (a replica cut off
    /// mid-transaction would otherwise hold the log's write lock).
    pub idle_in_transaction_timeout: Duration,
    /// Users kept in the read cache; 0 turns it off.
    pub cache_capacity: usize,
    /// How many of the newest events the log keeps for watch resumption.
    pub event_retention: u64,
    /// Live events buffered per watcher before it falls back to reading the log.
    pub event_buffer: usize,
    /// Filtered listings that no index serves (each reads up to `filtered::SCAN_BUDGET`
    /// rows) run at once; more wait for a place, up to the operation bound.
    pub max_concurrent_scans: usize,
}

impl StorageSettings {
    /// Defaults, here once: the server's flags take theirs from these.
    pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/users.db";
    pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;
    pub const DEFAULT_EVENT_RETENTION: u64 = 1_000_000;
    pub const DEFAULT_EVENT_BUFFER: usize = 1024;
    pub const DEFAULT_POOL_SIZE: usize = 16;
    pub const DEFAULT_MAX_CONCURRENT_SCANS: usize = 4;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(2);

    /// Whether the URL names PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(&self.database_url)
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://") || is_key_value(url)
}

/// libpq's other form, `host=db user=app password=... dbname=users`, which the driver also
/// reads: no scheme, and a `key=` first.
fn is_key_value(setting: &str) -> bool {
    !setting.contains("://")
        && setting
            .split_whitespace()
            .next()
            .and_then(|first| first.split_once('='))
            .is_some_and(|(key, _)| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
}

/// The database setting with any password replaced, fit for logs and messages: a URL's
/// password (in its authority or its query), or a key=value form's `password`. What cannot
/// be read as either is not repeated at all.
pub fn redacted(url: &str) -> String {
    if is_key_value(url) {
        return redacted_key_value(url)
            .unwrap_or_else(|| "<a key=value database setting that could not be read>".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<a database setting that is neither a URL nor key=value pairs>".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => path.to_owned(),
    };
    format!("{scheme}://{authority}{path}")
}

/// `key=value` pairs as libpq reads them (a value may be single-quoted, with `\'` and `\\`
/// inside), written back with the password's value replaced; `None` when they do not parse.
fn redacted_key_value(setting: &str) -> Option<String> {
    let mut pairs = Vec::new();
    let mut chars = setting.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            value.push('\'');
            loop {
                let c = chars.next()?;
                value.push(c);
                match c {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if key.is_empty() {
            return None;
        }
        if key.eq_ignore_ascii_case("password") {
            value = "***".into();
        }
        pairs.push(format!("{key}={value}"));
    }
    Some(pairs.join(" "))
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            database_url: Self::DEFAULT_DATABASE_URL.into(),
            cache_capacity: Self::DEFAULT_CACHE_CAPACITY,
            event_retention: Self::DEFAULT_EVENT_RETENTION,
            event_buffer: Self::DEFAULT_EVENT_BUFFER,
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            idle_in_transaction_timeout: Self::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
            max_concurrent_scans: Self::DEFAULT_MAX_CONCURRENT_SCANS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_database_password_never_reaches_a_log_line() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/users?sslmode=disable"),
            "postgres://app:***@db:5432/users?sslmode=disable"
        );
        assert_eq!(
            redacted("postgresql://db/users?user=app&password=s3cret"),
            "postgresql://db/users?user=app&password=***"
        );
        assert_eq!(
            redacted("postgres://app@db/users"),
            "postgres://app@db/users"
        );
        assert_eq!(redacted("sqlite://data/users.db"), "sqlite://data/users.db");
    }

    #[test]
    fn a_key_value_setting_keeps_its_keys_and_loses_its_password() {
        assert_eq!(
            redacted("host=db port=5432 user=app password=s3cret dbname=users"),
            "host=db port=5432 user=app password=*** dbname=users"
        );
        assert_eq!(
            redacted("host=db password='s3cret dbname=users"),
            "<a key=value database setting that could not be read>"
        );
        assert_eq!(
            redacted("host=db password='s3 cr\\'et' dbname=users"),
            "host=db password=*** dbname=users"
        );
    }

    #[test]
    fn every_refusal_of_a_database_setting_leaves_its_password_out() {
        for setting in [
            "postgres://app:s3cret@db:notaport/users",
            "postgresql://db/users?password=s3cret&port=x",
            "host=db password=s3cret dbname=users sslmode=nonsense",
            "host=db password='s3cret",
            "password=s3cret port=notanumber",
            "mysql://app:s3cret@db/users",
            "app:s3cret@db/users",
        ] {
            let settings = super::StorageSettings {
                database_url: setting.into(),
                ..Default::default()
            };
            let refused = if settings.is_postgres() {
                super::super::postgres::connection_config(&settings).err()
            } else {
                super::super::sqlite::path_from_url(setting).err()
            };
            let refused = refused.unwrap_or_else(|| panic!("{setting:?} is refused"));
            let text = crate::text::chain(&refused);
            assert!(
                !text.contains("s3cret"),
                "{setting:?} was refused as {text:?}"
            );
        }
    }
}
