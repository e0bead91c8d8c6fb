//! The server's flags, one group per component, each under its own heading in `--help` and
//! each building its component's settings. Every flag has its `USER_SERVICE_*` variable;
//! durations take `30s`, `5m` or `1h` (`duration`), and their older names with a unit
//! (`--handshake-timeout-secs`) are still accepted, as are bare numbers in that unit.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;

use super::duration;
use super::settings::{
    AuthSettings, HealthSettings, KeySettings, LimitSettings, ListenerSettings, MetricsSettings,
    ShutdownSettings, StreamSettings, TelemetrySettings, TlsSettings, WebSettings,
};
use crate::auth::hasher::Argon2Settings;
use crate::connections::ConnectionLimits;
use crate::domain::PasswordStrength;
use crate::oidc::keys::SigningAlgorithm;
use crate::storage::StorageSettings;
use crate::telemetry::LogFormat;
use crate::tokens::JwtSettings;

pub use crate::files::ReadError as ConfigError;

pub(super) fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    crate::files::read_file(path)
}

fn read_optional(path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
    path.map(|path| read(path)).transpose()
}

/// A secret given as a file or as the value itself; the file wins.
fn secret(file: Option<&PathBuf>, value: Option<&String>) -> Result<Option<Vec<u8>>, ConfigError> {
    match (file, value) {
        (Some(path), _) => Ok(Some(crate::files::read_secret_file(path)?)),
        (None, Some(value)) => Ok(Some(value.as_bytes().to_vec())),
        (None, None) => Ok(None),
    }
}

/// `None` for a zero duration: the flags where 0 means "never".
fn unless_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListenerArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "USER_SERVICE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Connections open at once, server-wide; past it a new connection is closed at once.
    #[arg(long, env = "USER_SERVICE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Connections open at once from one client address; past it a new one from that
    /// address is closed at once, so one client cannot take every slot (0: no cap).
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1_000
    )]
    pub max_connections_per_address: usize,

    /// How long a new connection has to start speaking (its HTTP/2 preface, or the TLS
    /// handshake first) before it is closed.
    #[arg(
        long,
        alias = "handshake-timeout-secs",
        env = "USER_SERVICE_HANDSHAKE_TIMEOUT_SECS",
        default_value = "10s",
        value_parser = duration::seconds
    )]
    pub handshake_timeout: Duration,

    /// How long a connection may carry no call before it is closed; 0 keeps it open.
    #[arg(
        long,
        alias = "max-connection-idle-secs",
        env = "USER_SERVICE_MAX_CONNECTION_IDLE_SECS",
        default_value = "5m",
        value_parser = duration::seconds
    )]
    pub max_connection_idle: Duration,

    /// How long until a connection is asked to close (GOAWAY), so clients reconnect and load
    /// spreads over replicas behind an L4 balancer; 0 keeps connections for good.
    #[arg(
        long,
        alias = "max-connection-age-secs",
        env = "USER_SERVICE_MAX_CONNECTION_AGE_SECS",
        default_value = "0",
        value_parser = duration::seconds
    )]
    pub max_connection_age: Duration,

    /// How long an aged connection's calls get to finish before it is closed.
    #[arg(
        long,
        alias = "max-connection-age-grace-secs",
        env = "USER_SERVICE_MAX_CONNECTION_AGE_GRACE_SECS",
        default_value = "30s",
        value_parser = duration::seconds
    )]
    pub max_connection_age_grace: Duration,

    /// Time between HTTP/2 keepalive pings to idle clients.
    #[arg(
        long,
        alias = "keepalive-secs",
        env = "USER_SERVICE_KEEPALIVE_SECS",
        default_value = "30s",
        value_parser = duration::seconds
    )]
    pub keepalive: Duration,

    /// How long to wait for a keepalive ping's answer before closing the connection.
    #[arg(
        long,
        alias = "keepalive-timeout-secs",
        env = "USER_SERVICE_KEEPALIVE_TIMEOUT_SECS",
        default_value = "10s",
        value_parser = duration::seconds
    )]
    pub keepalive_timeout: Duration,

    /// Most concurrent streams (calls) on one HTTP/2 connection.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONCURRENT_STREAMS",
        default_value_t = 1024
    )]
    pub max_concurrent_streams: u32,
}

