//! ListUsers with an AIP-160 filter and an order_by, and WatchUsers with a filter: the users
//! each filter selects, in order, across pages; tokens bound to the filter; refusals that
//! name the position; and the bounded scan of a filter no index serves.

use std::collections::BTreeMap;

use tonic::Code;
use user_service::pb::{
    self, BatchCreateUsersResponse, CreateUserRequest, EventType, ListUsersRequest,
    UpdateUserRequest, UserRole, UserStatus, WatchUsersRequest,
};

use crate::helpers::{Client, TestApp};
use crate::watch::next_event;

/// A bcrypt hash stored as it is, so seeding costs no hashing.
const HASH: &str = "$2b$04$abcdefghijklmnopqrstuuVbsuMsXIBR3YrmyTAqElyDHWDmgSFbe";

/// Users `f0`..: every third an admin, every fourth suspended, teams by remainder of five,
/// names that alternate case.
fn seeded(i: usize) -> CreateUserRequest {
    let name = if i.is_multiple_of(2) {
        format!("F{i:03}")
    } else {
        format!("f{i:03}")
    };
    CreateUserRequest {
        email: format!(
            "mail{i:03}@{}.example.com",
            if i.is_multiple_of(2) { "even" } else { "odd" }
        ),
        full_name: format!("Person {i}"),
        password_hash: HASH.into(),
        role: if i.is_multiple_of(3) {
            UserRole::Admin
        } else {
            UserRole::User
        } as i32,
        status: if i.is_multiple_of(4) {
            UserStatus::Suspended
        } else {
            UserStatus::Active
        } as i32,
        metadata: [("team".to_string(), format!("t{}", i % 5))].into(),
        username: name,
        password: String::new(),
    }
}

async fn seed(client: &mut Client, users: impl Iterator<Item = CreateUserRequest>) {
    let requests: Vec<_> = users.collect();
    for batch in requests.chunks(1_000) {
        let answer: BatchCreateUsersResponse = client
            .batch_create_users(tokio_stream::iter(batch.to_vec()))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.failures.is_empty(), "{:?}", answer.failures);
    }
}

