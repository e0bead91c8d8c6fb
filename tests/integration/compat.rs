//! A client generated from the original, unchanged tutorial contract uses every RPC.

use tonic::Code;

use crate::helpers::TestApp;

#[allow(clippy::all, dead_code)]
mod tutorial {
    include!(concat!(env!("OUT_DIR"), "/legacy/userservice.rs"));
}

use tutorial::user_service_client::UserServiceClient;
use tutorial::*;

fn request(name: &str) -> CreateUserRequest {
    CreateUserRequest {
        username: name.into(),
        email: format!("{name}@example.com"),
        full_name: "Old Client".into(),
        password: "password123".into(),
        role: UserRole::User as i32,
        metadata: Default::default(),
    }
}

#[tokio::test]
async fn a_client_generated_from_the_original_contract_uses_every_rpc() {
    let app = TestApp::spawn().await;
    let token = app.token("old-client", user_service::domain::Role::Admin);
    let mut client = UserServiceClient::with_interceptor(
        app.channel().await,
        crate::helpers::Bearer::new(Some(&token)).unwrap(),
    );

    let mut watch = client
        .watch_users(WatchUsersRequest {
            user_ids: vec![],
            include_all: true,
        })
        .await
        .unwrap()
        .into_inner();

    let user = client
        .create_user(request("oldtimer"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.status, UserStatus::Active as i32);

    let fetched = client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.user.unwrap().username, "oldtimer");

    let updated = client
        .update_user(UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some("Still Old".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.user.unwrap().full_name, "Still Old");

    let batch = client
        .batch_create_users(tokio_stream::iter([
            request("oldbatch1"),
            request("oldbatch2"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((batch.users.len(), batch.errors.len()), (2, 0));

    let listed = client
        .list_users(ListUsersRequest {
            page_size: 10,
            page_token: String::new(),
            status_filter: 0,
            role_filter: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 3);

    let mut sync = client
        .sync_users(tokio_stream::iter([UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("new@example.com".into()),
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner();
    let reply = sync.message().await.unwrap().unwrap();
    assert_eq!(reply.r#type, EventType::Updated as i32);

    let deleted = client
        .delete_user(DeleteUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.success);
    let gone = client
        .get_user(GetUserRequest { user_id: user.id })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(
        first.r#type,
        EventType::Created as i32,
        "the old client decodes events"
    );
}

/// The tutorial's own `test_user_not_found`, with its client: an id that names no user is
/// NOT_FOUND, whatever its shape, for every call that looks a user up.
#[tokio::test]
async fn the_tutorials_unknown_id_is_not_found_for_get_update_and_delete() {
    let app = TestApp::spawn().await;
    let token = app.token("old-client", user_service::domain::Role::Admin);
    let mut client = UserServiceClient::with_interceptor(
        app.channel().await,
        crate::helpers::Bearer::new(Some(&token)).unwrap(),
    );
    for id in [
        "nonexistent-id",
        "42",
        "0192a3b4-0000-7000-8000-000000000000",
    ] {
        let get = client
            .get_user(GetUserRequest { user_id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(get.code(), Code::NotFound, "GetUser {id}: {get:?}");
        assert!(get.message().contains(id), "{}", get.message());
        let update = client
            .update_user(UpdateUserRequest {
                user_id: id.into(),
                full_name: Some("Nobody".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(update.code(), Code::NotFound, "UpdateUser {id}: {update:?}");
        let delete = client
            .delete_user(DeleteUserRequest { user_id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(delete.code(), Code::NotFound, "DeleteUser {id}: {delete:?}");
    }
    let empty = client
        .get_user(GetUserRequest {
            user_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
}
