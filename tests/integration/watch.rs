//! WatchUsers: live events, filters, resumption, slow watchers, retention and deadlines.

use std::time::Duration;

use tonic::{Code, Request, Streaming};
use user_service::pb::{EventType, UpdateUserRequest, UserEvent, WatchUsersRequest};

use crate::helpers::{TestApp, create, create_many};

const PATIENCE: Duration = Duration::from_secs(10);

pub async fn next_event(stream: &mut Streaming<UserEvent>) -> UserEvent {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("an event arrives in time")
        .expect("the stream is healthy")
        .expect("the stream is still open")
}

/// Every change, from `start_revision` (0: from now on).
pub fn everyone(start_revision: i64) -> WatchUsersRequest {
    WatchUsersRequest {
        user_ids: vec![],
        include_all: true,
        start_revision,
        progress_notify: false,
        prev_user: false,
        filter: String::new(),
    }
}

#[tokio::test]
async fn a_watcher_sees_creates_updates_and_deletes_in_commit_order() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let mut events = client.watch_users(everyone(0)).await.unwrap().into_inner();

    let user = create(&mut client, "watched").await;
    client
        .update_user(UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some("W".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .delete_user(user_service::pb::DeleteUserRequest {
            user_id: user.id.clone(),
            etag: None,
        })
        .await
        .unwrap();

    let kinds = [EventType::Created, EventType::Updated, EventType::Deleted];
    let mut last_revision = 0;
    for kind in kinds {
        let event = next_event(&mut events).await;
        assert_eq!(event.r#type, kind as i32, "{event:?}");
        assert_eq!(event.user.as_ref().unwrap().id, user.id);
        assert!(
            event.revision > last_revision,
            "revisions strictly increase"
        );
        assert!(!event.event_id.is_empty() && event.timestamp.is_some());
        last_revision = event.revision;
    }
}

#[tokio::test]
async fn a_watch_on_user_ids_sees_only_those_users() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let followed = create(&mut client, "followed").await;
    let request = WatchUsersRequest {
        user_ids: vec![followed.id.clone()],
        include_all: false,
        start_revision: 0,
        progress_notify: false,
        prev_user: false,
        filter: String::new(),
    };
    let mut events = client.watch_users(request).await.unwrap().into_inner();

    create(&mut client, "ignored").await;
    client
        .update_user(UpdateUserRequest {
            user_id: followed.id.clone(),
            full_name: Some("F".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let event = next_event(&mut events).await;
    assert_eq!(
        event.user.unwrap().id,
        followed.id,
        "the other user's event is filtered out"
    );
    assert_eq!(event.r#type, EventType::Updated as i32);
}

#[tokio::test]
async fn a_watch_that_selects_nothing_or_names_bad_ids_is_invalid() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let cases = [
        WatchUsersRequest {
            user_ids: vec![],
            include_all: false,
            start_revision: 0,
            progress_notify: false,
            prev_user: false,
            filter: String::new(),
        },
        WatchUsersRequest {
            user_ids: vec!["not-an-id".into()],
            include_all: false,
            start_revision: 0,
            progress_notify: false,
            prev_user: false,
            filter: String::new(),
        },
        everyone(-1),
    ];
    for request in cases {
        let status = client.watch_users(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?} got {status:?}"
        );
    }
}

#[tokio::test]
async fn a_watch_from_a_revision_replays_history_then_continues_live_without_gap_or_duplicate() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let history = create_many(&mut client, "past", 5).await;

    let mut events = client.watch_users(everyone(2)).await.unwrap().into_inner();
    let live = create(&mut client, "present").await;

    let mut revisions = Vec::new();
    let mut names = Vec::new();
    for _ in 0..5 {
        let event = next_event(&mut events).await;
        revisions.push(event.revision);
        names.push(event.user.unwrap().username);
    }
    assert_eq!(revisions, [2, 3, 4, 5, 6]);
    let expected: Vec<_> = history[1..]
        .iter()
        .map(|u| u.username.clone())
        .chain([live.username])
        .collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn a_slow_watcher_catches_up_from_the_log_without_losing_events() {
    let app = TestApp::spawn_with(|settings| settings.storage.event_buffer = 4).await;
    let mut client = app.client().await;
    let mut events = client.watch_users(everyone(0)).await.unwrap().into_inner();

    // The watcher reads nothing while far more events than its live buffer are committed.
    let created = create_many(&mut client, "burst", 300).await;

    for (index, user) in created.iter().enumerate() {
        let event = next_event(&mut events).await;
        assert_eq!(event.revision, index as i64 + 1, "no gap, no duplicate");
        assert_eq!(event.user.unwrap().id, user.id);
    }
}

#[tokio::test]
async fn resuming_before_the_retained_log_is_out_of_range_and_names_the_oldest_revision() {
    let app = TestApp::spawn_with(|settings| settings.storage.event_retention = 4).await;
    let mut client = app.client().await;
    create_many(&mut client, "old", 40).await;

    let status = client.watch_users(everyone(1)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("oldest available revision"),
        "{}",
        status.message()
    );

    let mut recent = client
        .watch_users(everyone(37))
        .await
        .expect("a retained revision")
        .into_inner();
    assert_eq!(next_event(&mut recent).await.revision, 37);
}

#[tokio::test]
async fn a_watch_ends_with_deadline_exceeded_when_the_callers_deadline_passes() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let mut request = Request::new(everyone(0));
    request.set_timeout(Duration::from_millis(300));
    let mut events = client.watch_users(request).await.unwrap().into_inner();
    let ended = tokio::time::timeout(PATIENCE, events.message())
        .await
        .expect("the stream ends in time")
        .unwrap_err();
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
}

#[tokio::test]
async fn a_quiet_watch_that_asked_gets_progress_notices_of_how_far_it_is_current() {
    let quiet = Duration::from_millis(200);
    let app = TestApp::spawn_with(|settings| settings.streams.watch_progress = quiet).await;
    let mut client = app.client().await;
    let user = create(&mut client, "progressed").await;
    let with_progress = WatchUsersRequest {
        progress_notify: true,
        ..everyone(1)
    };
    let mut notified = client
        .watch_users(with_progress)
        .await
        .unwrap()
        .into_inner();
    let mut plain = client.watch_users(everyone(0)).await.unwrap().into_inner();

    let created = next_event(&mut notified).await;
    let first_notice = next_event(&mut notified).await;
    client
        .update_user(UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some("Pro Gress".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let updated = next_event(&mut notified).await;
    let second_notice = next_event(&mut notified).await;
    let plain_update = next_event(&mut plain).await;
    let nothing_more = tokio::time::timeout(quiet * 3, plain.message()).await;

    assert_eq!(created.r#type(), EventType::Created);
    for (notice, after) in [(&first_notice, &created), (&second_notice, &updated)] {
        assert_eq!(notice.r#type(), EventType::Unspecified, "{notice:?}");
        assert!(
            notice.user.is_none(),
            "a notice carries no user: {notice:?}"
        );
        assert_eq!(
            notice.revision, after.revision,
            "current up to the last change: {notice:?}"
        );
    }
    assert_eq!(plain_update.revision, updated.revision);
    assert!(
        nothing_more.is_err(),
        "a watch that did not ask gets no notices: {nothing_more:?}"
    );
}

#[tokio::test]
async fn a_watch_that_asked_gets_the_user_before_each_update_and_deletion_live_and_replayed() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let with_prev = |start| WatchUsersRequest {
        prev_user: true,
        ..everyone(start)
    };
    let mut live = client.watch_users(with_prev(0)).await.unwrap().into_inner();
    let mut plain = client.watch_users(everyone(0)).await.unwrap().into_inner();

    let user = create(&mut client, "before_after").await;
    let renamed = client
        .update_user(UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some("After Change".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    client
        .delete_user(user_service::pb::DeleteUserRequest {
            user_id: user.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let created = next_event(&mut live).await;
    let updated = next_event(&mut live).await;
    let deleted = next_event(&mut live).await;
    assert_eq!(created.prev_user, None, "a creation has no before");
    assert_eq!(
        updated.prev_user.as_ref(),
        Some(&user),
        "the user before the update"
    );
    assert_eq!(updated.user.as_ref(), Some(&renamed));
    assert_eq!(
        deleted.prev_user.as_ref(),
        Some(&renamed),
        "the user before the deletion"
    );
    for _ in 0..3 {
        let event = next_event(&mut plain).await;
        assert_eq!(event.prev_user, None, "a watch that did not ask gets none");
    }

    // Replayed from the log, the events carry the same.
    let mut replayed = client
        .watch_users(with_prev(created.revision))
        .await
        .unwrap()
        .into_inner();
    let again: Vec<_> = [
        next_event(&mut replayed).await,
        next_event(&mut replayed).await,
        next_event(&mut replayed).await,
    ]
    .into_iter()
    .map(|event| event.prev_user)
    .collect();
    assert_eq!(again, [None, Some(user), Some(renamed)]);
}
