//! ListUsers: order, page sizes, page tokens, filters and counts.

use std::collections::HashSet;

use tonic::Code;
use user_service::pb::{
    CreateUserRequest, DeleteUserRequest, ListUsersRequest, ListUsersResponse, UserRole, UserStatus,
};

use crate::helpers::{Client, TestApp, create_many, new_user};

async fn list(client: &mut Client, request: ListUsersRequest) -> ListUsersResponse {
    client
        .list_users(request)
        .await
        .expect("ListUsers succeeds")
        .into_inner()
}

fn page(size: i32, token: &str) -> ListUsersRequest {
    ListUsersRequest {
        page_size: size,
        page_token: token.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn pages_list_every_user_once_newest_first() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let created = create_many(&mut client, "pager", 7).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let response = list(&mut client, page(3, &token)).await;
        assert_eq!(response.total_count, 7, "total_count counts every match");
        assert!(response.users.len() <= 3);
        seen.extend(response.users.into_iter().map(|user| user.username));
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
    }
    let newest_first: Vec<_> = created
        .iter()
        .rev()
        .map(|user| user.username.clone())
        .collect();
    assert_eq!(seen, newest_first);
}

#[tokio::test]
async fn page_size_zero_means_ten_and_large_sizes_are_capped_at_one_hundred() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    create_many(&mut client, "many", 105).await;
    assert_eq!(list(&mut client, page(0, "")).await.users.len(), 10);
    assert_eq!(list(&mut client, page(1000, "")).await.users.len(), 100);
    let negative = client.list_users(page(-1, "")).await.unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(
        negative.message().contains("page_size"),
        "{}",
        negative.message()
    );
}

#[tokio::test]
async fn bad_tokens_and_undefined_filters_are_invalid_arguments() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    create_many(&mut client, "tok", 3).await;
    let first = list(&mut client, page(1, "")).await;

    let cases = [
        page(1, "garbage!"),
        ListUsersRequest {
            status_filter: UserStatus::Active as i32,
            ..page(1, &first.next_page_token)
        },
        ListUsersRequest {
            status_filter: 9,
            ..page(1, "")
        },
        ListUsersRequest {
            role_filter: -3,
            ..page(1, "")
        },
    ];
    for request in cases {
        let status = client.list_users(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?} got {status:?}"
        );
    }
}

#[tokio::test]
async fn a_token_stays_valid_when_the_user_it_points_past_is_deleted() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let users = create_many(&mut client, "gone", 4).await;
    let first = list(&mut client, page(2, "")).await;
    let last_shown = first.users.last().unwrap().id.clone();
    client
        .delete_user(DeleteUserRequest {
            user_id: last_shown,
            etag: None,
        })
        .await
        .unwrap();

    let second = list(&mut client, page(2, &first.next_page_token)).await;
    let names: Vec<_> = second.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(
        names,
        [users[1].username.as_str(), users[0].username.as_str()]
    );
}

#[tokio::test]
async fn users_created_during_a_listing_neither_shift_nor_repeat_its_pages() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let before: HashSet<_> = create_many(&mut client, "early", 9)
        .await
        .into_iter()
        .map(|u| u.id)
        .collect();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut round = 0;
    loop {
        let response = list(&mut client, page(2, &token)).await;
        seen.extend(response.users.into_iter().map(|u| u.id));
        create_many(&mut client, &format!("late{round}_"), 3).await;
        round += 1;
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no user is listed twice");
    assert_eq!(
        unique, before,
        "exactly the users that existed at the start"
    );
}

#[tokio::test]
async fn filters_select_by_role_and_status_with_exact_counts() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    create_many(&mut client, "plain", 3).await;
    for name in ["boss1", "boss2"] {
        let request = CreateUserRequest {
            role: UserRole::Admin as i32,
            ..new_user(name)
        };
        client.create_user(request).await.unwrap();
    }

    let admins = list(
        &mut client,
        ListUsersRequest {
            role_filter: UserRole::Admin as i32,
            ..page(10, "")
        },
    )
    .await;
    assert_eq!(admins.total_count, 2);
    assert!(
        admins
            .users
            .iter()
            .all(|u| u.role == UserRole::Admin as i32)
    );
    assert_eq!(admins.users.len(), 2);

    let active_users = list(
        &mut client,
        ListUsersRequest {
            role_filter: UserRole::User as i32,
            status_filter: UserStatus::Active as i32,
            ..page(10, "")
        },
    )
    .await;
    assert_eq!(active_users.total_count, 3);

    let suspended = list(
        &mut client,
        ListUsersRequest {
            status_filter: UserStatus::Suspended as i32,
            ..page(10, "")
        },
    )
    .await;
    assert_eq!((suspended.total_count, suspended.users.len()), (0, 0));
}

