//! Logging: `RUST_LOG` picks what is logged, `--log-format` how. Lines are written by a worker
//! thread, off the request path: a call queues its access-log line and goes on. Under a load
//! the worker cannot keep up with, lines are dropped rather than calls slowed, and counted.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The log writer's count of dropped lines, for the metrics (set once the subscriber is).
static DROPPED: std::sync::OnceLock<ErrorCounter> = std::sync::OnceLock::new();

/// Lines dropped so far because the log writer's queue was full (0 before `init`).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |dropped| dropped.dropped_lines() as u64)
}

/// Lines queued for the writer before new ones are dropped.
const QUEUED_LINES: usize = 128_000;

/// Keeps the log writer running; dropping it writes every line still queued.
pub struct LogWriter {
    _worker: WorkerGuard,
    dropped: ErrorCounter,
}

impl LogWriter {
    /// Lines dropped so far because the queue was full.
    pub fn dropped_lines(&self) -> usize {
        self.dropped.dropped_lines()
    }
}

/// Installs the global subscriber; `info` when `RUST_LOG` is unset.
pub fn init(format: LogFormat) -> LogWriter {
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let _ = DROPPED.set(dropped.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    LogWriter {
        _worker: worker,
        dropped,
    }
}
