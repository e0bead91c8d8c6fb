//! Rights that hold for the whole life of a stream: every event a watch delivers and every
//! message a sync applies is judged against the caller as they stand at that moment.

use std::time::Duration;

use tonic::Code;
use user_service::domain::Role;
use user_service::pb::{UpdateUserRequest, UserRole, UserStatus, WatchUsersRequest};

use crate::helpers::{Client, TestApp, create, create_with_role, get};

const PATIENCE: Duration = Duration::from_secs(10);

async fn set(admin: &mut Client, id: &str, role: Option<UserRole>, status: Option<UserStatus>) {
    admin
        .update_user(UpdateUserRequest {
            user_id: id.into(),
            role: role.map(|role| role as i32),
            status: status.map(|status| status as i32),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn everyone() -> WatchUsersRequest {
    WatchUsersRequest {
        include_all: true,
        ..Default::default()
    }
}

/// Reads events until the stream ends, and returns how it ended.
async fn end_of(stream: &mut tonic::Streaming<user_service::pb::UserEvent>) -> tonic::Status {
    loop {
        match tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the stream ends in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => return status,
        }
    }
}

#[tokio::test]
async fn a_moderators_watch_of_everyone_ends_when_they_are_demoted() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let moderator = create_with_role(&mut admin, "watching_mod", UserRole::Moderator).await;
    let mut as_moderator = app
        .client_with(Some(&app.token(&moderator, Role::User)))
        .await;
    let mut events = as_moderator
        .watch_users(everyone())
        .await
        .unwrap()
        .into_inner();
    create(&mut admin, "seen_by_mod").await;
    let seen = events.message().await.unwrap().unwrap();
    assert_eq!(seen.user.unwrap().username, "seen_by_mod");

    set(&mut admin, &moderator, Some(UserRole::User), None).await;
    create(&mut admin, "not_for_a_user").await;

    let ended = end_of(&mut events).await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
}

#[tokio::test]
async fn a_watch_ends_unauthenticated_when_its_user_is_suspended_or_deleted() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    for (name, suspend) in [("suspended_watcher", true), ("deleted_watcher", false)] {
        let id = create_with_role(&mut admin, name, UserRole::Moderator).await;
        let mut client = app.client_with(Some(&app.token(&id, Role::User))).await;
        let mut events = client.watch_users(everyone()).await.unwrap().into_inner();
        if suspend {
            set(&mut admin, &id, None, Some(UserStatus::Suspended)).await;
        } else {
            admin
                .delete_user(user_service::pb::DeleteUserRequest {
                    user_id: id.clone(),
                    etag: None,
                })
                .await
                .unwrap();
        }
        let ended = end_of(&mut events).await;
        assert_eq!(ended.code(), Code::Unauthenticated, "{name}: {ended:?}");
    }
}

#[tokio::test]
async fn a_watch_ends_when_the_callers_token_expires() {
    let app = TestApp::spawn().await;
    // Expired a moment ago, but inside the verifier's leeway: accepted, for another second.
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({ "sub": "short-lived", "role": "admin", "exp": now - 4 });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::TEST_SECRET.as_bytes()),
    )
    .unwrap();
    let mut client = app.client_with(Some(&token)).await;
    let mut events = client.watch_users(everyone()).await.unwrap().into_inner();
    let ended = end_of(&mut events).await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("expired"), "{}", ended.message());
}

