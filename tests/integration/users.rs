//! CreateUser, GetUser, UpdateUser and DeleteUser, successes and failures.

use tonic::Code;
use user_service::pb::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, UpdateUserRequest, UserRole, UserStatus,
    WatchUsersRequest,
};

use crate::helpers::{TestApp, create, create_request, get, new_user, update};

#[tokio::test]
async fn a_created_user_can_be_read_back() {
    // Arrange
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let mut request = new_user("Ann_Lee");
    request.metadata.insert("team".into(), "core".into());

    // Act
    let created = create_request(&mut client, request).await;
    let fetched = get(&mut client, &created.id).await;

    // Assert
    assert_eq!(fetched, created, "GetUser returns what CreateUser returned");
    assert_eq!(created.username, "Ann_Lee");
    assert_eq!(
        created.role,
        UserRole::User as i32,
        "UNSPECIFIED role means USER"
    );
    assert_eq!(
        created.status,
        UserStatus::Active as i32,
        "new users are ACTIVE"
    );
    assert_eq!(created.created_at, created.updated_at);
    assert!(!created.etag.is_empty(), "a user carries an etag");
    assert_eq!(
        created.metadata.get("team").map(String::as_str),
        Some("core")
    );
    let id = uuid::Uuid::parse_str(&created.id).expect("the id is a UUID");
    assert_eq!(id.get_version_num(), 7, "ids are UUIDv7");
}

#[tokio::test]
async fn usernames_and_emails_are_unique_regardless_of_letter_case() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    create(&mut client, "casey").await;

    let mut same_name = new_user("CASEY");
    same_name.email = "other@example.com".into();
    let status = client.create_user(same_name).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains("username"),
        "{}",
        status.message()
    );

    let mut same_email = new_user("casey2");
    same_email.email = "CASEY@Example.com".into();
    let status = client.create_user(same_email).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("email"), "{}", status.message());
}

#[tokio::test]
async fn thirty_two_concurrent_creates_of_one_name_make_exactly_one_user() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let attempts = (0..32).map(|i| {
        let mut client = app.client_on(channel.clone());
        tokio::spawn(async move {
            let mut request = new_user("racer");
            request.email = format!("racer{i}@example.com");
            client
                .create_user(request)
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        })
    });
    let mut created = 0;
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => created += 1,
            Err(Code::AlreadyExists) => refused += 1,
            Err(other) => panic!("unexpected code {other:?}"),
        }
    }
    assert_eq!((created, refused), (1, 31));
}

