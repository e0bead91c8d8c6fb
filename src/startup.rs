//! Start-up in one place. `Application::build` assembles the server: storage, the bound
//! listener, the services, the middleware stack in the architecture diagram's order, TLS and
//! the background work. `Application::run_until` serves it until told to stop, then shuts
//! down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::service::LayerExt as _;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::authenticator::Authenticator;
use crate::auth::hasher::{HashError, PasswordHasher};
use crate::config::Settings;
use crate::connections;
use crate::contract::tokens::{Jwt, KeyError};
use crate::domain::{Password, Role};
use crate::grpc::UserServiceImpl;
use crate::grpc::auth_service::{AuthServiceImpl, LoginLimits};
use crate::grpc::signup::SignupLimit;
use crate::health;
use crate::metrics::{Metrics, methods_of};
use crate::middleware::{
    AccessLogLayer, ActivityLayer, AuthLayer, ContentTypeLayer, DeadlineLayer, DecodeFaultLayer,
    RateLimitLayer, ShedLayer,
};
use crate::pb::{
    self, auth_service_server::AuthServiceServer, user_service_server::UserServiceServer,
};
use crate::rate::RateLimiter;
use crate::shutdown::{self, ShutdownTrigger};
use crate::storage::{Store, StoreError};
use crate::streams::{StreamControls, StreamLimits};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open storage")]
    Storage(#[from] StoreError),
    #[error("invalid password hashing settings")]
    Hashing(#[from] HashError),
    #[error("invalid token key settings")]
    Keys(#[from] KeyError),
    #[error(
        "no token key is configured and {0} is not a loopback address: a generated development \
         key is only for 127.0.0.1 or ::1; give --jwt-secret-file, USER_SERVICE_JWT_SECRET or \
         --jwt-public-key"
    )]
    NoKeyOffLoopback(SocketAddr),
    #[error("invalid TLS settings")]
    Tls(#[source] tonic::transport::Error),
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// A bound, ready server. `local_addr` is the real address (useful with port 0).
pub struct Application {
    local_addr: SocketAddr,
    store: Store,
    jwt: Arc<Jwt>,
    settings: Settings,
    /// The assembled server, not yet polled: it serves once `run_until` awaits it.
    server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>,
    trigger: ShutdownTrigger,
    reporter: HealthReporter,
    /// Background work, started with the server: the health monitor, and forgetting idle
    /// rate-limit keys.
    monitor: Pin<Box<dyn Future<Output = ()> + Send>>,
    forget: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Connections closed at once because `--max-connections` were open.
    refused: Arc<connections::Refused>,
    /// The metrics endpoint's address and server, when `--metrics-listen` is set.
    metrics_server: Option<(SocketAddr, Background)>,
}

type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How often idle rate-limit keys are forgotten.
const FORGET_IDLE_KEYS_EVERY: Duration = Duration::from_secs(60);

impl Application {
    /// Everything the server needs, ready to serve; nothing is served until `run_until`.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        if settings.argon2.below_recommendation() {
            tracing::warn!(
                memory_kib = settings.argon2.memory_kib,
                iterations = settings.argon2.iterations,
                "Argon2 settings are below the OWASP minimum (19456 KiB, 2 iterations): fine for tests, weak for real passwords"
            );
        }
        let hasher = PasswordHasher::new(settings.argon2)?;
        let (jwt, generated) = Jwt::new(&settings.jwt)?;
        if generated.is_some() && !settings.listen.ip().is_loopback() {
            // A random key and an admin token in the log are for a developer's own machine.
            return Err(StartupError::NoKeyOffLoopback(settings.listen));
        }
        if generated.is_some() {
            let (token, _) = jwt
                .mint(
                    "dev-admin",
                    Role::Admin,
                    Some(Duration::from_secs(24 * 3600)),
                )
                .expect("a generated secret can sign");
            tracing::warn!(
                "no JWT key configured: generated a random secret for this run only. \
                 DEVELOPMENT ONLY, an admin token valid for 24 hours: {token}"
            );
        }
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let store = crate::database_wait::open(
            &settings.storage,
            settings.database_startup_wait,
            &listener,
            settings.tls.is_none(),
        )
        .await?;
        let jwt = Arc::new(jwt);
        let (trigger, shutdown) = shutdown::channel();
        let mut metrics_server = None;
        let trusted_proxies: Arc<[std::net::IpAddr]> = settings.trusted_proxies.clone().into();
        let rate_limit = RateLimiter::new(
            settings.rate_limit_per_second,
            settings.rate_limit_burst,
            trusted_proxies.clone(),
        );
        let streams = StreamControls {
            limits: Arc::new(StreamLimits::new(
                settings.max_open_streams_per_caller,
                settings.max_open_streams,
            )),
            rate: rate_limit.clone(),
            trusted_proxies: trusted_proxies.clone(),
        };
        let metrics = match settings.metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?;
                let sources = Arc::new(crate::metrics::Sources {
                    store: store.clone(),
                    streams: streams.limits.clone(),
                    hashing: hasher.stats(),
                });
                let metrics = Arc::new(Metrics::new(
                    &methods_of(&[
                        pb::FILE_DESCRIPTOR_SET,
                        tonic_health::pb::FILE_DESCRIPTOR_SET,
                        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                    ]),
                    &sources,
                ));
                let local = listener
                    .local_addr()
                    .map_err(|source| StartupError::Bind { addr, source })?;
                let served = Box::pin(crate::metrics::serve(
                    listener,
                    metrics.clone(),
                    sources,
                    shutdown.clone(),
                ));
                metrics_server = Some((local, served as Background));
                Some(metrics)
            }
            None => None,
        };
        let (reporter, health_service) = health::service(shutdown.clone(), streams.clone());
        health::set_all(&reporter, ServingStatus::Serving).await;

        let decoy = hasher
            .hash(Password::parse(uuid::Uuid::now_v7().to_string()).expect("36 characters"))
            .await?;
        let signup = settings.allow_signup.then(|| {
            Arc::new(SignupLimit::new(
                settings.signups_per_hour,
                settings.trusted_proxies.clone(),
            ))
        });
        let login_limits = Arc::new(LoginLimits::new(
            settings.login_attempts_per_minute,
            settings.trusted_proxies.clone(),
        ));
        let auth = AuthServiceServer::new(AuthServiceImpl::new(
            store.clone(),
            hasher.clone(),
            jwt.clone(),
            login_limits.clone(),
            decoy,
            settings.session_ttl,
        ))
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
        let users = UserServiceServer::new(UserServiceImpl::new(
            store.clone(),
            hasher,
            shutdown.clone(),
            settings.max_batch_items,
            settings.max_message_bytes,
            signup.clone(),
            streams,
        ))
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Zstd);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // The google.rpc error details (BadRequest, ...) that failed calls carry, so
                // grpcurl can print them.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let monitor = Box::pin(health::monitor(
            store.clone(),
            reporter.clone(),
            shutdown.clone(),
            settings.health_check_interval,
        ));

        let forget = Box::pin(forget_idle_keys(
            rate_limit.clone(),
            login_limits,
            signup,
            shutdown.clone(),
        ));
        // The architecture diagram's order, outermost first. Every call passes these: the
        // access log, metrics and trace span, the caller's deadline, the content type, and
        // the caller's fault for a request tonic could not read.
        let every_call = tower::ServiceBuilder::new()
            .layer(ActivityLayer {
                enabled: settings.connections.idle.is_some(),
            })
            .layer(AccessLogLayer {
                enabled: settings.access_log,
                metrics: metrics.clone(),
            })
            .layer(DeadlineLayer)
            .layer(ContentTypeLayer)
            .layer(DecodeFaultLayer);
        // Then the user and auth services' calls (health checks and reflection need no token
        // and are never limited): load shedding, before authentication so that calls with
        // bad tokens are shed like any other; authentication; the rate limit per caller.
        let authenticator = Arc::new(Authenticator::new(
            jwt.clone(),
            store.clone(),
            rate_limit.clone(),
            trusted_proxies,
        ));
        let guarded = tower::ServiceBuilder::new()
            .layer(ShedLayer::new(settings.max_concurrent_calls))
            .load_shed()
            .concurrency_limit(settings.max_concurrent_calls)
            .layer(AuthLayer::new(authenticator))
            .option_layer(rate_limit.config().cloned().map(RateLimitLayer::new));

        let mut builder = Server::builder();
        if let Some(tls) = &settings.tls {
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(config).map_err(StartupError::Tls)?;
        }
        if let Some((age, grace)) = settings.max_connection_age {
            builder = builder
                .max_connection_age(age)
                .max_connection_age_grace(grace);
        }
        let refused = Arc::new(connections::Refused::default());
        let mut server_stop = shutdown.clone();
        let server = Box::pin(
            builder
                .http2_keepalive_interval(Some(settings.keepalive_interval))
                .http2_keepalive_timeout(Some(settings.keepalive_timeout))
                .max_concurrent_streams(settings.max_concurrent_streams)
                .layer(every_call)
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(guarded.named_layer(users))
                .add_service(guarded.named_layer(auth))
                .serve_with_incoming_shutdown(
                    connections::incoming(listener, settings.connections, refused.clone()),
                    async move { server_stop.triggered().await },
                ),
        );
        Ok(Self {
            local_addr,
            store,
            jwt,
            settings,
            server,
            trigger,
            reporter,
            monitor,
            forget,
            refused,
            metrics_server,
        })
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(addr, _)| *addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The token verifier and minter this server uses.
    pub fn jwt(&self) -> Arc<Jwt> {
        self.jwt.clone()
    }

    /// Serves until `stop` resolves, then: health turns NOT_SERVING while calls are still
    /// served for the drain period, the listener closes, open streams end, in-flight calls get
    /// the grace period to finish, and storage is closed.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<(), StartupError> {
        let Self {
            local_addr,
            store,
            jwt: _,
            settings,
            server,
            trigger,
            reporter,
            monitor,
            forget,
            refused,
            metrics_server,
        } = self;
        let monitor = tokio::spawn(monitor);
        let metrics_server = metrics_server.map(|(addr, served)| {
            tracing::info!(%addr, "serving metrics at /metrics");
            tokio::spawn(served)
        });
        let forget = tokio::spawn(forget);
        health::set_all(&reporter, ServingStatus::Serving).await;
        tracing::info!(
            %local_addr,
            database = %crate::storage::redacted(&settings.storage.database_url),
            "serving"
        );

        let mut server = server;
        let served = tokio::select! {
            served = &mut server => served,
            () = stop => {
                // Load balancers see NOT_SERVING and stop sending calls while the ones they
                // already sent are still served; only then does the listener close.
                monitor.abort();
                health::set_all(&reporter, ServingStatus::NotServing).await;
                tracing::info!(
                    drain_ms = settings.shutdown_drain.as_millis() as u64,
                    grace = ?settings.shutdown_grace,
                    "shutting down: reporting NOT_SERVING while still serving"
                );
                let drained = tokio::time::timeout(settings.shutdown_drain, &mut server).await;
                // Closes the listener, sends GOAWAY and ends open streams.
                trigger.trigger();
                match drained {
                    // The server stopped by itself while draining.
                    Ok(served) => served,
                    Err(_) => tokio::time::timeout(settings.shutdown_grace, &mut server)
                        .await
                        .unwrap_or_else(|_| {
                            tracing::warn!("calls still open after the grace period were cut off");
                            Ok(())
                        }),
                }
            }
        };
        monitor.abort();
        forget.abort();
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        // Stream tasks end at shutdown; storage closes only once the last one has.
        trigger.trigger();
        if tokio::time::timeout(settings.shutdown_grace, trigger.tasks_ended())
            .await
            .is_err()
        {
            tracing::warn!("stream tasks still running after the grace period");
        }
        store.close().await?;
        if refused.count() > 0 {
            tracing::warn!(
                refused = refused.count(),
                "connections were refused because --max-connections were open"
            );
        }
        tracing::info!("stopped");
        Ok(served?)
    }
}

async fn forget_idle_keys(
    rate_limit: RateLimiter,
    login_limits: Arc<LoginLimits>,
    signup: Option<Arc<SignupLimit>>,
    mut shutdown: shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FORGET_IDLE_KEYS_EVERY) => {}
            () = shutdown.triggered() => return,
        }
        rate_limit.forget_idle_keys();
        login_limits.forget_idle_keys();
        if let Some(signup) = &signup {
            signup.forget_idle_keys();
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler does not fail on a running runtime");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
