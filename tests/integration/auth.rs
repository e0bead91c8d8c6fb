//! Authentication, the access policy row by row, escalation attempts, Login, rate limiting,
//! load shedding, TLS and the access log.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, LoginRequest,
    UpdateUserRequest, UserRole, UserStatus, WatchUsersRequest,
};

use crate::helpers::{Client, TestApp, create, create_many, new_user};

/// One call, made to see which code it gets.
enum Op {
    Get(String),
    List,
    WatchAll,
    WatchOnly(String),
    Update(UpdateUserRequest),
    Delete(String),
    Create(CreateUserRequest),
    Batch(Vec<CreateUserRequest>),
    Sync(UpdateUserRequest),
}

async fn attempt(client: &mut Client, op: Op) -> Code {
    let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |s| s.code());
    match op {
        Op::Get(user_id) => code(client.get_user(GetUserRequest { user_id }).await.map(drop)),
        Op::List => code(
            client
                .list_users(ListUsersRequest::default())
                .await
                .map(drop),
        ),
        Op::WatchAll => {
            let request = WatchUsersRequest {
                include_all: true,
                ..Default::default()
            };
            code(client.watch_users(request).await.map(drop))
        }
        Op::WatchOnly(id) => {
            let request = WatchUsersRequest {
                user_ids: vec![id],
                ..Default::default()
            };
            code(client.watch_users(request).await.map(drop))
        }
        Op::Update(request) => code(client.update_user(request).await.map(drop)),
        Op::Delete(user_id) => code(
            client
                .delete_user(DeleteUserRequest {
                    user_id,
                    etag: None,
                })
                .await
                .map(drop),
        ),
        Op::Create(request) => code(client.create_user(request).await.map(drop)),
        Op::Batch(requests) => {
            let response = client
                .batch_create_users(tokio_stream::iter(requests))
                .await;
            code(response.map(drop))
        }
        Op::Sync(request) => {
            let mut replies = client
                .sync_users(tokio_stream::iter([request]))
                .await
                .expect("the sync stream opens")
                .into_inner();
            let reply = replies
                .message()
                .await
                .unwrap()
                .expect("one reply per update");
            reply
                .failure
                .map_or(Code::Ok, |failure| Code::from_i32(failure.code))
        }
    }
}

fn update(user_id: &str) -> UpdateUserRequest {
    UpdateUserRequest {
        user_id: user_id.into(),
        ..Default::default()
    }
}

