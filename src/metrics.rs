//! Prometheus metrics, served at `/metrics` on `--metrics-listen` in the OpenMetrics text
//! format by prometheus-client: the gRPC server metrics under the names go-grpc-prometheus
//! made standard (so existing dashboards work), and the service's own.
//!
//! Every method the server serves gets its counters when the server starts, so a call only
//! looks its method up and increments; nothing is allocated per call.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prost::Message;
use tonic::Code;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

/// gRPC codes as go-grpc-prometheus names them (Go's `codes.Code.String()`), by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// go-grpc-prometheus's default buckets (Prometheus's `DefBuckets`), in seconds.
const SECONDS_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// One method's metrics, taken out of the families once.
pub struct MethodMetrics {
    started: Counter,
    received: Counter,
    sent: Counter,
    handled: Vec<Counter>,
    seconds: Histogram,
}

impl crate::call::ReceivedMessages for MethodMetrics {
    fn received(&self, messages: u64) {
        self.received.inc_by(messages);
    }
}

impl MethodMetrics {
    pub fn started(&self) {
        self.started.inc();
    }

    pub fn sent(&self, messages: u64) {
        self.sent.inc_by(messages);
    }

    pub fn handled(&self, code: Code, took: Duration) {
        let index = usize::try_from(code as i32).unwrap_or(2).min(16);
        self.handled[index].inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

/// Every metric the server exposes.
pub struct Metrics {
    registry: Registry,
    /// Looked up by path on every call: a fast hasher (the keys are the server's own).
    methods: HashMap<String, Arc<MethodMetrics>, foldhash::fast::RandomState>,
    /// Users by status, read from storage at each scrape.
    pub users: Family<StatusLabels, Gauge>,
    pub head_revision: Gauge,
    pub oldest_revision: Gauge,
    /// Streaming calls open now, by kind: `watch` (live watchers), `sync`, `batch`,
    /// `health_watch`.
    pub open_streams: Family<KindLabels, Gauge>,
    /// Calls refused before a handler ran, by reason: `rate_limit`, `load_shed`.
    pub refused: Family<ReasonLabels, Counter>,
    /// Database connections by state: `in_use`, `idle`, `waiting` (callers waiting for one).
    pub database_connections: Family<StateLabels, Gauge>,
    log_lines_dropped: Counter,
    log_lines_dropped_seen: AtomicU64,
    argon2_waiting: Gauge,
}

/// `(path, grpc_type)` of every method in these encoded file descriptor sets.
pub fn methods_of(descriptor_sets: &[&[u8]]) -> Vec<(String, &'static str)> {
    let mut methods = Vec::new();
    for encoded in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                let name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    methods.push((format!("/{name}/{}", method.name()), grpc_type));
                }
            }
        }
    }
    methods
}

impl Metrics {
    /// Metrics for these methods (`(path, grpc_type)`), each registered with zeros.
    /// The metrics of these methods, and the histograms `sources` keep.
    pub fn new(methods: &[(String, &'static str)], sources: &Sources) -> Self {
        let mut registry = Registry::default();
        let started = Family::<MethodLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let received = Family::<MethodLabels, Counter>::default();
        let sent = Family::<MethodLabels, Counter>::default();
        let seconds = Family::<MethodLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        // Help texts end without a period: prometheus-client adds one.
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server",
            received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server",
            sent.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
            seconds.clone(),
        );
        let methods = methods
            .iter()
            .map(|(path, grpc_type)| {
                let (service, method) = path
                    .trim_start_matches('/')
                    .split_once('/')
                    .unwrap_or(("", path));
                let labels = MethodLabels {
                    grpc_type,
                    grpc_service: service.to_owned(),
                    grpc_method: method.to_owned(),
                };
                let handled = CODE_NAMES
                    .iter()
                    .map(|grpc_code| {
                        handled
                            .get_or_create(&HandledLabels {
                                grpc_type,
                                grpc_service: service.to_owned(),
                                grpc_method: method.to_owned(),
                                grpc_code,
                            })
                            .clone()
                    })
                    .collect();
                let metrics = MethodMetrics {
                    started: started.get_or_create(&labels).clone(),
                    received: received.get_or_create(&labels).clone(),
                    sent: sent.get_or_create(&labels).clone(),
                    handled,
                    seconds: seconds.get_or_create(&labels).clone(),
                };
                (path.clone(), Arc::new(metrics))
            })
            .collect();

        let users = Family::<StatusLabels, Gauge>::default();
        registry.register("user_service_users", "Users by status", users.clone());
        let head_revision = Gauge::default();
        registry.register(
            "user_service_event_log_head_revision",
            "The revision of the newest change this server has applied",
            head_revision.clone(),
        );
        let oldest_revision = Gauge::default();
        registry.register(
            "user_service_event_log_oldest_revision",
            "The oldest revision the event log still holds (watches resume from it or later)",
            oldest_revision.clone(),
        );
        let open_streams = Family::<KindLabels, Gauge>::default();
        registry.register(
            "user_service_open_streams",
            "Streaming calls open now, by kind (watch: live watchers; sync; batch; health_watch)",
            open_streams.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "user_service_refused_calls",
            "Calls refused before a handler ran, by reason (rate_limit, load_shed)",
            refused.clone(),
        );
        let database_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "user_service_database_connections",
            "Database connections by state (in_use, idle, waiting: callers waiting for one)",
            database_connections.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "user_service_access_log_dropped_lines",
            "Log lines dropped because the log writer could not keep up",
            log_lines_dropped.clone(),
        );
        let argon2_waiting = Gauge::default();
        registry.register(
            "user_service_argon2_queue_depth",
            "Password hashes waiting for a core",
            argon2_waiting.clone(),
        );
        registry.register(
            "user_service_argon2_duration_seconds",
            "Time an Argon2 hash or verification took on its core",
            sources.hashing.hashing.histogram(),
        );
        registry.register(
            "user_service_commit_duration_seconds",
            "Time a write transaction took from begin to commit",
            sources.store.commit_times().histogram(),
        );
        Self {
            argon2_waiting,
            registry,
            methods,
            users,
            head_revision,
            oldest_revision,
            open_streams,
            refused,
            database_connections,
            log_lines_dropped,
            log_lines_dropped_seen: AtomicU64::new(0),
        }
    }