impl ListenerArgs {
    pub fn settings(&self, tls: Option<TlsSettings>) -> ListenerSettings {
        let max = self.max_connections.max(1);
        ListenerSettings {
            addr: self.listen,
            connections: ConnectionLimits {
                max,
                per_address: match self.max_connections_per_address {
                    0 => max,
                    cap => cap,
                },
                handshake: self.handshake_timeout,
                idle: unless_zero(self.max_connection_idle),
            },
            tls,
            keepalive_interval: self.keepalive,
            keepalive_timeout: self.keepalive_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            max_connection_age: unless_zero(self.max_connection_age)
                .map(|age| (age, self.max_connection_age_grace)),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve TLS with (with --tls-key).
    #[arg(long, env = "USER_SERVICE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "USER_SERVICE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): clients must present a certificate signed by one (mTLS).
    #[arg(long, env = "USER_SERVICE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    pub fn settings(&self) -> Result<Option<TlsSettings>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(TlsSettings {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: read_optional(self.tls_client_ca.as_ref())?,
        }))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Database: sqlite://relative/path.db, sqlite:///absolute/path.db, or
    /// postgres://user:password@host:port/database (several servers on one PostgreSQL
    /// behave as one service).
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_URL",
        hide_env_values = true,
        default_value = StorageSettings::DEFAULT_DATABASE_URL
    )]
    pub database_url: String,

    /// File holding the database URL (a URL with a password, from a mounted secret). When
    /// set, it is used instead of --database-url, whose value (an image's default in the
    /// environment, say) is then ignored.
    #[arg(long, env = "USER_SERVICE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// PostgreSQL: connections in the pool.
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_POOL_SIZE",
        default_value_t = StorageSettings::DEFAULT_POOL_SIZE
    )]
    pub database_pool_size: usize,

    /// PostgreSQL: how long connecting to one host may take (a multi-host URL tries each
    /// host in turn, each for this long).
    #[arg(
        long,
        alias = "database-connect-timeout-secs",
        env = "USER_SERVICE_DATABASE_CONNECT_TIMEOUT_SECS",
        default_value = "2s",
        value_parser = duration::seconds
    )]
    pub database_connect_timeout: Duration,

    /// PostgreSQL: how long one statement may run before the database cancels it (a bare
    /// number is milliseconds).
    #[arg(
        long,
        alias = "database-statement-timeout-ms",
        env = "USER_SERVICE_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value = "10s",
        value_parser = duration::millis
    )]
    pub database_statement_timeout: Duration,

    /// PostgreSQL: how long one call's storage work may take, enforced by this server (the
    /// database may never hear a query on a silent link): past it the call answers
    /// UNAVAILABLE and the connection is closed. Also the connections' TCP user timeout and
    /// their lock timeout (a bare number is milliseconds).
    #[arg(
        long,
        alias = "database-operation-timeout-ms",
        env = "USER_SERVICE_DATABASE_OPERATION_TIMEOUT_MS",
        default_value = "5s",
        value_parser = duration::millis
    )]
    pub database_operation_timeout: Duration,

    /// PostgreSQL: how long a session may sit in an open transaction without sending its
    /// next statement before the database ends it and releases its locks (a replica cut off
    /// mid-write cannot hold every replica's writes; a bare number is milliseconds).
    #[arg(
        long,
        alias = "database-idle-in-transaction-timeout-ms",
        env = "USER_SERVICE_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value = "2s",
        value_parser = duration::millis
    )]
    pub database_idle_in_transaction_timeout: Duration,

    /// How long start-up keeps retrying while the database is unreachable or only a standby
    /// answers (health says NOT_SERVING meanwhile); 0 retries for good.
    #[arg(
        long,
        alias = "database-startup-wait-secs",
        env = "USER_SERVICE_DATABASE_STARTUP_WAIT_SECS",
        default_value = "1m",
        value_parser = duration::seconds
    )]
    pub database_startup_wait: Duration,

    /// Users kept in the in-memory read cache (0 turns it off).
    #[arg(long, env = "USER_SERVICE_CACHE_CAPACITY", default_value_t = StorageSettings::DEFAULT_CACHE_CAPACITY)]
    pub cache_capacity: usize,

    /// Filtered listings that no index serves (each reads up to 10,000 rows, 256 at a time)
    /// run at once; more wait for a place up to --database-operation-timeout, then get
    /// UNAVAILABLE.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONCURRENT_SCANS",
        default_value_t = std::num::NonZeroUsize::new(StorageSettings::DEFAULT_MAX_CONCURRENT_SCANS).unwrap()
    )]
    pub max_concurrent_scans: std::num::NonZeroUsize,

    /// How many of the newest change events are kept for resuming watches.
    #[arg(
        long,
        env = "USER_SERVICE_EVENT_RETENTION",
        default_value_t = StorageSettings::DEFAULT_EVENT_RETENTION
    )]
    pub event_retention: u64,
}

