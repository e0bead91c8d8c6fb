//! Request bodies that stop halfway: a one-message request has `--request-body-timeout` to
//! arrive whole, over HTTP/1.1 (Connect, gRPC-Web) and HTTP/2 (gRPC) alike, so a client that
//! sends a byte and stops holds no connection or call slot; a stream of messages may still
//! pause between them.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use user_service::domain::Role;
use user_service::pb::{GetUserRequest, UpdateUserRequest};

use crate::helpers::{TestApp, create};
use crate::raw;

const BOUND: Duration = Duration::from_secs(1);

async fn app() -> TestApp {
    TestApp::spawn_with(|settings| settings.limits.request_body_timeout = BOUND).await
}

/// Sends an HTTP/1.1 request whose body promises 100 bytes and stops after one: what the
/// server answers, and how long it took.
async fn stalled_http1(app: &TestApp, path: &str, content_type: &str) -> (String, Duration) {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: 100\r\n\r\n{{",
        app.addr
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes the connection, not waiting for the rest")
        .unwrap();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_connect_body_that_stops_after_one_byte_is_answered_at_the_bound() {
    let app = app().await;
    let (answer, took) =
        stalled_http1(&app, "/userservice.UserService/GetUser", "application/json").await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("deadline_exceeded"), "{answer}");
    assert!(answer.contains("--request-body-timeout"), "{answer}");
    assert!(took >= BOUND && took < BOUND * 5, "{took:?}");
}

#[tokio::test]
async fn a_grpc_web_body_that_stops_after_one_byte_is_answered_at_the_bound() {
    let app = app().await;
    let (answer, took) = stalled_http1(
        &app,
        "/userservice.UserService/GetUser",
        "application/grpc-web+proto",
    )
    .await;
    assert!(answer.contains("grpc-status: 4"), "{answer}");
    assert!(answer.contains("request-body-timeout"), "{answer}");
    assert!(took >= BOUND && took < BOUND * 5, "{took:?}");
}

#[tokio::test]
async fn a_grpc_body_that_stops_after_one_byte_ends_deadline_exceeded_at_the_bound() {
    let app = app().await;
    let bearer = format!("Bearer {}", app.token("test-admin", Role::Admin));
    let whole = raw::frame(&GetUserRequest {
        user_id: uuid::Uuid::now_v7().to_string(),
    });
    let started = Instant::now();
    let status = raw::call(
        app.addr,
        "/userservice.UserService/GetUser",
        &[("authorization", &bearer)],
        whole.slice(..1),
        false,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--request-body-timeout"),
        "{status:?}"
    );
    assert!(took >= BOUND && took < BOUND * 5, "{took:?}");
}

#[tokio::test]
async fn a_sync_stream_may_pause_longer_than_the_bound_between_messages() {
    let app = app().await;
    let mut client = app.client().await;
    let user = create(&mut client, "pausing").await;
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    let mut replies = client
        .sync_users(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    for name in ["First Name", "Second Name"] {
        sender
            .send(UpdateUserRequest {
                user_id: user.id.clone(),
                full_name: Some(name.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let reply = replies
            .message()
            .await
            .expect("the stream is healthy")
            .unwrap();
        assert_eq!(reply.user.unwrap().full_name, name);
        tokio::time::sleep(BOUND * 2).await;
    }
}

#[tokio::test]
async fn an_introspection_form_that_stops_after_one_byte_is_answered_at_the_bound() {
    let app = app().await;
    let key = crate::auth::keys::create_key(&app, "slow", user_service::pb::UserRole::User, None)
        .await
        .secret;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /oauth2/introspect HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nt",
        app.addr
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers, not waiting for the rest")
        .unwrap();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--request-body-timeout"), "{answer}");
    assert!(took >= BOUND && took < BOUND * 5, "{took:?}");
}
