//! Connections that never speak, too many connections, and idle connections, tried with raw
//! sockets against the real server.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// Waits up to `within` for the server to close `socket`; false if it is still open.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 64];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // The server's own preface or settings: keep reading until it closes.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// `count` connections to `addr` that say nothing.
async fn hold(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    held
}

#[tokio::test]
async fn connections_that_never_speak_are_closed_after_the_handshake_timeout() {
    let app = TestApp::spawn_with(|settings| {
        settings.listener.connections.handshake = Duration::from_millis(500);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    for socket in &mut silent {
        assert!(
            closed_within(socket, Duration::from_secs(10)).await,
            "a silent connection is still open"
        );
    }
    // Speaking clients are served as ever.
    let mut client = app.client().await;
    client
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .expect("a real client is served");
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_at_once() {
    let app = TestApp::spawn_with(|settings| settings.listener.connections.max = 3).await;
    let held = hold(app.addr, 3).await;
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "the fourth connection is refused at once"
    );
    drop(held);
    let mut client = None;
    for _ in 0..50 {
        if let Ok(channel) = app.endpoint().connect().await {
            client = Some(app.client_on(channel));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.expect("places free up when connections close");
    client
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .expect("served once there is room");
}

/// A server closing connections idle for 500 ms, and one HTTP/2 connection to it: the server,
/// the client's handle and the connection's task, which ends when the server closes it.
async fn connection_idle_after_500ms() -> (
    TestApp,
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let app = TestApp::spawn_with(|settings| {
        settings.listener.connections.idle = Some(Duration::from_millis(500));
    })
    .await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    (app, client, tokio::spawn(connection))
}

/// One health check over `client`, read to its end: the client for the next, or why the
/// connection could not carry it.
async fn health_check(
    client: h2::client::SendRequest<bytes::Bytes>,
    app: &TestApp,
) -> Result<h2::client::SendRequest<bytes::Bytes>, h2::Error> {
    let request = http::Request::post(format!("http://{}/grpc.health.v1.Health/Check", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut client = client.ready().await?;
    let (response, mut send) = client.send_request(request, false)?;
    send.send_data(
        crate::raw::frame(&tonic_health::pb::HealthCheckRequest::default()),
        true,
    )?;
    let mut body = response.await?.into_body();
    while body.data().await.is_some() {}
    let _ = body.trailers().await;
    Ok(client)
}

#[tokio::test]
async fn a_connection_that_carries_no_call_is_closed_after_the_idle_time() {
    let (app, client, connection) = connection_idle_after_500ms().await;
    // One call, then nothing.
    health_check(client, &app)
        .await
        .expect("the call is served");
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        ended.is_ok(),
        "the idle connection was closed by the server"
    );
}

#[tokio::test]
async fn a_connection_that_keeps_calling_within_the_idle_time_stays_open() {
    let (app, mut client, connection) = connection_idle_after_500ms().await;
    // Calls 200 ms apart for two seconds, four idle times: each idle spell is shorter than
    // the idle time, so the connection must carry every one of them.
    for call in 0..10 {
        client = health_check(client, &app)
            .await
            .unwrap_or_else(|err| panic!("call {call}: the connection was closed: {err}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then nothing: closed once idle.
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        ended.is_ok(),
        "the idle connection was closed by the server"
    );
}

/// A health check sent from `source` (another loopback address than the harness's).
async fn health_from(source: &str, server: std::net::SocketAddr) -> Result<i32, String> {
    let source: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    let connector = tower::service_fn(move |_: http::Uri| async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(source)?;
        let stream = socket.connect(server).await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
    });
    let channel = tonic::transport::Endpoint::from_static("http://checked.invalid")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_with_connector(connector)
        .await
        .map_err(|err| err.to_string())?;
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|response| response.into_inner().status)
        .map_err(|status| status.to_string())
}

#[tokio::test]
async fn one_address_holding_its_cap_leaves_room_for_every_other_address() {
    let app = TestApp::spawn_with(|settings| {
        settings.listener.connections.max = 10;
        settings.listener.connections.per_address = 3;
    })
    .await;
    let held = hold(app.addr, 3).await;
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a fourth connection from the same address is refused at once"
    );
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(
        health_from("127.0.0.2", app.addr).await,
        Ok(serving),
        "a health probe from another address gets through"
    );
    assert!(
        health_from("127.0.0.1", app.addr).await.is_err(),
        "the full address is still refused"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        health_from("127.0.0.1", app.addr).await,
        Ok(serving),
        "its places free up when its connections close"
    );
}

#[test]
fn idle_connections_are_closed_after_five_minutes_unless_told_otherwise() {
    let settings = user_service::config::Settings::default();
    assert_eq!(
        settings.listener.connections.idle,
        Some(Duration::from_secs(300)),
        "the default idle time"
    );
    assert!(
        settings.listener.connections.per_address < settings.listener.connections.max,
        "one address cannot take every connection by default"
    );
}