impl StorageArgs {
    pub fn settings(&self) -> Result<StorageSettings, ConfigError> {
        let database_url = match &self.database_url_file {
            Some(path) => {
                String::from_utf8_lossy(&crate::files::read_secret_file(path)?).into_owned()
            }
            None => self.database_url.clone(),
        };
        Ok(StorageSettings {
            database_url,
            pool_size: self.database_pool_size,
            connect_timeout: self.database_connect_timeout,
            statement_timeout: self.database_statement_timeout,
            operation_timeout: self
                .database_operation_timeout
                .max(Duration::from_millis(1)),
            idle_in_transaction_timeout: self.database_idle_in_transaction_timeout,
            cache_capacity: self.cache_capacity,
            event_retention: self.event_retention,
            max_concurrent_scans: self.max_concurrent_scans.get(),
            ..StorageSettings::default()
        })
    }

    pub fn health(&self) -> HealthSettings {
        HealthSettings {
            check_interval: Duration::from_secs(1),
            database_startup_wait: unless_zero(self.database_startup_wait),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// File holding the HS256 secret for bearer tokens (at least 32 bytes).
    #[arg(
        long,
        env = "USER_SERVICE_JWT_SECRET_FILE",
        conflicts_with = "jwt_secret"
    )]
    pub jwt_secret_file: Option<PathBuf>,

