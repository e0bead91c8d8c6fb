//! The standard `grpc.health.v1` service, with health that follows the database and watch
//! streams that end when shutdown begins (so a health watcher cannot hold shutdown open).

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};
use tonic_health::server::{HealthReporter, HealthService};

use crate::grpc::stream_limits::StreamControls;
use crate::shutdown::Shutdown;
use crate::storage::Store;

/// The names health reports on: the whole server, and the user service.
pub const SERVICE_NAMES: [&str; 2] = ["", "userservice.UserService"];

pub struct DrainingHealth {
    inner: HealthService,
    shutdown: Shutdown,
    /// Health watches are streams, capped like the others (anonymous: per client address).
    streams: StreamControls,
}

/// The health service and the reporter that sets its statuses.
pub fn service(
    shutdown: Shutdown,
    streams: StreamControls,
) -> (HealthReporter, HealthServer<DrainingHealth>) {
    let reporter = HealthReporter::new();
    let inner = HealthService::from_health_reporter(reporter.clone());
    (
        reporter,
        HealthServer::new(DrainingHealth {
            inner,
            shutdown,
            streams,
        }),
    )
}

pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (place, _) = self.streams.enter(
            &crate::auth::Caller::Anonymous,
            &request,
            crate::grpc::stream_limits::StreamKind::HealthWatch,
        )?;
        let mut updates = self.inner.watch(request).await?.into_inner();
        let mut shutdown = self.shutdown.clone();
        let (sender, receiver) = mpsc::channel(4);
        self.shutdown.spawn(async move {
            let _place = place;
            loop {
                tokio::select! {
                    update = updates.next() => match update {
                        Some(update) => if sender.send(update).await.is_err() { return },
                        None => return,
                    },
                    () = shutdown.triggered() => {
                        let last = HealthCheckResponse {
                            status: health_check_response::ServingStatus::NotServing as i32,
                        };
                        let _ = sender.send(Ok(last)).await;
                        return;
                    }
                    () = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Asks the server at `addr` whether `service` is SERVING, within `timeout`: the container
/// health check (`user-service healthcheck`).
pub async fn probe(addr: &str, service: &str, timeout: Duration) -> Result<bool, String> {
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .map_err(|err| format!("{addr:?} is not a server address: {err}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let answer = async {
        let channel = endpoint.connect().await.map_err(|err| err.to_string())?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        Ok(response.into_inner().status == health_check_response::ServingStatus::Serving as i32)
    };
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// How long the health check's database query may take: a link that went silent turns
/// health NOT_SERVING within `interval + PING_LIMIT`.
pub const PING_LIMIT: Duration = Duration::from_millis(1500);

/// Reports NOT_SERVING while the database cannot answer (or cannot take writes: a standby),
/// and SERVING once it can again. Checked every `interval`, and whenever the store's
/// reachability changes.
pub async fn monitor(
    store: Store,
    reporter: HealthReporter,
    mut shutdown: Shutdown,
    interval: Duration,
) {
    let mut healthy = true;
    // PostgreSQL's log tail notices a lost connection at once: check then, not only on time.
    let mut reachable = store.reachable();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            changed = reachable.changed() => {
                if changed.is_err() {
                    // The store is gone: the server is stopping.
                    return;
                }
            }
            () = shutdown.triggered() => return,
        }
        let ping = store.ping(PING_LIMIT).await;
        if shutdown.is_triggered() {
            return;
        }
        match (healthy, ping) {
            (true, Err(err)) => {
                tracing::error!(error = %crate::error::chain(&err), "the database is unusable: reporting NOT_SERVING");
                set_all(&reporter, ServingStatus::NotServing).await;
                healthy = false;
            }
            (false, Ok(())) => {
                tracing::info!("the database is usable again: reporting SERVING");
                set_all(&reporter, ServingStatus::Serving).await;
                healthy = true;
            }
            _ => {}
        }
    }
}
