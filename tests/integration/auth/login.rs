//! Login: working tokens, one answer for every wrong guess, and limits that lock out the guesser,
//! not the owner.

use tonic::Code;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{ClearLoginFailuresRequest, LoginRequest, UpdateUserRequest, UserStatus};

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
            ..Default::default()
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
        ..Default::default()
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
async fn one_address_is_limited_against_every_account_together() {
    let app = TestApp::spawn_with(|settings| {
        // Ten times one attempt a minute: ten guesses from one address, whatever the usernames.
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(1).unwrap();
    })
    .await;
    for i in 0..10 {
        let status = login(&app, &format!("sprayed_{i}"), "guess-guess")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "attempt {i}");
    }
    let limited = login(&app, "sprayed_10", "guess-guess").await.unwrap_err();
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
async fn a_right_password_gives_its_attempt_back() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(2).unwrap();
    })
    .await;
    create(&mut app.client().await, "regular").await;
    for round in 0..4 {
        login(&app, "regular", "correct horse battery")
            .await
            .unwrap_or_else(|status| {
                panic!("login {round} of the owner is never limited: {status:?}")
            });
    }
    for _ in 0..2 {
        let wrong = login(&app, "regular", "guess-guess").await.unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    }
    let limited = login(&app, "regular", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(
        limited.code(),
        Code::ResourceExhausted,
        "two wrong passwords use up this address's two attempts: {limited:?}"
    );
}

/// Clears a user's login failures as `token`'s holder.
async fn clear_failures(app: &TestApp, token: &str, user_id: &str) -> Result<i64, tonic::Status> {
    let mut client = AuthServiceClient::with_interceptor(
        app.channel().await,
        crate::helpers::Bearer::new(Some(token)).unwrap(),
    );
    client
        .clear_login_failures(ClearLoginFailuresRequest {
            user_id: user_id.into(),
        })
        .await
        .map(|response| response.into_inner().failures)
}

#[tokio::test]
async fn wrong_passwords_sent_together_are_each_counted_once_and_an_admin_clears_them() {
    // Each of 100 addresses guesses once: the account-wide limit (200 a minute) counts them all.
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(20).unwrap();
        settings.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let owner = create(&mut app.client().await, "guessed").await;
    let addresses: Vec<String> = (1..=100).map(|i| format!("198.51.100.{i}")).collect();
    let attempts = addresses
        .iter()
        .map(|address| login_from(&app, address, "guessed", "guess-guess"));
    let answers = futures_util::future::join_all(attempts).await;
    assert!(
        answers
            .iter()
            .all(|answer| answer.as_ref().unwrap_err().code() == Code::Unauthenticated),
        "every guess is checked and wrong"
    );

    let user = app.token(&owner.id, Role::User);
    let refused = clear_failures(&app, &user, &owner.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let admin = app.token("test-admin", Role::Admin);
    assert_eq!(
        clear_failures(&app, &admin, &owner.id).await.unwrap(),
        100,
        "the account-wide limit counted each wrong password once"
    );
    assert_eq!(
        clear_failures(&app, &admin, &owner.id).await.unwrap(),
        0,
        "and holds none after the clear"
    );
    let unknown = clear_failures(&app, &admin, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test]
async fn after_an_admin_clears_the_failures_the_guessers_address_may_log_in_again() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.login_attempts_per_minute = std::num::NonZeroU32::new(2).unwrap();
    })
    .await;
    let owner = create(&mut app.client().await, "forgiven").await;
    for _ in 0..2 {
        login(&app, "forgiven", "guess-guess").await.unwrap_err();
    }
    let limited = login(&app, "forgiven", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    let admin = app.token("test-admin", Role::Admin);
    assert_eq!(clear_failures(&app, &admin, &owner.id).await.unwrap(), 2);
    login(&app, "forgiven", "correct horse battery")
        .await
        .expect("the limit no longer holds the account back");
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