/// Every page of a listing, followed to its end: the usernames in order, and the pages.
async fn list_all(
    client: &mut Client,
    filter: &str,
    order_by: &str,
    page_size: i32,
) -> Result<(Vec<String>, usize), tonic::Status> {
    let mut names = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_users(ListUsersRequest {
                page_size,
                page_token,
                filter: filter.into(),
                order_by: order_by.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        pages += 1;
        names.extend(page.users.into_iter().map(|user| user.username));
        if page.next_page_token.is_empty() {
            return Ok((names, pages));
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn each_filter_lists_exactly_its_users_in_order_across_pages() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    seed(&mut client, (0..60).map(seeded)).await;
    let all: BTreeMap<usize, CreateUserRequest> = (0..60).map(|i| (i, seeded(i))).collect();
    let names = |keep: &dyn Fn(usize, &CreateUserRequest) -> bool| -> Vec<String> {
        all.iter()
            .filter(|(i, user)| keep(**i, user))
            .map(|(_, user)| user.username.clone())
            .collect()
    };
    // Created in index order: created_at ascending is index order, the default is newest first.
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("status = ACTIVE", names(&|i, _| i % 4 != 0)),
        (
            "role = ADMIN AND status = SUSPENDED",
            names(&|i, _| i % 12 == 0),
        ),
        (
            "role = USER_ROLE_ADMIN OR status = suspended",
            names(&|i, _| i % 3 == 0 || i % 4 == 0),
        ),
        ("metadata.team = \"t2\"", names(&|i, _| i % 5 == 2)),
        (
            "-metadata.team = t2 status != ACTIVE",
            names(&|i, _| i % 5 != 2 && i % 4 == 0),
        ),
        ("username = \"f01*\"", names(&|i, _| (10..20).contains(&i))),
        (
            "email = \"MAIL05*\" OR full_name = \"person 5*\"",
            names(&|i, _| i == 5 || (50..60).contains(&i)),
        ),
        ("email = \"mail00*\" AND email = \"mail01*\"", vec![]),
        ("NOT (metadata:team)", vec![]),
        (
            "metadata:team AND username >= \"F055\"",
            names(&|i, _| i >= 55),
        ),
    ];
    for (filter, mut expected) in cases {
        expected.reverse();
        let (listed, _) = list_all(&mut client, filter, "", 7)
            .await
            .unwrap_or_else(|err| {
                panic!("{filter}: {err:?}");
            });
        assert_eq!(listed, expected, "{filter}");
    }
}

#[tokio::test]
async fn order_by_sorts_by_creation_update_or_username_either_way() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    // Created in an order of their own (7 and 30 are coprime), so that no two orders agree.
    let creation_order: Vec<usize> = (0..30).map(|i| i * 7 % 30).collect();
    seed(&mut client, creation_order.iter().map(|&i| seeded(i))).await;
    let created: Vec<String> = creation_order.iter().map(|&i| seeded(i).username).collect();
    let (oldest_first, _) = list_all(&mut client, "", "created_at asc", 4)
        .await
        .unwrap();
    assert_eq!(oldest_first, created);
    let (newest_first, _) = list_all(&mut client, "", "created_at desc", 4)
        .await
        .unwrap();
    assert_eq!(
        newest_first,
        created.iter().rev().cloned().collect::<Vec<_>>()
    );

    let mut by_name = created.clone();
    by_name.sort_by_key(|name| name.to_lowercase());
    assert_ne!(by_name, created, "name order and creation order differ");
    let (listed, _) = list_all(&mut client, "", "username", 4).await.unwrap();
    assert_eq!(listed, by_name, "without letter case");
    let (listed, _) = list_all(&mut client, "status = ACTIVE", "username desc", 4)
        .await
        .unwrap();
    let expected: Vec<String> = by_name
        .iter()
        .rev()
        .filter(|name| name[1..].parse::<usize>().unwrap() % 4 != 0)
        .cloned()
        .collect();
    assert_eq!(listed, expected);

    // Touch three users: they come first by update time, newest first.
    let (all, _) = list_all(&mut client, "", "created_at", 30).await.unwrap();
    assert_eq!(all.len(), 30);
    let page = client
        .list_users(ListUsersRequest {
            page_size: 30,
            order_by: "created_at".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for user in [&page.users[7], &page.users[2], &page.users[19]] {
        client
            .update_user(UpdateUserRequest {
                user_id: user.id.clone(),
                full_name: Some("Touched".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let (listed, _) = list_all(&mut client, "", "updated_at desc", 2)
        .await
        .unwrap();
    assert_eq!(
        listed[..3],
        [created[19].clone(), created[2].clone(), created[7].clone()]
    );
    let (touched, _) = list_all(&mut client, "full_name = touched", "updated_at", 2)
        .await
        .unwrap();
    assert_eq!(
        touched,
        [created[7].clone(), created[2].clone(), created[19].clone()]
    );
}

#[tokio::test]
async fn filters_and_orders_are_refused_by_position_and_rule_and_tokens_stay_with_them() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    seed(&mut client, (0..5).map(seeded)).await;
    for (filter, order_by, field, words) in [
        ("status = ", "", "filter", "position 10"),
        ("nickname = \"x\"", "", "filter", "position 1"),
        ("role = OWNER", "", "filter", "position 8"),
        ("created_at > \"yesterday\"", "", "filter", "position 14"),
        (
            "((((((((((((((((((((((((((((((((((x = 1))))))))))))))))))))))))))))))))))",
            "",
            "filter",
            "position",
        ),
        (
            "",
            "email",
            "order_by",
            "created_at, updated_at or username",
        ),
    ] {
        let refused = client
            .list_users(ListUsersRequest {
                filter: filter.into(),
                order_by: order_by.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{filter}: {refused:?}"
        );
        assert!(
            refused.message().starts_with(&format!("{field}: "))
                && refused.message().contains(words),
            "{filter}: {}",
            refused.message()
        );
    }
    let mixed = client
        .list_users(ListUsersRequest {
            query: "f".into(),
            filter: "status = ACTIVE".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(mixed.message().starts_with("query: "), "{mixed:?}");

    let first = client
        .list_users(ListUsersRequest {
            page_size: 1,
            filter: "status = ACTIVE".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let elsewhere = client
        .list_users(ListUsersRequest {
            page_size: 1,
            page_token: first.next_page_token,
            filter: "status = SUSPENDED".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::InvalidArgument);
    assert!(
        elsewhere.message().contains("different filter"),
        "{elsewhere:?}"
    );
}

#[tokio::test]
async fn a_filter_no_index_serves_reads_a_bounded_number_of_rows_per_page() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let users = (0..12_500).map(|i| CreateUserRequest {
        username: format!("scan{i}"),
        email: format!("scan{i}@example.com"),
        password_hash: HASH.into(),
        metadata: if i == 3 {
            [("team".to_string(), "needle".to_string())].into()
        } else {
            Default::default()
        },
        ..Default::default()
    });
    seed(&mut client, users).await;
    let first = client
        .list_users(ListUsersRequest {
            page_size: 10,
            filter: "metadata.team = needle".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        first.users.is_empty() && !first.next_page_token.is_empty(),
        "the newest 10,000 hold no match: an empty page that goes on"
    );
    let (found, pages) = list_all(&mut client, "metadata.team = needle", "", 10)
        .await
        .unwrap();
    assert_eq!(found, ["scan3"]);
    assert_eq!(
        pages, 2,
        "10,000 rows read by the first page, the rest by the second"
    );

    let counted = client
        .list_users(ListUsersRequest {
            page_size: 10,
            filter: "username = \"scan1*\"".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counted.total_count, 100, "counted up to 100");
    assert_eq!(counted.users.len(), 10);
}

#[tokio::test]
async fn a_filtered_watch_sends_events_of_matching_users_and_of_one_leaving() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let mut events = client
        .watch_users(WatchUsersRequest {
            include_all: true,
            filter: "metadata.team = core".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let with_team = |name: &str, team: &str| CreateUserRequest {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: HASH.into(),
        metadata: [("team".to_string(), team.to_string())].into(),
        ..Default::default()
    };
    let outsider = client
        .create_user(with_team("outsider", "edge"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let member = client
        .create_user(with_team("member", "core"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let created = next_event(&mut events).await;
    assert_eq!(
        (created.r#type(), created.user.unwrap().username.as_str()),
        (EventType::Created, "member")
    );
    let move_to = |user: &pb::User, team: &str| UpdateUserRequest {
        user_id: user.id.clone(),
        metadata: [("team".to_string(), team.to_string())].into(),
        ..Default::default()
    };
    client.update_user(move_to(&outsider, "ops")).await.unwrap();
    client.update_user(move_to(&member, "ops")).await.unwrap();
    let left = next_event(&mut events).await;
    assert_eq!(
        left.r#type(),
        EventType::Updated,
        "a user leaving the set is told"
    );
    assert_eq!(left.user.unwrap().metadata["team"], "ops");
    client.update_user(move_to(&member, "edge")).await.unwrap();
    client
        .update_user(move_to(&outsider, "core"))
        .await
        .unwrap();
    let joined = next_event(&mut events).await;
    assert_eq!(
        joined.user.unwrap().username,
        "outsider",
        "the update of an outsider is not sent"
    );

    let refused = client
        .watch_users(WatchUsersRequest {
            include_all: true,
            filter: "team = core".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("filter: at position 1"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn scans_that_no_index_serves_hold_bounded_memory_however_many_run() {
    use crate::helpers::{ServerProcess, TestDatabase};
    const USERS: usize = 5_000;
    let database = TestDatabase::new();
    // Time enough for every scan to wait its turn in a debug build.
    let server = ServerProcess::start_with(&database, &[], &["--database-operation-timeout", "2m"]);
    let mut client = server.client().await.unwrap();
    // Users at their largest: 32 metadata entries of 500 characters, about 16 KiB each.
    let fat = |i: usize| CreateUserRequest {
        metadata: (0..32)
            .map(|entry| (format!("k{entry:02}"), "x".repeat(500)))
            .collect(),
        ..seeded(i)
    };
    for start in (0..USERS).step_by(200) {
        let batch: Vec<_> = (start..start + 200).map(fat).collect();
        let created = client
            .batch_create_users(tokio_stream::iter(batch))
            .await
            .unwrap()
            .into_inner();
        assert!(created.errors.is_empty(), "{:?}", created.errors);
    }
    let before = server.rss_kib();
    let scans = (0..16).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .list_users(ListUsersRequest {
                    filter: r#"metadata.k00 = "no such value""#.into(),
                    page_size: 100,
                    ..Default::default()
                })
                .await
        })
    });
    for scan in futures_util::future::join_all(scans).await {
        let page = scan
            .unwrap()
            .expect("each scan is served, in turn")
            .into_inner();
        assert!(page.users.is_empty());
    }
    let grown_mib = server.rss_kib().saturating_sub(before) / 1024;
    // Unbounded, each scan held up to 4,096 of these users at once (64 MiB; 16 at once, 1 GiB).
    assert!(
        grown_mib < 200,
        "16 scans of {USERS} fat users grew the server by {grown_mib} MiB"
    );
}

#[tokio::test]
async fn a_nul_in_a_filter_value_or_a_query_is_refused_as_invalid_on_every_backend() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    crate::helpers::create(&mut client, "nul_bystander").await;
    for (filter, query, field, position) in [
        ("username = \"a\u{0}b\"", "", "filter", Some(14)),
        ("metadata.team = \"x\u{0}\"", "", "filter", Some(19)),
        ("username:\u{0}*", "", "filter", Some(10)),
        ("", "nul\u{0}", "query", None),
    ] {
        let refused = client
            .list_users(ListUsersRequest {
                filter: filter.into(),
                query: query.into(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{filter:?} {query:?}: {refused:?}"
        );
        assert!(refused.message().contains(field), "{refused:?}");
        assert!(refused.message().contains("NUL"), "{refused:?}");
        if let Some(position) = position {
            assert!(
                refused.message().contains(&format!("position {position}")),
                "{refused:?}"
            );
        }
    }
    // A tab or a new line between terms is only space.
    client
        .list_users(ListUsersRequest {
            filter: "status = ACTIVE\n\tAND role = USER".into(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("white space of any kind separates terms");
}

#[tokio::test]
async fn a_page_token_written_outside_the_server_is_refused_even_with_the_right_binding() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    seed(&mut client, (0..5).map(seeded)).await;
    let filtered = |page_token: String| ListUsersRequest {
        filter: "username = \"f*\"".into(),
        order_by: "username".into(),
        page_size: 1,
        page_token,
        ..Default::default()
    };
    let token = client
        .list_users(filtered(String::new()))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    // What the token binds (the digest of the filter and order) is in plain sight: a token
    // naming another place under the same binding is what a caller could write by hand.
    let body = token.split('.').next().unwrap();
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    let parts: Vec<&str> = text.splitn(3, ':').collect();
    let written = URL_SAFE_NO_PAD.encode(format!(
        "{}:{}:n{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode("f002")
    ));
    let refused = client.list_users(filtered(written)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("page_token"), "{refused:?}");
    let next = client
        .list_users(filtered(token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.users.len(), 1, "the server's own token still pages");
}
