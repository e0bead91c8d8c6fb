//! Service keys: an admin creates one with a role and an optional expiry, its secret works as a
//! bearer credential with that role's rights, listings never show a secret but show the last
//! use, events name the key, and a revoked or expired key stops working at once.

use std::time::Duration;

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{
    ActorKind, CreateServiceKeyRequest, CreateServiceKeyResponse, ListServiceKeysRequest,
    RevokeServiceKeyRequest, ServiceKey, UserRole, WatchUsersRequest,
};

use super::{Op, attempt};
use crate::helpers::{Bearer, TestApp, create, new_user};

type Auth = AuthServiceClient<InterceptedService<Channel, Bearer>>;

pub async fn auth_as(app: &TestApp, token: &str) -> Auth {
    AuthServiceClient::with_interceptor(app.channel().await, Bearer::new(Some(token)).unwrap())
}

pub async fn admin_auth(app: &TestApp) -> Auth {
    auth_as(app, &app.token("test-admin", Role::Admin)).await
}

pub async fn create_key(
    app: &TestApp,
    name: &str,
    role: UserRole,
    expires_in: Option<Duration>,
) -> CreateServiceKeyResponse {
    let expires_at = expires_in
        .map(|lifetime| prost_types::Timestamp::from(std::time::SystemTime::now() + lifetime));
    admin_auth(app)
        .await
        .create_service_key(CreateServiceKeyRequest {
            name: name.into(),
            role: role as i32,
            expires_at,
        })
        .await
        .expect("an admin creates a key")
        .into_inner()
}

async fn listed(app: &TestApp) -> Vec<ServiceKey> {
    admin_auth(app)
        .await
        .list_service_keys(ListServiceKeysRequest {})
        .await
        .expect("an admin lists the keys")
        .into_inner()
        .keys
}

