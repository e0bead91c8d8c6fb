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

use crate::shutdown::Shutdown;
use crate::storage::Store;
use crate::streams::StreamControls;

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
            &crate::caller::Caller::Anonymous,
            &request,
            crate::streams::StreamKind::HealthWatch,
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

/// How the health check reaches a server that serves TLS. It runs beside that server (a
/// container's HEALTHCHECK), so it trusts exactly the server's own certificate, whatever
/// names it holds and whoever signed it, and presents a client certificate when the server
/// requires one.
#[derive(Debug, Clone)]
pub struct ProbeTls {
    /// The server's certificate chain (PEM); its first certificate is the one trusted.
    pub server_cert_pem: Vec<u8>,
    /// A client certificate chain and its key (PEM), for a server that requires one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Asks the server at `addr` whether `service` is SERVING, within `timeout`: the container
/// health check (`user-service healthcheck`).
pub async fn probe(
    addr: &str,
    service: &str,
    timeout: Duration,
    tls: Option<&ProbeTls>,
) -> Result<bool, String> {
    use tonic_health::pb::health_client::HealthClient;
    // tonic speaks TLS only with its own verifier; with ours, it is given the TLS stream.
    let plain = match tls {
        Some(_) => addr.replacen("https://", "http://", 1),
        None => addr.to_owned(),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(plain)
        .map_err(|err| format!("{addr:?} is not a server address: {err}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let answer = async {
        let channel = match tls {
            Some(tls) => {
                let connector = pinned::connector(tls)?;
                endpoint.connect_with_connector(connector).await
            }
            None => endpoint.connect().await,
        }
        .map_err(|err| crate::text::chain(&err))?;
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

/// The health check's TLS client: rustls, trusting one certificate.
mod pinned {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    use super::ProbeTls;

    /// Accepts the one certificate it was given, and checks that the server holds its key.
    #[derive(Debug)]
    struct Pinned {
        certificate: CertificateDer<'static>,
        algorithms: WebPkiSupportedAlgorithms,
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if end_entity.as_ref() == self.certificate.as_ref() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General(
                    "the server presented another certificate than --tls-cert".into(),
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    }

    type Connector = tower::util::BoxCloneService<
        http::Uri,
        hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        std::io::Error,
    >;

    pub fn connector(tls: &ProbeTls) -> Result<Connector, String> {
        let certificate = CertificateDer::pem_slice_iter(&tls.server_cert_pem)
            .next()
            .ok_or("--tls-cert holds no certificate")?
            .map_err(|err| format!("--tls-cert: {err}"))?;
        let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned {
            certificate,
            algorithms: provider.signature_verification_algorithms,
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &tls.client {
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| format!("--tls-cert: {err}"))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|err| format!("--tls-key: {err}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| err.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        Ok(tower::util::BoxCloneService::new(tower::service_fn(
            move |uri: http::Uri| {
                let connector = connector.clone();
                async move {
                    let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
                    let port = uri.port_u16().unwrap_or(443);
                    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
                    // The name is not checked (the certificate is); any valid one will do.
                    let name = ServerName::try_from(host.to_owned())
                        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a name"));
                    let stream = connector.connect(name, tcp).await?;
                    Ok(hyper_util::rt::TokioIo::new(stream))
                }
            },
        )))
    }
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
                tracing::error!(error = %crate::text::chain(&err), "the database is unusable: reporting NOT_SERVING");
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