#[tokio::test]
async fn a_sync_stream_stops_applying_once_its_caller_is_demoted() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let moderator = create_with_role(&mut admin, "syncing_mod", UserRole::Moderator).await;
    let victim = create(&mut admin, "sync_victim").await;
    let mut as_moderator = app
        .client_with(Some(&app.token(&moderator, Role::User)))
        .await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut replies = as_moderator
        .sync_users(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let suspend = |status: UserStatus| UpdateUserRequest {
        user_id: victim.id.clone(),
        status: Some(status as i32),
        ..Default::default()
    };
    sender.send(suspend(UserStatus::Suspended)).await.unwrap();
    let applied = replies.message().await.unwrap().unwrap();
    assert!(applied.failure.is_none(), "{applied:?}");
    sender.send(suspend(UserStatus::Active)).await.unwrap();
    let applied = replies.message().await.unwrap().unwrap();
    assert!(applied.failure.is_none(), "{applied:?}");

    set(&mut admin, &moderator, Some(UserRole::User), None).await;
    sender.send(suspend(UserStatus::Suspended)).await.unwrap();

    let refused = replies.message().await.unwrap().unwrap();
    let failure = refused
        .failure
        .expect("the message is answered with a failure");
    assert_eq!(failure.code, Code::PermissionDenied as i32, "{failure:?}");
    let ended = replies.message().await.unwrap_err();
    assert_eq!(
        ended.code(),
        Code::PermissionDenied,
        "the stream ends: {ended:?}"
    );
    let victim_now = get(&mut admin, &victim.id).await;
    assert_eq!(
        victim_now.status,
        UserStatus::Active as i32,
        "the demoted moderator's suspension was not applied"
    );
}

#[tokio::test]
async fn a_moderators_write_is_conditioned_on_the_etag_the_server_judged_by() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let moderator = create_with_role(&mut admin, "etag_mod", UserRole::Moderator).await;
    let target = create(&mut admin, "etag_target").await;
    let mut as_moderator = app
        .client_with(Some(&app.token(&moderator, Role::User)))
        .await;
    // A newer etag than the stored one (as if the target had become an admin since).
    let newer = (target.etag.parse::<i64>().unwrap() + 100).to_string();
    let refused = as_moderator
        .update_user(UpdateUserRequest {
            user_id: target.id.clone(),
            status: Some(UserStatus::Suspended as i32),
            etag: Some(newer),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    let applied = as_moderator
        .update_user(UpdateUserRequest {
            user_id: target.id.clone(),
            status: Some(UserStatus::Suspended as i32),
            etag: Some(target.etag.clone()),
            ..Default::default()
        })
        .await;
    assert!(applied.is_ok(), "the current etag works: {applied:?}");
}

#[tokio::test]
async fn open_streams_are_capped_per_caller_and_a_closed_one_frees_its_place() {
    let app = TestApp::spawn_with(|settings| settings.streams.max_open_per_caller = 2).await;
    let mut admin = app.client().await;
    let me = create(&mut admin, "many_watches").await;
    let mut client = app.client_with(Some(&app.token(&me.id, Role::User))).await;
    let mine = || WatchUsersRequest {
        user_ids: vec![me.id.clone()],
        ..Default::default()
    };
    let first = client.watch_users(mine()).await.unwrap().into_inner();
    let _second = client.watch_users(mine()).await.unwrap().into_inner();
    let refused = client.watch_users(mine()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        admin.watch_users(everyone()).await.is_ok(),
        "another caller is not affected"
    );

    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        match client.watch_users(mine()).await {
            Ok(stream) => {
                reopened = Some(stream);
                break;
            }
            // The server notices the closed stream a moment later.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(reopened.is_some(), "closing a watch frees its place");
}

#[tokio::test]
async fn anonymous_health_watches_are_capped_per_address() {
    let app = TestApp::spawn_with(|settings| settings.streams.max_open_per_caller = 2).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let request = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let _a = health.watch(request()).await.unwrap();
    let _b = health.watch(request()).await.unwrap();
    let refused = health.watch(request()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
}

#[tokio::test]
async fn each_sync_message_counts_against_the_callers_rate_limit() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 3;
    })
    .await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "rate_synced").await;
    let updates: Vec<_> = (0..6)
        .map(|i| UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some(format!("Name {i}")),
            ..Default::default()
        })
        .collect();
    let mut syncer = app
        .client_with(Some(&app.token("syncer", Role::Admin)))
        .await;
    let mut replies = syncer
        .sync_users(tokio_stream::iter(updates))
        .await
        .unwrap()
        .into_inner();
    let mut limited = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        if reply
            .failure
            .is_some_and(|failure| failure.code == Code::ResourceExhausted as i32)
        {
            limited += 1;
        }
    }
    assert!(
        limited >= 2,
        "six messages at once pass a burst of three: {limited} refused"
    );
}
