//! Password strength where a password is set: CreateUser, BatchCreateUsers and ChangePassword
//! (a user's own and an admin's), with the default rule; imported hashes are exempt.

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use user_service::domain::{PasswordStrength, Role};
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{ChangePasswordRequest, CreateUserRequest};

use super::login::login;
use crate::helpers::{Bearer, TestApp, create_request, new_user};

const STRONG: &str = "plum tractor violet harbour 42";

async fn strict() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.auth.password_min_strength = PasswordStrength::DEFAULT_SCORE;
    })
    .await
}

fn with_password(username: &str, password: &str) -> CreateUserRequest {
    CreateUserRequest {
        password: password.into(),
        ..new_user(username)
    }
}

fn assert_refused(status: &tonic::Status, field: &str, rule: &str, password: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")) && status.message().contains(rule),
        "{field} / {rule}: {}",
        status.message()
    );
    assert!(
        !status.message().contains(password),
        "the refusal never quotes the password: {}",
        status.message()
    );
}

async fn auth(
    app: &TestApp,
    token: &str,
) -> AuthServiceClient<InterceptedService<Channel, Bearer>> {
    AuthServiceClient::with_interceptor(app.channel().await, Bearer::new(Some(token)).unwrap())
}

#[tokio::test]
async fn create_and_batch_refuse_common_and_name_like_passwords_and_take_imported_hashes() {
    let app = strict().await;
    let mut admin = app.client().await;

    let common = admin
        .create_user(with_password("weak_one", "password123"))
        .await
        .unwrap_err();
    let name_like = admin
        .create_user(with_password("ann_lee", "Ann_Lee-zebra-harbour-9"))
        .await
        .unwrap_err();
    let strong = create_request(&mut admin, with_password("strong_one", STRONG)).await;
    let imported = create_request(
        &mut admin,
        CreateUserRequest {
            password: String::new(),
            // A hash of a common password: the server cannot know it, so does not judge it.
            password_hash: bcrypt::hash("password123", 4).unwrap(),
            ..new_user("imported_one")
        },
    )
    .await;
    let batch = admin
        .batch_create_users(tokio_stream::iter([
            with_password("batch_strong", STRONG),
            with_password("batch_weak", "qwertyuiop"),
        ]))
        .await
        .unwrap()
        .into_inner();

    assert_refused(&common, "password", "too easy to guess", "password123");
    assert_refused(
        &name_like,
        "password",
        "must not contain the username",
        "Ann_Lee",
    );
    assert_eq!(strong.username, "strong_one");
    assert_eq!(imported.username, "imported_one");
    assert_eq!(batch.users.len(), 1, "{batch:?}");
    assert_eq!(batch.failures.len(), 1, "{batch:?}");
    let failure = &batch.failures[0];
    assert_eq!(
        (failure.position, failure.code),
        (1, Code::InvalidArgument as i32)
    );
    assert_eq!(failure.field, "password", "{failure:?}");
}

#[tokio::test]
async fn a_changed_or_set_password_must_be_strong_too() {
    let app = strict().await;
    let mut admin = app.client().await;
    let user = create_request(&mut admin, with_password("changer", STRONG)).await;
    let session = login(&app, "changer", STRONG).await.unwrap();

    let own = auth(&app, &session.access_token)
        .await
        .change_password(ChangePasswordRequest {
            current_password: STRONG.into(),
            new_password: "letmein123".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let by_admin = auth(&app, &app.token("admin", Role::Admin))
        .await
        .change_password(ChangePasswordRequest {
            user_id: user.id.clone(),
            new_password: "changer-2026-spring".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert_refused(&own, "new_password", "too easy to guess", "letmein123");
    assert_refused(
        &by_admin,
        "new_password",
        "must not contain the username",
        "changer-2026",
    );
    login(&app, "changer", STRONG)
        .await
        .expect("the refused changes left the password as it was");
}
