//! Start-up's wait for the database: while it is unreachable, or only a standby answers
//! (during a failover), start-up retries with backoff, one log line per try, and the bound
//! listener answers health checks with NOT_SERVING, so an orchestrator sees a live process
//! that is not ready rather than one that exited.

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::storage::{StorageSettings, Store, StoreError};

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long the waiting health server's callers get to hear it is going before it closes.
const HANDOVER: Duration = Duration::from_millis(500);

/// Opens storage, retrying while the error is `Unavailable` for at most `wait` (`None`: for
/// good). `listener` answers health checks meanwhile when `health` is set (plaintext only: a
/// TLS client would not get through, and sees the server as not ready all the same).
pub async fn open(
    settings: &StorageSettings,
    wait: Option<Duration>,
    listener: &TcpListener,
    health: bool,
) -> Result<Store, StoreError> {
    let started = Instant::now();
    let mut delay = RETRY_MIN;
    let mut standby: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    let opened = loop {
        let err = match Store::open(settings).await {
            Ok(store) => break Ok(store),
            Err(err @ StoreError::Unavailable(_)) => err,
            Err(err) => break Err(err),
        };
        let left = wait.map(|wait| wait.saturating_sub(started.elapsed()));
        if left.is_some_and(|left| left.is_zero()) {
            tracing::error!(
                waited = ?started.elapsed(),
                "the database never became ready: giving up (--database-startup-wait-secs)"
            );
            break Err(err);
        }
        tracing::warn!(
            "the database is not ready ({err}): retrying in {} ms; health reports NOT_SERVING meanwhile",
            left.map_or(delay, |left| left.min(delay)).as_millis()
        );
        if health && standby.is_none() {
            standby = serve_not_serving(listener).await;
        }
        tokio::time::sleep(left.map_or(delay, |left| left.min(delay))).await;
        delay = (delay * 2).min(RETRY_MAX);
    };
    if let Some((stop, served)) = standby {
        stop.cancel();
        if tokio::time::timeout(HANDOVER, served).await.is_err() {
            tracing::debug!("the waiting health server's watchers were cut off");
        }
    }
    opened
}

/// A health service on a second handle of the bound listener, reporting NOT_SERVING for
/// every name, until stopped. `None` (logged) when the listener cannot be shared.
async fn serve_not_serving(
    listener: &TcpListener,
) -> Option<(CancellationToken, tokio::task::JoinHandle<()>)> {
    let shared = listener
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpListener::from)
        .and_then(|shared| {
            shared.set_nonblocking(true)?;
            TcpListener::from_std(shared)
        });
    let shared = match shared {
        Ok(shared) => shared,
        Err(err) => {
            tracing::warn!(error = %err, "cannot answer health checks while waiting for the database");
            return None;
        }
    };
    let (reporter, service) = tonic_health::server::health_reporter();
    crate::health::set_all(&reporter, ServingStatus::NotServing).await;
    if let Ok(local_addr) = listener.local_addr() {
        tracing::info!(%local_addr, "answering health checks with NOT_SERVING until the database is ready");
    }
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let served = tokio::spawn(async move {
        let _reporter = reporter;
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(shared), stopped.cancelled())
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "the waiting health server failed");
        }
    });
    Some((stop, served))
}
