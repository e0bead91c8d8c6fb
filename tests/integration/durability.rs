//! What was acknowledged survives a restart and `kill -9`, and the event log resumes across it.

use std::time::Duration;

use user_service::pb::{
    DeleteUserRequest, EventType, GetUserRequest, ListUsersRequest, UpdateUserRequest,
};

use crate::helpers::{ServerProcess, TestApp, TestDatabase, create, create_many, get, update};
use crate::watch::next_event;

#[tokio::test]
async fn everything_committed_is_there_after_a_restart_and_a_watch_replays_across_it() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let kept = create(&mut client, "keeper").await;
    let changed = update(
        &mut client,
        UpdateUserRequest {
            user_id: kept.id.clone(),
            full_name: Some("Kept".into()),
            ..Default::default()
        },
    )
    .await;
    let dropped = create(&mut client, "dropper").await;
    client
        .delete_user(DeleteUserRequest {
            user_id: dropped.id,
            etag: None,
        })
        .await
        .unwrap();
    drop(client);

    let app = app.restart().await;
    let mut client = app.client().await;

    let fetched = get(&mut client, &kept.id).await;
    assert_eq!(fetched, changed, "the user is exactly as acknowledged");
    let listed = client
        .list_users(ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 1, "the deleted user stays deleted");

    let mut events = client
        .watch_users(crate::watch::everyone(1))
        .await
        .unwrap()
        .into_inner();
    let after_restart = create(&mut client, "newcomer").await;
    let expected = [
        (1, EventType::Created),
        (2, EventType::Updated),
        (3, EventType::Created),
        (4, EventType::Deleted),
        (5, EventType::Created),
    ];
    for (revision, kind) in expected {
        let event = next_event(&mut events).await;
        assert_eq!(
            (event.revision, event.r#type),
            (revision, kind as i32),
            "{event:?}"
        );
    }
    assert_eq!(
        after_restart.etag, "5",
        "revisions continue across the restart"
    );
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let database = TestDatabase::new();
    let mut server = ServerProcess::start(&database);
    let mut client = server.client().await.unwrap();
    let created = create_many(&mut client, "durable", 50).await;
    let last = create(&mut client, "lastword").await;

    server.child.kill().expect("SIGKILL is delivered");
    server.child.wait().unwrap();
    drop(client);

    let server = ServerProcess::start(&database);
    let mut client = server.client().await.unwrap();
    for user in created.iter().chain([&last]) {
        let fetched = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_user(GetUserRequest {
                user_id: user.id.clone(),
            }),
        )
        .await
        .unwrap()
        .unwrap_or_else(|status| panic!("{} was lost: {status:?}", user.username));
        assert_eq!(fetched.into_inner().user.as_ref(), Some(user));
    }
}
