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
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::authenticator::Authenticator;
use crate::auth::hasher::{HashError, PasswordHasher};
use crate::config::Settings;
use crate::connections;
use crate::domain::{Password, PasswordHash, Role};
use crate::grpc::UserServiceImpl;
use crate::grpc::auth_service::AuthServiceImpl;
use crate::grpc::signup::SignupLimit;
use crate::health;
use crate::metrics::{Metrics, methods_of};
use crate::middleware::{
    AccessLogLayer, ActivityLayer, AuthLayer, ClientAddressLayer, ContentTypeLayer, DeadlineLayer,
    DecodeFaultLayer, GrpcMetricsLayer, ProtocolLayer, RateLimitLayer, RequestWatchLayer,
    ShedLayer, TraceSpanLayer,
};
use crate::oidc::keys::KeyRing;
use crate::pb::{
    self, auth_service_server::AuthServiceServer, user_service_server::UserServiceServer,
};
use crate::rate::RateLimiter;
use crate::shutdown::{self, ShutdownTrigger};
use crate::storage::server_secrets::{DEVELOPMENT_KEK, SECRET_BYTES};
use crate::storage::signing_keys::RotationPolicy;
use crate::storage::{Store, StoreError};
use crate::streams::StreamControls;
use crate::tokens::{Jwt, KeyError};

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
        "no key-encryption key is configured and {0} is not a loopback address: a generated \
         development key is only for 127.0.0.1 or ::1; give --key-encryption-key-file or \
         USER_SERVICE_KEY_ENCRYPTION_KEY (at least 32 bytes, the same on every replica)"
    )]
    NoKeyOffLoopback(SocketAddr),
    #[error(
        "{0} is not a loopback address, so tokens need the public URL they are issued from: \
         give --issuer (USER_SERVICE_JWT_ISSUER), e.g. https://id.example.com"
    )]
    NoIssuerOffLoopback(SocketAddr),
    #[error("the key-encryption key must be at least 32 bytes, got {0}")]
    ShortKeyEncryptionKey(usize),
    #[error(
        "--signing-key-rotation ({rotation}) must be longer than --signing-key-publish-ahead \
         ({publish_ahead}): a key is published that long before it signs"
    )]
    RotationTooShort {
        rotation: String,
        publish_ahead: String,
    },
    #[error("cannot make or read the signing keys")]
    SigningKeys(#[from] crate::oidc::keys::RingError),
    #[error("invalid second-factor key")]
    SecondFactorKey(#[from] crate::auth::second_factor::ShortKey),
    #[error("cannot draw a random key")]
    Random(#[from] getrandom::Error),
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
    /// Work started with the server.
    background: Background,
    /// Connections closed at once because `--max-connections` were open.
    refused: Arc<connections::Refused>,
    /// The metrics endpoint's address and server, when `--metrics-listen` is set.
    metrics_server: Option<(SocketAddr, Task)>,
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How often idle rate-limit keys are forgotten.
const FORGET_IDLE_KEYS_EVERY: Duration = Duration::from_secs(60);

impl Application {
    /// Everything the server needs, ready to serve; nothing is served until `run_until`.
    /// The components, in the architecture diagram's order: keys and the hasher, the bound
    /// listener, storage, limits, metrics, health, the services, the layers every call
    /// passes, the layers of the user and auth services, and the server over the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let legacy = Jwt::new(&settings.auth.jwt)?;
        let hasher = settings.auth.hasher()?;
        let (listener, local_addr) = bind(settings.listener.addr).await?;
        let store = crate::database_wait::open(
            &settings.storage,
            settings.health.database_startup_wait,
            &listener,
            settings.listener.tls.is_none(),
        )
        .await?;
        let (trigger, shutdown) = shutdown::channel();
        let signing = signing(&settings, &store, local_addr, legacy).await?;
        let (jwt, development_key) = (signing.jwt.clone(), signing.development);
        let rate_limit = settings.limits.rate_limiter();
        let streams = StreamControls {
            limits: settings.streams.limits(),
            rate: rate_limit.clone(),
            watch_progress: settings.streams.watch_progress,
        };
        let sources = crate::metrics::Sources {
            store: store.clone(),
            streams: streams.limits.clone(),
            hashing: hasher.stats(),
        };
        let (metrics, metrics_server) = metrics(&settings, sources, shutdown.clone()).await?;
        let (reporter, health_service) = health::service(shutdown.clone(), streams.clone());
        health::set_all(&reporter, ServingStatus::Serving).await;
        let signup = settings.auth.signup_limit();
        let login_limits = settings.auth.login_limits();
        let auth = AuthServiceImpl::new(
            store.clone(),
            hasher.clone(),
            jwt.clone(),
            login_limits,
            decoy(&hasher).await?,
            settings.auth.session_ttl,
            settings.auth.password_strength(),
        )
        .with_second_factor(settings.second_factor_keys()?)
        .with_signing_keys(signing.ring.clone())
        .with_shutdown(shutdown.clone());
        let users = UserServiceImpl::new(
            store.clone(),
            hasher,
            shutdown.clone(),
            crate::grpc::MessageLimits {
                max_batch_items: settings.limits.max_batch_items,
                max_message_bytes: settings.limits.max_message_bytes,
            },
            signup.clone(),
            streams,
            page_tokens(&store).await?,
        )
        .with_password_strength(settings.auth.password_strength());
        let (reflection_v1, reflection_v1alpha) = reflection()?;
        let background = Background::start(
            &store,
            &reporter,
            &shutdown,
            settings.health.check_interval,
            (rate_limit.clone(), signup),
        );
        signing.keep(&store, &shutdown);
        let authenticator = Arc::new(Authenticator::new(
            jwt.clone(),
            store.clone(),
            rate_limit.clone(),
        ));
        let oidc = Arc::new(crate::oidc::endpoints::Endpoints::new(
            signing.ring,
            signing.issuer,
            jwt.clone(),
            authenticator.clone(),
            store.clone(),
            settings.limits.request_body_timeout,
        ));
        let every_call = tower::ServiceBuilder::new()
            .layer(ClientAddressLayer::new(&settings.limits.trusted_proxies))
            .layer(ActivityLayer {
                enabled: settings.listener.connections.idle.is_some(),
            })
            .layer(ProtocolLayer {
                connect: crate::connect::Methods::of_schema(settings.limits.body()),
                console: settings
                    .web
                    .console
                    .then_some(crate::console::Console { development_key }),
                body: settings.limits.body(),
                cors: settings.web.cors(),
                oidc,
            })
            .layer(RequestWatchLayer {
                body_timeout: settings.limits.request_body_timeout,
            })
            .layer(TraceSpanLayer {
                trace_ids: settings.telemetry.access_log,
            })
            .layer(AccessLogLayer {
                enabled: settings.telemetry.access_log,
            })
            .layer(GrpcMetricsLayer::new(metrics))
            .layer(DeadlineLayer)
            .layer(ContentTypeLayer)
            .layer(DecodeFaultLayer);
        // Health checks and reflection need no token and are never limited. Shedding comes
        // before authentication, so calls with bad tokens are shed like any other.
        let guarded = tower::ServiceBuilder::new()
            .layer(ShedLayer::new(settings.limits.max_concurrent_calls))
            .layer(AuthLayer::new(authenticator))
            .option_layer(rate_limit.config().cloned().map(RateLimitLayer::new));
        let refused = Arc::new(connections::Refused::default());
        let mut server_stop = shutdown.clone();
        let server = Box::pin(
            settings
                .listener
                .server()
                .map_err(StartupError::Tls)?
                .layer(every_call)
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(guarded.named_layer(user_service(users, &settings.limits)))
                .add_service(guarded.named_layer(auth_service(auth, &settings.limits)))
                .serve_with_incoming_shutdown(
                    connections::incoming(listener, settings.listener.connections, refused.clone()),
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
            background,
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
            background,
            refused,
            metrics_server,
        } = self;
        let monitor = tokio::spawn(background.monitor);
        let metrics_server = metrics_server.map(|(addr, served)| {
            tracing::info!(%addr, "serving metrics at /metrics");
            tokio::spawn(served)
        });
        let forget = tokio::spawn(background.forget);
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
                    drain_ms = settings.shutdown.drain.as_millis() as u64,
                    grace = ?settings.shutdown.grace,
                    "shutting down: reporting NOT_SERVING while still serving"
                );
                let drained = tokio::time::timeout(settings.shutdown.drain, &mut server).await;
                // Closes the listener, sends GOAWAY and ends open streams.
                trigger.trigger();
                match drained {
                    // The server stopped by itself while draining.
                    Ok(served) => served,
                    Err(_) => tokio::time::timeout(settings.shutdown.grace, &mut server)
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
        if tokio::time::timeout(settings.shutdown.grace, trigger.tasks_ended())
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
    signup: Option<Arc<SignupLimit>>,
    mut shutdown: shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FORGET_IDLE_KEYS_EVERY) => {}
            () = shutdown.triggered() => return,
        }
        rate_limit.forget_idle_keys();
        if let Some(signup) = &signup {
            signup.forget_idle_keys();
        }
    }
}

/// The service's signing keys and the token verifier and minter over them.
struct Signing {
    ring: KeyRing,
    jwt: Arc<Jwt>,
    /// The public URL tokens are issued from.
    issuer: String,
    /// The key-encryption key was generated for development.
    development: bool,
}

impl Signing {
    /// Runs a rotation pass every `pass_every` until shutdown, on every replica: the one that
    /// finds a key due adds it, the others read it.
    fn keep(&self, store: &Store, shutdown: &shutdown::Shutdown) {
        let (ring, store, mut shutdown) = (self.ring.clone(), store.clone(), shutdown.clone());
        shutdown.clone().spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(ring.pass_every()) => {}
                    () = shutdown.triggered() => return,
                }
                if let Err(err) = ring.pass(&store, false).await {
                    tracing::warn!(error = %crate::text::chain(&err), "a signing key rotation pass failed; the next one tries again");
                }
            }
        });
    }
}