    /// The metrics of the method at `path` (`/package.Service/Method`), if the server serves it.
    pub fn method(&self, path: &str) -> Option<Arc<MethodMetrics>> {
        self.methods.get(path).cloned()
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Brings the dropped-lines counter up to the log writer's own count.
    pub fn log_lines_dropped(&self, total: u64) {
        let seen = self
            .log_lines_dropped_seen
            .fetch_max(total, Ordering::AcqRel);
        if total > seen {
            self.log_lines_dropped.inc_by(total - seen);
        }
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// What a scrape reads besides the counters: storage and the stream caps.
pub struct Sources {
    pub store: crate::storage::Store,
    pub streams: Arc<crate::streams::StreamLimits>,
    pub hashing: Arc<crate::auth::hasher::HashStats>,
}

impl Metrics {
    /// Brings the gauges up to date for a scrape.
    async fn refresh(&self, sources: &Sources) {
        use crate::domain::UserStatus;
        use crate::storage::ListQuery;
        for status in [
            UserStatus::Active,
            UserStatus::Inactive,
            UserStatus::Suspended,
        ] {
            let query = ListQuery {
                status: Some(status),
                role: None,
                after: None,
                limit: 0,
            };
            // A database that cannot answer leaves the last value; health says why.
            if let Ok(page) = sources.store.list(query).await {
                self.users
                    .get_or_create(&StatusLabels {
                        status: status.name(),
                    })
                    .set(i64::try_from(page.total).unwrap_or(i64::MAX));
            }
        }
        self.head_revision.set(sources.store.head_revision());
        self.oldest_revision.set(sources.store.oldest_revision());
        for kind in crate::streams::StreamKind::ALL {
            self.open_streams
                .get_or_create(&KindLabels { kind: kind.name() })
                .set(i64::try_from(sources.streams.open_streams(kind)).unwrap_or(i64::MAX));
        }
        if let Some(pool) = sources.store.connections() {
            for (state, count) in [
                ("in_use", pool.in_use),
                ("idle", pool.idle),
                ("waiting", pool.waiting),
            ] {
                self.database_connections
                    .get_or_create(&StateLabels { state })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        self.log_lines_dropped(crate::telemetry::dropped_lines());
        let waiting = sources.hashing.waiting.load(Ordering::Relaxed);
        self.argon2_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }
}

/// Serves `/metrics` over HTTP/1.1 on `listener` until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    sources: Arc<Sources>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a metrics connection failed");
                    continue;
                }
            },
            () = shutdown.triggered() => return,
        };
        let (metrics, sources) = (metrics.clone(), sources.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (metrics, sources) = (metrics.clone(), sources.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(answer(request, &metrics, &sources).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: http::Request<hyper::body::Incoming>,
    metrics: &Metrics,
    sources: &Sources,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) = if request.uri().path() != "/metrics" {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            String::from("not found: try /metrics\n"),
        )
    } else if request.method() != http::Method::GET {
        (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            String::from("GET /metrics\n"),
        )
    } else {
        metrics.refresh(sources).await;
        (
            http::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    };
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Counts gRPC messages in a body as it passes, by their length-prefixed framing (a message
/// may span several HTTP/2 frames, and a frame may hold several messages).
#[derive(Default)]
pub struct MessageCounter {
    header: [u8; 5],
    header_len: usize,
    remaining: u64,
}

impl MessageCounter {
    /// Reads `bytes`; returns how many messages began in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut started = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.remaining -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == 5 {
                started += 1;
                self.header_len = 0;
                let length = [
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ];
                self.remaining = u64::from(u32::from_be_bytes(length));
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn messages_are_counted_however_the_bytes_are_split() {
        let mut stream = framed(b"hello");
        stream.extend(framed(b""));
        stream.extend(framed(&[7; 300]));
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let mut counter = MessageCounter::default();
            let counted: u64 = stream.chunks(chunk).map(|part| counter.feed(part)).sum();
            assert_eq!(counted, 3, "in chunks of {chunk}");
        }
    }

    #[test]
    fn every_method_of_the_schema_has_its_type() {
        let methods = methods_of(&[crate::pb::FILE_DESCRIPTOR_SET]);
        let type_of = |path: &str| {
            methods
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, grpc_type)| *grpc_type)
        };
        assert_eq!(type_of("/userservice.UserService/GetUser"), Some("unary"));
        assert_eq!(
            type_of("/userservice.UserService/WatchUsers"),
            Some("server_stream")
        );
        assert_eq!(
            type_of("/userservice.UserService/BatchCreateUsers"),
            Some("client_stream")
        );
        assert_eq!(
            type_of("/userservice.UserService/SyncUsers"),
            Some("bidi_stream")
        );
    }
}