#[tokio::test]
async fn get_user_tells_a_missing_id_from_an_unknown_one() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let empty = client
        .get_user(GetUserRequest {
            user_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    assert!(empty.message().contains("user_id"), "{}", empty.message());
    let unknown = client
        .get_user(GetUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test]
async fn an_update_changes_only_the_fields_it_sets_and_merges_metadata() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let mut request = new_user("partial");
    request.metadata.insert("keep".into(), "1".into());
    request.metadata.insert("drop".into(), "2".into());
    let before = client
        .create_user(request)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    let after = update(
        &mut client,
        UpdateUserRequest {
            user_id: before.id.clone(),
            full_name: Some("Renamed".into()),
            metadata: [
                ("drop".to_string(), String::new()),
                ("new".to_string(), "3".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        },
    )
    .await;

    assert_eq!(after.full_name, "Renamed");
    assert_eq!(after.username, before.username, "unset fields stay");
    assert_eq!(after.email, before.email, "unset fields stay");
    assert_eq!(after.role, before.role, "unset fields stay");
    let keys: Vec<_> = after
        .metadata
        .keys()
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        keys,
        ["keep", "new"],
        "metadata is merged; an empty value removes a key"
    );
    assert_eq!(
        after.created_at, before.created_at,
        "created_at never changes"
    );
    let (b, a) = (before.updated_at.unwrap(), after.updated_at.unwrap());
    assert!(
        (a.seconds, a.nanos) > (b.seconds, b.nanos),
        "updated_at advances"
    );
    assert_ne!(after.etag, before.etag, "the etag changes with every write");
}

#[tokio::test]
async fn a_stale_etag_aborts_the_write_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let original = create(&mut client, "etagged").await;
    let current = client
        .update_user(UpdateUserRequest {
            user_id: original.id.clone(),
            full_name: Some("First".into()),
            etag: Some(original.etag.clone()),
            ..Default::default()
        })
        .await
        .expect("the current etag is accepted")
        .into_inner()
        .user
        .unwrap();

    let stale_update = client
        .update_user(UpdateUserRequest {
            user_id: original.id.clone(),
            full_name: Some("Second".into()),
            etag: Some(original.etag.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale_update.code(), Code::Aborted, "{stale_update:?}");

    let stale_delete = client
        .delete_user(DeleteUserRequest {
            user_id: original.id.clone(),
            etag: Some(original.etag.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::Aborted, "{stale_delete:?}");

    let now = client
        .get_user(GetUserRequest {
            user_id: original.id.clone(),
        })
        .await
        .expect("the user still exists")
        .into_inner()
        .user
        .unwrap();
    assert_eq!(now, current, "the refused writes changed nothing");
}

#[tokio::test]
async fn an_update_obeys_the_same_rules_as_create() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let taken = create(&mut client, "taken").await;
    let user = create(&mut client, "mover").await;
    let cases = [
        (
            UpdateUserRequest {
                username: Some("TAKEN".into()),
                ..Default::default()
            },
            Code::AlreadyExists,
        ),
        (
            UpdateUserRequest {
                email: Some(taken.email.clone()),
                ..Default::default()
            },
            Code::AlreadyExists,
        ),
        (
            UpdateUserRequest {
                username: Some("no".into()),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            UpdateUserRequest {
                email: Some("nope".into()),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            UpdateUserRequest {
                role: Some(0),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            UpdateUserRequest {
                role: Some(42),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            UpdateUserRequest {
                etag: Some("x".into()),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ];
    for (mut request, expected) in cases {
        request.user_id = user.id.clone();
        let status = client.update_user(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), expected, "{request:?} got {status:?}");
    }
    let unknown = client
        .update_user(UpdateUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let role = client
        .update_user(UpdateUserRequest {
            user_id: user.id.clone(),
            role: Some(UserRole::Moderator as i32),
            ..Default::default()
        })
        .await
        .expect("a defined role is accepted")
        .into_inner()
        .user
        .unwrap();
    assert_eq!(role.role, UserRole::Moderator as i32);
}

#[tokio::test]
async fn a_deleted_user_is_gone_and_frees_its_username_and_email() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let user = create(&mut client, "leaver").await;

    let deleted = client
        .delete_user(DeleteUserRequest {
            user_id: user.id.clone(),
            etag: Some(user.etag.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.success);

    let gone = client
        .get_user(GetUserRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = client
        .delete_user(DeleteUserRequest {
            user_id: user.id.clone(),
            etag: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    let reborn = create(&mut client, "leaver").await;
    assert_ne!(reborn.id, user.id);
}

#[tokio::test]
async fn create_reports_every_broken_rule_at_once() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let status = client
        .create_user(CreateUserRequest {
            username: "x".into(),
            email: "nope".into(),
            password: "short".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for field in ["username", "email", "password"] {
        assert!(
            status.message().contains(field),
            "{field} missing from {}",
            status.message()
        );
    }
    let details = tonic_types::StatusExt::get_details_bad_request(&status)
        .expect("a BadRequest detail is attached");
    assert_eq!(details.field_violations.len(), 3);
}

#[tokio::test]
async fn an_update_that_changes_nothing_keeps_the_etag_and_emits_no_event() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let user = create(&mut client, "steady").await;
    let mut events = client
        .watch_users(WatchUsersRequest {
            user_ids: vec![user.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let no_change = [
        UpdateUserRequest {
            user_id: user.id.clone(),
            ..Default::default()
        },
        UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some(user.full_name.clone()),
            status: Some(UserStatus::Active as i32),
            etag: Some(user.etag.clone()),
            ..Default::default()
        },
    ];
    for request in no_change {
        let after = client
            .update_user(request)
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(
            after, user,
            "the user, etag and updated_at included, is unchanged"
        );
    }
    let renamed = update(
        &mut client,
        UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some("Steady Eddie".into()),
            ..Default::default()
        },
    )
    .await;
    assert_ne!(renamed.etag, user.etag);

    let first = crate::watch::next_event(&mut events).await;
    assert_eq!(
        first.user.unwrap().full_name,
        "Steady Eddie",
        "the first event is the real change: the no-op updates made none"
    );
}

fn by_username(name: &str) -> user_service::pb::LookupUserRequest {
    user_service::pb::LookupUserRequest {
        key: Some(user_service::pb::lookup_user_request::Key::Username(
            name.into(),
        )),
    }
}

fn by_email(email: &str) -> user_service::pb::LookupUserRequest {
    user_service::pb::LookupUserRequest {
        key: Some(user_service::pb::lookup_user_request::Key::Email(
            email.into(),
        )),
    }
}

#[tokio::test]
async fn a_user_is_found_by_username_or_email_in_any_letter_case() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let ann = create(&mut admin, "Ann_Lookup").await;
    for request in [
        by_username("ann_lookup"),
        by_email("ANN_LOOKUP@example.com"),
    ] {
        let found = admin
            .lookup_user(request)
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(found, ann);
    }
    let missing = admin
        .lookup_user(by_username("nobody_here"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(
        missing.message().contains("nobody_here"),
        "{}",
        missing.message()
    );
    let invalid = admin
        .lookup_user(user_service::pb::LookupUserRequest { key: None })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let malformed = admin
        .lookup_user(by_email("not-an-email"))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_user_looks_up_only_themselves_and_learns_nothing_of_others() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let me = create(&mut admin, "self_seeker").await;
    create(&mut admin, "someone_else").await;
    let mut client = app
        .client_with(Some(&app.token(&me.id, user_service::domain::Role::User)))
        .await;
    let found = client
        .lookup_user(by_username("SELF_SEEKER"))
        .await
        .unwrap();
    assert_eq!(found.into_inner().user.unwrap().id, me.id);
    for other in ["someone_else", "does_not_exist"] {
        let refused = client.lookup_user(by_username(other)).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{other}: the same answer whether or not the name exists"
        );
    }
    let mut anonymous = app.client_with(None).await;
    let refused = anonymous
        .lookup_user(by_username("self_seeker"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

/// Concurrent updates and deletes commit in groups: each keeps its own outcome (a stale etag,
/// an unknown id or a taken name fails alone), and every change that succeeded has a revision
/// of its own, in a gap-free log.
#[tokio::test]
async fn concurrent_updates_and_deletes_each_keep_their_own_outcome() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let users = crate::helpers::create_many(&mut client, "grouped", 18).await;
    let (contested, rest) = users.split_at(8);
    let (doomed, renamers) = rest.split_at(8);
    let channel = app.channel().await;
    let mut calls = Vec::new();
    // Two updates per contested user, both against the etag it was created with: one wins.
    for (user, attempt) in contested.iter().flat_map(|user| [(user, 1), (user, 2)]) {
        let mut client = app.client_on(channel.clone());
        let request = UpdateUserRequest {
            user_id: user.id.clone(),
            full_name: Some(format!("Attempt {attempt}")),
            etag: Some(user.etag.clone()),
            ..Default::default()
        };
        calls.push(tokio::spawn(async move {
            let outcome = client.update_user(request).await;
            ("update", outcome.map(|r| r.into_inner().user.unwrap().etag))
        }));
    }
    for user in doomed {
        let mut client = app.client_on(channel.clone());
        let request = DeleteUserRequest {
            user_id: user.id.clone(),
            etag: None,
        };
        calls.push(tokio::spawn(async move {
            let outcome = client.delete_user(request).await;
            ("delete", outcome.map(|_| String::new()))
        }));
    }
    // Two users taking the same new name: one gets it.
    for user in renamers {
        let mut client = app.client_on(channel.clone());
        let request = UpdateUserRequest {
            user_id: user.id.clone(),
            username: Some("one_name_for_two".into()),
            ..Default::default()
        };
        calls.push(tokio::spawn(async move {
            let outcome = client.update_user(request).await;
            ("rename", outcome.map(|_| String::new()))
        }));
    }
    for _ in 0..4 {
        let mut client = app.client_on(channel.clone());
        let request = DeleteUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
            etag: None,
        };
        calls.push(tokio::spawn(async move {
            let outcome = client.delete_user(request).await;
            ("unknown", outcome.map(|_| String::new()))
        }));
    }

    let mut outcomes = std::collections::BTreeMap::<(&str, i32), usize>::new();
    for call in calls {
        let (kind, outcome) = call.await.unwrap();
        let code = outcome.map_or_else(|status| status.code(), |_| Code::Ok);
        *outcomes.entry((kind, code as i32)).or_default() += 1;
    }

    let expected = std::collections::BTreeMap::from([
        (("update", Code::Ok as i32), 8),
        (("update", Code::Aborted as i32), 8),
        (("delete", Code::Ok as i32), 8),
        (("rename", Code::Ok as i32), 1),
        (("rename", Code::AlreadyExists as i32), 1),
        (("unknown", Code::NotFound as i32), 4),
    ]);
    assert_eq!(outcomes, expected, "each write's own outcome");
    for user in contested {
        let now = get(&mut client, &user.id).await;
        assert!(now.full_name.starts_with("Attempt "), "{now:?}");
    }
    // 18 creates, 8 updates, 8 deletes and a rename: 35 revisions, each once, in order.
    let mut watch = client
        .watch_users(crate::watch::everyone(1))
        .await
        .unwrap()
        .into_inner();
    for revision in 1..=35 {
        let event = crate::watch::next_event(&mut watch).await;
        assert_eq!(event.revision, revision, "the log has no gap and no repeat");
    }
}
