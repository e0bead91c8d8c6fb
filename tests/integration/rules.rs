//! What both backends decide alike, seen from outside. `make test` runs these on SQLite and
//! on PostgreSQL; the decisions themselves are tested once, in `storage::rules`' table.

use tonic::Code;
use user_service::pb::{self, DeleteUserRequest, ListUsersRequest, UpdateUserRequest};
use user_service::storage::{StorageSettings, Store, StoreError};

use crate::helpers::{Backend, TestApp, TestDatabase, backend, create, new_user};

#[tokio::test]
async fn a_schema_newer_than_the_server_is_refused_with_what_to_do() {
    let database = TestDatabase::new();
    let settings = StorageSettings {
        database_url: database.url().to_owned(),
        ..StorageSettings::default()
    };
    let store = Store::open(&settings)
        .await
        .expect("a fresh database opens");
    store.close().await.expect("the store closes");
    match backend() {
        Backend::Sqlite => rusqlite::Connection::open(database.sqlite_path())
            .and_then(|conn| conn.pragma_update(None, "user_version", 99))
            .expect("the SQLite file takes a version"),
        Backend::Postgres => database.postgres_exec("UPDATE schema_version SET version = 99"),
    }

    let refused = match Store::open(&settings).await {
        Ok(_) => panic!("a schema newer than the server was opened"),
        Err(err) => err,
    };

    assert!(
        matches!(refused, StoreError::SchemaTooNew { found: 99, .. }),
        "the refusal says what was found: {refused:?}"
    );
    assert!(
        refused.to_string().contains("run a newer server"),
        "the refusal says what to do: {refused}"
    );
}

async fn list(client: &mut crate::helpers::Client, status: i32, role: i32) -> (i32, usize) {
    let listed = client
        .list_users(ListUsersRequest {
            page_size: 100,
            page_token: String::new(),
            status_filter: status,
            role_filter: role,
            ..Default::default()
        })
        .await
        .expect("a listing")
        .into_inner();
    (listed.total_count, listed.users.len())
}

#[tokio::test]
async fn counts_stay_exact_through_a_batch_with_a_refused_item_and_changes() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    create(&mut client, "taken").await;
    let batch = client
        .batch_create_users(tokio_stream::iter([
            new_user("counted1"),
            new_user("taken"),
            new_user("counted2"),
            new_user("counted3"),
        ]))
        .await
        .expect("a batch")
        .into_inner();
    assert_eq!(
        (batch.users.len(), batch.errors.len()),
        (3, 1),
        "the taken name alone is refused"
    );
    let (first, second, third) = (&batch.users[0], &batch.users[1], &batch.users[2]);
    client
        .update_user(UpdateUserRequest {
            user_id: first.id.clone(),
            status: Some(pb::UserStatus::Suspended as i32),
            ..Default::default()
        })
        .await
        .expect("a suspension");
    client
        .update_user(UpdateUserRequest {
            user_id: second.id.clone(),
            role: Some(pb::UserRole::Moderator as i32),
            full_name: Some("Promoted".into()),
            ..Default::default()
        })
        .await
        .expect("a promotion");
    let stale = client
        .update_user(UpdateUserRequest {
            user_id: third.id.clone(),
            status: Some(pb::UserStatus::Suspended as i32),
            etag: Some("1".into()),
            ..Default::default()
        })
        .await
        .expect_err("a stale etag");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    client
        .delete_user(DeleteUserRequest {
            user_id: third.id.clone(),
            ..Default::default()
        })
        .await
        .expect("a delete");

    let (active, suspended) = (
        pb::UserStatus::Active as i32,
        pb::UserStatus::Suspended as i32,
    );
    let (user, moderator) = (pb::UserRole::User as i32, pb::UserRole::Moderator as i32);
    let expected = [
        ((0, 0), 3),
        ((active, 0), 2),
        ((suspended, 0), 1),
        ((0, user), 2),
        ((0, moderator), 1),
        ((active, user), 1),
        ((suspended, moderator), 0),
    ];
    for ((status, role), users) in expected {
        assert_eq!(
            list(&mut client, status, role).await,
            (users, users as usize),
            "total and listing agree for status {status}, role {role}"
        );
    }
}

#[tokio::test]
async fn ending_all_sessions_cuts_off_tokens_without_a_session_issued_before() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let user = create(&mut client, "cutoff").await;
    let minted = app.token(&user.id, user_service::domain::Role::User);
    let mut minted_client = app.client_with(Some(&minted)).await;
    minted_client
        .get_user(pb::GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("a minted token works before");

    // Tokens carry whole seconds: one minted in the same second as the end would be kept.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut auth = pb::auth_service_client::AuthServiceClient::new(app.channel().await);
    let mut end = tonic::Request::new(pb::EndSessionsRequest {
        user_id: user.id.clone(),
    });
    end.metadata_mut().insert(
        "authorization",
        format!(
            "Bearer {}",
            app.token("ops", user_service::domain::Role::Admin)
        )
        .parse()
        .unwrap(),
    );
    auth.end_sessions(end)
        .await
        .expect("an admin ends the sessions");

    let refused = minted_client
        .get_user(pb::GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect_err("a token issued before the end");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let fresh = app.token(&user.id, user_service::domain::Role::User);
    app.client_with(Some(&fresh))
        .await
        .get_user(pb::GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("a token issued after the end works");
}