async fn create_with_role(client: &mut Client, name: &str, role: UserRole) -> String {
    let request = CreateUserRequest {
        role: role as i32,
        ..new_user(name)
    };
    client
        .create_user(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id
}

#[tokio::test]
async fn the_access_policy_holds_row_by_row_through_the_real_server() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let alice = create_with_role(&mut admin, "alice", UserRole::User).await;
    let bob = create_with_role(&mut admin, "bob", UserRole::User).await;
    let moderator = create_with_role(&mut admin, "mod", UserRole::Moderator).await;
    let boss = create_with_role(&mut admin, "boss", UserRole::Admin).await;

    let as_user = |id: &str, role| app.token(id, role);
    let rows: Vec<(&str, Option<String>, Op, Code)> = vec![
        (
            "anonymous reads",
            None,
            Op::Get(alice.clone()),
            Code::Unauthenticated,
        ),
        ("anonymous lists", None, Op::List, Code::Unauthenticated),
        (
            "anonymous signs up while sign-up is off",
            None,
            Op::Create(new_user("newbie")),
            Code::Unauthenticated,
        ),
        (
            "user reads self",
            Some(as_user(&alice, Role::User)),
            Op::Get(alice.clone()),
            Code::Ok,
        ),
        (
            "user reads another",
            Some(as_user(&alice, Role::User)),
            Op::Get(bob.clone()),
            Code::PermissionDenied,
        ),
        (
            "user lists",
            Some(as_user(&alice, Role::User)),
            Op::List,
            Code::PermissionDenied,
        ),
        (
            "user watches everyone",
            Some(as_user(&alice, Role::User)),
            Op::WatchAll,
            Code::PermissionDenied,
        ),
        (
            "user watches self",
            Some(as_user(&alice, Role::User)),
            Op::WatchOnly(alice.clone()),
            Code::Ok,
        ),
        (
            "user watches another",
            Some(as_user(&alice, Role::User)),
            Op::WatchOnly(bob.clone()),
            Code::PermissionDenied,
        ),
        (
            "user renames self",
            Some(as_user(&alice, Role::User)),
            Op::Update(UpdateUserRequest {
                full_name: Some("Al".into()),
                ..update(&alice)
            }),
            Code::Ok,
        ),
        (
            "user raises own role",
            Some(as_user(&alice, Role::User)),
            Op::Update(UpdateUserRequest {
                role: Some(UserRole::Admin as i32),
                ..update(&alice)
            }),
            Code::PermissionDenied,
        ),
        (
            "user changes own status",
            Some(as_user(&alice, Role::User)),
            Op::Update(UpdateUserRequest {
                status: Some(UserStatus::Active as i32),
                ..update(&alice)
            }),
            Code::PermissionDenied,
        ),
        (
            "user renames another",
            Some(as_user(&alice, Role::User)),
            Op::Update(UpdateUserRequest {
                full_name: Some("B".into()),
                ..update(&bob)
            }),
            Code::PermissionDenied,
        ),
        (
            "user syncs self",
            Some(as_user(&alice, Role::User)),
            Op::Sync(UpdateUserRequest {
                full_name: Some("Ali".into()),
                ..update(&alice)
            }),
            Code::Ok,
        ),
        (
            "user syncs another",
            Some(as_user(&alice, Role::User)),
            Op::Sync(UpdateUserRequest {
                full_name: Some("B".into()),
                ..update(&bob)
            }),
            Code::PermissionDenied,
        ),
        (
            "user creates",
            Some(as_user(&alice, Role::User)),
            Op::Create(new_user("made_by_alice")),
            Code::PermissionDenied,
        ),
        (
            "user batch-creates admins",
            Some(as_user(&alice, Role::User)),
            Op::Batch(vec![CreateUserRequest {
                role: UserRole::Admin as i32,
                ..new_user("sneaky")
            }]),
            Code::PermissionDenied,
        ),
        (
            "user deletes another",
            Some(as_user(&alice, Role::User)),
            Op::Delete(bob.clone()),
            Code::PermissionDenied,
        ),
        (
            "moderator reads another",
            Some(as_user(&moderator, Role::User)),
            Op::Get(bob.clone()),
            Code::Ok,
        ),
        (
            "moderator lists",
            Some(as_user(&moderator, Role::User)),
            Op::List,
            Code::Ok,
        ),
        (
            "moderator watches everyone",
            Some(as_user(&moderator, Role::User)),
            Op::WatchAll,
            Code::Ok,
        ),
        (
            "moderator suspends a user",
            Some(as_user(&moderator, Role::User)),
            Op::Update(UpdateUserRequest {
                status: Some(UserStatus::Suspended as i32),
                ..update(&bob)
            }),
            Code::Ok,
        ),
        (
            "moderator reactivates a user",
            Some(as_user(&moderator, Role::User)),
            Op::Update(UpdateUserRequest {
                status: Some(UserStatus::Active as i32),
                ..update(&bob)
            }),
            Code::Ok,
        ),
        (
            "moderator renames a user",
            Some(as_user(&moderator, Role::User)),
            Op::Update(UpdateUserRequest {
                full_name: Some("B".into()),
                ..update(&bob)
            }),
            Code::PermissionDenied,
        ),
        (
            "moderator suspends an admin",
            Some(as_user(&moderator, Role::User)),
            Op::Update(UpdateUserRequest {
                status: Some(UserStatus::Suspended as i32),
                ..update(&boss)
            }),
            Code::PermissionDenied,
        ),
        (
            "moderator deletes a user",
            Some(as_user(&moderator, Role::User)),
            Op::Delete(bob.clone()),
            Code::PermissionDenied,
        ),
        (
            "moderator creates",
            Some(as_user(&moderator, Role::User)),
            Op::Create(new_user("made_by_mod")),
            Code::PermissionDenied,
        ),
        (
            "admin changes a role",
            Some(as_user(&boss, Role::User)),
            Op::Update(UpdateUserRequest {
                role: Some(UserRole::Moderator as i32),
                ..update(&bob)
            }),
            Code::Ok,
        ),
        (
            "admin creates",
            Some(as_user(&boss, Role::User)),
            Op::Create(new_user("made_by_boss")),
            Code::Ok,
        ),
        (
            "admin batch-creates",
            Some(as_user(&boss, Role::User)),
            Op::Batch(vec![new_user("batched_by_boss")]),
            Code::Ok,
        ),
        (
            "admin deletes another",
            Some(as_user(&boss, Role::User)),
            Op::Delete(bob.clone()),
            Code::Ok,
        ),
        (
            "user deletes self",
            Some(as_user(&alice, Role::User)),
            Op::Delete(alice.clone()),
            Code::Ok,
        ),
    ];
    for (row, token, op, expected) in rows {
        let mut client = app.client_with(token.as_deref()).await;
        assert_eq!(attempt(&mut client, op).await, expected, "{row}");
    }
}

