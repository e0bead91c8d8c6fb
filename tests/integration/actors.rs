//! Every event names who made the change: a stored user, a service or an anonymous sign-up,
//! live and when replayed from the log; a USER watching their own record sees who changed it
//! only when it was themselves.

use user_service::domain::Role;
use user_service::pb::{
    Actor, ActorKind, DeleteUserRequest, UpdateUserRequest, UserEvent, WatchUsersRequest,
};

use crate::helpers::{TestApp, create, new_user};
use crate::watch::{everyone, next_event};

fn actor(event: &UserEvent) -> (ActorKind, &str) {
    let actor = event.actor.as_ref().expect("every event has an actor");
    (actor.kind(), actor.id.as_str())
}

#[tokio::test]
async fn events_name_their_actor_live_and_replayed() {
    let app = TestApp::spawn_with(|settings| settings.auth.allow_signup = true).await;
    let mut admin = app.client().await;
    let mut all = admin.watch_users(everyone(0)).await.unwrap().into_inner();

    // A service (the admin token's subject) creates; the user renames themselves; anyone
    // signs up; the service deletes.
    let ann = create(&mut admin, "ann").await;
    let mut as_ann = app.client_with(Some(&app.token(&ann.id, Role::User))).await;
    as_ann
        .update_user(UpdateUserRequest {
            user_id: ann.id.clone(),
            full_name: Some("Ann by Herself".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let signed_up = app
        .client_with(None)
        .await
        .create_user(new_user("newcomer"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    admin
        .delete_user(DeleteUserRequest {
            user_id: signed_up.id.clone(),
            etag: None,
        })
        .await
        .unwrap();

    let expected = [
        (ActorKind::Service, "test-admin"),
        (ActorKind::User, ann.id.as_str()),
        (ActorKind::Anonymous, ""),
        (ActorKind::Service, "test-admin"),
    ];
    let mut live = Vec::new();
    for _ in 0..expected.len() {
        live.push(next_event(&mut all).await);
    }
    let seen: Vec<_> = live.iter().map(actor).collect();
    assert_eq!(seen, expected, "live");

    let mut replay = admin
        .watch_users(everyone(live[0].revision))
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    for _ in 0..expected.len() {
        replayed.push(next_event(&mut replay).await);
    }
    let seen: Vec<_> = replayed.iter().map(actor).collect();
    assert_eq!(seen, expected, "replayed from the log");
}

#[tokio::test]
async fn a_user_sees_who_changed_them_only_when_it_was_themselves() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let bea = create(&mut admin, "bea").await;
    let mut as_bea = app.client_with(Some(&app.token(&bea.id, Role::User))).await;
    let mut own = as_bea
        .watch_users(WatchUsersRequest {
            user_ids: vec![bea.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    admin
        .update_user(UpdateUserRequest {
            user_id: bea.id.clone(),
            full_name: Some("Bea by the Desk".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    as_bea
        .update_user(UpdateUserRequest {
            user_id: bea.id.clone(),
            full_name: Some("Bea by Herself".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let by_admin = next_event(&mut own).await;
    assert_eq!(
        by_admin.actor,
        Some(Actor {
            kind: ActorKind::Service as i32,
            id: String::new(),
        }),
        "the kind, not the name"
    );
    let by_herself = next_event(&mut own).await;
    assert_eq!(actor(&by_herself), (ActorKind::User, bea.id.as_str()));
}