/// The key-encryption key, the ring of signing keys read (and made, the first time) from
/// storage, and the issuer. Without a key-encryption key a loopback server generates one kept
/// in its database, logs so, and logs an admin token signed with its keys.
async fn signing(
    settings: &Settings,
    store: &Store,
    local_addr: SocketAddr,
    legacy: Jwt,
) -> Result<Signing, StartupError> {
    let keys = &settings.keys;
    if keys.rotation <= keys.publish_ahead {
        return Err(StartupError::RotationTooShort {
            rotation: crate::config::duration::shown(keys.rotation),
            publish_ahead: crate::config::duration::shown(keys.publish_ahead),
        });
    }
    let loopback = settings.listener.addr.ip().is_loopback();
    let configured = keys
        .key_encryption_key
        .as_ref()
        .or(settings.auth.second_factor_key.as_ref());
    let (kek, development) = match configured {
        Some(kek) => (kek.clone(), false),
        None if loopback => {
            let mut drawn = [0; SECRET_BYTES];
            getrandom::fill(&mut drawn)?;
            (store.server_secret(DEVELOPMENT_KEK, drawn).await?, true)
        }
        None => return Err(StartupError::NoKeyOffLoopback(settings.listener.addr)),
    };
    if kek.len() < SECRET_BYTES {
        return Err(StartupError::ShortKeyEncryptionKey(kek.len()));
    }
    let issuer = match &settings.auth.jwt.issuer {
        Some(issuer) => issuer.clone(),
        None if loopback => {
            let scheme = if settings.listener.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{local_addr}")
        }
        None => return Err(StartupError::NoIssuerOffLoopback(settings.listener.addr)),
    };
    let policy = RotationPolicy {
        publish_ahead: keys.publish_ahead,
        rotation: keys.rotation,
        retain: settings.auth.jwt.token_ttl + Duration::from_secs(crate::tokens::LEEWAY_SECS),
    };
    if settings.auth.jwt.private_key_pem.is_some() {
        tracing::warn!(
            "--jwt-private-key no longer signs: Login and Refresh sign with the service's own keys, published at /.well-known/jwks.json; --jwt-public-key still verifies the tokens it signed"
        );
    }
    let ring = KeyRing::new(crate::oidc::keys::sealer(&kek), policy, keys.algorithm);
    ring.pass(store, false).await?;
    let jwt = Arc::new(legacy.with_keys(Arc::new(ring.clone()), issuer.clone()));
    if development {
        let (token, _) = jwt
            .mint(
                "dev-admin",
                Role::Admin,
                Some(Duration::from_secs(24 * 3600)),
            )
            .map_err(|_| StartupError::NoKeyOffLoopback(settings.listener.addr))?;
        tracing::warn!(
            "no key-encryption key configured: generated one, kept in the database, that seals \
             the signing keys. DEVELOPMENT ONLY, an admin token valid for 24 hours: {token}"
        );
    }
    Ok(Signing {
        ring,
        jwt,
        issuer,
        development,
    })
}

