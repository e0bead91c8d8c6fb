//! Rate limits, load shedding, per-address keys and sign-up limits.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{ListUsersRequest, LoginRequest};

use crate::helpers::{TestApp, new_user};

use super::{Op, attempt};

#[tokio::test]
async fn a_client_past_its_burst_is_refused_while_others_and_health_are_served() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 3;
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
    let app = TestApp::spawn_with(|settings| settings.limits.max_concurrent_calls = 1).await;
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
    // The cap is the server's: a call to the other service is refused too.
    let login = AuthServiceClient::new(app.channel().await)
        .login(LoginRequest {
            username: "holder".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await
        .expect_err("a login past the limit is refused");
    assert_eq!(login.code(), Code::Unavailable, "{}", login.message());
    HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health checks are never shed");
    drop(sender);
    held.await.unwrap().expect("the held call completes");
    assert_eq!(
        attempt(&mut other, Op::List).await,
        Code::Ok,
        "the slot is free again"
    );
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
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 2;
        settings.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
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
        settings.auth.allow_signup = true;
        settings.auth.signups_per_hour = std::num::NonZeroU32::new(2).unwrap();
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
    assert!(
        refused.metadata().get("retry-after").is_some(),
        "the wait is sent as retry-after: {refused:?}"
    );
}

#[tokio::test]
async fn calls_with_bad_tokens_are_limited_per_address_before_any_signature_check() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 3;
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
    let app = TestApp::spawn_with(|settings| settings.limits.max_concurrent_calls = 1).await;
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
