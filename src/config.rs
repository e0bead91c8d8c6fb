//! Server configuration: command-line flags, each with an environment fallback.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{CommandFactory, FromArgMatches, Parser};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::hasher::{Argon2Settings, HashError, PasswordHasher};
use crate::auth::second_factor::{SecondFactorKeys, ShortKey};
use crate::connections::ConnectionLimits;
use crate::domain::PasswordStrength;
use crate::grpc::auth_service::LoginLimits;
use crate::grpc::signup::SignupLimit;
use crate::rate::RateLimiter;
use crate::storage::StorageSettings;
use crate::streams::StreamLimits;
use crate::telemetry::LogFormat;
use crate::tokens::JwtSettings;

/// A gRPC user directory on durable embedded storage.
#[derive(Debug, Clone, Parser)]
#[command(name = "user-service", version, about)]
pub struct Cli {
    /// Something to do instead of serving.
    #[command(subcommand)]
    pub command: Option<ServerCommand>,

    /// Address to serve gRPC on.
    #[arg(long, env = "USER_SERVICE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

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

    /// PostgreSQL: seconds connecting to one host may take (a multi-host URL tries each host
    /// in turn, each for this long).
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_CONNECT_TIMEOUT_SECS",
        default_value_t = StorageSettings::DEFAULT_CONNECT_TIMEOUT.as_secs()
    )]
    pub database_connect_timeout_secs: u64,

    /// PostgreSQL: milliseconds one statement may run before the database cancels it.
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = StorageSettings::DEFAULT_STATEMENT_TIMEOUT.as_millis() as u64
    )]
    pub database_statement_timeout_ms: u64,

    /// PostgreSQL: milliseconds one storage operation may take, enforced by this server (the
    /// database may never hear a query on a silent link): past it the call answers
    /// UNAVAILABLE and the connection is closed. Also the connections' TCP user timeout and
    /// their lock timeout.
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_OPERATION_TIMEOUT_MS",
        default_value_t = StorageSettings::DEFAULT_OPERATION_TIMEOUT.as_millis() as u64
    )]
    pub database_operation_timeout_ms: u64,

    /// PostgreSQL: milliseconds a session may sit in an open transaction without sending its
    /// next statement before the database ends it and releases its locks (a replica cut off
    /// mid-write cannot hold every replica's writes).
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = StorageSettings::DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT.as_millis() as u64
    )]
    pub database_idle_in_transaction_timeout_ms: u64,

    /// Seconds start-up keeps retrying while the database is unreachable or only a standby
    /// answers (health says NOT_SERVING meanwhile); 0 retries for good.
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_STARTUP_WAIT_SECS",
        default_value_t = 60
    )]
    pub database_startup_wait_secs: u64,

    /// Argon2id memory cost in KiB (OWASP minimum: 19456).
    #[arg(long, env = "USER_SERVICE_ARGON2_MEMORY_KIB", default_value_t = Argon2Settings::OWASP_MINIMUM.memory_kib)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations (OWASP minimum: 2).
    #[arg(long, env = "USER_SERVICE_ARGON2_ITERATIONS", default_value_t = Argon2Settings::OWASP_MINIMUM.iterations)]
    pub argon2_iterations: u32,

    /// Argon2id lanes per hash.
    #[arg(long, env = "USER_SERVICE_ARGON2_PARALLELISM", default_value_t = Argon2Settings::OWASP_MINIMUM.parallelism)]
    pub argon2_parallelism: u32,

    /// Users kept in the in-memory read cache (0 turns it off).
    #[arg(long, env = "USER_SERVICE_CACHE_CAPACITY", default_value_t = StorageSettings::DEFAULT_CACHE_CAPACITY)]
    pub cache_capacity: usize,

    /// How many of the newest change events are kept for resuming watches.
    #[arg(
        long,
        env = "USER_SERVICE_EVENT_RETENTION",
        default_value_t = StorageSettings::DEFAULT_EVENT_RETENTION
    )]
    pub event_retention: u64,

    /// Most items one BatchCreateUsers call creates; items past it are reported, not created.
    #[arg(long, env = "USER_SERVICE_MAX_BATCH_ITEMS", default_value_t = 10_000)]
    pub max_batch_items: usize,

    /// Largest request or response message, in bytes.
    #[arg(long, env = "USER_SERVICE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most concurrent streams (calls) on one HTTP/2 connection.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONCURRENT_STREAMS",
        default_value_t = 1024
    )]
    pub max_concurrent_streams: u32,

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

    /// Seconds a watch that asked for progress notices may be quiet before it gets one.
    #[arg(
        long,
        env = "USER_SERVICE_WATCH_PROGRESS_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub watch_progress_secs: u64,

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

    /// Seconds a new connection has to start speaking (its HTTP/2 preface, or the TLS
    /// handshake first) before it is closed.
    #[arg(
        long,
        env = "USER_SERVICE_HANDSHAKE_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub handshake_timeout_secs: u64,

    /// Seconds a connection may carry no call before it is closed; 0 keeps it open.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONNECTION_IDLE_SECS",
        default_value_t = 300
    )]
    pub max_connection_idle_secs: u64,

    /// Seconds after which a connection is asked to close (GOAWAY), so clients reconnect and
    /// load spreads over replicas behind an L4 balancer; 0 keeps connections for good.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONNECTION_AGE_SECS",
        default_value_t = 0
    )]
    pub max_connection_age_secs: u64,

    /// Seconds an aged connection's calls get to finish before it is closed.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONNECTION_AGE_GRACE_SECS",
        default_value_t = 30
    )]
    pub max_connection_age_grace_secs: u64,

    /// Seconds between HTTP/2 keepalive pings to idle clients.
    #[arg(long, env = "USER_SERVICE_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,

    /// Seconds to wait for a keepalive ping's answer before closing the connection.
    #[arg(
        long,
        env = "USER_SERVICE_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub keepalive_timeout_secs: u64,

    /// Seconds between SIGTERM and closing the listener: health reports NOT_SERVING while
    /// calls are still served, so load balancers stop sending new ones.
    #[arg(long, env = "USER_SERVICE_SHUTDOWN_DRAIN_SECS", default_value_t = 5)]
    pub shutdown_drain_secs: u64,

    /// Seconds in-flight calls get to finish once the listener has closed.
    #[arg(long, env = "USER_SERVICE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

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

    /// Required `iss` claim, also written into minted tokens.
    #[arg(long, env = "USER_SERVICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, also written into minted tokens.
    #[arg(long, env = "USER_SERVICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Lifetime of tokens issued by Login, in seconds.
    #[arg(long, env = "USER_SERVICE_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,

    /// Lifetime of a session started by Login, in seconds: its refresh tokens work until
    /// then, and no access token it issues outlives it.
    #[arg(long, env = "USER_SERVICE_SESSION_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub session_ttl_secs: u64,

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

    /// Anonymous sign-ups an hour from one client address (with --allow-signup).
    #[arg(long, env = "USER_SERVICE_SIGNUPS_PER_HOUR", default_value_t = NonZeroU32::new(20).unwrap())]
    pub signups_per_hour: NonZeroU32,

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

    /// Login attempts per minute per username and per client address.
    #[arg(long, env = "USER_SERVICE_LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = NonZeroU32::new(10).unwrap())]
    pub login_attempts_per_minute: NonZeroU32,

    /// Calls handled at once, server-wide; past it calls get UNAVAILABLE at once.
    #[arg(
        long,
        env = "USER_SERVICE_MAX_CONCURRENT_CALLS",
        default_value_t = 1024
    )]
    pub max_concurrent_calls: usize,

    /// PEM certificate chain to serve TLS with (with --tls-key).
    #[arg(long, env = "USER_SERVICE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "USER_SERVICE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): clients must present a certificate signed by one (mTLS).
    #[arg(long, env = "USER_SERVICE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

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

    /// Serve Prometheus metrics at http://ADDR/metrics (off when unset).
    #[arg(long, env = "USER_SERVICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

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
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServerCommand {
    /// Ask a running server whether it is SERVING (for container health checks): exit 0 if
    /// it is, 1 if not or if it does not answer in time.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// The server to ask [default: where --listen (USER_SERVICE_LISTEN) serves, on loopback;
    /// https when --tls-cert (USER_SERVICE_TLS_CERT) is set]. With TLS the check trusts
    /// exactly the server's own certificate, and when --tls-client-ca is set it presents
    /// --tls-cert and --tls-key as its client certificate: the same settings, from the same
    /// variables, as the server it runs beside.
    #[arg(long)]
    pub addr: Option<String>,
    /// The service to ask about; the whole server when empty.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
    /// PEM client certificate to present when the server requires one (--tls-client-ca)
    /// [default: the server's own --tls-cert, accepted when a CA in --tls-client-ca signed it
    /// and it does not restrict its use to servers].
    #[arg(
        long,
        env = "USER_SERVICE_HEALTHCHECK_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key for --client-cert.
    #[arg(
        long,
        env = "USER_SERVICE_HEALTHCHECK_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

/// Everything start-up needs, independent of how it was given: one group per component,
/// each of which builds its own.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listener: ListenerSettings,
    pub storage: StorageSettings,
    pub health: HealthSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub streams: StreamSettings,
    pub telemetry: TelemetrySettings,
    pub metrics: MetricsSettings,
    pub web: WebSettings,
    pub shutdown: ShutdownSettings,
}

