//! Connecting to the first host of the setting that answers and takes writes, each host within
//! the connect timeout as a whole, handshake and session check included. The driver bounds
//! only the TCP connect, and a frozen host (a stopped process, a hung machine whose kernel
//! still accepts) takes the connection and never answers: without this, every new connection
//! would wait on the first host of a multi-host URL forever and never reach the new primary.

use std::time::Duration;

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

/// The pool's way to connect (`first_writable`).
pub(super) struct FirstWritable;

impl Connect for FirstWritable {
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = config.clone();
        Box::pin(async move {
            let (client, connection) = first_writable(&config).await?;
            let task = tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "a pooled database connection ended");
                }
            });
            Ok((client, task))
        })
    }
}

/// Tries each host in order, each for the connect timeout, keeping the setting's
/// `target_session_attrs` (so `read-write` passes over standbys).
pub(super) async fn first_writable(
    config: &Config,
) -> Result<(Client, Connection<Socket, NoTlsStream>), tokio_postgres::Error> {
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let hosts = config.get_hosts().len();
    if hosts <= 1 {
        return bounded(config.connect(NoTls), limit).await;
    }
    let mut last = None;
    for index in 0..hosts {
        match bounded(single_host(config, index).connect(NoTls), limit).await {
            Ok(connected) => return Ok(connected),
            Err(err) => last = Some(err),
        }
    }
    Err(last.expect("at least two hosts were tried"))
}

async fn bounded<T>(
    connecting: impl Future<Output = Result<T, tokio_postgres::Error>>,
    limit: Duration,
) -> Result<T, tokio_postgres::Error> {
    tokio::time::timeout(limit, connecting)
        .await
        // The driver's own timeout error, as its TCP connect timeout reports it (it has no
        // other public constructor).
        .unwrap_or_else(|_| Err(tokio_postgres::Error::__private_api_timeout()))
}

/// Whether `err` is a host that did not answer in time (`bounded`'s error).
pub(super) fn timed_out(err: &tokio_postgres::Error) -> bool {
    // The driver's error kinds are private; its timeout has no source and a fixed text.
    std::error::Error::source(err).is_none()
        && err.to_string() == tokio_postgres::Error::__private_api_timeout().to_string()
}

/// The setting with only its `index`th host (and that host's port and address).
fn single_host(config: &Config, index: usize) -> Config {
    let mut one = Config::new();
    if let Some(user) = config.get_user() {
        one.user(user);
    }
    if let Some(password) = config.get_password() {
        one.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        one.options(options);
    }
    if let Some(name) = config.get_application_name() {
        one.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    one.keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .ssl_mode(config.get_ssl_mode())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding());
    if let Some(interval) = config.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    match &config.get_hosts()[index] {
        Host::Tcp(host) => one.host(host),
        Host::Unix(path) => one.host_path(path),
    };
    if let Some(address) = config.get_hostaddrs().get(index) {
        one.hostaddr(*address);
    }
    // One port for every host, or one each.
    let ports = config.get_ports();
    if let Some(port) = ports.get(index).or(ports.first()) {
        one.port(*port);
    }
    one
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_keeps_its_own_port_and_every_shared_setting() {
        let config: Config = "postgres://app:pw@a:5441,b:5442/users?target_session_attrs=read-write&options=-c%20x%3D1"
            .parse()
            .unwrap();
        let second = single_host(&config, 1);
        assert_eq!(second.get_hosts(), &[Host::Tcp("b".into())]);
        assert_eq!(second.get_ports(), &[5442]);
        assert_eq!(second.get_user(), Some("app"));
        assert_eq!(second.get_password(), Some(&b"pw"[..]));
        assert_eq!(second.get_dbname(), Some("users"));
        assert_eq!(second.get_options(), Some("-c x=1"));
        assert_eq!(
            second.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        let shared: Config = "host=a,b port=6000 user=app".parse().unwrap();
        assert_eq!(single_host(&shared, 1).get_ports(), &[6000]);
    }
}