#[tokio::test]
async fn a_page_of_large_users_stops_before_the_message_limit_and_continues_by_token() {
    let app = TestApp::spawn_with(|settings| settings.limits.max_message_bytes = 64 * 1024).await;
    let mut client = app.client().await;
    let metadata: std::collections::BTreeMap<String, String> = (0..32)
        .map(|i| (format!("key{i}"), "v".repeat(500)))
        .collect();
    let mut created = std::collections::BTreeSet::new();
    for i in 0..20 {
        let request = user_service::pb::CreateUserRequest {
            metadata: metadata.clone(),
            ..crate::helpers::new_user(&format!("bulky{i}"))
        };
        let user = client
            .create_user(request)
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        created.insert(user.id);
    }

    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_users(ListUsersRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("a valid listing never fails on size")
            .into_inner();
        pages += 1;
        listed.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages > 1, "the users did not fit one answer");
    assert_eq!(listed.len(), 20, "every user once");
    assert_eq!(
        listed
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        created
    );
}

fn search(query: &str, size: i32, token: &str) -> ListUsersRequest {
    ListUsersRequest {
        query: query.into(),
        ..page(size, token)
    }
}

fn user_named(username: &str, email: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.into(),
        ..new_user(username)
    }
}

#[tokio::test]
async fn a_query_finds_usernames_and_emails_by_prefix_without_letter_case_in_pages() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    for (username, email) in [
        ("Ann_Lee", "ann@example.com"),
        ("annabel", "bel@example.com"),
        ("zed", "ANNOUNCE@example.com"),
        ("bob", "bob@example.com"),
        ("anton", "t@example.com"),
    ] {
        client
            .create_user(user_named(username, email))
            .await
            .unwrap();
    }
    client
        .create_user(CreateUserRequest {
            role: UserRole::Moderator as i32,
            ..user_named("annika", "nika@example.com")
        })
        .await
        .unwrap();

    // Matched by username first ("ann_lee" also matches by email: listed once), then by email,
    // in key order; pages of two follow their tokens.
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let response = list(&mut client, search("ANN", 2, &token)).await;
        assert_eq!(response.total_count, 4, "every page counts all matches");
        names.extend(response.users.into_iter().map(|user| user.username));
        pages += 1;
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(
        names,
        ["Ann_Lee", "annabel", "annika", "zed"],
        "'_' sorts before letters"
    );

    let moderators = list(
        &mut client,
        ListUsersRequest {
            role_filter: UserRole::Moderator as i32,
            ..search("ann", 10, "")
        },
    )
    .await;
    let names: Vec<_> = moderators
        .users
        .iter()
        .map(|user| user.username.as_str())
        .collect();
    assert_eq!(names, ["annika"], "combined with a filter");
    assert_eq!(moderators.total_count, 1);

    let none = list(&mut client, search("nobody", 10, "")).await;
    assert!(none.users.is_empty() && none.next_page_token.is_empty());
    assert_eq!(none.total_count, 0);
}

#[tokio::test]
async fn a_search_page_token_is_refused_with_another_query_and_a_long_query_is_refused() {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    create_many(&mut client, "searched", 3).await;
    let first = list(&mut client, search("searched", 1, "")).await;
    assert!(!first.next_page_token.is_empty());

    for request in [
        search("search", 1, &first.next_page_token),
        page(1, &first.next_page_token),
        search(&"a".repeat(255), 1, ""),
    ] {
        let status = client.list_users(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("page_token") || status.message().contains("query"),
            "{status:?}"
        );
    }
}
