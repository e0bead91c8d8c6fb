//! SQLite's own behaviour: the file and its folder, one server per file, a file that goes
//! away. (Everything else runs on both backends.)

use std::sync::Arc;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{ServerProcess, TestApp, TestDatabase, create};

async fn spawn_on_sqlite() -> TestApp {
    TestApp::spawn_on(Arc::new(TestDatabase::sqlite()), |_| {}).await
}

#[tokio::test]
async fn storage_is_created_on_first_start_in_a_folder_that_does_not_exist() {
    let app = spawn_on_sqlite().await;
    let path = app.database.sqlite_path();
    assert!(path.exists(), "{} was created", path.display());
}

#[tokio::test]
async fn a_second_server_on_a_file_in_use_refuses_to_start_and_names_the_holder() {
    let database = TestDatabase::sqlite();
    let mut first = ServerProcess::start(&database);
    let mut client = first.client().await.unwrap();
    let ann = create(&mut client, "ann").await;

    let second = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args(["--listen", "127.0.0.1:0", "--database-url", database.url()])
        .env("USER_SERVICE_JWT_SECRET", crate::helpers::TEST_SECRET)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second server started: {stderr}"
    );
    let holder = format!("process {}", first.pid());
    assert!(
        stderr.contains("is in use by another server") && stderr.contains(&holder),
        "the refusal names the lock and its holder: {stderr}"
    );

    // The first kept serving, untouched; killed with -9 it leaves no stale lock behind.
    let fetched = client
        .get_user(user_service::pb::GetUserRequest {
            user_id: ann.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(fetched.into_inner().user, Some(ann.clone()));
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let restarted = ServerProcess::start(&database);
    let mut client = restarted.client().await.unwrap();
    let fetched = client
        .get_user(user_service::pb::GetUserRequest {
            user_id: ann.id.clone(),
        })
        .await
        .expect("a server starts on the file after kill -9");
    assert_eq!(fetched.into_inner().user, Some(ann));
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unusable_and_recovers_after() {
    let app = spawn_on_sqlite().await;
    let mut health = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = |message: Option<tonic_health::pb::HealthCheckResponse>| message.unwrap().status;
    assert_eq!(
        status(health.message().await.unwrap()),
        ServingStatus::Serving as i32
    );

    let folder = app.database.sqlite_path().parent().unwrap().to_owned();
    let moved = folder.with_extension("moved");
    std::fs::rename(&folder, &moved).unwrap();
    let during = tokio::time::timeout(Duration::from_secs(5), health.message()).await;
    std::fs::rename(&moved, &folder).unwrap();

    assert_eq!(
        status(during.expect("health changes in time").unwrap()),
        ServingStatus::NotServing as i32
    );
    let after = tokio::time::timeout(Duration::from_secs(5), health.message())
        .await
        .expect("health recovers in time")
        .unwrap();
    assert_eq!(status(after), ServingStatus::Serving as i32);
}
