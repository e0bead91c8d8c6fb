//! Server configuration: command-line flags, each with an environment fallback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::password::Argon2Settings;
use crate::storage::StorageSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A gRPC user directory on durable embedded storage.
#[derive(Debug, Clone, Parser)]
#[command(name = "user-service", version, about)]
pub struct Cli {
    /// Address to serve gRPC on.
    #[arg(long, env = "USER_SERVICE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Database location: sqlite://relative/path.db or sqlite:///absolute/path.db.
    #[arg(
        long,
        env = "USER_SERVICE_DATABASE_URL",
        default_value = "sqlite://data/users.db"
    )]
    pub database_url: String,

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
    #[arg(long, env = "USER_SERVICE_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: usize,

    /// How many of the newest change events are kept for resuming watches.
    #[arg(
        long,
        env = "USER_SERVICE_EVENT_RETENTION",
        default_value_t = 1_000_000
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

    /// Seconds in-flight calls get to finish once shutdown begins.
    #[arg(long, env = "USER_SERVICE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Log line format.
    #[arg(long, env = "USER_SERVICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Everything start-up needs, independent of how it was given.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub storage: StorageSettings,
    pub argon2: Argon2Settings,
    pub max_batch_items: usize,
    pub max_message_bytes: usize,
    pub max_concurrent_streams: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How often the database is checked for the health service.
    pub health_check_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Cli::parse_from(["user-service"]).into()
    }
}

impl From<Cli> for Settings {
    fn from(cli: Cli) -> Self {
        Self {
            listen: cli.listen,
            storage: StorageSettings {
                database_url: cli.database_url,
                cache_capacity: cli.cache_capacity,
                event_retention: cli.event_retention,
                ..StorageSettings::default()
            },
            argon2: Argon2Settings {
                memory_kib: cli.argon2_memory_kib,
                iterations: cli.argon2_iterations,
                parallelism: cli.argon2_parallelism,
            },
            max_batch_items: cli.max_batch_items,
            max_message_bytes: cli.max_message_bytes,
            max_concurrent_streams: cli.max_concurrent_streams,
            keepalive_interval: Duration::from_secs(cli.keepalive_secs),
            keepalive_timeout: Duration::from_secs(cli.keepalive_timeout_secs),
            shutdown_grace: Duration::from_secs(cli.shutdown_grace_secs),
            health_check_interval: Duration::from_secs(5),
        }
    }
}
