//! Sessions and passwords: Login starts a session, Refresh rotates its refresh token and ends it
//! when an old one comes back, Logout and EndSessions end sessions at once on every
//! connection, and a password change ends everything the user had before it.

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{
    ChangePasswordRequest, EndSessionsRequest, LoginResponse, LogoutRequest, RefreshRequest,
    UserRole,
};

use super::login::login;
use super::{Op, attempt};
use crate::helpers::{Bearer, TestApp, create, create_with_role};

const PASSWORD: &str = "correct horse battery";

type Auth = AuthServiceClient<InterceptedService<Channel, Bearer>>;

/// An AuthService client on its own connection, sending `token` if given.
async fn auth_client(app: &TestApp, token: Option<&str>) -> Auth {
    AuthServiceClient::with_interceptor(app.channel().await, Bearer::new(token).unwrap())
}

async fn refresh(app: &TestApp, token: &str) -> Result<LoginResponse, tonic::Status> {
    auth_client(app, None)
        .await
        .refresh(RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// What GetUser of the token's own user answers with this access token, on a new connection.
async fn reads_self(app: &TestApp, login: &LoginResponse) -> Code {
    let id = login.user.as_ref().unwrap().id.clone();
    let mut client = app.client_with(Some(&login.access_token)).await;
    attempt(&mut client, Op::Get(id)).await
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_ends_the_whole_session() {
    let app = TestApp::spawn().await;
    create(&mut app.client().await, "rotator").await;
    let first = login(&app, "rotator", PASSWORD).await.unwrap();
    assert!(!first.refresh_token.is_empty());
    let ends = first.refresh_expires_at.expect("the session's end");
    let expires = first.expires_at.expect("the token's end");
    assert_eq!(
        (ends.nanos, expires.nanos),
        (0, 0),
        "both ends in whole seconds, alike"
    );

    let second = refresh(&app, &first.refresh_token)
        .await
        .expect("a fresh refresh token works once");
    assert_ne!(second.refresh_token, first.refresh_token, "rotated");
    assert_eq!(second.user, first.user);
    assert_eq!(
        second.refresh_expires_at, first.refresh_expires_at,
        "the session's end stays"
    );
    assert_eq!(reads_self(&app, &second).await, Code::Ok);

    let reused = refresh(&app, &first.refresh_token).await.unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated, "{reused:?}");
    assert!(reused.message().contains("already used"), "{reused:?}");

    let after = refresh(&app, &second.refresh_token).await.unwrap_err();
    assert_eq!(
        after.code(),
        Code::Unauthenticated,
        "the thief's rotation ended too: {after:?}"
    );
    assert_eq!(reads_self(&app, &second).await, Code::Unauthenticated);
    assert_eq!(reads_self(&app, &first).await, Code::Unauthenticated);

    let other = login(&app, "rotator", PASSWORD).await.unwrap();
    assert_eq!(
        reads_self(&app, &other).await,
        Code::Ok,
        "a new login is a new session"
    );
}

#[tokio::test]
async fn logout_on_one_connection_refuses_the_token_on_another_at_once() {
    let app = TestApp::spawn().await;
    create(&mut app.client().await, "leaver").await;
    let session = login(&app, "leaver", PASSWORD).await.unwrap();
    let kept = login(&app, "leaver", PASSWORD).await.unwrap();
    let mut elsewhere = app.client_with(Some(&session.access_token)).await;
    let id = session.user.as_ref().unwrap().id.clone();
    assert_eq!(attempt(&mut elsewhere, Op::Get(id.clone())).await, Code::Ok);

    auth_client(&app, Some(&session.access_token))
        .await
        .logout(LogoutRequest {})
        .await
        .expect("logout");

    assert_eq!(
        attempt(&mut elsewhere, Op::Get(id)).await,
        Code::Unauthenticated,
        "the open connection's next call"
    );
    let refreshed = refresh(&app, &session.refresh_token).await.unwrap_err();
    assert_eq!(refreshed.code(), Code::Unauthenticated);
    assert_eq!(
        reads_self(&app, &kept).await,
        Code::Ok,
        "the other session goes on"
    );

    let anonymous = auth_client(&app, None)
        .await
        .logout(LogoutRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let service = app.token("billing", Role::Admin);
    let no_session = auth_client(&app, Some(&service))
        .await
        .logout(LogoutRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        no_session.code(),
        Code::FailedPrecondition,
        "{no_session:?}"
    );
}

#[tokio::test]
async fn changing_ones_password_ends_every_earlier_token_and_returns_a_new_session() {
    let app = TestApp::spawn().await;
    let user = create(&mut app.client().await, "changer").await;
    let before = login(&app, "changer", PASSWORD).await.unwrap();
    let other_device = login(&app, "changer", PASSWORD).await.unwrap();
    // A token without a session, as another issuer would mint it.
    let minted = app.token(&user.id, Role::User);
    let mut minted_client = app.client_with(Some(&minted)).await;
    assert_eq!(
        attempt(&mut minted_client, Op::Get(user.id.clone())).await,
        Code::Ok
    );
    let mut auth = auth_client(&app, Some(&before.access_token)).await;

    let wrong = auth
        .change_password(ChangePasswordRequest {
            current_password: "not my password".into(),
            new_password: "a brand new secret".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    assert_eq!(
        reads_self(&app, &before).await,
        Code::Ok,
        "a wrong guess changes nothing"
    );

    let short = auth
        .change_password(ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "short".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    assert!(short.message().contains("new_password"), "{short:?}");

    let changed = auth
        .change_password(ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "a brand new secret".into(),
            ..Default::default()
        })
        .await
        .expect("the right current password")
        .into_inner()
        .login
        .expect("a new session for the caller");

    assert_eq!(reads_self(&app, &before).await, Code::Unauthenticated);
    assert_eq!(reads_self(&app, &other_device).await, Code::Unauthenticated);
    assert_eq!(
        attempt(&mut minted_client, Op::Get(user.id.clone())).await,
        Code::Unauthenticated,
        "a token without a session, issued before the change"
    );
    let old_refresh = refresh(&app, &other_device.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(old_refresh.code(), Code::Unauthenticated);
    assert_eq!(
        reads_self(&app, &changed).await,
        Code::Ok,
        "the new session works"
    );
    refresh(&app, &changed.refresh_token)
        .await
        .expect("the new session refreshes");

    let old = login(&app, "changer", PASSWORD).await.unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    login(&app, "changer", "a brand new secret")
        .await
        .expect("the new password logs in");
}

#[tokio::test]
async fn an_admin_sets_anyones_password_and_others_may_not() {
    let app = TestApp::spawn().await;
    let mut admin_users = app.client().await;
    let user = create(&mut admin_users, "forgetful").await;
    let bystander = create_with_role(&mut admin_users, "bystander", UserRole::Moderator).await;
    let session = login(&app, "forgetful", PASSWORD).await.unwrap();

    let moderator = app.token(&bystander, Role::Moderator);
    let refused = auth_client(&app, Some(&moderator))
        .await
        .change_password(ChangePasswordRequest {
            user_id: user.id.clone(),
            new_password: "chosen by a moderator".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let admin = app.token("helpdesk", Role::Admin);
    let mut admin_auth = auth_client(&app, Some(&admin)).await;
    let set = admin_auth
        .change_password(ChangePasswordRequest {
            user_id: user.id.clone(),
            new_password: "reset by the desk".into(),
            ..Default::default()
        })
        .await
        .expect("an admin needs no current password")
        .into_inner();
    assert_eq!(set.login, None, "no session for someone else");
    assert_eq!(reads_self(&app, &session).await, Code::Unauthenticated);
    login(&app, "forgetful", "reset by the desk")
        .await
        .expect("the password the admin set");

    let unknown = admin_auth
        .change_password(ChangePasswordRequest {
            user_id: "no-such-user".into(),
            new_password: "reset by the desk".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("no-such-user"), "{unknown:?}");
}

#[tokio::test]
async fn end_sessions_is_for_the_user_themselves_and_for_admins() {
    let app = TestApp::spawn().await;
    let mut admin_users = app.client().await;
    let user = create(&mut admin_users, "sessioned").await;
    let other = create(&mut admin_users, "neighbour").await;
    let first = login(&app, "sessioned", PASSWORD).await.unwrap();
    let second = login(&app, "sessioned", PASSWORD).await.unwrap();
    let neighbour = login(&app, "neighbour", PASSWORD).await.unwrap();

    let refused = auth_client(&app, Some(&neighbour.access_token))
        .await
        .end_sessions(EndSessionsRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let ended = auth_client(&app, Some(&first.access_token))
        .await
        .end_sessions(EndSessionsRequest::default())
        .await
        .expect("a user ends their own sessions")
        .into_inner()
        .ended;
    assert_eq!(ended, 2);
    assert_eq!(reads_self(&app, &first).await, Code::Unauthenticated);
    assert_eq!(reads_self(&app, &second).await, Code::Unauthenticated);
    assert_eq!(reads_self(&app, &neighbour).await, Code::Ok);

    let admin = app.token("helpdesk", Role::Admin);
    let ended = auth_client(&app, Some(&admin))
        .await
        .end_sessions(EndSessionsRequest {
            user_id: other.id.clone(),
        })
        .await
        .expect("an admin ends anyone's")
        .into_inner()
        .ended;
    assert_eq!(ended, 1);
    assert_eq!(reads_self(&app, &neighbour).await, Code::Unauthenticated);
}

#[tokio::test]
async fn a_refresh_token_that_is_not_one_is_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    for (token, code) in [
        ("", Code::InvalidArgument),
        ("not base64!", Code::InvalidArgument),
        ("c2hvcnQ", Code::InvalidArgument),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            Code::Unauthenticated,
        ),
    ] {
        let status = refresh(&app, token).await.unwrap_err();
        assert_eq!(status.code(), code, "{token:?}: {status:?}");
        if code == Code::InvalidArgument {
            assert!(status.message().contains("refresh_token"), "{status:?}");
        }
    }
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_and_its_tokens_never_outlive_it() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.session_ttl = std::time::Duration::from_secs(1);
    })
    .await;
    create(&mut app.client().await, "brief").await;
    let session = login(&app, "brief", PASSWORD).await.unwrap();
    let ends = session.refresh_expires_at.unwrap();
    let access_ends = session.expires_at.unwrap();
    assert!(
        access_ends.seconds <= ends.seconds,
        "the access token ends with the session: {access_ends:?} > {ends:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = refresh(&app, &session.refresh_token).await.unwrap_err();
    assert_eq!(late.code(), Code::Unauthenticated, "{late:?}");
    login(&app, "brief", PASSWORD)
        .await
        .expect("a new login starts a new session");
}

#[tokio::test]
async fn a_watch_opened_by_a_session_ends_at_its_next_event_once_the_session_ended() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "watcher").await;
    let session = login(&app, "watcher", PASSWORD).await.unwrap();
    let mut own = app
        .client_with(Some(&session.access_token))
        .await
        .watch_users(user_service::pb::WatchUsersRequest {
            user_ids: vec![user.id.clone()],
            ..Default::default()
        })
        .await
        .expect("the session watches its user")
        .into_inner();
    let rename = |name: &str| user_service::pb::UpdateUserRequest {
        user_id: user.id.clone(),
        full_name: Some(name.into()),
        ..Default::default()
    };
    admin.update_user(rename("Before Logout")).await.unwrap();
    let event = own
        .message()
        .await
        .unwrap()
        .expect("an event while the session is open");
    assert_eq!(event.user.unwrap().full_name, "Before Logout");

    auth_client(&app, Some(&session.access_token))
        .await
        .logout(LogoutRequest {})
        .await
        .unwrap();
    admin.update_user(rename("After Logout")).await.unwrap();
    let ended = own.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("session has ended"), "{ended:?}");
}

#[tokio::test]
async fn a_suspended_users_refresh_is_refused_without_using_the_token_up() {
    let app = TestApp::spawn().await;
    let user = create(&mut app.client().await, "paused_user").await;
    let first = login(&app, "paused_user", PASSWORD).await.unwrap();
    let set = |status: user_service::pb::UserStatus| user_service::pb::UpdateUserRequest {
        user_id: user.id.clone(),
        status: Some(status as i32),
        ..Default::default()
    };
    let mut admin = app.client().await;
    admin
        .update_user(set(user_service::pb::UserStatus::Suspended))
        .await
        .unwrap();
    let refused = refresh(&app, &first.refresh_token).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("suspended"), "{refused:?}");
    admin
        .update_user(set(user_service::pb::UserStatus::Active))
        .await
        .unwrap();
    refresh(&app, &first.refresh_token)
        .await
        .expect("the same refresh token works again once the account is active");
}