/// The listener, its guard on connections, and the HTTP/2 server over it.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub addr: SocketAddr,
    pub connections: ConnectionLimits,
    pub tls: Option<TlsSettings>,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// When set: connections are recycled after this long, with this grace.
    pub max_connection_age: Option<(Duration, Duration)>,
}

impl ListenerSettings {
    /// The server these settings describe: TLS when configured, keepalive, streams per
    /// connection and connection age.
    pub fn server(&self) -> Result<Server, tonic::transport::Error> {
        let mut builder = Server::builder();
        if let Some(tls) = &self.tls {
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(config)?;
        }
        if let Some((age, grace)) = self.max_connection_age {
            builder = builder
                .max_connection_age(age)
                .max_connection_age_grace(grace);
        }
        Ok(builder
            // gRPC-Web and Connect clients (browsers, curl) may speak HTTP/1.1.
            .accept_http1(true)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_concurrent_streams(self.max_concurrent_streams))
    }
}

/// How health follows the database.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// How often the database is checked.
    pub check_interval: Duration,
    /// How long start-up retries while the database is unreachable or a standby; `None`: for
    /// good.
    pub database_startup_wait: Option<Duration>,
}

/// Tokens, passwords, sessions, and the limits on logins and sign-ups.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt: JwtSettings,
    pub argon2: Argon2Settings,
    pub allow_signup: bool,
    pub signups_per_hour: NonZeroU32,
    pub login_attempts_per_minute: NonZeroU32,
    pub session_ttl: Duration,
    /// zxcvbn's score a new password must reach (0: no rule).
    pub password_min_strength: u8,
    /// Key material for second factors (`None`: enrolling is refused).
    pub second_factor_key: Option<Vec<u8>>,
}

