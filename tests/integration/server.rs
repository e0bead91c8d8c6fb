//! Health, reflection, compression and graceful shutdown.

use std::time::Duration;

use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as ReflectionV1;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as ReflectionV1Alpha;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
use user_service::pb::{GetUserRequest, WatchUsersRequest};

use crate::helpers::{TestApp, create};

const SERVICES: [&str; 2] = ["", "userservice.UserService"];

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_user_service() {
    let app = TestApp::spawn().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in SERVICES {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn reflection_lists_the_services_over_v1_and_v1alpha() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;

    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Request::ListServices(String::new())),
    };
    let mut v1 = ReflectionV1::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(V1Response::ListServicesResponse(list)) =
        v1.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1 did not list services");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"userservice.UserService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::FileContainingSymbol(
            "userservice.UserService".into(),
        )),
    };
    let mut alpha = ReflectionV1Alpha::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(AlphaResponse::FileDescriptorResponse(files)) =
        alpha.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha did not describe the service");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn gzip_and_zstd_are_accepted_and_used_for_responses_on_request() {
    let app = TestApp::spawn().await;
    let mut plain = app.client().await;
    let user = create(&mut plain, "squeezed").await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = app
            .client()
            .await
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let response = client
            .get_user(GetUserRequest {
                user_id: user.id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("{encoding:?}: {status:?}"));
        let used = response
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        let expected = match encoding {
            CompressionEncoding::Gzip => "gzip",
            _ => "zstd",
        };
        assert_eq!(used.as_deref(), Some(expected));
        assert_eq!(response.into_inner().user.unwrap(), user);
    }
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_ends_open_watches_promptly() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let mut health = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest {
            service: "userservice.UserService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let mut events = client
        .watch_users(WatchUsersRequest {
            user_ids: vec![],
            include_all: true,
            start_revision: 0,
            progress_notify: false,
            prev_user: false,
            filter: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let started = std::time::Instant::now();
    let (result, _app) = app.stop().await;

    result.expect("the server stopped cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopping took {:?}",
        started.elapsed()
    );
    assert_eq!(
        health.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32,
        "health turns NOT_SERVING when shutdown begins"
    );
    let ended = events.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("start_revision"),
        "{}",
        ended.message()
    );
}

#[tokio::test]
async fn during_the_drain_health_is_not_serving_while_calls_are_still_served() {
    let mut app = TestApp::spawn_with(|settings| {
        settings.shutdown.drain = Duration::from_secs(2);
    })
    .await;
    let mut client = app.client().await;
    let user = create(&mut client, "drained").await;
    let mut health = HealthClient::new(app.channel().await);
    let check = || HealthCheckRequest {
        service: "userservice.UserService".into(),
    };

    let started = std::time::Instant::now();
    app.begin_stop();
    let mut observed = None;
    while started.elapsed() < Duration::from_secs(1) {
        let status = health
            .check(check())
            .await
            .expect("still answering")
            .into_inner();
        if status.status == ServingStatus::NotServing as i32 {
            observed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let observed = observed.expect("health turned NOT_SERVING through the open connection");

    // A new connection is still accepted, and calls on it are served.
    let mut late = app.client().await;
    let fetched = late
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("calls are served during the drain");
    assert_eq!(fetched.into_inner().user.unwrap().id, user.id);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the call was made during the drain (NOT_SERVING after {observed:?})"
    );

    let (result, _app) = app.stop().await;
    result.expect("the server stopped cleanly after the drain");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the listener stayed open for the whole drain"
    );
}

#[tokio::test]
async fn reflection_describes_the_error_details_failed_calls_carry() {
    let app = TestApp::spawn().await;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Request::FileContainingSymbol(
            "google.rpc.BadRequest".into(),
        )),
    };
    let mut v1 = ReflectionV1::new(app.channel().await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = v1.message().await.unwrap().unwrap().message_response;
    let Some(V1Response::FileDescriptorResponse(files)) = response else {
        panic!("google.rpc.BadRequest is not described: {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn boolean_variables_take_the_usual_spellings_and_sigterm_exits_promptly() {
    let database = crate::helpers::TestDatabase::new();
    let mut server = crate::helpers::ServerProcess::start_with_env(
        &database,
        &[
            ("USER_SERVICE_ALLOW_SIGNUP", "yes"),
            ("USER_SERVICE_ACCESS_LOG", "0"),
        ],
    );
    let mut anonymous = user_service::pb::user_service_client::UserServiceClient::new(
        server.channel().await.unwrap(),
    );
    anonymous
        .create_user(crate::helpers::new_user("signed_up"))
        .await
        .expect("USER_SERVICE_ALLOW_SIGNUP=yes turns sign-up on");

    // The client's connection stays open and answers the server's GOAWAY meanwhile.
    let exited = server.terminate(Duration::from_secs(5)).await;
    assert!(exited.success(), "{exited:?}");
    server.wait_for_log("\"message\":\"stopped\"");
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("user_service::access"),
        "USER_SERVICE_ACCESS_LOG=0 turns the access log off"
    );
}

#[test]
fn without_a_key_the_server_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("USER_SERVICE_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["--listen", "0.0.0.0:0", "--database-url"])
        .arg(format!(
            "sqlite://{}",
            dir.path().join("users.db").display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--key-encryption-key-file"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("DEVELOPMENT ONLY"),
        "no token was minted: {stderr}"
    );
}

#[tokio::test]
async fn shutdown_finishes_within_the_grace_period_with_a_client_that_stopped_reading() {
    let app = TestApp::spawn_with(|settings| {
        settings.shutdown.grace = Duration::from_secs(2);
    })
    .await;
    // A watcher that never reads: its window and its queue fill, and its task waits on it.
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let token = format!(
        "Bearer {}",
        app.token("stalled", user_service::domain::Role::Admin)
    );
    let request = http::Request::post(format!(
        "http://{}/userservice.UserService/WatchUsers",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", token)
    .body(())
    .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let watch_all = WatchUsersRequest {
        include_all: true,
        ..Default::default()
    };
    send.send_data(crate::raw::frame(&watch_all), true).unwrap();
    let _unread = response.await.unwrap();
    let mut admin = app.client().await;
    for round in 0..4 {
        crate::helpers::create_many(&mut admin, &format!("flood{round}_"), 500).await;
    }

    let started = std::time::Instant::now();
    let (result, _app) = app.stop().await;

    result.expect("the server stopped cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "shutdown took {:?} with a grace period of 2 s",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_0_only_for_a_serving_server() {
    let database = crate::helpers::TestDatabase::new();
    let server = crate::helpers::ServerProcess::start(&database);
    let check = |addr: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
            .args(["healthcheck", "--addr", addr, "--timeout-secs", "2"])
            .output()
            .unwrap()
    };
    let serving = check(server.url());
    assert!(
        serving.status.success(),
        "{}",
        String::from_utf8_lossy(&serving.stderr)
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let down = check(&closed);
    assert_eq!(down.status.code(), Some(1), "nobody there is not healthy");
}

#[tokio::test]
async fn connections_are_recycled_after_the_maximum_age() {
    let app = TestApp::spawn_with(|settings| {
        settings.listener.max_connection_age =
            Some((Duration::from_millis(500), Duration::from_millis(500)));
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (_client, connection) = h2::client::handshake(tcp).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "the server closed the aged connection");
}