/// Binds first, so the real address is known (port 0 in tests) before anything serves.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// The metrics registry and its endpoint, when `--metrics-listen` is set.
async fn metrics(
    settings: &Settings,
    sources: crate::metrics::Sources,
    shutdown: shutdown::Shutdown,
) -> Result<(Option<Arc<Metrics>>, Option<(SocketAddr, Task)>), StartupError> {
    let Some(addr) = settings.metrics.listen else {
        return Ok((None, None));
    };
    let (listener, local) = bind(addr).await?;
    let sources = Arc::new(sources);
    let metrics = Arc::new(Metrics::new(
        &methods_of(&[
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]),
        &sources,
    ));
    let served = Box::pin(crate::metrics::serve(
        listener,
        metrics.clone(),
        sources,
        shutdown,
    ));
    Ok((Some(metrics), Some((local, served as Task))))
}

/// The seal of page and resume tokens, under the key every replica reads from the database.
async fn page_tokens(store: &Store) -> Result<crate::grpc::page_token::TokenSeal, StartupError> {
    use crate::storage::server_secrets::PAGE_TOKENS;
    let mut drawn = [0; SECRET_BYTES];
    getrandom::fill(&mut drawn)?;
    let key = store.server_secret(PAGE_TOKENS, drawn).await?;
    Ok(crate::grpc::page_token::TokenSeal::new(&key))
}