impl AuthSettings {
    /// What a new password must pass.
    pub fn password_strength(&self) -> PasswordStrength {
        PasswordStrength::new(self.password_min_strength)
    }

    /// The password hasher, warning when its settings are below the recommended minimum.
    pub fn hasher(&self) -> Result<PasswordHasher, HashError> {
        if self.argon2.below_recommendation() {
            tracing::warn!(
                memory_kib = self.argon2.memory_kib,
                iterations = self.argon2.iterations,
                "Argon2 settings are below the OWASP minimum (19456 KiB, 2 iterations): fine for tests, weak for real passwords"
            );
        }
        PasswordHasher::new(self.argon2)
    }

    /// Anonymous sign-up's limit per address, when sign-up is allowed.
    pub fn signup_limit(&self) -> Option<Arc<SignupLimit>> {
        self.allow_signup
            .then(|| Arc::new(SignupLimit::new(self.signups_per_hour)))
    }

    /// The second factors' keys, when key material is configured.
    pub fn second_factor_keys(&self) -> Result<Option<SecondFactorKeys>, ShortKey> {
        self.second_factor_key
            .as_deref()
            .map(SecondFactorKeys::new)
            .transpose()
    }

    pub fn login_limits(&self) -> Arc<LoginLimits> {
        Arc::new(LoginLimits::new(self.login_attempts_per_minute))
    }
}

