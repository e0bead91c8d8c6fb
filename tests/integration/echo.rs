//! Every RPC keeps what it repeats of the caller's input short and on one line: a 100 KB value
//! with a newline in it comes back as at most 64 characters, escaped, marked as cut, never as
//! a header too large for a client to read.

use tonic::Status;
use user_service::domain::Role;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::pb::{
    ChangePasswordRequest, CreateUserRequest, DeleteUserRequest, EndSessionsRequest,
    GetUserRequest, ListUsersRequest, LoginRequest, LookupUserRequest, RefreshRequest,
    UpdateUserRequest, WatchUsersRequest, lookup_user_request::Key,
};

use crate::helpers::{Bearer, TestApp, create, new_user};

/// Longest message a refusal here may carry: a few fields' 64-character echoes and their rules.
const MESSAGE_LIMIT: usize = 1024;

fn huge() -> String {
    format!("x\ny{}", "a".repeat(100_000))
}

fn assert_bounded(rpc: &str, message: &str) {
    assert!(
        message.len() <= MESSAGE_LIMIT,
        "{rpc}: a {} byte message: {}...",
        message.len(),
        &message[..200.min(message.len())]
    );
    assert!(
        !message.chars().any(char::is_control),
        "{rpc}: a control character in {message:?}"
    );
}

fn refused<T: std::fmt::Debug>(rpc: &str, answer: Result<tonic::Response<T>, Status>) -> Status {
    let status = answer.expect_err(rpc);
    assert_bounded(rpc, status.message());
    status
}

#[tokio::test]
async fn every_rpc_echoes_a_huge_value_with_a_newline_short_and_escaped() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let user = create(&mut client, "echoed").await;

    refused(
        "CreateUser",
        client
            .create_user(CreateUserRequest {
                username: huge(),
                email: huge(),
                full_name: huge(),
                metadata: [(huge(), huge())].into(),
                ..new_user("unused")
            })
            .await,
    );
    refused(
        "GetUser",
        client.get_user(GetUserRequest { user_id: huge() }).await,
    );
    for key in [Key::Username(huge()), Key::Email(huge())] {
        refused(
            "LookupUser",
            client
                .lookup_user(LookupUserRequest { key: Some(key) })
                .await,
        );
    }
    refused(
        "UpdateUser",
        client
            .update_user(UpdateUserRequest {
                user_id: huge(),
                ..Default::default()
            })
            .await,
    );
    refused(
        "UpdateUser",
        client
            .update_user(UpdateUserRequest {
                user_id: user.id.clone(),
                username: Some(huge()),
                etag: Some(huge()),
                metadata: [(huge(), "v".into())].into(),
                ..Default::default()
            })
            .await,
    );
    refused(
        "DeleteUser",
        client
            .delete_user(DeleteUserRequest {
                user_id: huge(),
                etag: Some(huge()),
            })
            .await,
    );
    refused(
        "ListUsers",
        client
            .list_users(ListUsersRequest {
                page_token: huge(),
                ..Default::default()
            })
            .await,
    );
    refused(
        "ListUsers",
        client
            .list_users(ListUsersRequest {
                query: huge(),
                ..Default::default()
            })
            .await,
    );
    refused(
        "WatchUsers",
        client
            .watch_users(WatchUsersRequest {
                user_ids: vec![huge()],
                ..Default::default()
            })
            .await,
    );

    // The streams answer each item in their replies.
    let batch = client
        .batch_create_users(tokio_stream::iter([CreateUserRequest {
            username: huge(),
            ..new_user("unused")
        }]))
        .await
        .expect("a batch answers")
        .into_inner();
    assert!(!batch.errors.is_empty(), "the item is refused");
    for error in &batch.errors {
        assert_bounded("BatchCreateUsers", error);
    }
    for item in &batch.failures {
        assert_bounded("BatchCreateUsers", &item.message);
    }
    let mut sync = client
        .sync_users(tokio_stream::iter([UpdateUserRequest {
            user_id: huge(),
            ..Default::default()
        }]))
        .await
        .expect("a sync opens")
        .into_inner();
    let reply = sync
        .message()
        .await
        .expect("a sync answers")
        .expect("a reply");
    let failure = reply.failure.expect("the item is refused");
    assert_bounded("SyncUsers", &failure.message);

    let mut anonymous = AuthServiceClient::new(app.channel().await);
    refused(
        "Login",
        anonymous
            .login(LoginRequest {
                username: huge(),
                password: huge(),
                ..Default::default()
            })
            .await,
    );
    refused(
        "Refresh",
        anonymous
            .refresh(RefreshRequest {
                refresh_token: huge(),
            })
            .await,
    );
    let mut admin = AuthServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&app.token("echo-admin", Role::Admin))).unwrap(),
    );
    refused(
        "EndSessions",
        admin
            .end_sessions(EndSessionsRequest { user_id: huge() })
            .await,
    );
    refused(
        "ChangePassword",
        admin
            .change_password(ChangePasswordRequest {
                user_id: huge(),
                current_password: huge(),
                new_password: huge(),
            })
            .await,
    );
    // Logout takes no input; a bearer token of the caller's is not echoed either.
    let mut forged = AuthServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some("a.b.c")).unwrap(),
    );
    refused(
        "Logout",
        forged.logout(user_service::pb::LogoutRequest {}).await,
    );
}