    /// The HS256 secret itself (prefer the file or the environment over a flag).
    #[arg(long, env = "USER_SERVICE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// File holding the key (at least 32 bytes) that seals TOTP secrets and keys recovery
    /// codes' digests; without it users cannot enroll a second factor.
    #[arg(
        long,
        env = "USER_SERVICE_SECOND_FACTOR_KEY_FILE",
        conflicts_with = "second_factor_key"
    )]
    pub second_factor_key_file: Option<PathBuf>,

    /// The second-factor key itself (prefer the file or the environment over a flag).
    #[arg(long, env = "USER_SERVICE_SECOND_FACTOR_KEY", hide_env_values = true)]
    pub second_factor_key: Option<String>,

    /// PEM public key (RS256, ES256 or EdDSA) that verifies bearer tokens.
    #[arg(long, env = "USER_SERVICE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// PEM Ed25519 private key that signs Login tokens (with --jwt-public-key).
    #[arg(long, env = "USER_SERVICE_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,

    /// The public URL of this server as an issuer (`https://id.example.com`): the `iss` of
    /// the tokens it signs, required of every token it verifies, and the base of its
    /// discovery document. Required when not listening on loopback.
    #[arg(long = "issuer", alias = "jwt-issuer", env = "USER_SERVICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, also written into minted tokens.
    #[arg(long, env = "USER_SERVICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Lifetime of the access tokens Login and Refresh issue.
    #[arg(
        long,
        alias = "token-ttl-secs",
        env = "USER_SERVICE_TOKEN_TTL_SECS",
        default_value = "1h",
        value_parser = duration::seconds
    )]
    pub token_ttl: Duration,

    /// Lifetime of a session started by Login: its refresh tokens work until then, and no
    /// access token it issues outlives it.
    #[arg(
        long,
        alias = "session-ttl-secs",
        env = "USER_SERVICE_SESSION_TTL_SECS",
        default_value = "30days",
        value_parser = duration::seconds
    )]
    pub session_ttl: Duration,

    /// Argon2id memory cost in KiB (OWASP minimum: 19456).
    #[arg(long, env = "USER_SERVICE_ARGON2_MEMORY_KIB", default_value_t = Argon2Settings::OWASP_MINIMUM.memory_kib)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations (OWASP minimum: 2).
    #[arg(long, env = "USER_SERVICE_ARGON2_ITERATIONS", default_value_t = Argon2Settings::OWASP_MINIMUM.iterations)]
    pub argon2_iterations: u32,

    /// Argon2id lanes per hash.
    #[arg(long, env = "USER_SERVICE_ARGON2_PARALLELISM", default_value_t = Argon2Settings::OWASP_MINIMUM.parallelism)]
    pub argon2_parallelism: u32,

    /// How hard a new password must be to guess, 0-4 (zxcvbn's score: 3 is more than 10^10
    /// guesses); it must also not contain the username or the email's name. 0 turns the rule
    /// off (for tests and quick trials, never for real users).
    #[arg(
        long,
        env = "USER_SERVICE_PASSWORD_MIN_STRENGTH",
        default_value_t = PasswordStrength::DEFAULT_SCORE,
        value_parser = clap::value_parser!(u8).range(0..=i64::from(PasswordStrength::MAX_SCORE))
    )]
    pub password_min_strength: u8,

    /// Let anyone create an account without a token (always with role USER). BOOL is
    /// true/false, 1/0, yes/no or on/off; the flag alone means true.
    #[arg(
        long,
        env = "USER_SERVICE_ALLOW_SIGNUP",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        hide_possible_values = true
    )]
    pub allow_signup: bool,

    /// Anonymous sign-ups an hour from one client address (with --allow-signup).
    #[arg(long, env = "USER_SERVICE_SIGNUPS_PER_HOUR", default_value_t = NonZeroU32::new(20).unwrap())]
    pub signups_per_hour: NonZeroU32,

    /// Login attempts per minute per username and per client address.
    #[arg(long, env = "USER_SERVICE_LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = NonZeroU32::new(10).unwrap())]
    pub login_attempts_per_minute: NonZeroU32,

    /// Recovery codes sent to one account an hour; an address may ask for ten times it
    /// across accounts. StartRecovery's answer does not change past it: no code is sent.
    #[arg(long, env = "USER_SERVICE_RECOVERIES_PER_HOUR", default_value_t = NonZeroU32::new(5).unwrap())]
    pub recoveries_per_hour: NonZeroU32,
}

impl AuthArgs {
    pub fn settings(&self) -> Result<AuthSettings, ConfigError> {
        let jwt = JwtSettings {
            secret: secret(self.jwt_secret_file.as_ref(), self.jwt_secret.as_ref())?,
            public_key_pem: read_optional(self.jwt_public_key.as_ref())?,
            private_key_pem: read_optional(self.jwt_private_key.as_ref())?,
            // One spelling everywhere: `https://id.example.com/` is `https://id.example.com`.
            issuer: self
                .jwt_issuer
                .as_deref()
                .map(|issuer| issuer.trim_end_matches('/').to_owned()),
            audience: self.jwt_audience.clone(),
            token_ttl: self.token_ttl,
        };
        Ok(AuthSettings {
            jwt,
            argon2: Argon2Settings {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            allow_signup: self.allow_signup,
            signups_per_hour: self.signups_per_hour,
            login_attempts_per_minute: self.login_attempts_per_minute,
            recoveries_per_hour: self.recoveries_per_hour,
            session_ttl: self.session_ttl,
            password_min_strength: self.password_min_strength,
            second_factor_key: secret(
                self.second_factor_key_file.as_ref(),
                self.second_factor_key.as_ref(),
            )?,
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// File holding the key-encryption key (at least 32 bytes) that seals the signing keys'
    /// private parts in the database, and second-factor secrets when
    /// --second-factor-key-file is not given; every replica needs the same one. Without it
    /// a loopback server generates one kept in its database (development only).
    #[arg(
        long,
        env = "USER_SERVICE_KEY_ENCRYPTION_KEY_FILE",
        conflicts_with = "key_encryption_key"
    )]
    pub key_encryption_key_file: Option<PathBuf>,

    /// The key-encryption key itself (prefer the file or the environment over a flag).
    #[arg(long, env = "USER_SERVICE_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<String>,

    /// The algorithm of new signing keys: ES256 (what every gateway and JWT library
    /// verifies) or EdDSA (Ed25519).
    #[arg(
        long,
        env = "USER_SERVICE_SIGNING_KEY_ALGORITHM",
        default_value = "ES256"
    )]
    pub signing_key_algorithm: SigningAlgorithm,

