//! BatchCreateUsers and SyncUsers.

use std::time::Duration;

use tonic::Code;
use user_service::pb::{CreateUserRequest, EventType, UpdateUserRequest};

use crate::helpers::{TestApp, create, new_user};
use crate::watch::next_event;

#[tokio::test]
async fn a_batch_creates_the_valid_items_and_reports_each_invalid_one_by_position_and_name() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    create(&mut client, "existing").await;
    let requests = vec![
        new_user("first"),
        CreateUserRequest {
            password: "short".into(),
            ..new_user("weakpass")
        },
        new_user("existing"),
        CreateUserRequest {
            email: "not-an-email".into(),
            ..new_user("bademail")
        },
        new_user("second"),
        CreateUserRequest {
            email: "first2@example.com".into(),
            ..new_user("FIRST")
        },
    ];

    let response = client
        .batch_create_users(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let created: Vec<_> = response.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(created, ["first", "second"]);
    // The refused items between them took no revision: the log stays gap-free, as stored.
    let etags: Vec<_> = response.users.iter().map(|u| u.etag.as_str()).collect();
    assert_eq!(etags, ["2", "3"]);
    let stored = client
        .get_user(user_service::pb::GetUserRequest {
            user_id: response.users[1].id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user;
    assert_eq!(stored.as_ref(), Some(&response.users[1]));
    assert_eq!(response.errors.len(), 4, "{:#?}", response.errors);
    let expectations = [
        ("item 1 (username \"weakpass\")", "password"),
        ("item 2 (username \"existing\")", "already taken"),
        ("item 3 (username \"bademail\")", "email"),
        ("item 5 (username \"FIRST\")", "already taken"),
    ];
    for (error, (prefix, reason)) in response.errors.iter().zip(expectations) {
        assert!(
            error.starts_with(prefix) && error.contains(reason),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_batch_past_its_limit_creates_only_the_first_items_and_says_so() {
    let app = TestApp::spawn_with(|settings| settings.limits.max_batch_items = 3).await;
    let mut client = app.client().await;
    let requests: Vec<_> = (0..5).map(|i| new_user(&format!("capped{i}"))).collect();
    let response = client
        .batch_create_users(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.users.len(), 3);
    assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
    assert!(
        response.errors[0].starts_with("items 3 to 4: not created"),
        "{}",
        response.errors[0]
    );
}

#[tokio::test]
async fn a_batch_stops_before_its_answer_could_pass_the_message_limit() {
    let app = TestApp::spawn_with(|settings| settings.limits.max_message_bytes = 8 * 1024).await;
    let mut client = app.client().await;
    let requests: Vec<_> = (0..100).map(|i| new_user(&format!("sized{i}"))).collect();

    let response = client
        .batch_create_users(tokio_stream::iter(requests))
        .await
        .expect("the answer fits the limit")
        .into_inner();

    let created = response.users.len();
    assert!((10..100).contains(&created), "{created} users created");
    let summary = response.errors.last().expect("a summary line");
    assert!(
        summary.starts_with(&format!(
            "items {created} to 99: not created: the answer would pass"
        )),
        "{summary}"
    );
    let listed = client
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.total_count as usize, created,
        "exactly the reported users exist"
    );
}

#[tokio::test]
async fn sync_answers_every_update_in_order_and_a_bad_one_does_not_end_the_stream() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let user = create(&mut client, "synced").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let updates = vec![
        UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some("One".into()),
            ..Default::default()
        },
        UpdateUserRequest {
            user_id: user.id.clone(),
            email: Some("broken".into()),
            ..Default::default()
        },
        UpdateUserRequest {
            user_id: unknown.clone(),
            full_name: Some("Nobody".into()),
            ..Default::default()
        },
        UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some("Two".into()),
            ..Default::default()
        },
    ];
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut replies = client
        .sync_users(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();

    // Send one at a time: each reply arrives before the next update is sent.
    let mut answers = Vec::new();
    for update in updates {
        sender.send(update).await.unwrap();
        answers.push(next_event(&mut replies).await);
    }
    drop(sender);

    assert_eq!(answers[0].r#type, EventType::Updated as i32);
    assert_eq!(answers[0].user.as_ref().unwrap().full_name, "One");
    assert!(answers[0].revision > 0 && answers[0].failure.is_none());

    let invalid = answers[1].failure.as_ref().expect("a failure reply");
    assert_ne!(answers[1].r#type, EventType::Updated as i32);
    assert_eq!(
        (invalid.code, invalid.user_id.as_str()),
        (Code::InvalidArgument as i32, user.id.as_str())
    );
    assert!(invalid.message.contains("email"), "{}", invalid.message);

    let missing = answers[2].failure.as_ref().expect("a failure reply");
    assert_eq!(
        (missing.code, missing.user_id.as_str()),
        (Code::NotFound as i32, unknown.as_str())
    );

    assert_eq!(
        answers[3].user.as_ref().unwrap().full_name,
        "Two",
        "the stream went on"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .unwrap();
    assert!(
        matches!(end, Ok(None)),
        "the replies end when the updates do: {end:?}"
    );
}

#[tokio::test]
async fn a_batch_whose_stream_breaks_still_says_exactly_what_was_created() {
    let app = TestApp::spawn().await;
    let bearer = format!(
        "Bearer {}",
        app.token("test-admin", user_service::domain::Role::Admin)
    );
    // 260 good items (a first transaction of 256 commits), then bytes that are no protobuf.
    let mut body = Vec::new();
    for i in 0..260 {
        body.extend_from_slice(&crate::raw::frame(&new_user(&format!("broken{i}"))));
    }
    body.extend_from_slice(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]);

    let (status, answer) = crate::raw::exchange(
        app.addr,
        "/userservice.UserService/BatchCreateUsers",
        &[("authorization", &bearer)],
        body.into(),
        true,
    )
    .await;

    assert_eq!(status.code(), Code::Ok, "{status:?}");
    let answer =
        <user_service::pb::BatchCreateUsersResponse as prost::Message>::decode(&answer[5..])
            .expect("one BatchCreateUsersResponse");
    let mut client = app.client().await;
    let listed = client
        .list_users(user_service::pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.users.len() as i32,
        listed.total_count,
        "the answer lists every user that exists"
    );
    assert_eq!(answer.users.len(), 256, "only the committed transaction");
    assert!(
        answer
            .errors
            .iter()
            .any(|error| error.starts_with("items 256 to") && error.contains("stream broke")),
        "{:?}",
        answer.errors
    );
}