#[tokio::test]
async fn a_stored_users_current_role_counts_not_the_role_in_their_token() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let plain = create(&mut admin, "plainuser").await;
    // The token claims admin, but the stored user is a plain USER.
    let mut client = app
        .client_with(Some(&app.token(&plain.id, Role::Admin)))
        .await;
    assert_eq!(attempt(&mut client, Op::List).await, Code::PermissionDenied);
}

#[tokio::test]
async fn a_suspended_or_deleted_users_token_stops_working_on_the_next_call() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "soonsuspended").await;
    let mut client = app
        .client_with(Some(&app.token(&user.id, Role::User)))
        .await;
    assert_eq!(
        attempt(&mut client, Op::Get(user.id.clone())).await,
        Code::Ok
    );

    let suspend = UpdateUserRequest {
        status: Some(UserStatus::Suspended as i32),
        ..update(&user.id)
    };
    admin.update_user(suspend).await.unwrap();
    let status = client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("suspended"),
        "{}",
        status.message()
    );

    admin
        .delete_user(DeleteUserRequest {
            user_id: user.id.clone(),
            etag: None,
        })
        .await
        .unwrap();
    let status = client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("no longer exists"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn sign_up_when_allowed_always_makes_a_plain_user() {
    let app = TestApp::spawn_with(|settings| settings.allow_signup = true).await;
    let mut anonymous = app.client_with(None).await;
    let request = CreateUserRequest {
        role: UserRole::Admin as i32,
        ..new_user("upstart")
    };
    let user = anonymous
        .create_user(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        user.role,
        UserRole::User as i32,
        "sign-up asked for ADMIN and got USER"
    );
    assert_eq!(
        attempt(&mut anonymous, Op::List).await,
        Code::Unauthenticated
    );
}

fn forged(header: &str, claims: &serde_json::Value, signature: &str) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{}.{}.{}",
        b64(header.as_bytes()),
        b64(claims.to_string().as_bytes()),
        signature
    )
}