    /// How long a new signing key is published in the JWKS before it signs anything: longer
    /// than any verifier caches the JWKS.
    #[arg(
        long,
        env = "USER_SERVICE_SIGNING_KEY_PUBLISH_AHEAD",
        default_value = "24h",
        value_parser = duration::seconds
    )]
    pub signing_key_publish_ahead: Duration,

    /// How long a signing key signs before the next takes over (the next is published
    /// --signing-key-publish-ahead before that).
    #[arg(
        long,
        env = "USER_SERVICE_SIGNING_KEY_ROTATION",
        default_value = "30days",
        value_parser = duration::seconds
    )]
    pub signing_key_rotation: Duration,
}

impl KeyArgs {
    pub fn settings(&self) -> Result<KeySettings, ConfigError> {
        Ok(KeySettings {
            key_encryption_key: secret(
                self.key_encryption_key_file.as_ref(),
                self.key_encryption_key.as_ref(),
            )?,
            algorithm: self.signing_key_algorithm,
            publish_ahead: self.signing_key_publish_ahead,
            rotation: self.signing_key_rotation,
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Calls per second each caller may make, sustained; 0 turns rate limiting off.
    #[arg(
        long,
        env = "USER_SERVICE_RATE_LIMIT_PER_SECOND",
        default_value_t = 100
    )]
    pub rate_limit_per_second: u32,

    /// Calls a caller may make at once before the sustained rate applies.
    #[arg(long, env = "USER_SERVICE_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// A proxy whose x-forwarded-for / forwarded headers are believed (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "USER_SERVICE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,

    /// Calls handled at once, server-wide; past it calls get UNAVAILABLE at once.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONCURRENT_CALLS",
        default_value_t = 1024
    )]
    pub max_concurrent_calls: usize,

    /// Most items one BatchCreateUsers call creates; items past it are reported, not created.
    #[arg(long, env = "USER_SERVICE_MAX_BATCH_ITEMS", default_value_t = 10_000)]
    pub max_batch_items: usize,

    /// Largest request or response message, in bytes.
    #[arg(long, env = "USER_SERVICE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// How long a request with one message (every call but BatchCreateUsers, SyncUsers and
    /// reflection) has to send all of it once it has begun: a client that stops sending
    /// halfway holds a connection or a call slot no longer than this.
    #[arg(
        long,
        env = "USER_SERVICE_REQUEST_BODY_TIMEOUT",
        default_value = "10s",
        value_parser = duration::seconds
    )]
    pub request_body_timeout: Duration,
}

impl LimitArgs {
    pub fn settings(&self) -> LimitSettings {
        LimitSettings {
            rate_limit_per_second: self.rate_limit_per_second,
            rate_limit_burst: self.rate_limit_burst,
            trusted_proxies: self.trusted_proxies.clone(),
            max_concurrent_calls: self.max_concurrent_calls,
            max_batch_items: self.max_batch_items,
            max_message_bytes: self.max_message_bytes,
            request_body_timeout: self.request_body_timeout.max(Duration::from_millis(1)),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// Streams (watches, syncs, batches, health watches) one caller may hold open, counted per
    /// principal, or per client address when anonymous.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_OPEN_STREAMS_PER_CALLER",
        default_value_t = 16
    )]
    pub max_open_streams_per_caller: usize,

    /// Streams open at once, server-wide.
    #[arg(long, env = "USER_SERVICE_MAX_OPEN_STREAMS", default_value_t = 10_000)]
    pub max_open_streams: usize,