#[tokio::test]
async fn a_key_acts_with_its_role_and_events_name_it() {
    let app = TestApp::spawn().await;
    let created = create_key(&app, "ci-deploy", UserRole::Moderator, None).await;
    let key = created.key.clone().unwrap();
    assert!(created.secret.starts_with("usk_"), "{}", created.secret);
    assert_eq!(key.role, UserRole::Moderator as i32);
    assert_eq!(key.expires_at, None);

    let someone = create(&mut app.client().await, "watched").await;
    let mut as_key = app.client_with(Some(&created.secret)).await;
    assert_eq!(
        attempt(&mut as_key, Op::List).await,
        Code::Ok,
        "a moderator lists"
    );
    assert_eq!(
        attempt(&mut as_key, Op::Create(new_user("by_a_key"))).await,
        Code::PermissionDenied,
        "and may not create users"
    );

    // A moderator key suspends a user: the event names the key as the actor.
    let mut watch = app
        .client()
        .await
        .watch_users(WatchUsersRequest {
            include_all: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let suspend = user_service::pb::UpdateUserRequest {
        user_id: someone.id.clone(),
        status: Some(user_service::pb::UserStatus::Suspended as i32),
        ..Default::default()
    };
    as_key
        .update_user(suspend)
        .await
        .expect("a moderator suspends a user");
    let event = crate::watch::next_event(&mut watch).await;
    let actor = event.actor.unwrap();
    assert_eq!(
        (actor.kind, actor.id.as_str()),
        (ActorKind::ServiceKey as i32, key.id.as_str()),
        "the event names the key"
    );
}

#[tokio::test]
async fn a_listing_shows_every_key_with_its_last_use_and_never_a_secret() {
    let app = TestApp::spawn().await;
    let used = create_key(
        &app,
        "used",
        UserRole::Admin,
        Some(Duration::from_secs(3600)),
    )
    .await;
    create_key(&app, "idle", UserRole::User, None).await;
    let mut as_key = app.client_with(Some(&used.secret)).await;
    assert_eq!(attempt(&mut as_key, Op::List).await, Code::Ok);

    let mut keys = listed(&app).await;
    for _ in 0..50 {
        if keys[0].last_used_at.is_some() {
            break;
        }
        // The use is written in the background.
        tokio::time::sleep(Duration::from_millis(20)).await;
        keys = listed(&app).await;
    }
    let names: Vec<&str> = keys.iter().map(|key| key.name.as_str()).collect();
    assert_eq!(names, ["used", "idle"], "oldest first");
    assert!(
        keys[0].last_used_at.is_some(),
        "the use is recorded: {keys:?}"
    );
    assert_eq!(keys[1].last_used_at, None, "never used");
    assert_eq!(keys[0].expires_at, used.key.unwrap().expires_at);
    let listing = format!("{keys:?}");
    assert!(
        !listing.contains(&used.secret[40..]),
        "no part of a secret is listed"
    );
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once_and_a_forged_one_never_works() {
    let app = TestApp::spawn().await;
    let created = create_key(&app, "short-lived", UserRole::Admin, None).await;
    let mut as_key = app.client_with(Some(&created.secret)).await;
    assert_eq!(attempt(&mut as_key, Op::List).await, Code::Ok);

    let mut forged = created.secret.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let mut as_forger = app.client_with(Some(&forged)).await;
    assert_eq!(
        attempt(&mut as_forger, Op::List).await,
        Code::Unauthenticated,
        "a secret that differs from the issued one"
    );

    admin_auth(&app)
        .await
        .revoke_service_key(RevokeServiceKeyRequest {
            key_id: created.key.unwrap().id,
        })
        .await
        .expect("an admin revokes the key");
    let refused = as_key
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "on the same connection"
    );
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    assert!(listed(&app).await.is_empty());
}

#[tokio::test]
async fn an_expired_key_stops_working() {
    let app = TestApp::spawn().await;
    let created = create_key(
        &app,
        "brief",
        UserRole::User,
        Some(Duration::from_millis(1500)),
    )
    .await;
    let mut as_key = app.client_with(Some(&created.secret)).await;
    let own = created.key.unwrap().id;
    // A USER key is no stored user: it may read no one, but it authenticates.
    assert_eq!(
        attempt(&mut as_key, Op::Get(own.clone())).await,
        Code::PermissionDenied
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        attempt(&mut as_key, Op::Get(own)).await,
        Code::Unauthenticated,
        "past its expiry"
    );
}

#[tokio::test]
async fn only_admins_manage_keys_and_bad_requests_name_the_field() {
    let app = TestApp::spawn().await;
    let moderator = auth_as(&app, &app.token("helpdesk", Role::Moderator)).await;
    let refused = moderator
        .clone()
        .list_service_keys(ListServiceKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut admin = admin_auth(&app).await;
    let create = |name: &str, role: UserRole, expires_at| CreateServiceKeyRequest {
        name: name.into(),
        role: role as i32,
        expires_at,
    };
    let past = Some(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    for (request, field) in [
        (create("", UserRole::User, None), "name"),
        (create("two words", UserRole::User, None), "name"),
        (create("fine", UserRole::Unspecified, None), "role"),
        (create("fine", UserRole::User, past), "expires_at"),
    ] {
        let refused = admin.create_service_key(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains(field),
            "{field}: {}",
            refused.message()
        );
    }
    admin
        .create_service_key(create("Taken", UserRole::User, None))
        .await
        .unwrap();
    let taken = admin
        .create_service_key(create("taken", UserRole::User, None))
        .await
        .unwrap_err();
    assert_eq!(
        taken.code(),
        Code::AlreadyExists,
        "names are unique without case"
    );
    let unknown = admin
        .revoke_service_key(RevokeServiceKeyRequest {
            key_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_key_streams_watches_and_syncs_and_a_watch_ends_when_the_key_expires() {
    let app = TestApp::spawn().await;
    let lasting = create_key(&app, "stream-forever", UserRole::Admin, None).await;
    let brief = create_key(
        &app,
        "stream-briefly",
        UserRole::Admin,
        Some(Duration::from_secs(2)),
    )
    .await;
    let mut as_lasting = app.client_with(Some(&lasting.secret)).await;
    let mut watch = as_lasting
        .watch_users(crate::watch::everyone(0))
        .await
        .expect("a key without an expiry opens a watch")
        .into_inner();
    let mut as_brief = app.client_with(Some(&brief.secret)).await;
    let mut brief_watch = as_brief
        .watch_users(crate::watch::everyone(0))
        .await
        .expect("a key with an expiry opens a watch")
        .into_inner();
    let someone = create(&mut app.client().await, "streamed").await;
    assert_eq!(
        crate::watch::next_event(&mut watch).await.user.unwrap().id,
        someone.id
    );
    let mut replies = as_lasting
        .sync_users(tokio_stream::iter([user_service::pb::UpdateUserRequest {
            user_id: someone.id.clone(),
            full_name: Some("Synced By Key".into()),
            ..Default::default()
        }]))
        .await
        .expect("a key opens a sync")
        .into_inner();
    let reply = replies.message().await.expect("the sync answers").unwrap();
    assert_eq!(reply.user.unwrap().full_name, "Synced By Key");
    assert_eq!(
        crate::watch::next_event(&mut watch)
            .await
            .user
            .unwrap()
            .full_name,
        "Synced By Key",
        "the watch goes on"
    );
    // The brief key's watch saw both events, then ends when the key expires (with the leeway).
    let mut ended = None;
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(10), brief_watch.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Err(status)) => {
                ended = Some(status);
                break;
            }
            other => panic!("the brief key's watch neither went on nor ended: {other:?}"),
        }
    }
    let ended = ended.expect("the watch ended");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
}