fn in_an_hour() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_with_a_reason() {
    let app = TestApp::spawn().await;
    let claims = |exp: u64| serde_json::json!({ "sub": "svc", "role": "admin", "exp": exp });
    let sign = |claims: &serde_json::Value, secret: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let cases = [
        ("garbage", "not.a.token".to_string(), "malformed"),
        (
            "expired",
            sign(
                &claims(jsonwebtoken::get_current_timestamp() - 3600),
                crate::helpers::TEST_SECRET.as_bytes(),
            ),
            "expired",
        ),
        (
            "wrong signature",
            sign(
                &claims(in_an_hour()),
                b"some-other-secret-of-thirty-two-bytes",
            ),
            "signature",
        ),
        (
            "alg none",
            forged(r#"{"alg":"none","typ":"JWT"}"#, &claims(in_an_hour()), ""),
            "token",
        ),
        (
            "no expiry",
            sign(
                &serde_json::json!({ "sub": "svc", "role": "admin" }),
                crate::helpers::TEST_SECRET.as_bytes(),
            ),
            "exp",
        ),
        (
            "unknown role",
            sign(
                &serde_json::json!({ "sub": "svc", "role": "root", "exp": in_an_hour() }),
                crate::helpers::TEST_SECRET.as_bytes(),
            ),
            "role",
        ),
    ];
    for (case, token, reason) in cases {
        let mut client = app.client_with(Some(&token)).await;
        let status = client
            .list_users(ListUsersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert!(
            status.message().contains(reason),
            "{case}: {}",
            status.message()
        );
    }

    let mut client = app.client_with(None).await;
    let status = client
        .list_users(ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("bearer token"),
        "{}",
        status.message()
    );

    let mut basic = user_service::pb::user_service_client::UserServiceClient::with_interceptor(
        app.channel().await,
        |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
            Ok(request)
        },
    );
    let status = basic
        .list_users(ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());
}

const RSA_PUBLIC: &str = include_str!("../fixtures/jwt/rsa_public.pem");
const RSA_PRIVATE: &str = include_str!("../fixtures/jwt/rsa_private.pem");

#[tokio::test]
async fn with_an_rsa_key_the_algorithm_is_pinned_and_issuer_and_audience_are_checked() {
    let app = TestApp::spawn_with(|settings| {
        settings.jwt.secret = None;
        settings.jwt.public_key_pem = Some(RSA_PUBLIC.as_bytes().to_vec());
        settings.jwt.issuer = Some("https://issuer.example".into());
        settings.jwt.audience = Some("user-service".into());
    })
    .await;
    let claims = |iss: &str, aud: &str| serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(), "iss": iss, "aud": aud });
    let rs256 = |claims: &serde_json::Value| {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
    };
    // The classic confusion attack: HS256 with the public key as the shared secret.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("https://issuer.example", "user-service"),
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap();
    let cases = [
        (
            "valid RS256",
            rs256(&claims("https://issuer.example", "user-service")),
            Code::Ok,
        ),
        (
            "HS256 signed with the RSA public key",
            confused,
            Code::Unauthenticated,
        ),
        (
            "wrong issuer",
            rs256(&claims("https://evil.example", "user-service")),
            Code::Unauthenticated,
        ),
        (
            "wrong audience",
            rs256(&claims("https://issuer.example", "other-service")),
            Code::Unauthenticated,
        ),
        (
            "no issuer",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(), "aud": "user-service" }),
            ),
            Code::Unauthenticated,
        ),
        (
            "no audience",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(), "iss": "https://issuer.example" }),
            ),
            Code::Unauthenticated,
        ),
        (
            "not valid for another ten minutes (nbf)",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(),
                "iss": "https://issuer.example", "aud": "user-service",
                "nbf": jsonwebtoken::get_current_timestamp() + 600 }),
            ),
            Code::Unauthenticated,
        ),
        (
            "valid since a minute ago (nbf)",
            rs256(
                &serde_json::json!({ "sub": "svc", "role": "admin", "exp": in_an_hour(),
                "iss": "https://issuer.example", "aud": "user-service",
                "nbf": jsonwebtoken::get_current_timestamp() - 60 }),
            ),
            Code::Ok,
        ),
    ];
    for (case, token, expected) in cases {
        let mut client = app.client_with(Some(&token)).await;
        assert_eq!(attempt(&mut client, Op::List).await, expected, "{case}");
    }
}

async fn login(
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
        settings.login_attempts_per_minute = std::num::NonZeroU32::new(2).unwrap();
        settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
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
        settings.login_attempts_per_minute = std::num::NonZeroU32::new(2).unwrap();
    })
    .await;
    for name in ["first_name", "second_name"] {
        let status = login(&app, name, "guess-guess").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let limited = login(&app, "third_name", "guess-guess").await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
}