    /// How long a watch that asked for progress notices may be quiet before it gets one (at
    /// least a second).
    #[arg(
        long,
        alias = "watch-progress-secs",
        env = "USER_SERVICE_WATCH_PROGRESS_SECS",
        default_value = "5s",
        value_parser = at_least_a_second
    )]
    pub watch_progress: Duration,
}

fn at_least_a_second(text: &str) -> Result<Duration, String> {
    let parsed = duration::seconds(text)?;
    if parsed < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(parsed)
}

impl StreamArgs {
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            max_open_per_caller: self.max_open_streams_per_caller,
            max_open: self.max_open_streams,
            watch_progress: self.watch_progress,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct WebArgs {
    /// Let pages from this origin call the service from a browser (CORS), e.g.
    /// https://admin.example.com (repeatable; off when none is named).
    #[arg(
        long = "cors-allow-origin",
        env = "USER_SERVICE_CORS_ALLOW_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_allow_origins: Vec<http::HeaderValue>,

    /// Serve the admin console at /console/. BOOL is true/false, 1/0, yes/no or on/off; the
    /// flag alone means true.
    #[arg(
        long,
        env = "USER_SERVICE_CONSOLE",
        value_name = "BOOL",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        hide_possible_values = true
    )]
    pub console: bool,
}

impl WebArgs {
    pub fn settings(&self) -> WebSettings {
        WebSettings {
            cors_allow_origins: self.cors_allow_origins.clone(),
            console: self.console,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Write one access log line per call (target user_service::access). BOOL is true/false,
    /// 1/0, yes/no or on/off; the flag alone means true.
    #[arg(
        long,
        env = "USER_SERVICE_ACCESS_LOG",
        value_name = "BOOL",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new(),
        hide_possible_values = true
    )]
    pub access_log: bool,

    /// Log line format.
    #[arg(long, env = "USER_SERVICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export trace spans over OTLP/gRPC to this collector, e.g. http://otel-collector:4317
    /// (off when unset).
    #[arg(long, env = "USER_SERVICE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (off when unset).
    #[arg(long, env = "USER_SERVICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl TelemetryArgs {
    pub fn settings(&self) -> TelemetrySettings {
        TelemetrySettings {
            access_log: self.access_log,
        }
    }

    pub fn metrics(&self) -> MetricsSettings {
        MetricsSettings {
            listen: self.metrics_listen,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// How long between SIGTERM and closing the listener: health reports NOT_SERVING while
    /// calls are still served, so load balancers stop sending new ones.
    #[arg(
        long,
        alias = "shutdown-drain-secs",
        env = "USER_SERVICE_SHUTDOWN_DRAIN_SECS",
        default_value = "5s",
        value_parser = duration::seconds
    )]
    pub shutdown_drain: Duration,

    /// How long in-flight calls get to finish once the listener has closed.
    #[arg(
        long,
        alias = "shutdown-grace-secs",
        env = "USER_SERVICE_SHUTDOWN_GRACE_SECS",
        default_value = "10s",
        value_parser = duration::seconds
    )]
    pub shutdown_grace: Duration,
}

impl ShutdownArgs {
    pub fn settings(&self) -> ShutdownSettings {
        ShutdownSettings {
            drain: self.shutdown_drain,
            grace: self.shutdown_grace,
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, in lower case, without the
/// scheme's default port, nothing after; anything else could never match a browser's `Origin`.
pub(super) fn parse_origin(text: &str) -> Result<http::HeaderValue, String> {
    let refuse = || {
        format!(
            "{text:?} is not an origin: give scheme://host[:port], e.g. https://admin.example.com, \
             with no path or user"
        )
    };
    let uri: http::Uri = text.to_ascii_lowercase().parse().map_err(|_| refuse())?;
    let (Some(scheme @ ("http" | "https")), Some(authority)) = (uri.scheme_str(), uri.authority())
    else {
        return Err(refuse());
    };
    let bare = uri.path_and_query().is_none_or(|path| path.as_str() == "/");
    if !bare || authority.as_str().contains('@') {
        return Err(refuse());
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let origin = match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{}:{port}", authority.host()),
        _ => format!("{scheme}://{}", authority.host()),
    };
    http::HeaderValue::from_str(&origin).map_err(|_| refuse())
}
