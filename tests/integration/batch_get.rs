//! BatchGetUsers: users in the order asked, the rest listed apart, one policy decision per id,
//! and a plain user learns nothing of ids that are not theirs.

use tonic::Code;
use user_service::domain::Role;
use user_service::pb::{BatchGetUsersRequest, BatchGetUsersResponse};

use crate::helpers::{Client, TestApp, create};

async fn batch_get(
    client: &mut Client,
    ids: &[&str],
) -> Result<BatchGetUsersResponse, tonic::Status> {
    client
        .batch_get_users(BatchGetUsersRequest {
            user_ids: ids.iter().map(|id| id.to_string()).collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

const UNKNOWN: &str = "0192a3b4-0000-7000-8000-000000000000";

#[tokio::test]
async fn users_come_in_the_order_asked_and_the_missing_apart() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let a = create(&mut admin, "batch_a").await;
    let b = create(&mut admin, "batch_b").await;
    let c = create(&mut admin, "batch_c").await;

    let answer = batch_get(
        &mut admin,
        &[&c.id, UNKNOWN, &a.id, "not-a-uuid", &b.id, &c.id],
    )
    .await
    .unwrap();
    let names: Vec<&str> = answer
        .users
        .iter()
        .map(|user| user.username.as_str())
        .collect();
    assert_eq!(
        names,
        ["batch_c", "batch_a", "batch_b"],
        "the order asked, a repeat once"
    );
    assert_eq!(answer.missing_ids, [UNKNOWN, "not-a-uuid"]);
    assert_eq!(answer.users[0], c, "the whole user, as GetUser gives it");

    let empty = batch_get(&mut admin, &[]).await.unwrap();
    assert!(empty.users.is_empty() && empty.missing_ids.is_empty());
}

#[tokio::test]
async fn a_plain_user_sees_only_themselves_and_cannot_tell_others_from_no_one() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let me = create(&mut admin, "batch_me").await;
    let other = create(&mut admin, "batch_other").await;
    let mut mine = app.client_with(Some(&app.token(&me.id, Role::User))).await;

    let answer = batch_get(&mut mine, &[&other.id, &me.id, UNKNOWN])
        .await
        .unwrap();
    assert_eq!(answer.users, std::slice::from_ref(&me));
    assert_eq!(
        answer.missing_ids,
        [other.id.as_str(), UNKNOWN],
        "someone else's id is answered as no one's"
    );

    let mut moderator = app
        .client_with(Some(&app.token("helpdesk", Role::Moderator)))
        .await;
    let answer = batch_get(&mut moderator, &[&other.id, &me.id])
        .await
        .unwrap();
    assert_eq!(answer.users.len(), 2, "a moderator reads everyone");

    let mut anonymous = app.client_with(None).await;
    let refused = batch_get(&mut anonymous, &[&me.id]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn more_than_a_thousand_ids_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let ids: Vec<String> = (0..1_001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let refused = batch_get(&mut app.client().await, &refs).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("user_ids"),
        "{}",
        refused.message()
    );
    let answer = batch_get(&mut app.client().await, &refs[..1_000])
        .await
        .unwrap();
    assert_eq!(answer.missing_ids.len(), 1_000, "a thousand is allowed");
}
