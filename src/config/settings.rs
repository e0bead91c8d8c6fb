//! What start-up needs, one group per component, each of which builds its own: the
//! listener and its HTTP/2 server, health, sign-in, limits, streams, telemetry, browsers,
//! metrics and shutdown. How they were given (flags, variables, tests) does not show here.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

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
use crate::tokens::JwtSettings;

/// Everything start-up needs, independent of how it was given: one group per component,
/// each of which builds its own.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listener: ListenerSettings,
    pub storage: StorageSettings,
    pub health: HealthSettings,
    pub auth: AuthSettings,
    pub keys: KeySettings,
    pub limits: LimitSettings,
    pub streams: StreamSettings,
    pub telemetry: TelemetrySettings,
    pub metrics: MetricsSettings,
    pub web: WebSettings,
    pub shutdown: ShutdownSettings,
}

impl Settings {
    /// The second factors' keys: from `--second-factor-key-file`, else from the
    /// key-encryption key; none when neither is configured (a generated development
    /// key-encryption key does not turn second factors on).
    pub fn second_factor_keys(&self) -> Result<Option<SecondFactorKeys>, ShortKey> {
        self.auth
            .second_factor_key
            .as_deref()
            .or(self.keys.key_encryption_key.as_deref())
            .map(SecondFactorKeys::new)
            .transpose()
    }
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

/// The service's own signing keys, and what seals them.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Key material that seals private keys at rest (`None`: generated on loopback).
    pub key_encryption_key: Option<Vec<u8>>,
    pub algorithm: crate::oidc::keys::SigningAlgorithm,
    pub publish_ahead: Duration,
    pub rotation: Duration,
}

/// Tokens, passwords, sessions, and the limits on logins and sign-ups.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt: JwtSettings,
    pub argon2: Argon2Settings,
    pub allow_signup: bool,
    pub signups_per_hour: NonZeroU32,
    pub login_attempts_per_minute: NonZeroU32,
    /// Recovery codes sent to one account an hour (ten times it asked for from one address).
    pub recoveries_per_hour: NonZeroU32,
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

    pub fn login_limits(&self) -> Arc<LoginLimits> {
        Arc::new(LoginLimits::new(
            self.login_attempts_per_minute,
            self.recoveries_per_hour,
        ))
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
    /// How long a one-message request may take to arrive once it has begun.
    pub request_body_timeout: Duration,
}

impl LimitSettings {
    /// What a request body may be: its size, and how long it may take to arrive.
    pub fn body(&self) -> crate::whole_body::BodyLimits {
        crate::whole_body::BodyLimits {
            max_bytes: self.max_message_bytes,
            timeout: self.request_body_timeout,
        }
    }

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
