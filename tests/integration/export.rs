//! ExportUsers: every user as of one revision while writes go on, resumable, admins only.

use std::collections::BTreeMap;

use tokio_stream::StreamExt;
use tonic::Code;
use user_service::domain::Role;
use user_service::pb::{
    self, BatchCreateUsersResponse, CreateUserRequest, DeleteUserRequest, ExportUsersRequest,
    ExportUsersResponse, UpdateUserRequest,
};

use crate::helpers::{Client, TestApp, create};

/// A bcrypt hash (cost 4) stored as it is, so seeding many users costs no hashing.
const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuVbsuMsXIBR3YrmyTAqElyDHWDmgSFbe";

/// Creates `count` users named `{prefix}{i}` in calls of 1,000.
async fn seed(client: &mut Client, prefix: &str, count: usize) {
    for start in (0..count).step_by(1_000) {
        let requests: Vec<CreateUserRequest> = (start..count.min(start + 1_000))
            .map(|i| CreateUserRequest {
                username: format!("{prefix}{i}"),
                email: format!("{prefix}{i}@example.com"),
                full_name: format!("Seeded {i}"),
                password_hash: HASH.to_owned(),
                ..Default::default()
            })
            .collect();
        let answer: BatchCreateUsersResponse = client
            .batch_create_users(tokio_stream::iter(requests))
            .await
            .expect("the batch is created")
            .into_inner();
        assert!(answer.failures.is_empty(), "{:?}", answer.failures);
    }
}

