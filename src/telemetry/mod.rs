//! Logging and traces. `RUST_LOG` picks what is logged, `--log-format` how. Lines are written
//! by a thread of their own, off the request path (`sink`): a call queues its access-log line
//! (formatted by `access`) and goes on. Under a load the writer cannot keep up with, lines are
//! dropped rather than calls slowed, and counted. With `--otlp-endpoint`, spans (one per
//! call, with storage and hashing work as children) are exported over OTLP/gRPC; without it
//! no span is even created.

mod access;
mod sink;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use access::ACCESS_TARGET;
use access::AccessLines;
use sink::{Dropped, Sink};

/// How log lines are written: for people, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The target of the spans this server makes for traces. They are at DEBUG level, so that the
/// default log filter (`info`) leaves them disabled and free when no traces are exported.
pub const SPAN_TARGET: &str = "user_service::span";

/// The log writer's count of dropped lines, for the metrics (set once the subscriber is).
static DROPPED: std::sync::OnceLock<Dropped> = std::sync::OnceLock::new();

/// Lines dropped so far because the log writer's queue was full (0 before `init`).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, Dropped::count)
}

/// Keeps the log writer running and the span exporter with it; `finish` writes every line
/// still queued and sends every span still held.
pub struct LogWriter {
    sink: Sink,
    traces: Option<SdkTracerProvider>,
}

impl LogWriter {
    /// Lines dropped so far because the queue was full.
    pub fn dropped_lines(&self) -> u64 {
        self.sink.dropped().count()
    }

    /// Sends the spans not yet exported (waiting up to `EXPORT_TIMEOUT`), then writes the
    /// queued lines. Call it while the runtime the exporter was built on still runs.
    pub fn finish(mut self) {
        if let Some(traces) = self.traces.take()
            && let Err(err) = traces.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            tracing::warn!("spans not exported at shutdown: {err}");
        }
        self.sink.finish();
    }
}

/// How long one export of spans may take, and the flush at shutdown.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot export traces to {endpoint}")]
    Traces {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot start the log writer")]
    Writer(#[source] std::io::Error),
}

/// Installs the global subscriber: log lines (`info` when `RUST_LOG` is unset) and, with an
/// OTLP endpoint, trace export. Call it inside the server's runtime: the exporter's gRPC
/// connection lives there.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<LogWriter, TelemetryError> {
    let traces = otlp_endpoint.map(tracer_provider).transpose()?;
    let sink = Sink::start().map_err(TelemetryError::Writer)?;
    let _ = DROPPED.set(sink.dropped());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(sink.lines())
        .with_ansi(std::io::stderr().is_terminal());
    let general = tracing_subscriber::fmt::format();
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => lines
            .event_format(AccessLines::text(general))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => lines
            .event_format(AccessLines::json(general.json().flatten_event(true)))
            .fmt_fields(JsonFields::new())
            .with_filter(filter)
            .boxed(),
    };
    // Only this server's own spans become trace spans; its log events stay log lines.
    let spans = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("user-service"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(|metadata| {
                metadata.is_span() && metadata.target() == SPAN_TARGET
            }))
    });
    tracing_subscriber::registry()
        .with(lines)
        .with(spans)
        .init();
    Ok(LogWriter { sink, traces })
}

fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| TelemetryError::Traces {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let exporter = OnRuntime {
        inner: exporter,
        runtime: tokio::runtime::Handle::current(),
        endpoint: endpoint.to_owned(),
        failing: std::sync::atomic::AtomicBool::new(false),
    };
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME, when set, names the service instead.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("user-service");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The OTLP exporter's gRPC client needs a Tokio runtime, but the SDK's batch processor
/// exports from a thread of its own; each export is driven on the server's runtime instead.
/// An export that fails is logged once (a collector that cannot be reached would otherwise
/// cost every span silently), and so is the first that works again.
#[derive(Debug)]
struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
    endpoint: String,
    failing: std::sync::atomic::AtomicBool,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        use std::sync::atomic::Ordering;
        let spans = batch.len();
        let exported = self.runtime.block_on(self.inner.export(batch));
        match &exported {
            Err(err) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint,
                error = %err,
                spans,
                "cannot export trace spans: they are dropped until the collector answers"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "exporting trace spans works again");
            }
            _ => {}
        }
        std::future::ready(exported)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