#[tokio::test]
async fn a_client_past_its_burst_is_refused_while_others_and_health_are_served() {
    let app = TestApp::spawn_with(|settings| {
        settings.rate_limit_per_second = 1;
        settings.rate_limit_burst = 3;
    })
    .await;
    let mut greedy = app
        .client_with(Some(&app.token("greedy", Role::Admin)))
        .await;
    for call in 0..3 {
        assert_eq!(
            attempt(&mut greedy, Op::List).await,
            Code::Ok,
            "call {call} is within the burst"
        );
    }
    // One token comes back per second: rapid calls past the burst are refused at once, unless
    // the machine stalls for a whole second, so allow a few tries.
    let mut refused = None;
    for _ in 0..10 {
        if let Err(status) = greedy.list_users(ListUsersRequest::default()).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a call past the burst is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let retry_after = refused
        .metadata()
        .get("retry-after")
        .expect("retry-after is set");
    assert!(retry_after.to_str().unwrap().parse::<u64>().unwrap() >= 1);

    let mut other = app
        .client_with(Some(&app.token("patient", Role::Admin)))
        .await;
    assert_eq!(
        attempt(&mut other, Op::List).await,
        Code::Ok,
        "another caller is still served"
    );

    let mut health = HealthClient::new(app.channel().await);
    for _ in 0..20 {
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health is never limited");
    }
}

#[tokio::test]
async fn past_the_concurrency_limit_calls_are_shed_at_once() {
    let app = TestApp::spawn_with(|settings| settings.max_concurrent_calls = 1).await;
    let mut holder = app.client().await;
    // An unfinished batch keeps its call, and so the only slot, busy.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(new_user("holder")).await.unwrap();
    let held = tokio::spawn(async move {
        holder
            .batch_create_users(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    let mut other = app.client().await;
    let mut shed = None;
    for _ in 0..50 {
        match other.list_users(ListUsersRequest::default()).await {
            Err(status) if status.code() == Code::Unavailable => {
                shed = Some(status);
                break;
            }
            // The batch may not have reached the server yet.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let shed = shed.expect("a call past the limit is refused");
    assert!(shed.message().contains("limit"), "{}", shed.message());
    drop(sender);
    held.await.unwrap().expect("the held call completes");
    assert_eq!(
        attempt(&mut other, Op::List).await,
        Code::Ok,
        "the slot is free again"
    );
}

#[tokio::test]
async fn the_access_log_records_the_grpc_code_of_a_failed_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::helpers::ServerProcess::start(&dir.path().join("users.db"));
    let mut client = server.client().await.unwrap();
    let missing = "0192a3b4-0000-7000-8000-000000000000".to_string();
    let status = client
        .get_user(GetUserRequest { user_id: missing })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    create_many(&mut client, "logged", 1).await;

    let line = server.wait_for_log("\"method\":\"/userservice.UserService/GetUser\"");
    assert!(line.contains("\"code\":\"NotFound\""), "{line}");
    assert!(
        line.contains("\"principal\":\"service:test-admin\""),
        "{line}"
    );
    assert!(line.contains("\"peer\":\"127.0.0.1:"), "{line}");
    assert!(line.contains("\"micros\":"), "{line}");
    let all = server.log.lock().unwrap().join("\n");
    assert!(
        !all.contains(crate::helpers::TEST_SECRET),
        "a secret reached the log"
    );
    assert!(!all.contains("correct horse"), "a password reached the log");
    assert!(!all.contains("$argon2"), "a password hash reached the log");
    assert!(!all.contains("Bearer "), "a token reached the log");
}

#[tokio::test]
async fn without_a_configured_key_the_logged_development_token_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::helpers::ServerProcess::start_without_key(&dir.path().join("users.db"));
    let line = server
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|line| line.contains("DEVELOPMENT ONLY"))
        .cloned()
        .expect("the development token is logged at start");
    let token = line
        .split("24 hours: ")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the line ends with the token")
        .to_owned();

    let channel = server.channel().await.unwrap();
    let mut client = user_service::pb::user_service_client::UserServiceClient::with_interceptor(
        channel,
        crate::helpers::Bearer::new(Some(&token)).unwrap(),
    );
    client
        .list_users(ListUsersRequest::default())
        .await
        .expect("the development token is an admin token");
}

const ED25519_PUBLIC: &str = include_str!("../fixtures/jwt/ed25519_public.pem");
const ED25519_PRIVATE: &str = include_str!("../fixtures/jwt/ed25519_private.pem");

#[tokio::test]
async fn with_an_ed25519_key_pair_login_signs_eddsa_tokens_that_the_server_accepts() {
    let app = TestApp::spawn_with(|settings| {
        settings.jwt.secret = None;
        settings.jwt.public_key_pem = Some(ED25519_PUBLIC.as_bytes().to_vec());
        settings.jwt.private_key_pem = Some(ED25519_PRIVATE.as_bytes().to_vec());
    })
    .await;
    let admin_token = {
        let key = EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap();
        let claims = serde_json::json!({ "sub": "ops", "role": "admin", "exp": in_an_hour() });
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
    };
    let mut admin = app.client_with(Some(&admin_token)).await;
    let user = create(&mut admin, "edwards").await;

    let response = login(&app, "edwards", "correct horse battery")
        .await
        .expect("login signs");
    let header = jsonwebtoken::decode_header(&response.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let mut client = app.client_with(Some(&response.access_token)).await;
    assert_eq!(attempt(&mut client, Op::Get(user.id)).await, Code::Ok);
}

/// A client behind the trusted proxy 127.0.0.1, claiming `forwarded_for`.
async fn list_via_proxy(app: &TestApp, forwarded_for: &str) -> Code {
    let value: tonic::metadata::MetadataValue<_> = forwarded_for.parse().unwrap();
    let mut client = user_service::pb::user_service_client::UserServiceClient::with_interceptor(
        app.channel().await,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("x-forwarded-for", value.clone());
            Ok(request)
        },
    );
    match client.list_users(ListUsersRequest::default()).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn per_address_limits_key_ipv6_by_64_and_stop_at_an_unparsable_forwarded_entry() {
    let app = TestApp::spawn_with(|settings| {
        settings.rate_limit_per_second = 1;
        settings.rate_limit_burst = 2;
        settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    // Anonymous calls are refused by the policy, but only after the rate limit counted them.
    let rotating = ["2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:ffff::3"];
    let mut codes = Vec::new();
    for address in rotating {
        codes.push(list_via_proxy(&app, address).await);
    }
    assert_eq!(
        codes.last(),
        Some(&Code::ResourceExhausted),
        "one /64 is one client: {codes:?}"
    );
    assert_eq!(
        list_via_proxy(&app, "2001:db8:8:8::1").await,
        Code::Unauthenticated,
        "another /64 is another client"
    );

    // Garbage in the chain: the proxy itself is the client, however the rest rotates.
    let mut codes = Vec::new();
    for address in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        codes.push(list_via_proxy(&app, &format!("{address}, bogus")).await);
    }
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
}

#[tokio::test]
async fn anonymous_sign_ups_are_limited_per_address_apart_from_other_calls() {
    let app = TestApp::spawn_with(|settings| {
        settings.allow_signup = true;
        settings.signups_per_hour = std::num::NonZeroU32::new(2).unwrap();
    })
    .await;
    let mut anonymous = app.client_with(None).await;
    for name in ["first_signup", "second_signup"] {
        anonymous
            .create_user(new_user(name))
            .await
            .expect("within the address's sign-ups");
    }
    let refused = anonymous
        .create_user(new_user("third_signup"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("sign-ups"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn calls_with_bad_tokens_are_limited_per_address_before_any_signature_check() {
    let app = TestApp::spawn_with(|settings| {
        settings.rate_limit_per_second = 1;
        settings.rate_limit_burst = 3;
    })
    .await;
    // A service whose token was verified before the flood, from the same address.
    let mut good = app
        .client_with(Some(&app.token("good-service", Role::Admin)))
        .await;
    assert_eq!(attempt(&mut good, Op::List).await, Code::Ok);
    let mut forger = app
        .client_with(Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.forged"))
        .await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(attempt(&mut forger, Op::List).await);
    }
    assert_eq!(codes[0], Code::Unauthenticated);
    assert_eq!(
        codes.last(),
        Some(&Code::ResourceExhausted),
        "a flood of bad tokens is refused by address: {codes:?}"
    );
    assert_eq!(
        attempt(&mut good, Op::List).await,
        Code::Ok,
        "a verified principal keeps its own allowance"
    );
}

#[tokio::test]
async fn calls_with_bad_tokens_are_shed_like_any_other() {
    let app = TestApp::spawn_with(|settings| settings.max_concurrent_calls = 1).await;
    let mut holder = app.client().await;
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender.send(new_user("slot_holder")).await.unwrap();
    let held = tokio::spawn(async move {
        holder
            .batch_create_users(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    let mut forger = app.client_with(Some("not-a-token")).await;
    let mut shed = false;
    for _ in 0..50 {
        if attempt(&mut forger, Op::List).await == Code::Unavailable {
            shed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(shed, "a bad-token call past the limit is shed");
    drop(sender);
    held.await.unwrap().expect("the held call completes");
}