async fn open(
    client: &mut Client,
    request: ExportUsersRequest,
) -> Result<tonic::Streaming<ExportUsersResponse>, tonic::Status> {
    client
        .export_users(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Every part of a stream, to its end.
async fn drain(mut parts: tonic::Streaming<ExportUsersResponse>) -> Vec<ExportUsersResponse> {
    let mut all = Vec::new();
    while let Some(part) = parts.next().await {
        all.push(part.expect("the export goes on"));
    }
    all
}

fn users(parts: &[ExportUsersResponse]) -> Vec<pb::User> {
    parts
        .iter()
        .flat_map(|part| part.users.iter())
        .map(|exported| exported.user.clone().expect("each part's user is set"))
        .collect()
}

/// Every user as ListUsers shows them now, by id.
async fn listed(client: &mut Client) -> BTreeMap<String, pb::User> {
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_users(pb::ListUsersRequest {
                page_size: 1_000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("ListUsers answers")
            .into_inner();
        all.extend(page.users.into_iter().map(|user| (user.id.clone(), user)));
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Users enough that the export is still reading when the writes commit: more than the
/// server and the connection hold on their way to a client that has stopped reading.
const SNAPSHOT_USERS: usize = 40_000;

#[tokio::test]
async fn an_export_is_every_user_as_of_one_revision_while_writes_go_on() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    seed(&mut admin, "snap", SNAPSHOT_USERS).await;
    let before = listed(&mut admin).await;

    let mut parts = open(&mut admin, ExportUsersRequest::default())
        .await
        .unwrap();
    let first = parts.next().await.unwrap().unwrap();
    // Writes while the export is under way, on the users it reads last (ids are time-ordered,
    // the export goes in id order): new ones, changed ones and deleted ones.
    let last_ids: Vec<String> = before.keys().rev().take(20).cloned().collect();
    for id in &last_ids[..10] {
        admin
            .update_user(UpdateUserRequest {
                user_id: id.clone(),
                full_name: Some("Changed During Export".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for id in &last_ids[10..] {
        admin
            .delete_user(DeleteUserRequest {
                user_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    create(&mut admin, "snap_latecomer").await;

    let mut all = vec![first];
    all.extend(drain(parts).await);
    let exported = users(&all);
    let last = all.last().unwrap();
    assert!(last.done && last.users.is_empty(), "a last part says it is");
    assert!(all[..all.len() - 1].iter().all(|part| !part.done));
    assert!(all.iter().all(|part| part.revision == last.revision));
    assert_eq!(last.total_users, SNAPSHOT_USERS as i64);
    assert_eq!(
        exported.len(),
        SNAPSHOT_USERS,
        "no user twice, none missing"
    );
    let ids: Vec<&String> = exported.iter().map(|user| &user.id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "in id order");
    let as_of: BTreeMap<String, pb::User> = exported
        .into_iter()
        .map(|user| (user.id.clone(), user))
        .collect();
    assert!(
        as_of == before,
        "the export is the users as they were when it began: none changed, deleted or added since"
    );
    assert!(
        as_of.values().all(|user| user
            .etag
            .parse::<i64>()
            .is_ok_and(|revision| revision <= last.revision)),
        "no user is newer than the export's revision"
    );
}

#[tokio::test]
async fn a_broken_export_resumes_after_its_last_part_with_its_first_revision() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    seed(&mut admin, "resume", 2_500).await;
    let whole = drain(
        open(&mut admin, ExportUsersRequest::default())
            .await
            .unwrap(),
    )
    .await;

    let mut parts = open(&mut admin, ExportUsersRequest::default())
        .await
        .unwrap();
    let first = parts.next().await.unwrap().unwrap();
    drop(parts);
    let latecomer = create(&mut admin, "resume_latecomer").await;
    let rest = drain(
        open(
            &mut admin,
            ExportUsersRequest {
                resume_token: first.resume_token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    )
    .await;

    let mut resumed = users(std::slice::from_ref(&first));
    resumed.extend(users(&rest));
    let mut expected = users(&whole);
    // The rest was read in a snapshot of its own, after the latecomer joined.
    expected.push(latecomer);
    assert_eq!(
        resumed, expected,
        "nothing lost or repeated across the break"
    );
    assert_eq!(
        rest.last().unwrap().revision,
        first.revision,
        "the first part's revision: WatchUsers from there misses nothing"
    );

    let malformed = open(
        &mut admin,
        ExportUsersRequest {
            resume_token: "not-a-token".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("resume_token"),
        "{malformed:?}"
    );
}

#[tokio::test]
async fn password_hashes_come_only_when_asked_and_import_back_as_they_are() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    seed(&mut admin, "hashed", 3).await;
    create(&mut admin, "hashed_here").await;

    let without = users_with_hashes(&mut admin, false).await;
    assert!(without.iter().all(|(_, hash)| hash.is_empty()));
    let with = users_with_hashes(&mut admin, true).await;
    assert_eq!(with.len(), 4);
    for (username, hash) in &with {
        if username == "hashed_here" {
            assert!(hash.starts_with("$argon2id$"), "{hash}");
        } else {
            assert_eq!(hash, HASH, "an imported hash is kept as it came");
        }
    }
}

async fn users_with_hashes(client: &mut Client, hashes: bool) -> Vec<(String, String)> {
    let parts = drain(
        open(
            client,
            ExportUsersRequest {
                include_password_hashes: hashes,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    )
    .await;
    parts
        .iter()
        .flat_map(|part| &part.users)
        .map(|exported| {
            (
                exported.user.as_ref().unwrap().username.clone(),
                exported.password_hash.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn only_admins_export() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let user = create(&mut admin, "export_user").await;
    for (token, code) in [
        (
            Some(app.token("helpdesk", Role::Moderator)),
            Code::PermissionDenied,
        ),
        (
            Some(app.token(&user.id, Role::User)),
            Code::PermissionDenied,
        ),
        (None, Code::Unauthenticated),
    ] {
        let mut client = app.client_with(token.as_deref()).await;
        let refused = open(&mut client, ExportUsersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{refused:?}");
    }
}

#[tokio::test]
async fn an_empty_directory_exports_one_last_part() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let parts = drain(
        open(&mut admin, ExportUsersRequest::default())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(parts.len(), 1);
    assert!(parts[0].done && parts[0].users.is_empty());
    assert_eq!(parts[0].total_users, 0);
    assert!(parts[0].resume_token.is_empty());
}

#[tokio::test]
async fn a_resume_whose_revision_left_the_log_is_refused() {
    let app = TestApp::spawn_with(|settings| settings.storage.event_retention = 2).await;
    let mut admin = app.client().await;
    seed(&mut admin, "compact", 1_500).await;
    let mut parts = open(&mut admin, ExportUsersRequest::default())
        .await
        .unwrap();
    let first = parts.next().await.unwrap().unwrap();
    drop(parts);
    for name in ["compact_a", "compact_b", "compact_c"] {
        create(&mut admin, name).await;
    }
    let refused = open(
        &mut admin,
        ExportUsersRequest {
            resume_token: first.resume_token,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("export again"), "{refused:?}");
}
