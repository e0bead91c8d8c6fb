//! The caller's deadline: every call still running when it passes ends DEADLINE_EXCEEDED,
//! and the access log records it.

use std::time::{Duration, Instant};

use tonic::Code;
use user_service::auth::hasher::Argon2Settings;
use user_service::domain::Role;

use crate::helpers::{ServerProcess, TestApp, TestDatabase, new_user};
use crate::raw;

/// Hashing this costly takes far longer than the deadlines below.
const SLOW_ARGON2: Argon2Settings = Argon2Settings {
    memory_kib: 256 * 1024,
    iterations: 4,
    parallelism: 1,
};

const CREATE: &str = "/userservice.UserService/CreateUser";
const BATCH: &str = "/userservice.UserService/BatchCreateUsers";

#[tokio::test]
async fn a_unary_call_still_running_at_its_deadline_ends_deadline_exceeded() {
    let app = TestApp::spawn_with(|settings| settings.auth.argon2 = SLOW_ARGON2).await;
    let bearer = format!("Bearer {}", app.token("test-admin", Role::Admin));
    let started = Instant::now();

    let status = raw::call(
        app.addr,
        CREATE,
        &[("authorization", &bearer), ("grpc-timeout", "100m")],
        raw::frame(&new_user("too_slow")),
        true,
    )
    .await;

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("deadline"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at the deadline, not when the work ended: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_batch_whose_client_never_finishes_ends_deadline_exceeded() {
    let app = TestApp::spawn().await;
    let bearer = format!("Bearer {}", app.token("test-admin", Role::Admin));

    let status = raw::call(
        app.addr,
        BATCH,
        &[("authorization", &bearer), ("grpc-timeout", "200m")],
        raw::frame(&new_user("lingering")),
        false,
    )
    .await;

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_call_ended_by_its_deadline_has_an_access_log_line_with_its_code() {
    let database = TestDatabase::new();
    let server = ServerProcess::start(&database);
    let bearer = format!("Bearer {}", server.token("test-admin", Role::Admin));

    let status = raw::call(
        server.addr(),
        BATCH,
        &[("authorization", &bearer), ("grpc-timeout", "200m")],
        raw::frame(&new_user("lingering")),
        false,
    )
    .await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    let line = server.wait_for_log(&format!("\"method\":\"{BATCH}\""));
    assert!(line.contains("\"code\":\"DeadlineExceeded\""), "{line}");
}

#[tokio::test]
async fn a_call_whose_client_hangs_up_is_logged_as_cancelled_at_info() {
    let database = TestDatabase::new();
    let server = ServerProcess::start(&database);
    let bearer = format!("Bearer {}", server.token("test-admin", Role::Admin));

    raw::abandon(
        server.addr(),
        BATCH,
        &[("authorization", &bearer)],
        raw::frame(&new_user("quitter")),
    )
    .await;

    let line = server.wait_for_log(&format!("\"method\":\"{BATCH}\""));
    assert!(line.contains("\"code\":\"Cancelled\""), "{line}");
    assert!(line.contains("\"level\":\"INFO\""), "{line}");
}