/// What one caller, and the server as a whole, may ask for.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Calls per second per caller, sustained (0: no limit), and the burst above it.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<IpAddr>,
    pub max_concurrent_calls: usize,
    pub max_batch_items: usize,
    pub max_message_bytes: usize,
}

impl LimitSettings {
    pub fn rate_limiter(&self) -> RateLimiter {
        RateLimiter::new(self.rate_limit_per_second, self.rate_limit_burst)
    }
}

/// Caps on long-lived streams.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub max_open_per_caller: usize,
    pub max_open: usize,
    /// How long a watch that asked for progress notices may be quiet.
    pub watch_progress: Duration,
}

impl StreamSettings {
    pub fn limits(&self) -> Arc<StreamLimits> {
        Arc::new(StreamLimits::new(self.max_open_per_caller, self.max_open))
    }
}

/// What the server logs of each call.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub access_log: bool,
}

/// What browsers get: the console, and which other origins' pages may call the service.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub cors_allow_origins: Vec<http::HeaderValue>,
    pub console: bool,
}

impl WebSettings {
    /// CORS for the named origins, exposing what gRPC-Web and Connect clients read from an
    /// answer; `None` when no origin is named.
    pub fn cors(&self) -> Option<tower_http::cors::CorsLayer> {
        use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
        use tower_http::cors::{AllowOrigin, CorsLayer};
        if self.cors_allow_origins.is_empty() {
            return None;
        }
        let names = |names: &[&'static str]| -> Vec<HeaderName> {
            names
                .iter()
                .map(|name| HeaderName::from_static(name))
                .collect()
        };
        let mut allowed = names(&[
            "connect-protocol-version",
            "connect-timeout-ms",
            "grpc-timeout",
            "x-grpc-web",
            "x-user-agent",
            "traceparent",
            "tracestate",
        ]);
        allowed.extend([AUTHORIZATION, CONTENT_TYPE]);
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(self.cors_allow_origins.iter().cloned()))
                .allow_methods([http::Method::POST])
                .allow_headers(allowed)
                .expose_headers(names(&[
                    "grpc-status",
                    "grpc-message",
                    "grpc-status-details-bin",
                    "retry-after",
                    crate::contract::WATCH_START_REVISION,
                ]))
                .max_age(Duration::from_secs(3600)),
        )
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, in lower case, without the
/// scheme's default port, nothing after; anything else could never match a browser's `Origin`.
fn parse_origin(text: &str) -> Result<http::HeaderValue, String> {
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

/// Where Prometheus metrics are served, when they are.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub listen: Option<SocketAddr>,
}

/// How the server stops.
#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    /// How long health reports NOT_SERVING, while calls are still served, before the listener
    /// closes.
    pub drain: Duration,
    /// How long calls still open then may take.
    pub grace: Duration,
}

/// PEM material for serving TLS, and for requiring client certificates.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

pub use crate::files::ReadError as ConfigError;

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    crate::files::read_file(path)
}

fn read_optional(path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
    path.map(|path| read(path)).transpose()
}