/// A hash of a random password, verified against when a login names no user, so that an
/// unknown username takes as long as a wrong password.
async fn decoy(hasher: &PasswordHasher) -> Result<PasswordHash, HashError> {
    hasher
        .hash(Password::parse(uuid::Uuid::now_v7().to_string()).expect("36 characters"))
        .await
}

fn user_service(
    users: UserServiceImpl,
    limits: &crate::config::LimitSettings,
) -> UserServiceServer<UserServiceImpl> {
    UserServiceServer::new(users)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Zstd)
}

fn auth_service(
    auth: AuthServiceImpl,
    limits: &crate::config::LimitSettings,
) -> AuthServiceServer<AuthServiceImpl> {
    AuthServiceServer::new(auth)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes)
}

type Reflection<T> = tonic_reflection::server::v1::ServerReflectionServer<T>;

/// gRPC reflection, v1 and v1alpha, of the services and of the error details failed calls
/// carry (so grpcurl can print them).
#[allow(clippy::type_complexity)]
fn reflection() -> Result<
    (
        Reflection<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    StartupError,
> {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((configure().build_v1()?, configure().build_v1alpha()?))
}

/// Work that runs beside the server: the health monitor, and forgetting idle limit keys.
struct Background {
    monitor: Task,
    forget: Task,
}

impl Background {
    fn start(
        store: &Store,
        reporter: &HealthReporter,
        shutdown: &shutdown::Shutdown,
        check_interval: Duration,
        limits: (RateLimiter, Option<Arc<SignupLimit>>),
    ) -> Self {
        let (rate_limit, signup) = limits;
        Self {
            monitor: Box::pin(health::monitor(
                store.clone(),
                reporter.clone(),
                shutdown.clone(),
                check_interval,
            )),
            forget: Box::pin(forget_idle_keys(rate_limit, signup, shutdown.clone())),
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
