//! Login: working tokens, one answer for every wrong guess, and limits that lock out the guesser,
//! not the owner.

use tonic::Code;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{LoginRequest, UpdateUserRequest, UserStatus};

use crate::helpers::{TestApp, create};

use super::{Op, attempt, update};

pub async fn login(
    app: &TestApp,
    username: &str,
    password: &str,
) -> Result<user_service::pb::LoginResponse, tonic::Status> {
    let mut client = AuthServiceClient::new(app.channel().await);
    client
        .login(LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn login_returns_a_working_token_and_refuses_wrong_unknown_and_suspended_alike() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "loginner").await;
    let suspended = create(&mut admin, "benched").await;
    admin
        .update_user(UpdateUserRequest {
            status: Some(UserStatus::Suspended as i32),
            ..update(&suspended.id)
        })
        .await
        .unwrap();

    let response = login(&app, "LOGINNER", "correct horse battery")
        .await
        .expect("login succeeds");
    assert_eq!(response.user.as_ref().unwrap().id, user.id);
    assert!(response.expires_at.is_some());
    let mut client = app.client_with(Some(&response.access_token)).await;
    assert_eq!(
        attempt(&mut client, Op::Get(user.id.clone())).await,
        Code::Ok,
        "the token works"
    );
    assert_eq!(
        attempt(&mut client, Op::List).await,
        Code::PermissionDenied,
        "as a plain user"
    );

    let wrong = login(&app, "loginner", "not the password")
        .await
        .unwrap_err();
    let unknown = login(&app, "nobody_here", "not the password")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (unknown.code(), unknown.message()),
        (wrong.code(), wrong.message()),
        "no enumeration"
    );
    let benched = login(&app, "benched", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(benched.code(), Code::Unauthenticated);
}

/// Login from `address`, as the trusted proxy 127.0.0.1 reports it.
async fn login_from(
    app: &TestApp,
    address: &str,
    username: &str,
    password: &str,
) -> Result<user_service::pb::LoginResponse, tonic::Status> {
    let mut client = AuthServiceClient::new(app.channel().await);
    let mut request = tonic::Request::new(LoginRequest {
        username: username.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().unwrap());
    client.login(request).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn failures_from_one_address_never_lock_the_owner_out_elsewhere_but_many_are_slowed() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(2).unwrap();
        settings.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    create(&mut app.client().await, "owner").await;
    for _ in 0..2 {
        let wrong = login_from(&app, "203.0.113.66", "owner", "guess-guess").await;
        assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);
    }
    let limited = login_from(&app, "203.0.113.66", "owner", "guess-guess").await;
    assert_eq!(
        limited.unwrap_err().code(),
        Code::ResourceExhausted,
        "the guesser is"
    );

    login_from(&app, "198.51.100.10", "owner", "correct horse battery")
        .await
        .expect("the owner, elsewhere, is not locked out");

    // Twenty addresses together get ten addresses' worth of attempts at one account.
    let mut codes = Vec::new();
    for i in 1..=20 {
        let attempt = login_from(&app, &format!("192.0.2.{i}"), "owner", "guess-guess").await;
        codes.push(attempt.unwrap_err().code());
    }
    assert!(
        codes.contains(&Code::ResourceExhausted),
        "many addresses against one account are slowed: {codes:?}"
    );
}

#[tokio::test]
async fn login_attempts_are_limited_per_client_address_across_usernames() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(2).unwrap();
    })
    .await;
    for name in ["first_name", "second_name"] {
        let status = login(&app, name, "guess-guess").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let limited = login(&app, "third_name", "guess-guess").await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    let retry_after = limited
        .metadata()
        .get("retry-after")
        .expect("the wait is sent as retry-after, as the rate limiter sends it");
    let seconds: u64 = retry_after.to_str().unwrap().parse().unwrap();
    assert!(seconds >= 1, "{seconds}");
    assert!(
        limited.message().contains(&format!("retry in {seconds} s")),
        "the text says the same wait: {}",
        limited.message()
    );
}

#[tokio::test]
async fn a_login_upgrades_a_hash_weaker_than_the_servers_settings_and_keeps_working() {
    use std::sync::Arc;
    use user_service::storage::{StorageSettings, Store};

    let stored_parameters = |database: Arc<crate::helpers::TestDatabase>| async move {
        let store = Store::open(&StorageSettings {
            database_url: database.url().to_owned(),
            ..StorageSettings::default()
        })
        .await
        .unwrap();
        let (_, hash) = store
            .credentials(&user_service::domain::Username::parse("upgraded".into()).unwrap())
            .await
            .unwrap()
            .unwrap();
        store.close().await.unwrap();
        hash.parameters().to_owned()
    };
    let cheap = TestApp::spawn().await;
    let mut admin = cheap.client().await;
    create(&mut admin, "upgraded").await;
    login(&cheap, "upgraded", "correct horse battery")
        .await
        .expect("the server's own hash verifies");
    let (stopped, cheap) = cheap.stop().await;
    stopped.unwrap();
    let database = cheap.database.clone();
    let before = stored_parameters(database.clone()).await;
    assert!(before.contains("m=64,t=1"), "{before}");

    // The same database, a server with more memory per hash.
    let mut settings = crate::helpers::test_settings(&database);
    settings.auth.argon2.memory_kib = 128;
    let stronger = TestApp::start_with(database.clone(), settings.clone()).await;
    login(&stronger, "upgraded", "correct horse battery")
        .await
        .expect("the weaker hash still verifies");
    let (stopped, _) = stronger.stop().await;
    stopped.unwrap();
    let after = stored_parameters(database.clone()).await;
    assert!(
        after.starts_with("$argon2id$v=19$m=128,t=1"),
        "upgraded: {after}"
    );

    let again = TestApp::start_with(database.clone(), settings).await;
    login(&again, "upgraded", "correct horse battery")
        .await
        .expect("the upgraded hash verifies");
    let wrong = login(&again, "upgraded", "not the password")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
}