impl Cli {
    /// Where `healthcheck` asks: `--addr`, or the server's own listen address on loopback,
    /// over TLS when the server serves it.
    pub fn healthcheck_addr(&self, args: &HealthcheckArgs) -> String {
        if let Some(addr) = &args.addr {
            return addr.clone();
        }
        let mut target = self.listen;
        if target.ip().is_unspecified() {
            target.set_ip(match target.ip() {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{target}")
    }

    /// The health check's TLS, from the server's own TLS settings.
    pub fn healthcheck_tls(
        &self,
        args: &HealthcheckArgs,
    ) -> Result<Option<crate::health::ProbeTls>, ConfigError> {
        let Some(cert) = &self.tls_cert else {
            return Ok(None);
        };
        let server_cert_pem = read(cert)?;
        let client = match (&args.client_cert, &args.client_key, &self.tls_client_ca) {
            (Some(client_cert), Some(client_key), _) => {
                Some((read(client_cert)?, read(client_key)?))
            }
            (_, _, Some(_)) => match &self.tls_key {
                Some(key) => Some((server_cert_pem.clone(), read(key)?)),
                None => None,
            },
            _ => None,
        };
        Ok(Some(crate::health::ProbeTls {
            server_cert_pem,
            client,
        }))
    }
}

impl Default for Settings {
    /// The flags' defaults, ignoring the environment: what the server does with no
    /// configuration at all, whatever the caller's shell has set.
    fn default() -> Self {
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["user-service"]);
        let cli = Cli::from_arg_matches(&matches).expect("the defaults parse");
        Settings::from_cli(cli).expect("the defaults name no files")
    }
}

impl Settings {
    /// Reads the files the flags name.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let secret = match (&cli.jwt_secret_file, &cli.jwt_secret) {
            (Some(path), _) => Some(crate::files::read_secret_file(path)?),
            (None, Some(secret)) => Some(secret.as_bytes().to_vec()),
            (None, None) => None,
        };
        let second_factor_key = match (&cli.second_factor_key_file, &cli.second_factor_key) {
            (Some(path), _) => Some(crate::files::read_secret_file(path)?),
            (None, Some(key)) => Some(key.as_bytes().to_vec()),
            (None, None) => None,
        };
        let database_url = match &cli.database_url_file {
            Some(path) => {
                String::from_utf8_lossy(&crate::files::read_secret_file(path)?).into_owned()
            }
            None => cli.database_url.clone(),
        };
        let tls = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
                client_ca_pem: read_optional(cli.tls_client_ca.as_ref())?,
            }),
            _ => None,
        };
        let jwt = JwtSettings {
            secret,
            public_key_pem: read_optional(cli.jwt_public_key.as_ref())?,
            private_key_pem: read_optional(cli.jwt_private_key.as_ref())?,
            issuer: cli.jwt_issuer.clone(),
            audience: cli.jwt_audience.clone(),
            token_ttl: Duration::from_secs(cli.token_ttl_secs),
        };
        Ok(Self {
            listener: ListenerSettings {
                addr: cli.listen,
                connections: ConnectionLimits {
                    max: cli.max_connections.max(1),
                    per_address: match cli.max_connections_per_address {
                        0 => cli.max_connections.max(1),
                        cap => cap,
                    },
                    handshake: Duration::from_secs(cli.handshake_timeout_secs),
                    idle: (cli.max_connection_idle_secs > 0)
                        .then(|| Duration::from_secs(cli.max_connection_idle_secs)),
                },
                tls,
                keepalive_interval: Duration::from_secs(cli.keepalive_secs),
                keepalive_timeout: Duration::from_secs(cli.keepalive_timeout_secs),
                max_concurrent_streams: cli.max_concurrent_streams,
                max_connection_age: (cli.max_connection_age_secs > 0).then(|| {
                    (
                        Duration::from_secs(cli.max_connection_age_secs),
                        Duration::from_secs(cli.max_connection_age_grace_secs),
                    )
                }),
            },
            storage: StorageSettings {
                database_url,
                pool_size: cli.database_pool_size,
                connect_timeout: Duration::from_secs(cli.database_connect_timeout_secs),
                statement_timeout: Duration::from_millis(cli.database_statement_timeout_ms),
                operation_timeout: Duration::from_millis(cli.database_operation_timeout_ms.max(1)),
                idle_in_transaction_timeout: Duration::from_millis(
                    cli.database_idle_in_transaction_timeout_ms,
                ),
                cache_capacity: cli.cache_capacity,
                event_retention: cli.event_retention,
                ..StorageSettings::default()
            },
            health: HealthSettings {
                check_interval: Duration::from_secs(1),
                database_startup_wait: (cli.database_startup_wait_secs > 0)
                    .then(|| Duration::from_secs(cli.database_startup_wait_secs)),
            },
            auth: AuthSettings {
                jwt,
                argon2: Argon2Settings {
                    memory_kib: cli.argon2_memory_kib,
                    iterations: cli.argon2_iterations,
                    parallelism: cli.argon2_parallelism,
                },
                allow_signup: cli.allow_signup,
                signups_per_hour: cli.signups_per_hour,
                login_attempts_per_minute: cli.login_attempts_per_minute,
                session_ttl: Duration::from_secs(cli.session_ttl_secs),
                password_min_strength: cli.password_min_strength,
                second_factor_key,
            },
            limits: LimitSettings {
                rate_limit_per_second: cli.rate_limit_per_second,
                rate_limit_burst: cli.rate_limit_burst,
                trusted_proxies: cli.trusted_proxies.clone(),
                max_concurrent_calls: cli.max_concurrent_calls,
                max_batch_items: cli.max_batch_items,
                max_message_bytes: cli.max_message_bytes,
            },
            streams: StreamSettings {
                max_open_per_caller: cli.max_open_streams_per_caller,
                max_open: cli.max_open_streams,
                watch_progress: Duration::from_secs(cli.watch_progress_secs),
            },
            telemetry: TelemetrySettings {
                access_log: cli.access_log,
            },
            metrics: MetricsSettings {
                listen: cli.metrics_listen,
            },
            web: WebSettings {
                cors_allow_origins: cli.cors_allow_origins.clone(),
                console: cli.console,
            },
            shutdown: ShutdownSettings {
                drain: Duration::from_secs(cli.shutdown_drain_secs),
                grace: Duration::from_secs(cli.shutdown_grace_secs),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    fn parsed(args: &[&str]) -> Result<Cli, clap::Error> {
        let command = std::iter::once("user-service").chain(args.iter().copied());
        Cli::try_parse_from(command)
    }

    #[test]
    fn an_origin_is_kept_as_a_browser_would_send_it() {
        for (given, kept) in [
            ("https://admin.example.com", "https://admin.example.com"),
            ("https://Admin.Example.com/", "https://admin.example.com"),
            ("https://admin.example.com:443", "https://admin.example.com"),
            ("http://localhost:5173", "http://localhost:5173"),
        ] {
            assert_eq!(super::parse_origin(given).unwrap(), kept, "{given}");
        }
        for refused in [
            "*",
            "admin.example.com",
            "ftp://admin.example.com",
            "https://admin.example.com/app",
            "https://user@admin.example.com",
        ] {
            let err = super::parse_origin(refused).unwrap_err();
            assert!(err.contains("is not an origin"), "{refused}: {err}");
        }
    }

    #[test]
    fn every_boolean_flag_takes_every_documented_form() {
        for (given, expected) in [
            (&["--allow-signup"][..], true),
            (&["--allow-signup", "true"], true),
            (&["--allow-signup=true"], true),
            (&["--allow-signup", "yes"], true),
            (&["--allow-signup=on"], true),
            (&["--allow-signup", "1"], true),
            (&["--allow-signup", "false"], false),
            (&["--allow-signup=no"], false),
            (&["--allow-signup", "off"], false),
            (&["--allow-signup=0"], false),
            (&[], false),
        ] {
            let cli = parsed(given).unwrap_or_else(|err| panic!("{given:?}: {err}"));
            assert_eq!(cli.allow_signup, expected, "{given:?}");
        }
        for (given, expected) in [
            (&["--access-log", "off"][..], false),
            (&["--access-log=false"], false),
            (&["--access-log", "0"], false),
            (&["--access-log"], true),
            (&["--access-log", "yes"], true),
            (&[], true),
        ] {
            let cli = parsed(given).unwrap_or_else(|err| panic!("{given:?}: {err}"));
            assert_eq!(cli.access_log, expected, "{given:?}");
        }
        assert!(
            parsed(&["--access-log", "maybe"]).is_err(),
            "other words are refused"
        );
    }

    #[test]
    fn the_help_does_not_narrow_the_boolean_forms() {
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(!help.contains("possible values: true, false"), "{help}");
        assert!(help.contains("true/false, 1/0, yes/no or on/off"), "{help}");
    }
}
